//! Events in replay: the talk's findings, as a capture the test makes itself
//! (tests/captures/make_talk.py), come out of `iotwatch replay` as the right events, names and
//! NTP servers, with nothing lost.

use std::process::Command;

use iotwatch_tests::{agent_bin, privileged_test, temp_dir};
use serde_json::Value;

fn replay_talk() -> Value {
    let dir = temp_dir("iotwatch-talk");
    let script = xtask::workspace_root().join("tests/captures/make_talk.py");
    let made = Command::new("/usr/bin/python3").arg(&script).arg(dir.path()).output().expect("python3");
    assert!(made.status.success(), "make_talk.py: {}", String::from_utf8_lossy(&made.stderr));
    let out = Command::new(agent_bin())
        .args(["replay", "--format", "json"])
        .arg(dir.join("talk.pcap"))
        .output()
        .expect("replay");
    drop(dir);
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn events<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    r["events"].as_array().expect("events").iter().filter(|e| e["kind"] == kind).collect()
}

fn device<'a>(r: &'a Value, mac: &str) -> &'a Value {
    r["devices"].as_array().expect("devices").iter().find(|d| d["mac"] == mac).unwrap_or_else(|| panic!("device {mac}"))
}

const CAM: &str = "80:9f:9b:45:a3:28";

privileged_test! {
    fn the_talks_findings_come_out_as_events() {
        let r = replay_talk();
        assert_eq!(r["schema"], "iotwatch.report/v1");

        // Discovery, the answer from port 3075, and the description fetch: lateral movement.
        let ssdp = events(&r, "ssdp");
        assert_eq!(ssdp.len(), 2);
        assert_eq!(
            (ssdp[0]["method"].as_str(), ssdp[0]["src_mac"].as_str(), ssdp[0]["st"].as_str()),
            (Some("M-SEARCH"), Some(CAM), Some("upnp:rootdevice"))
        );
        assert_eq!(
            (ssdp[1]["method"].as_str(), ssdp[1]["src_port"].as_u64(), ssdp[1]["dst_port"].as_u64()),
            (Some("RESPONSE"), Some(3075), Some(58002))
        );
        assert_eq!(ssdp[1]["location"], "http://192.168.77.44:8815/rootdesc.xml");
        let http = events(&r, "http");
        assert_eq!(http.len(), 2);
        assert_eq!(
            (http[0]["method"].as_str(), http[0]["uri"].as_str(), http[0]["dst_port"].as_u64()),
            (Some("GET"), Some("/rootdesc.xml"), Some(8815))
        );
        assert_eq!((http[1]["status"].as_u64(), http[1]["content_type"].as_str()), (Some(200), Some("text/xml")));

        // NTP fan-out: three client requests, one answer; the device's NTP servers.
        let ntp = events(&r, "ntp");
        assert_eq!(ntp.iter().filter(|e| e["mode"] == 3).count(), 3);
        assert_eq!(ntp.iter().filter(|e| e["mode"] == 4 && e["stratum"] == 2).count(), 1);
        assert_eq!(
            device(&r, CAM)["ntp_servers"],
            serde_json::json!(["192.0.2.123", "198.51.100.123", "203.0.113.123"])
        );

        // Cleartext to the cloud, told apart from binary.
        let flows = events(&r, "flow");
        let class_to = |ip: &str| {
            flows.iter().find(|e| e["dst_ip"] == ip).map(|e| e["payload_class"].as_str().unwrap_or_default().to_owned())
        };
        assert_eq!(class_to("198.51.100.60").as_deref(), Some("text"));
        assert_eq!(class_to("203.0.113.84").as_deref(), Some("binary"));

        // Names: the DHCP hostname names the camera, DNS and SNI name its cloud peer, mDNS the hub.
        let dhcp = events(&r, "dhcp");
        assert_eq!(
            (dhcp[0]["hostname"].as_str(), dhcp[0]["client_mac"].as_str(), dhcp[0]["message_type"].as_str()),
            (Some("e25105525"), Some(CAM), Some("REQUEST"))
        );
        assert_eq!(dhcp.len(), 2);
        assert_eq!(
            (
                dhcp[1]["ip_version"].as_u64(),
                dhcp[1]["message_type"].as_str(),
                dhcp[1]["client_mac"].as_str(),
                dhcp[1]["param_list"].as_str()
            ),
            (Some(6), Some("SOLICIT"), Some(CAM), Some("23,24"))
        );
        assert_eq!(device(&r, CAM)["names"], serde_json::json!(["e25105525"]));
        let dns = events(&r, "dns");
        assert_eq!(dns.len(), 2);
        assert_eq!(dns[1]["records"][0]["data"], "203.0.113.80");
        let tls = events(&r, "tls");
        assert_eq!(
            (tls[0]["sni"].as_str(), tls[0]["versions"][0].as_str()),
            (Some("dev.cloud.example.com"), Some("TLS1.3"))
        );
        let cloud = device(&r, CAM)["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["ip"] == "203.0.113.80")
            .expect("cloud peer");
        assert_eq!(cloud["names"], serde_json::json!(["dev.cloud.example.com"]));
        assert_eq!((cloud["scope"].as_str(), cloud["first_direction"].as_str()), (Some("internet"), Some("outbound")));
        let mdns = events(&r, "mdns");
        assert_eq!((mdns[0]["unsolicited"].as_bool(), mdns[0]["response"].as_bool()), (Some(true), Some(true)));
        assert_eq!(device(&r, "02:77:00:00:00:14")["names"], serde_json::json!(["hub-1.local"]));

        // MQTT with credentials on port 31006: their presence, never their value.
        let mqtt = events(&r, "mqtt");
        assert_eq!((mqtt[0]["client_id"].as_str(), mqtt[0]["has_credentials"].as_bool()), (Some("cam1"), Some(true)));
        assert!(
            !r.to_string().contains("hunter2\\u0000") && !serde_json::to_string(&mqtt).unwrap().contains("hunter2")
        );

        // Nothing lost, nothing unreadable.
        let a = &r["agent"];
        assert_eq!(
            (
                a["samples"].as_u64(),
                a["samples_dropped"].as_u64(),
                a["samples_suppressed"].as_u64(),
                a["parse_errors"].as_u64()
            ),
            (Some(17), Some(0), Some(0), Some(0))
        );
        assert_eq!(r["events"].as_array().unwrap().len(), 17);
    }
}

privileged_test! {
    /// Replay reads the maps every quarter of their capacity (here every 16 and every 16,384
    /// frames); a conversation's first packets must be sampled once, as live, not again after
    /// every read.
    fn a_long_conversation_is_sampled_as_flow_only_at_its_start() {
        let dir = temp_dir("iotwatch-long");
        let pcap = dir.join("long.pcap");
        let script = format!(
            "from scapy.all import *\npk=[]\nfor i in range(5000):\n    p=Ether(src='02:77:00:00:00:11',dst='02:77:00:00:00:01')/IP(src='192.168.77.11',dst='203.0.113.10')/UDP(sport=27091,dport=6000)/Raw(bytes([i%256])*40)\n    p.time=1600000000+i*0.001\n    pk.append(p)\nwrpcap('{}', pk)\n",
            pcap.display()
        );
        let made = Command::new("/usr/bin/python3").args(["-c", &script]).output().expect("python3");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        for capacity in ["64", "65536"] {
            let out = Command::new(agent_bin())
                .args(["replay", "--format", "json", "--bpf.max-conversations", capacity])
                .arg(&pcap)
                .output()
                .expect("replay");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
            assert_eq!(events(&r, "flow").len(), 2, "capacity {capacity}: the first two packets with payload only");
            let sender =
                r["macs"].as_array().unwrap().iter().find(|m| m["mac"] == "02:77:00:00:00:11").expect("sender");
            assert_eq!(sender["tx_packets"], 5000, "capacity {capacity}");
            assert_eq!(r["agent"]["conversation_evictions"], 0, "capacity {capacity}");
        }
    }
}
