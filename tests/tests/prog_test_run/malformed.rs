//! Runts, truncated and lying headers: counted at L2, nothing guessed.

use super::*;

privileged_test! {
    fn truncated_and_malformed_headers_count_at_l2_without_guessing() {
        // 14-byte runts: Ethernet headers that carry nothing. BPF_PROG_TEST_RUN refuses a TC buffer
        // that promises IPv4 without an IP header (EINVAL), so that one goes through XDP only.
        let mut h = Harness::new(false);
        let f = eth(DEV_B, DEV_A, ETH_IPV4);
        h.xdp(&f);
        h.xdp(&f);
        let g = eth(DEV_B, DEV_A, 0x88cc);
        h.tc(&g);
        let s = h.poll();
        assert_eq!(mac_counters(&s, DEV_A), DeviceCounters { tx_packets: 3, tx_bytes: 42, ..Default::default() });
        let ipv4 = s.deltas.iter().find(|d| d.key.ether_type == ETH_IPV4).expect("runt conversation");
        assert_eq!((ipv4.key.ip_version, ipv4.packets, ipv4.bytes), (ip_version::NONE, 2, 28));
        assert_stats(
            &s,
            &[
                (Stat::Buffers, 3),
                (Stat::Frames, 3),
                (Stat::TruncatedL3, 2),
                (Stat::OtherEthertype, 1),
                (Stat::ConvInserts, 2),
            ],
        );

        // IPv4 header cut after 10 bytes.
        let mut h = Harness::new(false);
        let mut f = eth(DEV_B, DEV_A, ETH_IPV4);
        Ipv4::new(IP_A, INET, 6).push(&mut f, 20);
        f.truncate(14 + 10);
        h.xdp(&f); // TC test runs refuse it (EINVAL), like the runt above.
        let s = h.poll();
        let (k, _, b) = only_conversation(&s);
        assert_eq!((k.ip_version, k.src_ip, b), (ip_version::NONE, [0; 16], 24));
        assert_stats(&s, &[(Stat::Buffers, 1), (Stat::Frames, 1), (Stat::TruncatedL3, 1), (Stat::ConvInserts, 1)]);

        // Options announced (IHL 15) but the frame ends first.
        let mut h = Harness::new(false);
        let mut f = eth(DEV_B, DEV_A, ETH_IPV4);
        Ipv4::new(IP_A, INET, 6).push(&mut f, 0);
        f[14] = 0x4f;
        h.tc(&f);
        let s = h.poll();
        assert_eq!(only_conversation(&s).0.ip_version, ip_version::NONE);
        assert_stats(&s, &[(Stat::Buffers, 1), (Stat::Frames, 1), (Stat::TruncatedL3, 1), (Stat::ConvInserts, 1)]);

        // TCP header cut after 10 bytes: the ports are there (as tshark shows them too), the rest not.
        let mut h = Harness::new(false);
        let mut f = eth(DEV_B, DEV_A, ETH_IPV4);
        Ipv4::new(IP_A, INET, 6).push(&mut f, 20);
        tcp(&mut f, 1234, 80, 0, &[]);
        f.truncate(14 + 20 + 10);
        h.tc(&f);
        let s = h.poll();
        let (k, _, _) = only_conversation(&s);
        assert_eq!((k.ip_version, k.proto, k.src_port, k.dst_port), (4, 6, 1234, 80));
        assert_eq!(k.dst_ip[..4], INET);
        assert_stats(
            &s,
            &[(Stat::Buffers, 1), (Stat::Frames, 1), (Stat::Ipv4, 1), (Stat::TruncatedL4, 1), (Stat::ConvInserts, 1)],
        );

        // UDP cut after 2 bytes: no ports at all.
        let mut h = Harness::new(false);
        let mut f = eth(DEV_B, DEV_A, ETH_IPV4);
        Ipv4::new(IP_A, INET, 17).push(&mut f, 8);
        udp(&mut f, 1234, 53, &[]);
        f.truncate(14 + 20 + 2);
        h.tc(&f);
        let s = h.poll();
        let (k, _, _) = only_conversation(&s);
        assert_eq!((k.proto, k.src_port, k.dst_port), (17, 0, 0));
        assert_stats(
            &s,
            &[(Stat::Buffers, 1), (Stat::Frames, 1), (Stat::Ipv4, 1), (Stat::TruncatedL4, 1), (Stat::ConvInserts, 1)],
        );

        // A header that lies: version 5, IHL 2.
        let mut h = Harness::new(false);
        let mut f = udp4(DEV_A, DEV_B, IP_A, IP_B, 1, 2, 10);
        f[14] = 0x52;
        h.tc(&f);
        h.xdp(&f);
        let s = h.poll();
        assert_eq!(only_conversation(&s).0.ip_version, ip_version::NONE);
        assert_stats(&s, &[(Stat::Buffers, 2), (Stat::Frames, 2), (Stat::Malformed, 2), (Stat::ConvInserts, 1)]);
    }
}
