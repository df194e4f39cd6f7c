//! Real daemons as the peers (the lab: `iotwatch_tests::daemons`): dnsmasq, DHCP and DNS.

use std::{fs, time::Duration};

use iotwatch_core::peerdb::mmdb_writer::{MmdbWriter, Value};
use iotwatch_tests::{daemons::*, privileged_test};
use xtask::{HomeLab, dhcp, metrics::http_get};

/// The test Internet's peer databases, made here: 203.0.113.0/24 is Amazon's (ASN 16509) in
/// the US by an ASN CSV, and a country MMDB in ip-location-db's layout says so; the other test
/// ranges are elsewhere. Returns the agent's flags for them.
fn peer_dbs(dir: &Workdir) -> Vec<String> {
    let asn = dir.path("asn.csv");
    fs::write(
        &asn,
        "198.51.100.0,198.51.100.255,45102,Alibaba (US) Technology Co. Ltd.\n203.0.113.0,203.0.113.255,16509,\"Amazon.com, Inc.\"\n",
    )
    .expect("write the ASN CSV");
    let country = dir.path("country.mmdb");
    let mut w = MmdbWriter::new("iotwatch-test-country");
    for (cidr, cc) in [("198.51.100.0/24", "CN"), ("203.0.113.0/24", "US"), ("192.0.2.0/24", "DE")] {
        w.insert_cidr(cidr, &Value::ip_location_db_country(cc)).expect("a test range");
    }
    w.write(&country).expect("write the country MMDB");
    vec![
        "--enrich.asn-db".into(),
        asn.display().to_string(),
        "--enrich.country-db".into(),
        country.display().to_string(),
    ]
}

/// dnsmasq on the gateway: DHCP for 192.168.77.100-150, and DNS with cloud.example.test.
fn dnsmasq(lab: &HomeLab, dir: &Workdir) -> Daemon {
    let gw = &lab.gateway;
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
    let mut dnsmasq = Daemon::spawn(lab, &gw.ns, dir, "dnsmasq", &args);
    wait_listening(lab, &gw.ns, "-u", 67, &mut dnsmasq);
    wait_listening(lab, &gw.ns, "-u", 53, &mut dnsmasq);
    dnsmasq
}

/// busybox udhcpc in `ns`: DISCOVER, REQUEST with hostname camera1; its script is /bin/true,
/// which keeps the lab's address (the lease is not applied).
fn udhcpc(lab: &HomeLab, ns: &str) {
    let camera =
        dhcp::DhcpIdentity { hostname: "camera1", vendor_class: "udhcp 1.35.0", params: &[1, 3, 6, 12, 15, 28, 42] };
    let udhcpc = dhcp::udhcpc_argv(&camera);
    run(lab, ns, 20, &udhcpc.iter().map(String::as_str).collect::<Vec<_>>());
}

// dnsmasq on the gateway: DHCP with a hostname, DNS for an Internet name, names in the report.
privileged_test! {
    fn dnsmasq_dhcp_and_dns() {
        let lab = lab("iwd2", false);
        let d1 = lab.devices[0].clone();
        let gw = lab.gateway.clone();
        let dir = Workdir::new("iwd2");
        let dbs = peer_dbs(&dir);
        let dbs: Vec<&str> = dbs.iter().map(String::as_str).collect();
        let (agent, events) = start_agent_with(&lab, &dir, 19482, &dbs);
        let mut dnsmasq = dnsmasq(&lab, &dir);
        udhcpc(&lab, &d1.ns);
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
        // The peer the device resolved and pinged: who holds it and where, by the test's databases.
        let r = wait_report(&agent, "device 1's peer 203.0.113.10 with its ASN, organisation, country, provider", |r| {
            device(r, a)["peers"].items().iter().any(|p| p["ip"].as_str() == Some("203.0.113.10") && !p["asn"].is_null())
        });
        let dev = device(&r, a);
        assert_eq!((dev["name"].as_str(), dev["name_source"].as_str()), (Some("camera1"), Some("dhcp_hostname")));
        let peer = dev["peers"].items().iter().find(|p| p["ip"].as_str() == Some("203.0.113.10")).expect("the peer");
        assert_eq!(
            (peer["asn"].as_u64(), peer["org"].as_str(), peer["country"].as_str(), peer["provider"].as_str()),
            (Some(16509), Some("Amazon.com, Inc."), Some("US"), Some("Amazon")),
            "{peer}"
        );
        let lan = dev["peers"].items().iter().find(|p| p["scope"].as_str() == Some("lan")).expect("a LAN peer");
        assert!(lan["asn"].is_null() && lan["country"].is_null(), "LAN peers are nobody's: {lan}");
        let metrics = http_get(&agent.listen, "/metrics", Duration::from_secs(5)).expect("GET /metrics");
        for want in [
            format!(r#"iotwatch_device_country_packets_total{{country="US",direction="tx",mac="{a}"}} "#),
            format!(r#"iotwatch_device_provider_packets_total{{direction="tx",mac="{a}",provider="Amazon"}} "#),
            format!(r#"iotwatch_device_info{{mac="{a}",name="camera1",name_source="dhcp_hostname","#),
            r#"iotwatch_peerdb_entries{kind="asn"} 2"#.to_owned(),
        ] {
            assert!(metrics.lines().any(|l| l.starts_with(&want)), "{want}... in /metrics");
        }
        dnsmasq.check_alive();
    }
}

// Names survive a restart: the agent learns a DHCP hostname, exits, starts again on the same
// state directory and names the device before it says anything; a corrupted state file is set
// aside and the agent starts without it.
privileged_test! {
    fn names_survive_a_restart() {
        let lab = lab("iwd8", false);
        let d1 = lab.devices[0].clone();
        let dir = Workdir::new("iwd8");
        let state = dir.path("state");
        fs::create_dir_all(&state).expect("state dir");
        let state_arg = state.display().to_string();
        let with_state = ["--state.dir", state_arg.as_str()];
        let a = d1.mac.as_str();
        let gw_ip = lab.gateway.ip.to_string();
        let ping = || run(&lab, &d1.ns, 10, &["ping", "-c", "2", "-i", "0.2", "-W", "2", &gw_ip]);
        let named = |r: &Json| {
            let dev = device(r, a);
            dev["name"].as_str() == Some("camera1") && dev["name_source"].as_str() == Some("dhcp_hostname")
        };
        {
            let (mut agent, _) = start_agent_with(&lab, &dir, 19488, &with_state);
            let mut dnsmasq = dnsmasq(&lab, &dir);
            udhcpc(&lab, &d1.ns);
            ping();
            wait_report(&agent, "device 1 named camera1 by its DHCP hostname", |r| named(r));
            dnsmasq.check_alive();
            agent.stop().expect("the agent exits cleanly, saving its state");
        }
        let saved = fs::read_to_string(state.join("identities.json")).expect("identities.json written at exit");
        assert!(saved.contains("iotwatch.identities/v1") && saved.contains("camera1"), "{saved}");

        // No DHCP this time: only a ping, and the name is there.
        {
            let (mut agent, _) = start_agent_with(&lab, &dir, 19488, &with_state);
            ping();
            wait_report(&agent, "device 1 still named camera1 after the restart", |r| named(r));
            agent.stop().expect("clean exit");
        }

        fs::write(state.join("identities.json"), b"{\"schema\": \"iotwatch.identities/v1\", \"devi").expect("corrupt it");
        // And a peer database that is not there: one warning, and the agent runs without it.
        let missing = dir.path("no-such-asn.csv").display().to_string();
        let args = [with_state[0], with_state[1], "--enrich.asn-db", missing.as_str()];
        let (mut agent, _) = start_agent_with(&lab, &dir, 19488, &args);
        ping();
        let r = wait_report(&agent, "device 1 counted after the corrupt state file", |r| {
            r["devices"].items().iter().any(|d| d["mac"].as_str() == Some(a))
        });
        assert_eq!(device(&r, a)["name_source"].as_str(), Some("mac"), "no name remembered");
        assert!(state.join("identities.json.bad").exists(), "the corrupt file is set aside");
        let log = fs::read_to_string(dir.path("agent.log")).unwrap_or_default();
        assert!(log.contains("identities.json is unusable") && log.contains("set aside"), "a warning says so: {log}");
        let warning: Vec<&str> = log.lines().filter(|l| l.contains(&missing)).collect();
        assert!(
            warning.len() == 1 && warning[0].contains("WARN") && warning[0].contains("--enrich.asn-db"),
            "one warning names the missing database and the flag: {log}"
        );
        agent.stop().expect("clean exit");
    }
}
