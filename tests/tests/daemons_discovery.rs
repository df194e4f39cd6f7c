//! Real daemons as the peers (the lab: `iotwatch_tests::daemons`): discovery, with avahi-daemon
//! (mDNS) and minidlna (SSDP/UPnP).

use std::{fs, path::Path, time::Duration};

use iotwatch_tests::{daemons::*, privileged_test};
use xtask::metrics::http_get;

// avahi-daemon (no D-Bus, own /run and services dir in a private mount namespace) announces
// its host name and a static service on start.
privileged_test! {
    fn avahi_mdns_announcements() {
        const HOST: &str = "iwd-cam5";
        let lab = lab("iwd5", false);
        let d2 = lab.devices[1].clone();
        let dir = Workdir::new("iwd5");
        let conf = dir.config("avahi-daemon.conf", "avahi-daemon.conf", &[("@HOST@", HOST)]);
        let run_dir = dir.mkdir("run");
        dir.mkdir("run/avahi-daemon");
        let services = dir.mkdir("services");
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("daemons/iwd-camera.service"),
            dir.path("services/iwd-camera.service"),
        )
        .expect("copy service");
        let (agent, events) = start_agent(&lab, &dir, 19485);
        // /run/avahi-daemon (pid, socket) and /etc/avahi/services are compiled-in paths: give this
        // instance its own through bind mounts that only its mount namespace sees.
        let script = format!(
            "mount --bind {run_dir} /run && mount --bind {services} /etc/avahi/services && \
             exec avahi-daemon -f {conf} --no-drop-root --no-chroot --no-rlimits --no-proc-title --debug"
        );
        let mut avahi = Daemon::spawn(
            &lab,
            &d2.ns,
            &dir,
            "avahi-daemon",
            &["unshare", "-m", "--propagation", "private", "sh", "-c", &script],
        );
        wait_listening(&lab, &d2.ns, "-u", 5353, &mut avahi);

        let b = d2.mac.as_str();
        let bip = d2.ip.to_string();
        let fqdn = format!("{HOST}.local");
        let unsolicited_from_b =
            |e: &Event| e.kind() == "mdns" && same(e.s("src_mac"), b) && e.flag("response") && e.flag("unsolicited");
        let events = wait_events(
            &events,
            Duration::from_secs(15),
            &["mdns"],
            &[
                ("unsolicited mdns response from device 2 with A iwd-cam5.local -> its address", &|e| {
                    unsolicited_from_b(e) && e.records().iter().any(|(n, t, d)| *n == fqdn && t == "A" && *d == bip)
                }),
                ("unsolicited mdns response from device 2 announcing the _http._tcp service", &|e| {
                    unsolicited_from_b(e)
                        && e.records().iter().any(|(n, t, d)| {
                            n == "_http._tcp.local" && t == "PTR" && d == "IWD Camera._http._tcp.local"
                        })
                }),
                ("unsolicited mdns response from device 2 with the service's SRV on iwd-cam5.local", &|e| {
                    unsolicited_from_b(e)
                        && e.records()
                            .iter()
                            .any(|(n, t, d)| n == "IWD Camera._http._tcp.local" && t == "SRV" && d.ends_with(&fqdn))
                }),
                ("the service's TXT model=iwd-cam5", &|e| {
                    unsolicited_from_b(e) && e.v.strs("txt").contains(&"model=iwd-cam5")
                }),
                ("mdns probe (query) from device 2 for iwd-cam5.local", &|e| {
                    e.kind() == "mdns"
                        && same(e.s("src_mac"), b)
                        && !e.flag("response")
                        && e.v.strs("names").iter().any(|n| *n == fqdn)
                }),
            ],
        );
        // Nothing but device 2's probes and announcements: avahi sent no query for other names.
        for e in events.iter().filter(|e| e.kind() == "mdns") {
            assert!(
                same(e.s("src_mac"), b) && e.v.strs("names").iter().any(|n| *n == fqdn),
                "unexpected mdns event: {}",
                e.line
            );
        }
        wait_report(&agent, "device 2 named iwd-cam5.local", |r| device(r, b).strs("names").iter().any(|n| *n == fqdn));
        check_metrics(&agent, &[(b, "mdns")]);
        avahi.check_alive();
    }
}

// SSDP/UPnP with minidlna (a real UPnP media server): device 1 discovers it with an M-SEARCH,
// device 2 answers with its LOCATION, device 1 fetches the description (lateral movement).
privileged_test! {
    fn minidlna_ssdp_discovery_and_description() {
        const ST: &str = "urn:schemas-upnp-org:device:MediaServer:1";
        let lab = lab("iwd6", false);
        let (d1, d2) = (lab.devices[0].clone(), lab.devices[1].clone());
        let dir = Workdir::new("iwd6");
        for d in ["media", "db", "log"] {
            dir.mkdir(d);
        }
        let conf = dir.config("minidlna.conf", "minidlna.conf", &[]);
        let (agent, events) = start_agent(&lab, &dir, 19486);
        // -S: stay in the foreground (as under systemd); -P: our own pid file.
        let mut minidlna = Daemon::spawn(
            &lab,
            &d2.ns,
            &dir,
            "minidlna",
            &["minidlnad", "-S", "-f", &conf, "-P", &dir.text("minidlna.pid")],
        );
        wait_listening(&lab, &d2.ns, "-t", 8200, &mut minidlna);
        wait_listening(&lab, &d2.ns, "-u", 1900, &mut minidlna);

        // The lab's control point (the lateral-movement scenario's), without its fetch.
        let script = xtask::workspace_root().join("xtask/lab/scenarios.py").display().to_string();
        let ua = "iwd/1.0 UPnP/1.1 msearch/1.0";
        let locations =
            run(&lab, &d1.ns, 15, &["/usr/bin/python3", &script, "msearch", "--st", ST, "--wait", "3", "--user-agent", ua]);
        let location = format!("http://{}:8200/rootDesc.xml", d2.ip);
        assert!(
            locations.lines().any(|l| l.strip_prefix("location ") == Some(location.as_str())),
            "minidlna answered the M-SEARCH with {location}; got {locations:?}\n{}",
            minidlna.output()
        );
        let desc = run(&lab, &d1.ns, 10, &["curl", "-sS", "--fail", "-A", "iwd-cp/1.0", &location]);
        assert!(desc.contains("IWD Media"), "the description names the device: {desc}");

        let (a, b) = (d1.mac.as_str(), d2.mac.as_str());
        let bip = d2.ip.to_string();
        wait_events(
            &events,
            Duration::from_secs(15),
            &["ssdp", "http"],
            &[
                ("ssdp M-SEARCH from device 1 for the MediaServer type, mx 1", &|e| {
                    e.kind() == "ssdp"
                        && same(e.s("src_mac"), a)
                        && same(e.s("dst_ip"), "239.255.255.250")
                        && num_is(e.n("dst_port"), 1900.0)
                        && same(e.s("method"), "M-SEARCH")
                        && same(e.s("st"), ST)
                        && num_is(e.n("mx"), 1.0)
                        && same(e.s("user_agent"), "iwd/1.0 UPnP/1.1 msearch/1.0")
                }),
                ("ssdp RESPONSE status 200 from device 2 to device 1 with location", &|e| {
                    e.kind() == "ssdp"
                        && same(e.s("src_mac"), b)
                        && same(e.s("dst_mac"), a)
                        && num_is(e.n("src_port"), 1900.0)
                        && same(e.s("method"), "RESPONSE")
                        && num_is(e.n("status"), 200.0)
                        && same(e.s("st"), ST)
                        && same(e.s("location"), &location)
                        && e.s("usn").is_some_and(|u| u.starts_with("uuid:"))
                        && e.s("server").is_some_and(|s| s.contains("UPnP"))
                }),
                ("ssdp NOTIFY ssdp:alive from device 2 with location (minidlna announces on start)", &|e| {
                    e.kind() == "ssdp"
                        && same(e.s("src_mac"), b)
                        && same(e.s("method"), "NOTIFY")
                        && same(e.s("nts"), "ssdp:alive")
                        && same(e.s("location"), &location)
                }),
                ("http GET /rootDesc.xml from device 1 to device 2:8200", &|e| {
                    e.kind() == "http"
                        && same(e.s("src_mac"), a)
                        && same(e.s("dst_ip"), &bip)
                        && num_is(e.n("dst_port"), 8200.0)
                        && same(e.s("method"), "GET")
                        && same(e.s("uri"), "/rootDesc.xml")
                        && same(e.s("user_agent"), "iwd-cp/1.0")
                }),
                ("http 200 response from device 2:8200", &|e| {
                    e.kind() == "http"
                        && same(e.s("src_mac"), b)
                        && num_is(e.n("src_port"), 8200.0)
                        && num_is(e.n("status"), 200.0)
                }),
            ],
        );
        check_metrics(&agent, &[(a, "ssdp"), (b, "ssdp"), (a, "http"), (b, "http")]);
        // The description it served names it; its SSDP answers say its software; the control
        // point's User-Agent is the control point's.
        let r = wait_report(&agent, "device 2 named IWD Media by its UPnP description", |r| {
            let dev = device(r, b);
            dev["name"].as_str() == Some("IWD Media") && dev["name_source"].as_str() == Some("upnp_friendly_name")
        });
        let sources = |mac: &str| -> Vec<(String, String)> {
            device(&r, mac)["name_sources"]
                .items()
                .iter()
                .map(|n| (n["source"].as_str().unwrap_or("").to_owned(), n["name"].as_str().unwrap_or("").to_owned()))
                .collect()
        };
        let (of_b, of_a) = (sources(b), sources(a));
        assert!(
            of_b.iter().any(|(s, n)| s == "upnp_model" && n.contains("MiniDLNA"))
                && of_b.iter().any(|(s, n)| s == "ssdp_server" && n.contains("MiniDLNA"))
                && of_b.iter().any(|(s, n)| s == "ssdp_usn" && n.starts_with("uuid:")),
            "device 2's names: {of_b:?}"
        );
        assert!(of_a.contains(&("http_user_agent".to_owned(), "iwd-cp/1.0".to_owned())), "device 1's names: {of_a:?}");
        assert!(!of_a.iter().any(|(_, n)| n.contains("IWD Media")), "the fetcher is not named by what it fetched");
        let metrics = http_get(&agent.listen, "/metrics", Duration::from_secs(5)).expect("GET /metrics");
        let info = format!(r#"iotwatch_device_info{{mac="{b}",name="IWD Media",name_source="upnp_friendly_name",randomised="true""#);
        assert!(metrics.lines().any(|l| l.starts_with(&info)), "{info} in /metrics");
        minidlna.check_alive();
    }
}
