//! Real daemons as the peers (the lab: `iotwatch_tests::daemons`): chrony, NTP.

use std::time::Duration;

use iotwatch_tests::{daemons::*, privileged_test};

// chrony: a real NTP server (chronyd -x, local stratum 8) on two Internet addresses, and a
// real client (chronyd -Q) on device 1.
privileged_test! {
    fn chrony_ntp_client_and_server() {
        let lab = lab("iwd3", false);
        let d1 = lab.devices[0].clone();
        let inet = lab.internet.ns.clone();
        let dir = Workdir::new("iwd3");
        let server_conf = dir.config("chrony-server.conf", "chrony-server.conf", &[]);
        let client_conf = dir.config("chrony-client.conf", "chrony-client.conf", &[]);
        let (agent, events) = start_agent(&lab, &dir, 19483);
        let mut chronyd =
            Daemon::spawn(&lab, &inet, &dir, "chronyd-server", &["chronyd", "-x", "-d", "-f", &server_conf]);
        wait_listening(&lab, &inet, "-u", 123, &mut chronyd);
        // Let the local reference settle before the client asks.
        std::thread::sleep(Duration::from_millis(500));
        // -Q: measure the offset once and exit, never setting the clock; -t bounds it.
        run(&lab, &d1.ns, 30, &["chronyd", "-Q", "-t", "20", "-f", &client_conf]);

        let a = d1.mac.as_str();
        let aip = d1.ip.to_string();
        let servers = ["203.0.113.10", "198.51.100.10"];
        let client_to = |server: &'static str| {
            move |e: &Event| {
                e.kind() == "ntp"
                    && same(e.s("src_mac"), a)
                    && same(e.s("dst_ip"), server)
                    && num_is(e.n("dst_port"), 123.0)
                    && num_is(e.n("mode"), 3.0)
                    && num_is(e.n("version"), 4.0)
            }
        };
        let server_from = |server: &'static str| {
            let aip = aip.clone();
            move |e: &Event| {
                e.kind() == "ntp"
                    && same(e.s("src_ip"), server)
                    && same(e.s("dst_ip"), &aip)
                    && same(e.s("dst_mac"), a)
                    && num_is(e.n("src_port"), 123.0)
                    && num_is(e.n("mode"), 4.0)
                    && num_is(e.n("stratum"), 8.0)
            }
        };
        let (c0, c1, s0, s1) =
            (client_to(servers[0]), client_to(servers[1]), server_from(servers[0]), server_from(servers[1]));
        let events = wait_events(
            &events,
            Duration::from_secs(15),
            &["ntp"],
            &[
                ("ntp mode 3 version 4 from device 1 to 203.0.113.10", &c0),
                ("ntp mode 3 version 4 from device 1 to 198.51.100.10", &c1),
                ("ntp mode 4 stratum 8 from 203.0.113.10 to device 1", &s0),
                ("ntp mode 4 stratum 8 from 198.51.100.10 to device 1", &s1),
            ],
        );
        // Every answer is one of the server's: nothing but mode 3 out and mode 4 back.
        for e in events.iter().filter(|e| e.kind() == "ntp") {
            let mode = e.n("mode");
            assert!(mode == Some(3.0) || mode == Some(4.0), "unexpected ntp mode: {}", e.line);
        }
        wait_report(&agent, "device 1's ntp_servers listing both servers", |r| {
            let got = device(r, a).strs("ntp_servers");
            servers.iter().all(|s| got.contains(s))
        });
        check_metrics(&agent, &[(a, "ntp"), (lab.gateway.mac.as_str(), "ntp")]);
        chronyd.check_alive();
    }
}
