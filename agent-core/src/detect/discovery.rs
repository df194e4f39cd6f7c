//! The LAN-discovery rules.
//!
//! `lateral_movement`: a device discovers the LAN (SSDP M-SEARCH, WS-Discovery probe, mDNS
//! browsing) and then, within `lateral_window_s`, makes HTTP requests to other LAN hosts on any
//! port: in the talk a camera fetched another host's UPnP description from port 8815. Discovery
//! alone, answering someone else's discovery, or HTTP to the LAN without discovery is not a
//! finding.
//!
//! `unsolicited_mdns`: an mDNS response that answers no question seen on the LAN in the last
//! [`ANSWER_WINDOW_S`] seconds (RFC 6762 responses come within 20-500 ms; mDNS responses carry
//! no questions, so "no question in the message" says nothing). What it advertises is scored by
//! the kinds of private data its TXT records and names carry.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::IpAddr,
};

use serde_json::json;

use super::{Config, Context, Hit, MAX_DEVICES, Rule, excerpt, make_room};
use crate::{
    events::Event,
    mac::Mac,
    proto::{
        EventFields,
        dns::{DnsEvent, RecordData, RecordType},
        ssdp::SsdpMethod,
    },
    scope::Scope,
};

/// A response within this many seconds of a question for one of its names answers it.
pub const ANSWER_WINDOW_S: f64 = 3.0;
/// Questions remembered (the LAN's, all devices together).
const MAX_QUESTIONS: usize = 1024;
/// Targets and URIs listed per device.
const MAX_TARGETS: usize = 64;
/// WS-Discovery (ONVIF cameras, Windows): SOAP over UDP to 239.255.255.250:3702.
const WS_DISCOVERY_PORT: u16 = 3702;

#[derive(Debug, Default)]
struct Discovered {
    ts: f64,
    how: &'static str,
    evidence: (u64, String),
    targets: BTreeSet<(IpAddr, u16)>,
    uris: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct Discovery {
    discovered: HashMap<Mac, Discovered>,
    /// Per device: the kinds of private data its latest unsolicited announcement gave away.
    leak_scores: HashMap<Mac, usize>,
    /// mDNS question names (lowercase) and when they were asked.
    questions: VecDeque<(f64, String)>,
}

/// How an event discovers the LAN, if it does.
fn discovery_kind(ev: &Event) -> Option<&'static str> {
    match &ev.fields {
        EventFields::Ssdp(s) if s.method == SsdpMethod::MSearch => Some("ssdp"),
        // Browsing asks for pointers (service instances); a probe for its own name carries the
        // proposed records in the authority section and is not browsing.
        EventFields::Mdns(d)
            if !d.response
                && d.authority == 0
                && d.qtype.is_some_and(|t| t == RecordType::PTR || t == RecordType(255)) =>
        {
            Some("mdns")
        }
        EventFields::Flow(_) if ev.dst_port == Some(WS_DISCOVERY_PORT) => Some("ws-discovery"),
        _ => None,
    }
}

impl Discovery {
    /// Devices that announced on mDNS unasked, and their latest leak score (0 to 5).
    pub fn leak_scores(&self) -> impl Iterator<Item = (Mac, usize)> + '_ {
        self.leak_scores.iter().map(|(m, s)| (*m, *s))
    }

    pub fn shift_times(&mut self, delta: f64) {
        self.discovered.values_mut().for_each(|d| d.ts += delta);
        self.questions.iter_mut().for_each(|q| q.0 += delta);
    }

    pub fn on_event(&mut self, ev: &Event, cx: &Context<'_>, cfg: &Config, hits: &mut Vec<Hit>) {
        if let Some(how) = discovery_kind(ev) {
            make_room(&mut self.discovered, MAX_DEVICES, |d| d.ts);
            let d = self.discovered.entry(ev.src_mac).or_default();
            if ev.ts - d.ts > cfg.lateral_window_s {
                *d = Discovered::default();
            }
            (d.ts, d.how, d.evidence) = (ev.ts, how, (ev.id, excerpt(ev)));
        }
        match &ev.fields {
            EventFields::Http(h) if h.method.is_some() => self.http_request(ev, h.uri.as_deref(), cx, cfg, hits),
            EventFields::Mdns(d) => self.mdns(ev, d, hits),
            _ => {}
        }
    }

    fn http_request(&mut self, ev: &Event, uri: Option<&str>, cx: &Context<'_>, cfg: &Config, hits: &mut Vec<Hit>) {
        let (Some(dst), Some(port)) = (ev.dst_ip, ev.dst_port) else { return };
        if cx.scopes.of_ip(dst) != Scope::Lan || Some(dst) == ev.src_ip {
            return;
        }
        let Some(d) = self.discovered.get_mut(&ev.src_mac) else { return };
        if ev.ts < d.ts || ev.ts - d.ts > cfg.lateral_window_s {
            return;
        }
        if d.targets.len() < MAX_TARGETS {
            d.targets.insert((dst, port));
        }
        if let Some(uri) = uri
            && d.uris.len() < MAX_TARGETS
        {
            d.uris.insert(crate::labels::sanitize(uri, 256));
        }
        let targets: Vec<String> = d.targets.iter().map(|(ip, port)| format!("{ip}:{port}")).collect();
        hits.push(Hit {
            rule: Rule::LateralMovement,
            mac: ev.src_mac,
            ip: ev.src_ip,
            ts: ev.ts,
            summary: format!(
                "discovered the LAN ({}) and then made HTTP requests to {} other LAN host(s): {}",
                d.how,
                d.targets.iter().map(|t| t.0).collect::<BTreeSet<_>>().len(),
                targets.join(", ")
            ),
            details: json!({
                "discovery": d.how,
                "discovery_ts": d.ts,
                "targets": targets,
                "ports": d.targets.iter().map(|t| t.1).collect::<BTreeSet<_>>(),
                "uris": d.uris,
            }),
            evidence: vec![d.evidence.clone(), (ev.id, excerpt(ev))],
        });
    }

    fn mdns(&mut self, ev: &Event, d: &DnsEvent, hits: &mut Vec<Hit>) {
        while self.questions.front().is_some_and(|(ts, _)| ev.ts - ts > ANSWER_WINDOW_S) {
            self.questions.pop_front();
        }
        if !d.response {
            for name in &d.names {
                if self.questions.len() >= MAX_QUESTIONS {
                    self.questions.pop_front();
                }
                self.questions.push_back((ev.ts, name.trim_end_matches('.').to_ascii_lowercase()));
            }
            return;
        }
        // A unicast answer goes to whoever asked; a legacy (non-5353) querier too.
        let to_group = ev.dst_ip.is_some_and(|ip| ip.is_multicast());
        let owners: BTreeSet<String> =
            d.records.iter().map(|r| r.name.trim_end_matches('.').to_ascii_lowercase()).collect();
        let asked = self
            .questions
            .iter()
            .any(|(_, q)| owners.contains(q) || owners.iter().any(|o| o.ends_with(&format!(".{q}"))));
        if !to_group || asked || ev.dst_port != Some(5353) || d.records.is_empty() {
            return;
        }
        let leak = leaks(d);
        if self.leak_scores.len() < MAX_DEVICES || self.leak_scores.contains_key(&ev.src_mac) {
            self.leak_scores.insert(ev.src_mac, leak.len());
        }
        let blobs: Vec<&String> =
            d.txt.iter().zip(&d.txt_flags).filter(|(_, f)| f.long || f.base64_like).map(|(t, _)| t).collect();
        let summary = if leak.is_empty() {
            format!("announced {} name(s) on mDNS without being asked", d.names.len())
        } else {
            format!(
                "announced on mDNS without being asked, leaking {} ({} of 5 kinds)",
                leak.iter().copied().collect::<Vec<_>>().join(", "),
                leak.len()
            )
        };
        hits.push(Hit {
            rule: Rule::UnsolicitedMdns,
            mac: ev.src_mac,
            ip: ev.src_ip,
            ts: ev.ts,
            summary,
            details: json!({
                "names": d.names.iter().take(MAX_TARGETS).collect::<Vec<_>>(),
                "txt": d.txt.iter().take(MAX_TARGETS).collect::<Vec<_>>(),
                "blobs": blobs,
                "leaks": leak,
                "leak_score": leak.len(),
            }),
            evidence: vec![(ev.id, excerpt(ev))],
        });
    }
}

/// Kinds of private data an mDNS message gives away: by TXT key, by value shape (a MAC address
/// anywhere), and by a person's name in a service instance ("Anna's iPhone").
pub fn leaks(d: &DnsEvent) -> BTreeSet<&'static str> {
    const KEYS: [(&str, &[&str]); 4] = [
        ("model", &["md", "model", "mdl", "ty", "product", "modelname", "am", "rpmd", "model_name"]),
        (
            "serial",
            &["sn", "serial", "serialnumber", "serial_number", "deviceid", "device_id", "id", "uuid", "udn", "hwid"],
        ),
        ("mac", &["mac", "macaddr", "mac_address", "hwaddr", "bssid"]),
        (
            "firmware",
            &[
                "fv",
                "fw",
                "firmware",
                "fwver",
                "fw_version",
                "version",
                "vers",
                "ver",
                "srcvers",
                "osvers",
                "sw",
                "swver",
            ],
        ),
    ];
    let mut out = BTreeSet::new();
    for t in &d.txt {
        let (key, value) = t.split_once('=').unwrap_or((t, ""));
        let key = key.to_ascii_lowercase();
        for (kind, keys) in KEYS {
            if keys.contains(&key.as_str()) && !value.is_empty() {
                out.insert(kind);
            }
        }
        if matches!(key.as_str(), "fn" | "n" | "name" | "friendlyname" | "nm" | "owner") && !value.is_empty() {
            out.insert("user_name");
        }
        if contains_mac(value) {
            out.insert("mac");
        }
    }
    let instance_names = d.records.iter().filter_map(|r| match &r.data {
        RecordData::Name(n) if r.rtype == RecordType::PTR => Some(n.as_str()),
        _ => None,
    });
    if instance_names.chain(d.names.iter().map(String::as_str)).any(|n| n.contains("'s ") || n.contains("\u{2019}s ")) {
        out.insert("user_name");
    }
    out
}

/// Six pairs of hex digits joined by `:` or `-`, anywhere in `s`.
pub(crate) fn contains_mac(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(16)).any(|i| {
        let w = &b[i..i + 17];
        let sep = w[2];
        matches!(sep, b':' | b'-')
            && (0..6).all(|k| w[k * 3].is_ascii_hexdigit() && w[k * 3 + 1].is_ascii_hexdigit())
            && (0..5).all(|k| w[k * 3 + 2] == sep)
    })
}

#[cfg(test)]
mod tests {
    use super::{super::testing::*, *};
    use crate::proto::dns;

    #[test]
    fn discovery_then_a_fetch_from_another_lan_host_is_lateral_movement() {
        let mut t = Bench::default();
        t.event(1.0, CAM, LAN_CAM, 58002, SSDP_GROUP_MAC, SSDP_GROUP, 1900, msearch());
        t.event(1.2, HUB, LAN_HUB, 3075, CAM, LAN_CAM, 58002, ssdp_response());
        assert!(t.findings().is_empty(), "discovery alone is not a finding");
        t.event(1.5, CAM, LAN_CAM, 43412, HUB, LAN_HUB, 8815, http_get("/rootdesc.xml"));
        let f = t.only(Rule::LateralMovement);
        assert_eq!(f.mac, CAM);
        assert_eq!(f.details["targets"], json!(["192.168.77.44:8815"]));
        assert_eq!(f.details["uris"], json!(["/rootdesc.xml"]));
        assert_eq!(f.details["discovery"], "ssdp");
        assert_eq!(f.evidence, vec![1, 3]);
    }

    #[test]
    fn no_lateral_movement_without_discovery_for_answers_or_to_the_internet_or_late() {
        let mut t = Bench::default();
        // The hub answers someone else's discovery and then serves: not its discovery.
        t.event(1.0, HUB, LAN_HUB, 3075, CAM, LAN_CAM, 58002, ssdp_response());
        t.event(1.1, HUB, LAN_HUB, 50000, CAM, LAN_CAM, 80, http_get("/x"));
        // A device that discovers and then talks HTTP to the Internet only.
        t.event(2.0, CAM, LAN_CAM, 58002, SSDP_GROUP_MAC, SSDP_GROUP, 1900, msearch());
        t.event(2.5, CAM, LAN_CAM, 43412, GW, INET, 80, http_get("/x"));
        // Or to the LAN long after its discovery.
        t.event(2.0 + 301.0, CAM, LAN_CAM, 43413, HUB, LAN_HUB, 8815, http_get("/late"));
        assert!(t.findings().is_empty(), "{:?}", t.findings());
    }

    #[test]
    fn an_mdns_probe_for_its_own_name_is_not_browsing() {
        let probe = DnsEvent {
            qtype: Some(RecordType(255)),
            authority: 1,
            names: vec!["cam.local".into()],
            ..Default::default()
        };
        let mut t = Bench::default();
        t.event(1.0, CAM, LAN_CAM, 5353, MDNS_GROUP_MAC, MDNS_GROUP, 5353, EventFields::Mdns(probe));
        t.event(1.5, CAM, LAN_CAM, 43412, HUB, LAN_HUB, 8815, http_get("/rootdesc.xml"));
        assert!(t.findings().is_empty());
        let browse =
            DnsEvent { qtype: Some(RecordType::PTR), names: vec!["_http._tcp.local".into()], ..Default::default() };
        t.event(2.0, CAM, LAN_CAM, 5353, MDNS_GROUP_MAC, MDNS_GROUP, 5353, EventFields::Mdns(browse));
        t.event(2.5, CAM, LAN_CAM, 43412, HUB, LAN_HUB, 8815, http_get("/rootdesc.xml"));
        assert_eq!(t.only(Rule::LateralMovement).details["discovery"], "mdns");
    }

    fn announcement() -> DnsEvent {
        // A camera like the talk's: a person's name in the instance, model, serial, firmware and
        // MAC in TXT.
        let txt: Vec<String> =
            ["md=IPC-A22", "sn=A1B2C3D4E5", "fv=2.1.7", "id=80:9F:9B:45:A3:28", "c#=2"].map(String::from).to_vec();
        let inst = "Anna's Camera._hap._tcp.local".to_owned();
        DnsEvent {
            response: true,
            answers: 2,
            names: vec!["_hap._tcp.local".into(), inst.clone()],
            records: vec![
                dns::DnsRecord {
                    name: "_hap._tcp.local".into(),
                    rtype: RecordType::PTR,
                    data: RecordData::Name(inst.clone()),
                    ttl: 4500,
                    cache_flush: false,
                },
                dns::DnsRecord {
                    name: inst,
                    rtype: RecordType::TXT,
                    data: RecordData::Txt(txt.clone()),
                    ttl: 4500,
                    cache_flush: true,
                },
            ],
            txt_flags: vec![dns::TxtFlags::default(); txt.len()],
            txt,
            ..Default::default()
        }
    }

    #[test]
    fn the_talks_ewelink_announcement_leaks_its_id_and_a_blob() {
        let d = dns::parse(&crate::proto::fixtures::mdns_announcement(), false).unwrap();
        let mut t = Bench::default();
        t.event(1.0, CAM, LAN_CAM, 5353, MDNS_GROUP_MAC, MDNS_GROUP, 5353, EventFields::Mdns(d));
        let f = t.only(Rule::UnsolicitedMdns);
        assert_eq!(f.details["leaks"], json!(["serial"]));
        assert_eq!(f.details["blobs"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn an_announcement_nobody_asked_for_is_unsolicited_with_its_leaks() {
        let mut t = Bench::default();
        t.event(1.0, CAM, LAN_CAM, 5353, MDNS_GROUP_MAC, MDNS_GROUP, 5353, EventFields::Mdns(announcement()));
        let f = t.only(Rule::UnsolicitedMdns);
        assert_eq!(f.details["leaks"], json!(["firmware", "mac", "model", "serial", "user_name"]));
        assert_eq!(f.details["leak_score"], 5);
        assert_eq!(t.det.discovery.leak_scores().collect::<Vec<_>>(), [(CAM, 5)]);
        assert!(f.summary.contains("5 of 5"), "{}", f.summary);
    }

    #[test]
    fn an_answer_to_a_question_is_not_unsolicited() {
        let mut t = Bench::default();
        let q = DnsEvent {
            qtype: Some(RecordType::PTR),
            names: vec!["_hap._tcp.local".into()],
            questions: 1,
            ..Default::default()
        };
        t.event(1.0, HUB, LAN_HUB, 5353, MDNS_GROUP_MAC, MDNS_GROUP, 5353, EventFields::Mdns(q));
        t.event(1.1, CAM, LAN_CAM, 5353, MDNS_GROUP_MAC, MDNS_GROUP, 5353, EventFields::Mdns(announcement()));
        assert!(t.findings().is_empty());
        // The same announcement later, with the question forgotten, is unsolicited.
        t.event(10.0, CAM, LAN_CAM, 5353, MDNS_GROUP_MAC, MDNS_GROUP, 5353, EventFields::Mdns(announcement()));
        assert_eq!(t.only(Rule::UnsolicitedMdns).ts, 10.0);
    }

    #[test]
    fn macs_are_found_in_values() {
        assert!(contains_mac("id=80:9F:9B:45:A3:28"));
        assert!(contains_mac("x 80-9f-9b-45-a3-28 y"));
        assert!(!contains_mac("80:9F:9B:45:A3"));
        assert!(!contains_mac("2.1.7"));
    }
}
