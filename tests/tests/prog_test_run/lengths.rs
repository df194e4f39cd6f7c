//! Lengths and modes: GSO buffers, jumbo and snapped frames in replay, live wire_len, TC and
//! XDP alike, a full device map, XDP replay metadata.

use super::*;

privileged_test! {
    fn gso_buffers_count_every_wire_segment() {
        let mut h = Harness::new(false);
        // One socket buffer standing for 4 TCP segments of 1448 bytes behind 14+20+32 bytes of headers.
        let mut f = eth(DEV_B, DEV_A, ETH_IPV4);
        Ipv4::new(IP_A, IP_B, 6).push(&mut f, 32 + 4 * 1448);
        tcp(&mut f, 5201, 40000, 12, &vec![0x55; 4 * 1448]);
        let headers = 14 + 20 + 32;
        assert_eq!(f.len(), headers + 4 * 1448);
        // The test-run buffer is limited to about a page: hand in the headers and let the program
        // see the real length through the context... which only replay mode trusts. Live, gso_segs
        // comes with a full socket buffer; here we check the arithmetic on a one-page prefix.
        let prefix = &f[..2000];
        h.tc_input(&TcInput { data: prefix, gso_segs: 4, ..TcInput::default() });
        let s = h.poll();
        let (_, p, b) = only_conversation(&s);
        assert_eq!(p, 4);
        assert_eq!(b, 2000 + 3 * headers as u64, "buffer bytes plus the headers each later segment repeats");
        assert_eq!(mac_counters(&s, DEV_A).tx_packets, 4);
        assert_stats(
            &s,
            &[(Stat::Buffers, 1), (Stat::Frames, 4), (Stat::GsoBuffers, 1), (Stat::Ipv4, 1), (Stat::ConvInserts, 1)],
        );
    }
}

privileged_test! {
    /// Buffers from tap, macvtap, virtio-net and AF_PACKET with a vnet header carry a segment
    /// size but no segment count (`gso_segs` 0): the count comes from the size.
    fn gso_buffers_with_a_size_and_no_count() {
        let mut h = Harness::new(true);
        let mut f = eth(DEV_B, DEV_A, ETH_IPV4);
        Ipv4::new(IP_A, IP_B, 6).push(&mut f, 32 + 4 * 1448);
        tcp(&mut f, 5201, 40000, 12, &vec![0x55; 4 * 1448]);
        let headers = 14 + 20 + 32;
        // The buffer's length in the context (replay mode reads it there); the data a prefix.
        h.tc_input(&TcInput {
            data: &f[..2000],
            wire_len: f.len() as u32,
            gso_segs: 0,
            gso_size: 1448,
            tstamp_ns: 1_600_000_000_000_000_000,
        });
        let s = h.poll();
        let (_, p, b) = only_conversation(&s);
        assert_eq!(p, 4, "four segments of 1448 bytes");
        assert_eq!(b, f.len() as u64 + 3 * headers as u64);
        assert_eq!(stat(&s, Stat::Frames), 4);
        assert_eq!(stat(&s, Stat::GsoBuffers), 1);
    }
}

privileged_test! {
    fn replay_mode_counts_the_original_length_of_long_and_snapped_frames() {
        let mut h = Harness::new(true);
        // A 9,014-byte jumbo frame, of which a prefix fits a test run.
        let f = udp4(DEV_A, DEV_B, IP_A, IP_B, 7000, 7001, 9014 - 42);
        assert_eq!(f.len(), 9014);
        h.tc_input(&TcInput {
            data: &f[..1514],
            wire_len: 9014,
            tstamp_ns: 1_600_000_000_000_000_000,
            ..TcInput::default()
        });
        // A frame snapped at 96 bytes of 1,514.
        let g = udp4(DEV_A, DEV_B, IP_A, IP_B, 7000, 7001, 1514 - 42);
        h.tc_input(&TcInput {
            data: &g[..96],
            wire_len: 1514,
            tstamp_ns: 1_600_000_001_000_000_000,
            ..TcInput::default()
        });
        let s = h.poll();
        let (k, p, b) = only_conversation(&s);
        assert_eq!((k.src_port, k.dst_port), (7000, 7001));
        assert_eq!((p, b), (2, 9014 + 1514));
        assert_eq!(mac_counters(&s, DEV_B), DeviceCounters { rx_packets: 2, rx_bytes: 10528, ..Default::default() });
    }
}

privileged_test! {
    fn live_mode_ignores_wire_len_from_the_context() {
        // Live, wire_len at ingress omits the Ethernet header; the program must not trust it.
        let mut h = Harness::new(false);
        let f = udp4(DEV_A, DEV_B, IP_A, IP_B, 1, 2, 100);
        h.tc_input(&TcInput { data: &f, wire_len: 60_000, ..TcInput::default() });
        let s = h.poll();
        assert_eq!(only_conversation(&s).2, f.len() as u64);
    }
}

privileged_test! {
    fn tc_and_xdp_count_the_same_frames_alike() {
        let mut f = vlan(eth(DEV_B, DEV_A, ETH_8021Q), 5, ETH_IPV6);
        ipv6_header(&mut f, v6("2001:db8::11"), v6("2001:db8::12"), 6, 20);
        tcp(&mut f, 443, 50000, 0, &[]);
        let frames = [f, udp4(DEV_A, DEV_B, IP_A, INET, 9, 53, 30), arp_request(DEV_A, IP_A, IP_B)];
        let mut tc = Harness::new(false);
        let mut xdp = Harness::new(false);
        for f in &frames {
            tc.tc(f);
            xdp.xdp(f);
        }
        let (a, b) = (tc.poll(), xdp.poll());
        // Timestamps differ between the two runs; keys and counts may not.
        let counts = |s: &Snapshot| {
            let mut v: Vec<_> = s.deltas.iter().map(|d| (d.key, d.packets, d.bytes)).collect();
            v.sort();
            v
        };
        let (da, db) = (counts(&a), counts(&b));
        assert_eq!(da, db);
        assert_eq!(da.len(), 3);
        assert_eq!(a.stats, b.stats);
    }
}

privileged_test! {
    fn a_full_device_map_counts_failed_inserts_and_still_passes() {
        let mut h = Harness::load(&LoadOptions { max_macs: 2, ..LoadOptions::default() });
        // Three distinct MAC pairs: 6 MACs for a map of 2.
        for i in 0..3u8 {
            let f = udp4([2, 0, 0, 0, 1, i], [2, 0, 0, 0, 2, i], IP_A, IP_B, 1, 2, 10);
            h.tc(&f);
        }
        let s = h.poll();
        assert_eq!(s.macs.len(), 2);
        assert_eq!(stat(&s, Stat::DeviceInsertFailed), 4);
        assert_eq!(s.deltas.len(), 3, "conversations still counted");
    }
}

privileged_test! {
    fn xdp_replay_takes_wire_length_and_time_from_metadata() {
        let mut h = Harness::new(true);
        // A runt promising IPv4, which the socket-buffer test run refuses, snapped from 60 bytes.
        let runt = eth(DEV_B, DEV_A, ETH_IPV4);
        h.xdp_replay(&runt, 60, 1_600_000_000_000_000_000);
        // A 70,000-byte GRO frame from a capture: beyond the 64 KiB a socket buffer's wire_len takes.
        let big = udp4(DEV_A, DEV_B, IP_A, IP_B, 7000, 7001, 1472);
        h.xdp_replay(&big, 70_000, 1_600_000_001_000_000_000);
        let s = h.poll();
        assert_eq!(mac_counters(&s, DEV_A).tx_bytes, 60 + 70_000);
        let big_conv = s.deltas.iter().find(|d| d.key.dst_port == 7001).expect("conversation");
        assert_eq!((big_conv.packets, big_conv.bytes), (1, 70_000));
        assert_eq!(big_conv.first_seen_ns, 1_600_000_001_000_000_000, "capture time, not the kernel clock");
    }
}
