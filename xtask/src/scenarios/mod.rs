//! The lab's finding scenarios: every behaviour the detectors report (issue 12), each on a lab
//! device of its own so that findings are attributed per MAC, and a negative twin for each that
//! must raise nothing, with real daemons as the peers (minidlna, avahi-daemon, chrony, nginx,
//! mosquitto) and xtask/lab/scenarios.py for the rest.
//!
//! [`SCENARIOS`] is the table: device index (position + 1) → scenario → the finding it must
//! raise, or the rules it must not. [`Scenarios`] starts the servers once, then runs each
//! client on a schedule from the main thread's [`Scenarios::tick`] (no threads: children are
//! spawned and reaped), adds the late device, and reports how every client fared.
//! [`traffic_check`] is the independent oracle that a scenario's traffic did happen, from the
//! agent's event log and report (its protocol events and peers, which exist without the
//! detectors); [`verdicts`] compares the report's findings with the table.
//!
//! Bounds: every client runs under `timeout(1)` or has its own deadline, long-running ones end
//! after the lab's duration, servers are children of the lab that are stopped on drop (and
//! killed with their namespace otherwise), and all traffic stays between lab namespaces: the
//! "Internet" is the lab's internet namespace (documentation addresses, 25 more of them on its
//! `lo` for the NTP fan-out), and the scan's /24 has no route beyond it.
//!
//! Files: this one is the table; [`play`] runs the servers and clients; [`judge`] reads what the
//! agent saw and compares it with the table; [`whole`] puts lab, agent, Prometheus and
//! scenarios together (and captures the lab's traffic).

mod judge;
mod play;
mod whole;

use std::{net::Ipv4Addr, time::Duration};

pub use judge::*;
pub use play::*;
pub use whole::*;

/// What a scenario's device must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A finding with this rule, for this device.
    Finding(&'static str),
    /// No finding with any of these rules for this device (a negative twin, or a peer).
    Quiet(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub name: &'static str,
    pub expect: Expect,
    /// One line: what the device does.
    pub what: &'static str,
}

/// The stable rule names of the detectors (issue 12).
pub const RULES: [&str; 10] = [
    "lateral_movement",
    "unsolicited_mdns",
    "ntp_fanout",
    "firmware_over_http",
    "cleartext",
    "gateway_ping",
    "cloud_initiated",
    "new_device",
    "scan",
    "dns_unreachable",
];

const fn finding(name: &'static str, rule: &'static str, what: &'static str) -> Scenario {
    Scenario { name, expect: Expect::Finding(rule), what }
}

const fn quiet(name: &'static str, rules: &'static [&'static str], what: &'static str) -> Scenario {
    Scenario { name, expect: Expect::Quiet(rules), what }
}

/// Device index `i` plays `SCENARIOS[i - 1]`. The last one joins after the agent started.
pub const SCENARIOS: [Scenario; 22] = [
    finding(
        "lateral-movement",
        "lateral_movement",
        "SSDP M-SEARCH, then fetches the answering UPnP device's description over HTTP (port 8200)",
    ),
    quiet("upnp-device", &["lateral_movement"], "minidlna: answers M-SEARCHes, serves its description on 8200"),
    quiet("discovery-only", &["lateral_movement"], "SSDP M-SEARCH, reads the answers, fetches nothing"),
    finding(
        "mdns-announcer",
        "unsolicited_mdns",
        "avahi-daemon announcing its host and a service with md=, sn=, mac=, fw= TXT keys",
    ),
    quiet("mdns-responder", &["unsolicited_mdns"], "answers mDNS queries for iwlab-sensor.local, never announces"),
    quiet(
        "mdns-querier",
        &["unsolicited_mdns", "lateral_movement"],
        "asks for iwlab-sensor.local over mDNS every 10 s",
    ),
    finding("ntp-fanout", "ntp_fanout", "chronyd -Q against 25 NTP servers (198.51.100.100-124)"),
    quiet("ntp-single", &["ntp_fanout"], "chronyd -Q against one NTP server"),
    finding(
        "firmware-http",
        "firmware_over_http",
        "downloads a 2 MiB firmware.bin over plain HTTP in 4 Range requests on 4 connections",
    ),
    quiet("firmware-https", &["firmware_over_http", "cleartext"], "downloads the same firmware.bin over HTTPS"),
    quiet("image-http", &["firmware_over_http"], "downloads a 2 MiB image/jpeg over plain HTTP"),
    finding("mqtt-cleartext", "cleartext", "MQTT CONNECT with user name and password to port 1883, no TLS"),
    quiet("mqtt-tls", &["cleartext"], "the same MQTT CONNECT over TLS (port 8883)"),
    finding("udp-xml", "cleartext", "cleartext XML with serial number, MAC and public IP over UDP every 5 s"),
    finding("telnet", "cleartext", "a Telnet login (user name, password) to an Internet host"),
    finding("gateway-ping", "gateway_ping", "pings the gateway (192.168.77.1) every second"),
    quiet("internet-ping", &["gateway_ping"], "pings an Internet host every second"),
    finding("cloud-initiated", "cloud_initiated", "an Internet host opens TCP to its port 9000 and exchanges bytes"),
    quiet("three-hosts", &["scan", "cloud_initiated"], "HTTP to three Internet hosts every 10 s"),
    finding("telnet-scan", "scan", "one connection attempt to port 23 on each of 203.0.113.1-254"),
    finding(
        "dns-refused",
        "dns_unreachable",
        "asks the gateway for DNS every 10 s; nothing listens there, it answers ICMP port unreachable",
    ),
    finding(
        "new-device",
        "new_device",
        "joins the bridge 40 s after the agent started (past the 30 s in which a first start learns its devices), then fetches a status",
    ),
];

/// Index of the device that joins late (the last of the table).
pub const LATE_DEVICE: usize = SCENARIOS.len();
/// Devices present when the agent starts.
pub const EARLY_DEVICES: usize = SCENARIOS.len() - 1;
/// When the late device joins, after the scenarios started.
pub const LATE_JOIN: Duration = Duration::from_secs(40);
/// The NTP servers of the fan-out: 198.51.100.100 and the next ones, on the internet's `lo`.
pub const FANOUT_SERVERS: u8 = 25;
/// Size of firmware.bin and photo.jpg.
pub const DOWNLOAD_BYTES: usize = 2 * 1024 * 1024;
/// How long the first round of every scenario takes (the late device's first fetch is the
/// last, at 41 s): a run shorter than this has not shown everything.
pub const FIRST_ROUND: Duration = Duration::from_secs(45);

const MDNS_NAME: &str = "iwlab-sensor.local";
const MQTT_USER: &str = "iwlab";
const MQTT_PASSWORD: &str = "iwlab-mqtt-pw";
const ST_MEDIA_SERVER: &str = "urn:schemas-upnp-org:device:MediaServer:1";

/// The scenario of device `index` (1-based).
pub fn scenario(index: usize) -> Option<&'static Scenario> {
    index.checked_sub(1).and_then(|i| SCENARIOS.get(i))
}

/// Index of the scenario with this name.
pub fn index_of(name: &str) -> Option<usize> {
    SCENARIOS.iter().position(|s| s.name == name).map(|i| i + 1)
}

fn idx(name: &str) -> usize {
    index_of(name).unwrap_or_else(|| panic!("no scenario {name}"))
}

/// The alert of a rule in deploy/prometheus: `lateral_movement` → `IotwatchLateralMovement`.
pub fn alert_name(rule: &str) -> String {
    let mut s = String::from("Iotwatch");
    for part in rule.split('_') {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            s.extend(first.to_uppercase());
            s.push_str(c.as_str());
        }
    }
    s
}

fn internet_host(i: usize) -> Ipv4Addr {
    crate::lab::INTERNET_HOSTS[i]
}

fn fanout_server(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 100 + i)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::lab::device_mac;

    #[test]
    fn table_is_consistent() {
        let names: BTreeSet<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SCENARIOS.len(), "scenario names are unique");
        for s in &SCENARIOS {
            let rules: Vec<&str> = match s.expect {
                Expect::Finding(r) => vec![r],
                Expect::Quiet(r) => r.to_vec(),
            };
            for r in rules {
                assert!(RULES.contains(&r), "{}: unknown rule {r}", s.name);
            }
        }
        // Every rule has a positive scenario.
        for r in RULES {
            assert!(SCENARIOS.iter().any(|s| s.expect == Expect::Finding(r)), "no scenario raises {r}");
        }
        assert_eq!(scenario(LATE_DEVICE).map(|s| s.name), Some("new-device"));
        assert_eq!(device_of(&device_mac(7)), Some(7));
        assert_eq!(device_of("02:77:00:00:00:02"), None);
    }

    #[test]
    fn alert_names() {
        assert_eq!(alert_name("lateral_movement"), "IotwatchLateralMovement");
        assert_eq!(alert_name("firmware_over_http"), "IotwatchFirmwareOverHttp");
        assert_eq!(alert_name("scan"), "IotwatchScan");
    }

    #[test]
    fn traffic_checks_read_events_and_peers() {
        let mac = device_mac(idx("ntp-fanout"));
        let events: Vec<Value> = (0..21)
            .map(|i| serde_json::json!({"kind": "ntp", "src_mac": mac, "dst_ip": format!("198.51.100.{}", 100 + i), "mode": 3}))
            .collect();
        let report = serde_json::json!({"devices": []});
        assert!(traffic_check(idx("ntp-fanout"), &report, &events).is_ok());
        assert!(traffic_check(idx("ntp-single"), &report, &events).is_err());
        let mac = device_mac(idx("gateway-ping"));
        let report = serde_json::json!({"devices": [{"mac": mac, "peers": [{"ip": "192.168.77.1", "packets": 40}]}]});
        assert!(traffic_check(idx("gateway-ping"), &report, &[]).is_ok());
    }

    #[test]
    fn verdicts_compare_findings_with_the_table() {
        let report = serde_json::json!({"devices": [], "findings": [
            {"id": "1", "rule": "ntp_fanout", "mac": device_mac(idx("ntp-fanout")), "summary": "25 servers"},
            {"id": "2", "rule": "ntp_fanout", "mac": device_mac(idx("ntp-single")), "summary": "1 server"},
        ]});
        let v = verdicts(&report, &[]);
        assert!(v[idx("ntp-fanout") - 1].findings_ok);
        assert!(!v[idx("ntp-single") - 1].findings_ok, "a negative twin raised its rule");
        let f = report_findings(&report);
        assert!(describe(&f[1]).contains("FALSE ALARM"), "{}", describe(&f[1]));
        let mut w = FindingWatch::default();
        assert_eq!(w.new_findings(&f).len(), 2);
        assert_eq!(w.new_findings(&f).len(), 0);
    }

    #[test]
    fn files() {
        let j = jpeg_like(4096);
        assert_eq!((j.len(), &j[..3], &j[j.len() - 2..]), (4096, &[0xFF, 0xD8, 0xFF][..], &[0xFF, 0xD9][..]));
        let r = pseudo_random(65536, 1);
        let printable = r.iter().filter(|b| b.is_ascii_graphic()).count();
        assert!(printable < 65536 / 2, "binary, not text: {printable}");
    }
}
