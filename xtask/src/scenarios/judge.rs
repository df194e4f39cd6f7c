//! Reading what the agent saw (event log, report, Prometheus) and judging it against the table.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::*;
use crate::{lab::device_ip, metrics};

// ---------------------------------------------------------------------------------------------
// Reading what the agent saw

/// Complete lines of an NDJSON event log; lines that are not JSON are skipped.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    complete.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The agent's live report.
pub fn report(listen: &str) -> Result<Value> {
    let body = metrics::http_get(listen, "/api/v1/report", Duration::from_secs(5))?;
    serde_json::from_str(&body).context("the report is not JSON")
}

pub(super) fn st<'a>(e: &'a Value, k: &str) -> &'a str {
    e[k].as_str().unwrap_or("")
}

pub(super) fn num(e: &Value, k: &str) -> f64 {
    e[k].as_f64().unwrap_or(f64::NAN)
}

/// A finding as the report and the event log give it (issue 12's contract).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub id: String,
    pub rule: String,
    pub mac: String,
    pub summary: String,
}

impl Finding {
    pub fn from_json(v: &Value) -> Self {
        let id = match &v["id"] {
            Value::String(s) => s.clone(),
            Value::Null => format!("{}-{}-{}", st(v, "rule"), st(v, "mac"), v["ts"]),
            other => other.to_string(),
        };
        Self { id, rule: st(v, "rule").to_owned(), mac: st(v, "mac").to_owned(), summary: st(v, "summary").to_owned() }
    }
}

/// The report's findings.
pub fn report_findings(report: &Value) -> Vec<Finding> {
    report["findings"].as_array().into_iter().flatten().map(Finding::from_json).collect()
}

/// The event log's `"kind": "finding"` lines.
pub fn logged_findings(events: &[Value]) -> Vec<Finding> {
    events.iter().filter(|e| st(e, "kind") == "finding").map(Finding::from_json).collect()
}

/// Device index of a scenario device's MAC (the table's identities).
pub fn device_of(mac: &str) -> Option<usize> {
    SCENARIOS.iter().position(|s| s.identity.mac.eq_ignore_ascii_case(mac)).map(|i| i + 1)
}

/// One line for a finding: rule, device and scenario, what the table says of it, summary.
pub fn describe(f: &Finding) -> String {
    let (who, verdict) = match device_of(&f.mac).and_then(|i| scenario(i).map(|s| (i, s))) {
        Some((i, s)) => {
            let verdict = match s.expect {
                Expect::Finding(r) if r == f.rule => "expected",
                Expect::Quiet(rules) if rules.contains(&f.rule.as_str()) => "FALSE ALARM (negative twin)",
                _ => "not in the table",
            };
            (format!("d{i} {}", s.name), verdict)
        }
        None => (f.mac.clone(), "not a scenario device"),
    };
    format!("{:<18} {:<21} {} [{verdict}] {}", f.rule, who, f.mac, f.summary)
}

/// Prints each finding once, as it first appears.
#[derive(Debug, Default)]
pub struct FindingWatch {
    seen: BTreeSet<String>,
}

impl FindingWatch {
    /// The findings not shown before.
    pub fn new_findings(&mut self, findings: &[Finding]) -> Vec<Finding> {
        findings.iter().filter(|f| self.seen.insert(f.id.clone())).cloned().collect()
    }
}

/// One scenario's result: did its traffic happen, and did the findings match the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub device: usize,
    pub scenario: &'static str,
    pub expect: Expect,
    pub traffic: Result<String, String>,
    /// Rules of the device's findings in the report.
    pub rules: Vec<String>,
    pub findings_ok: bool,
}

/// Every scenario's verdict from the report and the event log.
pub fn verdicts(report: &Value, events: &[Value]) -> Vec<Verdict> {
    let findings = report_findings(report);
    SCENARIOS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let device = i + 1;
            let mac = device_mac(device);
            let rules: Vec<String> = findings
                .iter()
                .filter(|f| f.mac == mac)
                .map(|f| f.rule.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let findings_ok = match s.expect {
                Expect::Finding(r) => rules.iter().any(|x| x == r),
                Expect::Quiet(no) => !rules.iter().any(|x| no.contains(&x.as_str())),
            };
            Verdict {
                device,
                scenario: s.name,
                expect: s.expect,
                traffic: traffic_check(device, report, events),
                rules,
                findings_ok,
            }
        })
        .collect()
}

/// The verdicts as a table.
pub fn verdict_table(v: &[Verdict]) -> String {
    let mut out =
        format!("  {:<4} {:<17} {:<42} {:<7} {:<30} {}\n", "dev", "scenario", "expects", "traffic", "findings", "");
    for x in v {
        let expects = match x.expect {
            Expect::Finding(r) => r.to_owned(),
            Expect::Quiet(rules) => format!("no {}", rules.join(",")),
        };
        let traffic = if x.traffic.is_ok() { "ok" } else { "MISSING" };
        let found = if x.rules.is_empty() { "-".to_owned() } else { x.rules.join(",") };
        out.push_str(&format!(
            "  d{:<3} {:<17} {:<42} {:<7} {:<30} {}\n",
            x.device,
            x.scenario,
            expects,
            traffic,
            found,
            if x.findings_ok { "ok" } else { "WRONG" }
        ));
        if let Err(e) = &x.traffic {
            out.push_str(&format!("        traffic: {e}\n"));
        }
    }
    out
}

/// Whether the agent knows device `device` as its identity in the table says (independent of the
/// detectors, like [`traffic_check`]): its vendor from the OUI (none for the randomised phone),
/// its DHCP hostname and mDNS host name among its names in the report, and a DHCP DISCOVER or
/// REQUEST from it with its hostname, vendor class and parameter request list in the event log.
pub fn identity_check(device: usize, report: &Value, events: &[Value]) -> Result<String, String> {
    let Some(id) = identity(device) else { return Err(format!("no identity for device {device}")) };
    let Some(dev) = device_json(report, id.mac) else { return Err(format!("{} is not in the report", id.mac)) };
    let vendor = dev["vendor"].as_str();
    let names: Vec<&str> = dev["names"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut problems = Vec::new();
    let want_vendor = (!id.vendor.is_empty()).then_some(id.vendor);
    if vendor != want_vendor {
        problems.push(format!("vendor {vendor:?}, want {want_vendor:?}"));
    }
    let mdns = id.mdns.map(|m| format!("{}.local", m.host));
    for want in std::iter::once(id.dhcp.hostname).chain(mdns.as_deref()) {
        if !names.contains(&want) {
            problems.push(format!("no name {want}"));
        }
    }
    let params = id.dhcp.params.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
    let dhcp = events.iter().any(|e| {
        st(e, "kind") == "dhcp"
            && st(e, "src_mac") == id.mac
            && matches!(st(e, "message_type"), "DISCOVER" | "REQUEST")
            && st(e, "hostname") == id.dhcp.hostname
            && st(e, "vendor_class") == id.dhcp.vendor_class
            && st(e, "param_list") == params
    });
    if !dhcp {
        problems.push(format!(
            "no DHCP DISCOVER or REQUEST with hostname {}, vendor class {:?}, options {params}",
            id.dhcp.hostname, id.dhcp.vendor_class
        ));
    }
    // The display name: its DHCP hostname, unless a UPnP description it served named it.
    let (name, source) = (dev["name"].as_str().unwrap_or(""), dev["name_source"].as_str().unwrap_or(""));
    if !((source == "dhcp_hostname" && name == id.dhcp.hostname)
        || (source == "upnp_friendly_name" && !name.is_empty()))
    {
        problems.push(format!("shown as {name:?} from {source:?}, want its DHCP hostname or UPnP friendly name"));
    }
    let seen = format!("shown as {name:?} ({source}), vendor {}, names {names:?}", vendor.unwrap_or("none"));
    if problems.is_empty() { Ok(seen) } else { Err(format!("{}; {seen}", problems.join("; "))) }
}

/// One line per scenario device: its identity as the agent knows it, and a count at the end.
pub fn identity_table_seen(report: &Value, events: &[Value]) -> String {
    let mut out = String::new();
    let mut ok = 0;
    for (i, sc) in SCENARIOS.iter().enumerate() {
        let r = identity_check(i + 1, report, events);
        ok += usize::from(r.is_ok());
        let (mark, detail) = match &r {
            Ok(d) => ("ok     ", d),
            Err(d) => ("MISSING", d),
        };
        out.push_str(&format!("  d{:<3} {:<17} {} {mark} {detail}\n", i + 1, sc.name, sc.identity.mac));
    }
    out.push_str(&format!("  {ok} of {} devices known as their identity says\n", SCENARIOS.len()));
    out
}

/// Whether the report's Internet peers carry what the lab's peer databases say of them
/// ([`LAB_NETWORKS`]: ASN, organisation, country, and the provider the agent makes of the ASN),
/// for every device, and whether peers of every provider of the lab were seen. Peers outside
/// the lab's networks (the uplink's 198.18.0.0/24) are not looked at.
pub fn peer_db_check(report: &Value) -> Result<String, String> {
    let mut by_provider: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for d in report["devices"].as_array().into_iter().flatten() {
        for p in d["peers"].as_array().into_iter().flatten().filter(|p| st(p, "scope") == "internet") {
            let Some(net) = st(p, "ip").parse().ok().and_then(lab_network) else { continue };
            let got = (p["asn"].as_u64(), p["org"].as_str(), p["country"].as_str(), p["provider"].as_str());
            let want = (Some(u64::from(net.asn)), Some(net.org), Some(net.country), Some(net.provider));
            if got == want {
                *by_provider.entry(format!("{} {}", net.provider, net.country)).or_default() += 1;
            } else {
                wrong.push(format!("{} of {}: {got:?}, want {want:?}", st(p, "ip"), st(d, "mac")));
            }
        }
    }
    let providers: BTreeSet<String> = LAB_NETWORKS.iter().map(|n| format!("{} {}", n.provider, n.country)).collect();
    let missing: Vec<&String> = providers.iter().filter(|p| !by_provider.contains_key(*p)).collect();
    let seen = format!("peers (device, Internet address) per provider and country: {by_provider:?}");
    if wrong.is_empty() && missing.is_empty() {
        Ok(seen)
    } else {
        let shown = &wrong[..wrong.len().min(5)];
        Err(format!("{} wrong, first {shown:?}; no peer of {missing:?}; {seen}", wrong.len()))
    }
}

fn device_json<'a>(report: &'a Value, mac: &str) -> Option<&'a Value> {
    report["devices"].as_array()?.iter().find(|d| st(d, "mac") == mac)
}

fn peers(report: &Value, mac: &str) -> Vec<Value> {
    device_json(report, mac).and_then(|d| d["peers"].as_array().cloned()).unwrap_or_default()
}

fn peer<'a>(peers: &'a [Value], ip: &str) -> Option<&'a Value> {
    peers.iter().find(|p| st(p, "ip") == ip)
}

/// The independent oracle: did scenario `device`'s traffic happen, as the agent's protocol events
/// and per-peer counts (which exist without any detector) show? Ok says what was seen.
pub fn traffic_check(device: usize, report: &Value, events: &[Value]) -> Result<String, String> {
    let Some(sc) = scenario(device) else { return Err(format!("no scenario for device {device}")) };
    let mac = device_mac(device);
    let ip = device_ip(device).to_string();
    let from = |kind: &str| -> Vec<&Value> {
        events.iter().filter(|e| st(e, "kind") == kind && st(e, "src_mac") == mac).collect()
    };
    let to = |kind: &str| -> Vec<&Value> {
        events.iter().filter(|e| st(e, "kind") == kind && st(e, "dst_mac") == mac).collect()
    };
    let need = |ok: bool, what: String| if ok { Ok(what) } else { Err(what) };
    let all_peers = peers(report, &mac);
    let peer_bytes = |ip: &str| peer(&all_peers, ip).map_or(0.0, |p| num(p, "bytes"));
    let h = |i: usize| internet_host(i).to_string();
    let msearch = |e: &&Value| st(e, "method") == "M-SEARCH";
    match sc.name {
        "lateral-movement" => {
            let upnp = device_ip(idx("upnp-device")).to_string();
            let searched = from("ssdp").iter().any(msearch);
            let fetched = from("http")
                .iter()
                .any(|e| st(e, "method") == "GET" && st(e, "dst_ip") == upnp && num(e, "dst_port") == 8200.0);
            need(
                searched && fetched,
                format!("M-SEARCH sent: {searched}; GET of the description from {upnp}:8200: {fetched}"),
            )
        }
        "upnp-device" => {
            let answered = from("ssdp").iter().any(|e| st(e, "method") == "RESPONSE");
            let served = from("http").iter().any(|e| num(e, "status") == 200.0 && num(e, "src_port") == 8200.0);
            need(answered && served, format!("SSDP answers sent: {answered}; description served on 8200: {served}"))
        }
        "discovery-only" => {
            let searched = from("ssdp").iter().any(msearch);
            let answered = to("ssdp").iter().any(|e| st(e, "method") == "RESPONSE");
            let fetched = from("http").len();
            need(
                searched && answered && fetched == 0,
                format!("M-SEARCH sent: {searched}; answer received: {answered}; HTTP requests: {fetched} (want 0)"),
            )
        }
        "mdns-announcer" => {
            let ann: Vec<&Value> =
                from("mdns").into_iter().filter(|e| e["response"] == true && e["unsolicited"] == true).collect();
            let txt = ann
                .iter()
                .any(|e| e["txt"].as_array().is_some_and(|t| t.iter().any(|x| x.as_str() == Some("sn=IWLAB0001234"))));
            need(txt, format!("{} unsolicited mDNS responses, one with TXT sn=IWLAB0001234: {txt}", ann.len()))
        }
        "mdns-responder" => {
            let querier = device_mac(idx("mdns-querier"));
            let queries: Vec<f64> = events
                .iter()
                .filter(|e| st(e, "kind") == "mdns" && st(e, "src_mac") == querier && e["response"] != true)
                .map(|e| num(e, "ts"))
                .collect();
            let answers: Vec<f64> =
                from("mdns").iter().filter(|e| e["response"] == true).map(|e| num(e, "ts")).collect();
            let unprompted = answers.iter().filter(|t| !queries.iter().any(|q| *q <= **t && **t - *q < 1.0)).count();
            need(
                !answers.is_empty() && unprompted == 0,
                format!(
                    "{} mDNS answers, {unprompted} without a query from the querier in the second before",
                    answers.len()
                ),
            )
        }
        "mdns-querier" => {
            let asked = from("mdns").iter().filter(|e| e["response"] != true).count();
            let responder = device_mac(idx("mdns-responder"));
            let answered = events
                .iter()
                .filter(|e| st(e, "kind") == "mdns" && st(e, "src_mac") == responder && e["response"] == true)
                .count();
            need(asked > 0 && answered > 0, format!("{asked} mDNS queries sent, {answered} answers from the responder"))
        }
        "ntp-fanout" | "ntp-single" => {
            let servers: BTreeSet<&str> =
                from("ntp").iter().filter(|e| num(e, "mode") == 3.0).map(|e| st(e, "dst_ip")).collect();
            let want = if sc.name == "ntp-fanout" { servers.len() >= 20 } else { servers.len() == 1 };
            need(want, format!("NTP client requests to {} distinct servers", servers.len()))
        }
        "firmware-http" => {
            let ranges: BTreeSet<&str> = from("http")
                .iter()
                .filter(|e| st(e, "uri") == "/fw/firmware.bin" && !st(e, "range").is_empty())
                .map(|e| st(e, "range"))
                .collect();
            let partials = to("http")
                .iter()
                .filter(|e| num(e, "status") == 206.0 && st(e, "content_type") == "application/octet-stream")
                .count();
            let bytes = peer_bytes(&h(2));
            need(
                ranges.len() >= 4 && partials >= 1 && bytes >= DOWNLOAD_BYTES as f64,
                format!(
                    "{} distinct Range requests, {partials} 206 octet-stream responses seen, {bytes} bytes with {}",
                    ranges.len(),
                    h(2)
                ),
            )
        }
        "firmware-https" => {
            let hellos = from("tls").iter().filter(|e| num(e, "dst_port") == 443.0).count();
            let http = from("http").len();
            let bytes = peer_bytes(&h(0));
            need(
                hellos > 0 && http == 0 && bytes >= DOWNLOAD_BYTES as f64,
                format!("{hellos} ClientHellos to 443, {http} HTTP events (want 0), {bytes} bytes with {}", h(0)),
            )
        }
        "image-http" => {
            let got = from("http").iter().any(|e| st(e, "uri") == "/media/photo.jpg");
            let jpeg = to("http").iter().any(|e| st(e, "content_type") == "image/jpeg");
            let bytes = peer_bytes(&h(2));
            need(
                got && bytes >= DOWNLOAD_BYTES as f64,
                format!("GET /media/photo.jpg: {got}; image/jpeg response seen: {jpeg}; {bytes} bytes with {}", h(2)),
            )
        }
        "mqtt-cleartext" => {
            let connects = from("mqtt")
                .iter()
                .filter(|e| {
                    st(e, "packet_type") == "CONNECT" && e["has_credentials"] == true && num(e, "dst_port") == 1883.0
                })
                .count();
            need(connects > 0, format!("{connects} MQTT CONNECTs with credentials to port 1883"))
        }
        "mqtt-tls" => {
            let hellos = from("tls").iter().filter(|e| num(e, "dst_port") == 8883.0).count();
            let mqtt = from("mqtt").len();
            need(
                hellos > 0 && mqtt == 0,
                format!("{hellos} ClientHellos to 8883, {mqtt} cleartext MQTT events (want 0)"),
            )
        }
        "udp-xml" => {
            let text = events
                .iter()
                .filter(|e| {
                    st(e, "src_mac") == mac
                        && st(e, "dst_ip") == h(0)
                        && num(e, "dst_port") == 5000.0
                        && st(e, "payload_class") == "text"
                })
                .count();
            need(text > 0, format!("{text} text payloads to {}:5000", h(0)))
        }
        "telnet" => {
            let sent = events
                .iter()
                .filter(|e| st(e, "src_mac") == mac && st(e, "dst_ip") == h(2) && num(e, "dst_port") == 23.0)
                .count();
            need(sent > 0, format!("{sent} sampled payloads to {}:23", h(2)))
        }
        "gateway-ping" | "internet-ping" => {
            let gw = peer(&all_peers, "192.168.77.1").map_or(0.0, |p| num(p, "packets"));
            let inet = peer(&all_peers, &h(0)).map_or(0.0, |p| num(p, "packets"));
            let ok = if sc.name == "gateway-ping" { gw >= 20.0 } else { inet >= 20.0 && gw == 0.0 };
            need(ok, format!("packets with the gateway: {gw}; with {}: {inet}", h(0)))
        }
        "cloud-initiated" => {
            let p = peer(&all_peers, &h(0));
            let inbound = p.is_some_and(|p| st(p, "first_direction") == "inbound");
            let bytes = p.map_or(0.0, |p| num(p, "bytes"));
            let opened =
                events.iter().any(|e| st(e, "src_ip") == h(0) && st(e, "dst_ip") == ip && num(e, "dst_port") == 9000.0);
            need(
                inbound && bytes > 0.0 && opened,
                format!(
                    "peer {} first seen inbound: {inbound}, {bytes} bytes; payload from it to port 9000 seen: {opened}",
                    h(0)
                ),
            )
        }
        "three-hosts" => {
            let internet: BTreeSet<&str> =
                all_peers.iter().filter(|p| st(p, "scope") == "internet").map(|p| st(p, "ip")).collect();
            let want: BTreeSet<String> = (0..3).map(h).collect();
            let ok = internet.len() == 3 && want.iter().all(|w| internet.contains(w.as_str()));
            need(ok, format!("Internet peers: {internet:?}"))
        }
        "telnet-scan" => {
            let swept = all_peers.iter().filter(|p| st(p, "ip").starts_with("203.0.113.")).count();
            need(swept >= 254, format!("{swept} peers in 203.0.113.0/24 (want 254)"))
        }
        "dns-refused" => {
            let refused =
                to("icmp").iter().filter(|e| num(e, "original_dst_port") == 53.0 && st(e, "reason") == "port").count();
            need(refused > 0, format!("{refused} ICMP port unreachables quoting its DNS queries"))
        }
        "new-destination" | "same-cloud" => {
            // Its cloud from the start, the later host first past the baseline (which starts at
            // its first conversation with the Internet), nothing else on the Internet.
            let later = if sc.name == "new-destination" { h(3) } else { h(2) };
            let internet: BTreeSet<&str> =
                all_peers.iter().filter(|p| st(p, "scope") == "internet").map(|p| st(p, "ip")).collect();
            let first = all_peers
                .iter()
                .filter(|p| st(p, "scope") == "internet")
                .map(|p| num(p, "first_ts"))
                .fold(f64::INFINITY, f64::min);
            let after = peer(&all_peers, &later).map_or(f64::NAN, |p| num(p, "first_ts") - first);
            let hellos = from("tls").iter().filter(|e| st(e, "dst_ip") == later && num(e, "dst_port") == 443.0).count();
            let baseline = DESTINATION_BASELINE.as_secs_f64();
            let only = internet.len() == 2 && internet.contains(h(0).as_str()) && internet.contains(later.as_str());
            need(
                peer_bytes(&h(0)) > 0.0 && peer_bytes(&later) > 0.0 && hellos > 0 && after >= baseline && only,
                format!(
                    "{} bytes with {}, {} with {later} ({hellos} ClientHellos to it), first {after:.1} s after its \
                     first Internet peer (baseline {baseline} s); Internet peers: {internet:?}",
                    peer_bytes(&h(0)),
                    h(0),
                    peer_bytes(&later)
                ),
            )
        }
        "new-device" => {
            let seen = device_json(report, &mac).is_some();
            let fetched = from("http").iter().any(|e| st(e, "method") == "GET");
            need(seen && fetched, format!("in the report: {seen}; its HTTP GET seen: {fetched}"))
        }
        other => Err(format!("no traffic check for {other}")),
    }
}
