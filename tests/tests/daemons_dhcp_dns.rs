//! Real daemons as the peers (the lab: `iotwatch_tests::daemons`): dnsmasq, DHCP and DNS.

use std::{fs, time::Duration};

use iotwatch_tests::{daemons::*, privileged_test};
use xtask::dhcp;

// dnsmasq on the gateway: DHCP with a hostname, DNS for an Internet name, names in the report.
privileged_test! {
    fn dnsmasq_dhcp_and_dns() {
        let lab = lab("iwd2", false);
        let d1 = lab.devices[0].clone();
        let gw = lab.gateway.clone();
        let dir = Workdir::new("iwd2");
        let (agent, events) = start_agent(&lab, &dir, 19482);
        let mut args = dhcp::dnsmasq_argv(&dir.text("dnsmasq.pid"), &dir.text("dnsmasq.leases"));
        args.extend(
            [
                "--log-queries",
                "--dhcp-range=192.168.77.100,192.168.77.150,255.255.255.0,1h",
                "--host-record=cloud.example.test,203.0.113.10",
            ]
            .map(str::to_owned),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut dnsmasq = Daemon::spawn(&lab, &gw.ns, &dir, "dnsmasq", &args);
        wait_listening(&lab, &gw.ns, "-u", 67, &mut dnsmasq);
        wait_listening(&lab, &gw.ns, "-u", 53, &mut dnsmasq);

        // busybox udhcpc: DISCOVER, REQUEST with hostname camera1; its script is /bin/true, which
        // keeps the lab's address (the lease is not applied).
        let camera =
            dhcp::DhcpIdentity { hostname: "camera1", vendor_class: "udhcp 1.35.0", params: &[1, 3, 6, 12, 15, 28, 42] };
        let udhcpc = dhcp::udhcpc_argv(&camera);
        run(&lab, &d1.ns, 20, &udhcpc.iter().map(String::as_str).collect::<Vec<_>>());
        let leases = fs::read_to_string(dir.path("dnsmasq.leases")).unwrap_or_default();
        assert!(
            leases.contains(&d1.mac) && leases.contains("camera1"),
            "dnsmasq leased to camera1: {leases:?}\n{}",
            dnsmasq.output()
        );
        let answer = run(
            &lab,
            &d1.ns,
            10,
            &["dig", "+short", "+tries=1", "+time=3", &format!("@{}", gw.ip), "cloud.example.test", "A"],
        );
        assert_eq!(answer.trim(), "203.0.113.10", "dnsmasq answered the host record");
        run(&lab, &d1.ns, 10, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "203.0.113.10"]);

        let a = d1.mac.as_str();
        let gwmac = gw.mac.as_str();
        let aip = d1.ip.to_string();
        let dhcp_from_a = |t: &'static str| {
            move |e: &Event| {
                e.kind() == "dhcp"
                    && same(e.s("src_mac"), a)
                    && same(e.s("message_type"), t)
                    && same(e.s("client_mac"), a)
                    && same(e.s("hostname"), "camera1")
                    && num_is(e.n("ip_version"), 4.0)
                    && num_is(e.n("dst_port"), 67.0)
            }
        };
        let (discover, request) = (dhcp_from_a("DISCOVER"), dhcp_from_a("REQUEST"));
        wait_events(
            &events,
            Duration::from_secs(15),
            &["dhcp", "dns"],
            &[
                ("dhcp DISCOVER from device 1 with client_mac and hostname camera1", &discover),
                ("dhcp REQUEST from device 1 with client_mac and hostname camera1", &request),
                ("dhcp OFFER from the gateway to device 1's client_mac", &|e| {
                    e.kind() == "dhcp"
                        && same(e.s("src_mac"), gwmac)
                        && same(e.s("message_type"), "OFFER")
                        && same(e.s("client_mac"), a)
                }),
                ("dhcp ACK from the gateway to device 1's client_mac", &|e| {
                    e.kind() == "dhcp"
                        && same(e.s("src_mac"), gwmac)
                        && same(e.s("message_type"), "ACK")
                        && same(e.s("client_mac"), a)
                }),
                ("dns query from device 1 for cloud.example.test A", &|e| {
                    e.kind() == "dns"
                        && same(e.s("src_mac"), a)
                        && same(e.s("src_ip"), &aip)
                        && num_is(e.n("dst_port"), 53.0)
                        && !e.flag("response")
                        && same(e.s("qname"), "cloud.example.test")
                        && same(e.s("qtype"), "A")
                }),
                ("dns response to device 1 with the A record 203.0.113.10", &|e| {
                    e.kind() == "dns"
                        && same(e.s("src_mac"), gwmac)
                        && same(e.s("dst_mac"), a)
                        && num_is(e.n("src_port"), 53.0)
                        && e.flag("response")
                        && num_is(e.n("rcode"), 0.0)
                        && num_is(e.n("answers"), 1.0)
                        && same(e.s("qname"), "cloud.example.test")
                        && e.records()
                            .iter()
                            .any(|(n, t, d)| n == "cloud.example.test" && t == "A" && d == "203.0.113.10")
                }),
            ],
        );
        wait_report(&agent, "device 1 named camera1 and its peer 203.0.113.10 named cloud.example.test", |r| {
            let dev = device(r, a);
            dev.strs("names").contains(&"camera1")
                && dev["peers"].items().iter().any(|p| {
                    p["ip"].as_str() == Some("203.0.113.10") && p.strs("names").contains(&"cloud.example.test")
                })
        });
        check_metrics(&agent, &[(a, "dhcp"), (a, "dns"), (gwmac, "dhcp"), (gwmac, "dns")]);
        dnsmasq.check_alive();
    }
}
