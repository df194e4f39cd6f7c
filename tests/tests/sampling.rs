//! Header sampling under BPF_PROG_TEST_RUN: what is sampled, what is not, and that every sample
//! the program could not hand over is counted (ring full, rate limit).

use agent_common::{
    Stat,
    sample::{DEFAULT_NEW_SOURCE_RATE, NEW_SOURCE_TOKENS, SAMPLE_MAX, SampleKind, outcome},
};
use iotwatch::kernel::load::SampleOptions;
use iotwatch_tests::{frames::*, harness::Harness, privileged_test};

fn udp_frame(src: [u8; 6], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(DEV_B, src, ETH_IPV4);
    Ipv4::new(IP_A, IP_B, 17).push(&mut f, 8 + payload.len());
    udp(&mut f, sport, dport, payload);
    f
}

fn tcp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(DEV_B, DEV_A, ETH_IPV4);
    Ipv4::new(IP_A, INET, 6).push(&mut f, 20 + payload.len());
    tcp(&mut f, sport, dport, 0, payload);
    f
}

/// [`tcp_frame`] with sequence number `seq` (the builder's frames all have 1).
fn tcp_frame_at(sport: u16, dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = tcp_frame(sport, dport, payload);
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f
}

fn unlimited() -> SampleOptions {
    SampleOptions { rate: 0, ..SampleOptions::default() }
}

const MSEARCH: &[u8] =
    b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n";

privileged_test! {
    fn each_protocol_gives_one_sample_of_its_kind() {
        let mut dhcpv6 = eth([0x33, 0x33, 0, 1, 0, 2], DEV_A, ETH_IPV6);
        ipv6_header(&mut dhcpv6, v6("fe80::11"), v6("ff02::1:2"), 17, 8 + 4);
        udp(&mut dhcpv6, 546, 547, &[1, 0, 0, 1]);
        let client_hello = [0x16, 0x03, 0x01, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2c, 0x03, 0x03, 0x11, 0x22];
        let connect = [
            0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x04, b'c', b'a', b'm', b'1',
        ];
        let mut dns_tcp = vec![0x00, 0x1d];
        dns_tcp.extend_from_slice(&[
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o',
            b'm', 0, 0, 1, 0, 1,
        ]);
        let cases: Vec<(&str, Vec<u8>, SampleKind)> = vec![
            ("ssdp m-search", udp_frame(DEV_A, 58002, 1900, MSEARCH), SampleKind::Ssdp),
            (
                "ssdp answer from 3075",
                udp_frame(DEV_A, 3075, 58002, b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\n\r\n"),
                SampleKind::Ssdp,
            ),
            ("mdns", udp_frame(DEV_A, 5353, 5353, &[0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0]), SampleKind::Mdns),
            ("ntp", udp_frame(DEV_A, 40000, 123, &[0x23; 48]), SampleKind::Ntp),
            ("dns", udp_frame(DEV_A, 40001, 53, &dns_tcp[2..]), SampleKind::Dns),
            ("dns over tcp", tcp_frame(40002, 53, &dns_tcp), SampleKind::Dns),
            ("dhcp", udp_frame(DEV_A, 68, 67, &[1; 300]), SampleKind::Dhcp),
            ("dhcpv6", dhcpv6, SampleKind::Dhcp),
            (
                "http request on 8815",
                tcp_frame(43412, 8815, b"GET /rootdesc.xml HTTP/1.1\r\nHost: x\r\n\r\n"),
                SampleKind::Http,
            ),
            (
                "http response from 8088",
                tcp_frame(8088, 16210, b"HTTP/1.1 206 Partial Content\r\n\r\n"),
                SampleKind::Http,
            ),
            ("tls client hello", tcp_frame(50000, 443, &client_hello), SampleKind::Tls),
            ("mqtt connect on 31006", tcp_frame(50001, 31006, &connect), SampleKind::Mqtt),
            (
                "mqtt publish on 1883",
                tcp_frame(50002, 1883, &[0x30, 0x0b, 0x00, 0x04, b't', b'e', b'm', b'p', b'2', b'1', b'.', b'5', b'!']),
                SampleKind::Mqtt,
            ),
            (
                "first packet of a conversation",
                udp_frame(DEV_A, 27091, 6000, &[0x01, 0x02, 0x03, 0x04, 0x05]),
                SampleKind::Flow,
            ),
        ];
        for (name, frame, kind) in cases {
            let mut h = Harness::sampling(unlimited());
            h.send(&frame, 1_600_000_000);
            let got = h.take_samples();
            assert_eq!(got.len(), 1, "{name}: exactly one sample");
            let (hdr, data) = &got[0];
            assert_eq!(SampleKind::from_u8(hdr.kind), Some(kind), "{name}");
            assert_eq!(data.as_slice(), frame.as_slice(), "{name}: the whole frame, byte for byte");
            assert_eq!(hdr.wire_len as usize, frame.len());
            assert_eq!(hdr.ts_ns, 1_600_000_000_000_000_000, "{name}: the capture clock");
            assert!(usize::from(hdr.payload_off) < frame.len(), "{name}: payload offset inside the frame");
            let counts = h.sample_counts();
            assert_eq!(counts[kind as usize][outcome::SENT], 1, "{name}");
            assert_eq!(counts.iter().flatten().sum::<u64>(), 1, "{name}: nothing else counted");
        }
    }
}

privileged_test! {
    fn traffic_without_a_protocol_gives_no_sample_beyond_the_first_packets() {
        let mut h = Harness::sampling(unlimited());
        // No payload: a pure ACK, and non-TCP/UDP traffic.
        h.send(&tcp_frame(50000, 443, &[]), 1);
        h.send(&arp_request(DEV_A, IP_A, IP_B), 1);
        let mut icmp = eth(DEV_B, DEV_A, ETH_IPV4);
        Ipv4::new(IP_A, IP_B, 1).push(&mut icmp, 12);
        icmp.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3, 4]);
        h.send(&icmp, 1);
        assert!(h.take_samples().is_empty(), "nothing without a TCP/UDP payload");
        // A binary stream: its first two packets with payload are sampled as flow, no more.
        for _ in 0..5 {
            h.send(&udp_frame(DEV_A, 27091, 6000, &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8]), 2);
        }
        // TLS application data after the handshake: not a ClientHello.
        for i in 0..4 {
            h.send(&tcp_frame_at(50000, 443, 1 + i * 14, &[0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9]), 3);
        }
        let got = h.take_samples();
        let kinds: Vec<_> = got.iter().map(|(hdr, _)| SampleKind::from_u8(hdr.kind).unwrap()).collect();
        assert_eq!(kinds, vec![SampleKind::Flow; 4], "2 per conversation");
        assert_eq!(h.sample_counts()[SampleKind::Flow as usize][outcome::SENT], 4);
    }
}

privileged_test! {
    fn the_rate_limit_follows_the_capture_clock_and_counts_what_it_suppresses() {
        let mut h = Harness::sampling(SampleOptions { rate: 2, burst: 5, ..SampleOptions::default() });
        let frame = udp_frame(DEV_A, 58002, 1900, MSEARCH);
        for _ in 0..20 {
            h.send(&frame, 100);
        }
        assert_eq!(h.take_samples().len(), 5, "the burst");
        // Another source has its own bucket.
        let other = udp_frame([2, 0x77, 0, 0, 0, 0x99], 58002, 1900, MSEARCH);
        h.send(&other, 100);
        assert_eq!(h.take_samples().len(), 1);
        // Three seconds later (capture time): 6 refilled, but a bucket holds at most the burst.
        for _ in 0..10 {
            h.send(&frame, 103);
        }
        assert_eq!(h.take_samples().len(), 5);
        // One second later: 2 per second.
        for _ in 0..10 {
            h.send(&frame, 104);
        }
        assert_eq!(h.take_samples().len(), 2);
        // Time going backwards refills nothing.
        h.send(&frame, 50);
        assert!(h.take_samples().is_empty());
        let c = h.sample_counts()[SampleKind::Ssdp as usize];
        assert_eq!((c[outcome::SENT], c[outcome::SUPPRESSED], c[outcome::DROPPED]), (5 + 1 + 5 + 2, 15 + 5 + 8 + 1, 0));
    }
}

privileged_test! {
    /// Records are as long as what was copied (a header of 80 bytes and the frame), so a page
    /// holds 22 NTP samples, not the 2 that fixed 1,616-byte records allowed; past that, the ring
    /// is full: dropped and counted.
    fn records_take_what_was_copied_and_a_full_ring_drops_and_counts() {
        let mut h = Harness::sampling(SampleOptions { ring_bytes: 4096, rate: 0, ..SampleOptions::default() });
        let frame = udp_frame(DEV_A, 40000, 123, &[0x23; 48]);
        assert_eq!(frame.len(), 90);
        // Each record: 8 bytes of ring header, then 80 + 90 bytes rounded up to 8.
        let per_record = 8 + (80 + 90usize).div_ceil(8) * 8;
        let fit = 4096 / per_record;
        assert_eq!(fit, 22);
        for _ in 0..30 {
            h.send(&frame, 1);
        }
        let c = h.sample_counts()[SampleKind::Ntp as usize];
        assert_eq!((c[outcome::SENT], c[outcome::DROPPED]), (fit as u64, 30 - fit as u64));
        let got = h.take_samples();
        assert_eq!(got.len(), fit);
        assert!(got.iter().all(|(s, d)| s.cap_len == 90 && d.as_slice() == frame.as_slice()));
        // Drained, the ring takes samples again.
        h.send(&frame, 1);
        assert_eq!(h.take_samples().len(), 1);
    }
}

privileged_test! {
    fn prefixes_are_copied_exactly_at_every_awkward_length() {
        let mut h = Harness::sampling(unlimited());
        for total in [60usize, 63, 64, 65, 100, 127, 128, 129, 1000, 1535, 1536, 1537, 2000] {
            let payload: Vec<u8> = (0..total - 42).map(|i| (i * 7 + total) as u8).collect();
            // Distinct ports: each its own conversation, sampled as its first packet.
            let frame = udp_frame(DEV_A, 30000 + total as u16, 6000, &payload);
            assert_eq!(frame.len(), total);
            h.send(&frame, 1);
            let got = h.take_samples();
            assert_eq!(got.len(), 1, "{total} bytes");
            let want = total.min(SAMPLE_MAX);
            assert_eq!(got[0].1.len(), want, "{total} bytes: captured length");
            assert_eq!(got[0].1.as_slice(), &frame[..want], "{total} bytes: content");
        }
        // A smaller snapshot length.
        let mut h = Harness::sampling(SampleOptions { snaplen: 100, rate: 0, ..SampleOptions::default() });
        let frame = udp_frame(DEV_A, 1, 1900, &[b'x'; 500]);
        h.send(&frame, 1);
        let got = h.take_samples();
        assert_eq!(got[0].1.as_slice(), &frame[..100]);
        assert_eq!(got[0].0.wire_len, 542);
    }
}

privileged_test! {
    /// A 54-byte ACK arrives padded to 60 bytes: the 6 bytes of padding are no payload. Neither
    /// a DNS sample on TCP 53 nor a conversation's first-packet quota may come of it.
    fn ethernet_padding_is_not_payload() {
        let mut h = Harness::sampling(unlimited());
        let padded = |dport: u16| {
            let mut f = tcp_frame(40_000, dport, &[]);
            assert_eq!(f.len(), 54);
            f.resize(60, 0);
            f
        };
        h.send(&padded(53), 100);
        assert!(h.take_samples().is_empty(), "a padded ACK on port 53 is no DNS message");
        // A conversation that starts with a padded ACK: its two first packets with payload are
        // still sampled (the default quota is 2).
        h.send(&padded(9_000), 101);
        h.send(&tcp_frame(40_000, 9_000, b"first payload"), 102);
        h.send(&tcp_frame(40_000, 9_000, b"second payload"), 103);
        let kinds: Vec<u8> = h.take_samples().iter().map(|(s, _)| s.kind).collect();
        assert_eq!(kinds, [SampleKind::Flow as u8; 2], "both packets with payload, not the padding");
    }
}

privileged_test! {
    /// A first packet suppressed by the rate limit (or lost to a full ring) was not sampled: it
    /// must not use up the conversation's quota of first-packet samples.
    fn flow_samples_are_spent_only_when_sent() {
        let mut h = Harness::sampling(SampleOptions { rate: 1, burst: 1, ..SampleOptions::default() });
        // The source's one token goes to a DNS query; the flow's first packet, at the same time,
        // is suppressed.
        h.send(&udp_frame(DEV_A, 40_001, 53, &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]), 100);
        h.send(&tcp_frame(40_000, 9_000, b"first payload"), 100);
        // Two seconds later a token each: both later packets are still within the quota of 2.
        h.send(&tcp_frame(40_000, 9_000, b"second payload"), 102);
        h.send(&tcp_frame(40_000, 9_000, b"third payload"), 104);
        let flow = h.sample_counts()[SampleKind::Flow as usize];
        assert_eq!((flow[outcome::SENT], flow[outcome::SUPPRESSED]), (2, 1));
    }
}

privileged_test! {
    /// A repeat of the segment a conversation's last first-packet sample was (a retransmission, or
    /// a capture where each frame passes twice) spends no quota: the next segment, here the rest
    /// of a request whose method came alone, is still sampled. A retransmission that carries more
    /// than the segment it repeats is sampled.
    fn a_repeated_first_packet_spends_no_quota() {
        let mut h = Harness::sampling(unlimited());
        let at = |sport: u16, seq: u32, payload: &[u8]| tcp_frame_at(sport, 9_000, seq, payload);
        let rest: &[u8] = b"/upload HTTP/1.1\r\nHost: h\r\n\r\n";
        for f in [at(40_000, 100, b"POST "), at(40_000, 100, b"POST "), at(40_000, 105, rest), at(40_000, 105, rest)] {
            h.send(&f, 100);
        }
        let (short, long): (&[u8], &[u8]) = (&[1, 2], &[1, 2, 3, 4]);
        for f in [at(40_001, 100, short), at(40_001, 100, long)] {
            h.send(&f, 100);
        }
        let got = h.take_samples();
        let payloads: Vec<(u16, &[u8])> =
            got.iter().map(|(s, d)| (s.key.src_port, &d[usize::from(s.payload_off)..])).collect();
        assert_eq!(payloads, [(40_000, &b"POST "[..]), (40_000, rest), (40_001, short), (40_001, long)]);
        assert!(got.iter().all(|(s, _)| s.kind == SampleKind::Flow as u8));
    }
}

const DNS_QUERY: &[u8] = &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];

privileged_test! {
    /// A source the program has just met gets a few samples (enough for a first DHCP and DNS
    /// exchange), not the whole burst: a burst per new MAC is what a spoofer would farm.
    fn a_new_source_starts_with_a_few_samples_not_a_burst() {
        let mut h = Harness::sampling(SampleOptions::default());
        for _ in 0..50 {
            h.send(&udp_frame(DEV_A, 40_001, 53, DNS_QUERY), 100);
        }
        assert_eq!(h.take_samples().len(), NEW_SOURCE_TOKENS as usize);
        let dns = h.sample_counts()[SampleKind::Dns as usize];
        assert_eq!((dns[outcome::SENT], dns[outcome::SUPPRESSED]), (NEW_SOURCE_TOKENS, 50 - NEW_SOURCE_TOKENS));
        // Known for a while, it earns its rate (20/s by default) up to the burst.
        for _ in 0..50 {
            h.send(&udp_frame(DEV_A, 40_001, 53, DNS_QUERY), 102);
        }
        assert_eq!(h.take_samples().len(), 40, "two seconds at 20/s");
    }
}

privileged_test! {
    /// Thousands of spoofed source MACs (more than the MAC table holds) send DNS queries while a
    /// known device does too: the flood gets the CPU's budget for new sources and no more, the
    /// known device every sample its own rate allows, and every suppressed sample is counted.
    fn a_flood_of_spoofed_macs_leaves_known_devices_sampled() {
        let mut h = Harness::sampling(SampleOptions::default());
        // The known device, first seen two seconds before the flood.
        h.send(&udp_frame(DEV_A, 40_001, 53, DNS_QUERY), 100);
        assert_eq!(h.take_samples().len(), 1);
        let spoofed = 5_000u32;
        let mut known = 0;
        for i in 0..spoofed {
            let mac = [0x02, 0x66, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            h.send(&udp_frame(mac, 40_000, 53, DNS_QUERY), 102);
            if i % 200 == 0 {
                h.send(&udp_frame(DEV_A, 40_001, 53, DNS_QUERY), 102);
                known += 1;
            }
        }
        let samples = h.take_samples();
        let from_known = samples.iter().filter(|(s, _)| s.key.src_mac == DEV_A).count();
        assert_eq!(from_known, known, "the known device keeps its samples");
        let from_flood = (samples.len() - from_known) as u64;
        assert_eq!(from_flood, u64::from(DEFAULT_NEW_SOURCE_RATE), "the flood gets one second of the new-source budget");
        let dns = h.sample_counts()[SampleKind::Dns as usize];
        assert_eq!(dns[outcome::SUPPRESSED], u64::from(spoofed) - from_flood);
        assert_eq!(dns[outcome::SENT], 1 + known as u64 + from_flood);
        // More MACs than the table holds: the ones left out are counted, and count as new.
        let s = h.poll();
        assert!(s.stats[Stat::DeviceInsertFailed as usize] > 0);
    }
}

privileged_test! {
    /// However many known sources there are, a CPU sends at most its rate: the rest is capped,
    /// and counted apart from what the per-source limits suppress.
    fn the_cpu_cap_bounds_samples_whatever_the_number_of_sources() {
        let options = SampleOptions { rate: 1000, burst: 1000, cpu_rate: 10, new_source_rate: 0, ..SampleOptions::default() };
        let mut h = Harness::sampling(options);
        let mac = |i: u8| [0x02, 0x55, 0, 0, 0, i];
        // Twenty sources, met long before (a frame that is not sampled: no payload).
        for i in 0..20 {
            h.send(&udp_frame(mac(i), 40_000, 9, &[]), 100);
        }
        for i in 0..20 {
            for _ in 0..5 {
                h.send(&udp_frame(mac(i), 40_000, 53, DNS_QUERY), 200);
            }
        }
        assert_eq!(h.take_samples().len(), 10, "one second of the CPU's budget");
        let dns = h.sample_counts()[SampleKind::Dns as usize];
        assert_eq!((dns[outcome::SENT], dns[outcome::CAPPED], dns[outcome::SUPPRESSED]), (10, 90, 0));
    }
}
