//! Well-formed headers: Ethernet, VLAN and QinQ tags, IPv4 options and fragments, IPv6
//! extension headers and fragments, ARP and other ethertypes.

use super::*;

privileged_test! {
    fn ipv4_udp_counts_macs_conversation_and_ports() {
        let mut h = Harness::new(false);
        let f = udp4(DEV_A, DEV_B, IP_A, IP_B, 40000, 1900, 100);
        assert_eq!(f.len(), 142);
        h.tc(&f);
        h.tc(&f);
        let s = h.poll();
        assert_eq!(
            mac_counters(&s, DEV_A),
            DeviceCounters { tx_packets: 2, tx_bytes: 284, ..DeviceCounters::default() }
        );
        assert_eq!(
            mac_counters(&s, DEV_B),
            DeviceCounters { rx_packets: 2, rx_bytes: 284, ..DeviceCounters::default() }
        );
        assert_eq!(s.macs.len(), 2);
        let (k, p, b) = only_conversation(&s);
        let (src_ip, dst_ip) = v4key(IP_A, IP_B);
        assert_eq!(
            k,
            ConvKey {
                src_ip,
                dst_ip,
                src_mac: DEV_A,
                dst_mac: DEV_B,
                src_port: 40000,
                dst_port: 1900,
                ip_version: ip_version::V4,
                proto: 17,
                ether_type: 0x0800
            }
        );
        assert_eq!((p, b), (2, 284));
        assert_stats(&s, &[(Stat::Buffers, 2), (Stat::Frames, 2), (Stat::Ipv4, 2), (Stat::ConvInserts, 1)]);
    }
}

privileged_test! {
    fn vlan_and_qinq_tags_are_parsed_and_counted_in_the_bytes() {
        let mut h = Harness::new(false);
        // 802.1Q: under test run the tag stays in the data (live, TC reads it from metadata).
        let mut f = vlan(eth(DEV_B, DEV_A, ETH_8021Q), 10, ETH_IPV4);
        Ipv4::new(IP_A, INET, 6).push(&mut f, 20);
        tcp(&mut f, 50000, 8815, 0, &[]);
        h.tc(&f);
        let s = h.poll();
        let (k, p, b) = only_conversation(&s);
        assert_eq!((k.src_port, k.dst_port, k.proto, k.ether_type), (50000, 8815, 6, 0x0800));
        assert_eq!((p, b), (1, f.len() as u64));
        assert_eq!(b, 14 + 4 + 20 + 20);
        assert_stats(
            &s,
            &[(Stat::Buffers, 1), (Stat::Frames, 1), (Stat::Vlan, 1), (Stat::Ipv4, 1), (Stat::ConvInserts, 1)],
        );

        // QinQ: 802.1ad outer, 802.1Q inner.
        let mut h = Harness::new(false);
        let mut f = vlan(vlan(eth(DEV_B, DEV_A, ETH_8021AD), 100, ETH_8021Q), 10, ETH_IPV4);
        Ipv4::new(IP_A, INET, 17).push(&mut f, 8);
        udp(&mut f, 123, 123, &[]);
        h.tc(&f);
        let s = h.poll();
        let (k, _, b) = only_conversation(&s);
        assert_eq!((k.src_port, k.dst_port, k.ip_version), (123, 123, 4));
        assert_eq!(b, f.len() as u64);
        assert_stats(
            &s,
            &[
                (Stat::Buffers, 1),
                (Stat::Frames, 1),
                (Stat::Vlan, 1),
                (Stat::VlanStacked, 1),
                (Stat::Ipv4, 1),
                (Stat::ConvInserts, 1),
            ],
        );

        // Three and four tags (real captures carry three): parsed through to the ports.
        for tags in [3u16, 4] {
            let mut h = Harness::new(false);
            let mut f = eth(DEV_B, DEV_A, ETH_8021AD);
            for t in 1..tags {
                f = vlan(f, t, ETH_8021Q);
            }
            let mut f = vlan(f, tags, ETH_IPV4);
            Ipv4::new(IP_A, INET, 17).push(&mut f, 8);
            udp(&mut f, 1, 2, &[]);
            h.tc(&f);
            let s = h.poll();
            let (k, p, b) = only_conversation(&s);
            assert_eq!((k.ip_version, k.proto, k.src_port, k.dst_port), (ip_version::V4, 17, 1, 2), "{tags} tags");
            assert_eq!((p, b), (1, f.len() as u64));
            assert_eq!(stat(&s, Stat::VlanStacked), 1);
            assert_eq!(stat(&s, Stat::VlanTooDeep), 0);
        }

        // Five tags: deeper than the program parses; counted at L2 only.
        let mut h = Harness::new(false);
        let mut f = eth(DEV_B, DEV_A, ETH_8021AD);
        for t in 1..5 {
            f = vlan(f, t, ETH_8021Q);
        }
        let mut f = vlan(f, 5, ETH_IPV4);
        Ipv4::new(IP_A, INET, 17).push(&mut f, 8);
        udp(&mut f, 1, 2, &[]);
        h.tc(&f);
        let s = h.poll();
        let (k, p, b) = only_conversation(&s);
        assert_eq!((k.ip_version, k.proto, k.src_port, k.ether_type), (ip_version::NONE, 0, 0, ETH_8021Q));
        assert_eq!((p, b), (1, f.len() as u64));
        assert_eq!(mac_counters(&s, DEV_A).tx_bytes, f.len() as u64);
        assert_stats(
            &s,
            &[
                (Stat::Buffers, 1),
                (Stat::Frames, 1),
                (Stat::Vlan, 1),
                (Stat::VlanStacked, 1),
                (Stat::VlanTooDeep, 1),
                (Stat::ConvInserts, 1),
            ],
        );
    }
}

privileged_test! {
    /// PPPoE sessions (what a DSL modem's LAN side carries): IPv4 and IPv6 behind the 8 bytes of
    /// PPPoE and PPP, ports and all, also inside a VLAN tag; other PPP protocols count at L2.
    fn pppoe_sessions_are_parsed_to_ip_and_ports() {
        let pppoe = |mut f: Vec<u8>, ppp_proto: u16, len: usize| {
            f.extend_from_slice(&[0x11, 0x00, 0x12, 0x34]);
            f.extend_from_slice(&((len + 2) as u16).to_be_bytes());
            f.extend_from_slice(&ppp_proto.to_be_bytes());
            f
        };
        let mut h = Harness::new(false);
        let mut f = pppoe(eth(DEV_B, DEV_A, 0x8864), 0x0021, 20 + 8);
        Ipv4::new(IP_A, INET, 17).push(&mut f, 8);
        udp(&mut f, 40_000, 53, &[]);
        h.tc(&f);
        let s = h.poll();
        let (k, p, b) = only_conversation(&s);
        assert_eq!(
            (k.ip_version, k.proto, k.src_port, k.dst_port, k.ether_type),
            (ip_version::V4, 17, 40_000, 53, ETH_IPV4)
        );
        assert_eq!((p, b), (1, f.len() as u64));
        assert_stats(
            &s,
            &[(Stat::Buffers, 1), (Stat::Frames, 1), (Stat::Pppoe, 1), (Stat::Ipv4, 1), (Stat::ConvInserts, 1)],
        );

        let mut h = Harness::new(false);
        let mut f = pppoe(vlan(eth(DEV_B, DEV_A, ETH_8021Q), 7, 0x8864), 0x0057, 40 + 8);
        ipv6_header(&mut f, v6("2001:db8::11"), v6("2001:db8:4::7"), 17, 8);
        udp(&mut f, 40_001, 443, &[]);
        h.tc(&f);
        let s = h.poll();
        let (k, _, b) = only_conversation(&s);
        assert_eq!((k.ip_version, k.src_port, k.dst_port), (ip_version::V6, 40_001, 443));
        assert_eq!(b, f.len() as u64);
        assert_eq!((stat(&s, Stat::Pppoe), stat(&s, Stat::Vlan), stat(&s, Stat::Ipv6)), (1, 1, 1));

        // LCP (0xc021): a PPPoE frame, counted at L2.
        let mut h = Harness::new(false);
        let f = pppoe(eth(DEV_B, DEV_A, 0x8864), 0xc021, 4);
        h.tc(&f);
        let s = h.poll();
        let (k, p, _) = only_conversation(&s);
        assert_eq!((k.ip_version, p), (ip_version::NONE, 1));
        assert_eq!((stat(&s, Stat::Pppoe), stat(&s, Stat::OtherEthertype)), (1, 1));
    }
}

privileged_test! {
    fn ipv4_options_and_fragments() {
        let mut h = Harness::new(false);
        // Header with 8 bytes of options (IHL 7): ports still found behind them.
        let mut f = eth(DEV_B, DEV_A, ETH_IPV4);
        let mut ip = Ipv4::new(IP_A, INET, 17);
        ip.options = vec![0x94, 0x04, 0, 0, 1, 1, 1, 0];
        ip.more_fragments = true;
        ip.push(&mut f, 8 + 16);
        udp(&mut f, 5353, 5353, &[0; 16]);
        h.tc(&f);
        let s = h.poll();
        let (k, _, _) = only_conversation(&s);
        assert_eq!((k.src_port, k.dst_port), (5353, 5353), "first fragment carries the ports");
        assert_stats(
            &s,
            &[
                (Stat::Buffers, 1),
                (Stat::Frames, 1),
                (Stat::Ipv4, 1),
                (Stat::Ipv4Options, 1),
                (Stat::Fragments, 1),
                (Stat::ConvInserts, 1),
            ],
        );

        // A later fragment: whatever its payload looks like, no ports are read from it.
        let mut h = Harness::new(false);
        let mut f = eth(DEV_B, DEV_A, ETH_IPV4);
        let mut ip = Ipv4::new(IP_A, INET, 17);
        ip.frag_offset = 185;
        ip.push(&mut f, 16);
        f.extend_from_slice(&[0x13, 0x88, 0x13, 0x88, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        h.tc(&f);
        let s = h.poll();
        let (k, p, b) = only_conversation(&s);
        assert_eq!((k.src_port, k.dst_port, k.proto, k.ip_version), (0, 0, 17, 4));
        assert_eq!((p, b), (1, f.len() as u64));
        assert_stats(
            &s,
            &[
                (Stat::Buffers, 1),
                (Stat::Frames, 1),
                (Stat::Ipv4, 1),
                (Stat::Fragments, 1),
                (Stat::FragmentsNonFirst, 1),
                (Stat::ConvInserts, 1),
            ],
        );
    }
}

privileged_test! {
    fn ipv6_extension_headers_and_fragments() {
        let mut h = Harness::new(false);
        let (src, dst) = (v6("fe80::277:ff:fe00:11"), v6("ff02::fb"));
        // Hop-by-hop (8 bytes) then destination options (16 bytes) then UDP.
        let mut f = eth([0x33, 0x33, 0, 0, 0, 0xfb], DEV_A, ETH_IPV6);
        ipv6_header(&mut f, src, dst, 0, 8 + 16 + 8 + 4);
        f.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        f.extend_from_slice(&[17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        udp(&mut f, 5353, 5353, &[1, 2, 3, 4]);
        h.tc(&f);
        let s = h.poll();
        let (k, p, b) = only_conversation(&s);
        assert_eq!((k.src_ip, k.dst_ip, k.ip_version, k.proto, k.src_port, k.dst_port), (src, dst, 6, 17, 5353, 5353));
        assert_eq!((p, b), (1, f.len() as u64));
        assert_eq!(
            mac_counters(&s, [0x33, 0x33, 0, 0, 0, 0xfb]).rx_packets,
            1,
            "multicast destinations are their own entries"
        );
        assert_stats(
            &s,
            &[
                (Stat::Buffers, 1),
                (Stat::Frames, 1),
                (Stat::Ipv6, 1),
                (Stat::Ipv6ExtHeaders, 1),
                (Stat::ConvInserts, 1),
            ],
        );

        // A later IPv6 fragment: no ports.
        let mut h = Harness::new(false);
        let mut f = eth(DEV_B, DEV_A, ETH_IPV6);
        ipv6_header(&mut f, v6("2001:db8::11"), v6("2001:db8::1"), 44, 8 + 8);
        f.extend_from_slice(&[17, 0, 0x05, 0xc8, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x13, 0x88, 0x13, 0x88, 0, 8, 0, 0]);
        h.tc(&f);
        let s = h.poll();
        let (k, _, _) = only_conversation(&s);
        assert_eq!((k.proto, k.src_port, k.dst_port), (17, 0, 0));
        assert_stats(
            &s,
            &[
                (Stat::Buffers, 1),
                (Stat::Frames, 1),
                (Stat::Ipv6, 1),
                (Stat::Fragments, 1),
                (Stat::FragmentsNonFirst, 1),
                (Stat::ConvInserts, 1),
            ],
        );

        // A chain longer than the program walks: addresses kept, no ports.
        let mut h = Harness::new(false);
        let mut f = eth(DEV_B, DEV_A, ETH_IPV6);
        ipv6_header(&mut f, v6("2001:db8::11"), v6("2001:db8::1"), 60, 7 * 8 + 8);
        for _ in 0..7 {
            f.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        udp(&mut f, 1, 2, &[]);
        h.tc(&f);
        let s = h.poll();
        let (k, _, _) = only_conversation(&s);
        assert_eq!((k.ip_version, k.proto, k.src_port), (6, 60, 0));
        assert_stats(
            &s,
            &[
                (Stat::Buffers, 1),
                (Stat::Frames, 1),
                (Stat::Ipv6, 1),
                (Stat::Ipv6ExtHeaders, 1),
                (Stat::Ipv6ExtTooDeep, 1),
                (Stat::ConvInserts, 1),
            ],
        );
    }
}

privileged_test! {
    fn arp_and_other_ethertypes() {
        let mut h = Harness::new(false);
        let arp = arp_request(DEV_A, IP_A, IP_B);
        h.tc(&arp);
        let mut lldp = eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], DEV_A, 0x88cc);
        lldp.extend_from_slice(&[0; 46]);
        h.xdp(&lldp);
        let s = h.poll();
        assert_eq!(mac_counters(&s, DEV_A), DeviceCounters { tx_packets: 2, tx_bytes: 42 + 60, ..Default::default() });
        assert_eq!(mac_counters(&s, [0xff; 6]).rx_bytes, 42);
        let mut types: Vec<u16> = s.deltas.iter().map(|d| d.key.ether_type).collect();
        types.sort_unstable();
        assert_eq!(types, vec![ETH_ARP, 0x88cc]);
        assert!(s.deltas.iter().all(|d| d.key.ip_version == ip_version::NONE && d.packets == 1));
        assert_stats(
            &s,
            &[(Stat::Buffers, 2), (Stat::Frames, 2), (Stat::Arp, 1), (Stat::OtherEthertype, 1), (Stat::ConvInserts, 2)],
        );
    }
}
