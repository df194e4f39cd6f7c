//! Findings in replay: a capture the test makes (tests/captures/make_findings.py), one device per
//! rule of issue 12 and one per negative twin, replayed through the kernel program. Every
//! positive device raises its rule and nothing else, every twin raises nothing, and the same
//! capture with every frame written twice raises the same findings. Figures the rules report
//! are checked against tshark's reading of the same file.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use iotwatch_tests::{agent_bin, privileged_test, temp_dir};
use serde_json::Value;

fn mac(n: u8) -> String {
    format!("02:77:00:00:01:{n:02x}")
}

/// (device, the rules it must raise); every device not listed raises nothing.
fn expected() -> BTreeMap<String, BTreeSet<&'static str>> {
    [
        (1, "lateral_movement"),
        (3, "unsolicited_mdns"),
        (6, "ntp_fanout"),
        (8, "firmware_over_http"),
        (10, "cleartext"),
        (12, "gateway_ping"),
        (14, "cloud_initiated"),
        (16, "scan"),
        (18, "new_device"),
        (19, "dns_unreachable"),
    ]
    .into_iter()
    .map(|(n, rule)| (mac(n), BTreeSet::from([rule])))
    .collect()
}

fn replay(file: &Path) -> Value {
    // A small conversation map makes replay poll every 64 frames: the first poll is the
    // baseline of new_device, and the rules over conversations see several polls.
    let out = Command::new(agent_bin())
        .args(["replay", "--format", "json", "--bpf.max-conversations", "256"])
        .arg(file)
        .output()
        .expect("replay");
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn rules_by_device(r: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in r["findings"].as_array().expect("findings") {
        out.entry(f["mac"].as_str().expect("mac").to_owned())
            .or_default()
            .insert(f["rule"].as_str().expect("rule").to_owned());
    }
    out
}

fn finding<'a>(r: &'a Value, rule: &str) -> &'a Value {
    r["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["rule"] == rule)
        .unwrap_or_else(|| panic!("no {rule}"))
}

/// Distinct values of one field over the frames a display filter selects, read by tshark.
fn tshark_distinct(file: &Path, filter: &str, field: &str) -> BTreeSet<String> {
    // Without body reassembly: the capture holds the heads of responses, not their bodies.
    let out = Command::new("tshark")
        .args(["-o", "http.desegment_body:FALSE", "-r"])
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-e", field])
        .output()
        .expect("tshark (cargo xtask setup installs it)");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

privileged_test! {
    fn every_rule_fires_on_its_device_and_no_negative_twin_raises_anything() {
        let dir = temp_dir("iotwatch-findings");
        let made = Command::new("/usr/bin/python3")
            .arg(xtask::workspace_root().join("tests/captures/make_findings.py"))
            .arg(dir.path())
            .output()
            .expect("python3");
        assert!(made.status.success(), "make_findings.py: {}", String::from_utf8_lossy(&made.stderr));
        let file = dir.join("findings.pcap");
        let r = replay(&file);
        let want: BTreeMap<String, BTreeSet<String>> =
            expected().into_iter().map(|(m, rules)| (m, rules.into_iter().map(str::to_owned).collect())).collect();
        assert_eq!(rules_by_device(&r), want, "findings by device (twins: 2, 4, 5, 7, 9, 11, 13, 15, 17, 20, 21)");

        // Evidence: ids of events in the report, and what they were.
        let lateral = finding(&r, "lateral_movement");
        assert_eq!(lateral["details"]["targets"], serde_json::json!(["192.168.77.120:8200"]));
        assert_eq!(lateral["details"]["uris"], serde_json::json!(["/rootDesc.xml"]));
        let ids: BTreeSet<u64> = r["events"].as_array().expect("events").iter().filter_map(|e| e["id"].as_u64()).collect();
        for id in lateral["evidence"].as_array().expect("evidence") {
            assert!(ids.contains(&id.as_u64().expect("id")), "evidence {id} is an event of the report");
        }

        // The figures the rules report, against tshark's reading of the capture.
        let servers = tshark_distinct(&file, "ntp.flags.mode == 3 && eth.src == 02:77:00:00:01:06", "ip.dst");
        assert_eq!(finding(&r, "ntp_fanout")["details"]["servers"].as_u64(), Some(servers.len() as u64));
        let swept = tshark_distinct(&file, "tcp.flags.syn == 1 && tcp.dstport == 23", "ip.dst");
        assert_eq!(finding(&r, "scan")["details"]["hosts"].as_u64(), Some(swept.len() as u64));
        // tshark 4.0 has no field of its own for Content-Range: read it from the header lines.
        let lines = tshark_distinct(&file, "http.response && eth.dst == 02:77:00:00:01:08", "http.response.line");
        let ranges: Vec<&str> = lines.iter().flat_map(|l| l.split(',')).filter(|h| h.starts_with("Content-Range:")).collect();
        assert_eq!(ranges.len(), 3, "{lines:?}");
        assert!(ranges.iter().all(|cr| cr.trim_end_matches("\\r\\n").ends_with("/3145728")), "{ranges:?}");
        let fw = finding(&r, "firmware_over_http");
        assert_eq!((fw["details"]["total_bytes"].as_u64(), fw["details"]["connections"].as_u64()), (Some(3_145_728), Some(3)));
        let mdns = finding(&r, "unsolicited_mdns");
        assert_eq!(mdns["details"]["leaks"], serde_json::json!(["firmware", "model", "serial"]));
        let refused = finding(&r, "dns_unreachable");
        assert_eq!((refused["details"]["refusals"].as_u64(), refused["details"]["servers"][0].as_str()), (Some(3), Some("192.168.77.1")));
        let unreachables = tshark_distinct(&file, "icmp.type == 3 && icmp.code == 3 && udp.dstport == 53", "frame.number");
        assert_eq!(unreachables.len(), 3, "tshark: port unreachables quoting DNS");
        // The kernel samples ICMP unreachables (4: three to device 19, one to 21), never echoes.
        let events = r["events"].as_array().expect("events");
        assert_eq!(events.iter().filter(|e| e["kind"] == "icmp").count(), 4);
        assert!(!events.iter().any(|e| e["src_mac"] == mac(12).as_str()), "device 12's pings are not sampled");
        let cleartext = finding(&r, "cleartext");
        assert!(cleartext["count"].as_u64() >= Some(2), "XML over UDP and MQTT with credentials: {cleartext}");

        // Every frame twice: the same findings, and the download is not counted twice.
        let doubled = replay(&dir.join("findings_doubled.pcap"));
        assert_eq!(rules_by_device(&doubled), want, "the doubled capture");
        let fw2 = finding(&doubled, "firmware_over_http");
        assert_eq!(fw2["details"]["fetched_bytes"], fw["details"]["fetched_bytes"]);
        assert_eq!(fw2["details"]["responses"], fw["details"]["responses"]);
    }
}
