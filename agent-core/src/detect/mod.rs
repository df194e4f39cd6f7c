//! Detectors: the talk's findings, and what a home network box is expected to alarm on, as
//! logic over typed events and conversation deltas. Each rule lives here once; the report, the
//! event log, `/metrics` and the Prometheus rules only carry its findings.
//!
//! - [`discovery`], `lateral_movement` (discovery, then HTTP to other LAN hosts) and
//!   `unsolicited_mdns` (answers to no question, with what they leak).
//! - [`ntp`], `ntp_fanout`.
//! - [`firmware`], `firmware_over_http`, Range downloads over many connections joined.
//! - [`cleartext`], Telnet, MQTT without TLS, identifiers in HTTP requests, text to the Internet.
//! - [`conversations`], `scan`, `cloud_initiated`, `gateway_ping`, `large_upload`, from deltas.
//! - [`unreachable`], `dns_unreachable` (DNS queries answered with ICMP port unreachable).
//! - [`presence`], `new_device` and each device's last-seen time (offline rules use it).
//! - [`destinations`], `new_destination` (a country or provider a device never talked to).
//!
//! Findings are deduplicated here: one finding per device and rule per window, with a count;
//! the store is bounded and counts what it had to drop.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
};

use serde::Serialize;

use crate::{
    events::Event, identity::Identities, ledger::Delta, mac::Mac, oui::Oui, peerdb::PeerDb, scope::ScopeClassifier,
};

pub mod cleartext;
pub mod conversations;
pub mod destinations;
pub mod discovery;
pub mod firmware;
pub mod ntp;
pub mod presence;
pub mod unreachable;

/// A rule's stable name is its identity in the report, the event log, the metrics and alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    LateralMovement,
    UnsolicitedMdns,
    NtpFanout,
    FirmwareOverHttp,
    Cleartext,
    GatewayPing,
    CloudInitiated,
    NewDevice,
    Scan,
    LargeUpload,
    DnsUnreachable,
    NewDestination,
}

impl Rule {
    pub const ALL: [Rule; 12] = [
        Rule::LateralMovement,
        Rule::UnsolicitedMdns,
        Rule::NtpFanout,
        Rule::FirmwareOverHttp,
        Rule::Cleartext,
        Rule::GatewayPing,
        Rule::CloudInitiated,
        Rule::NewDevice,
        Rule::Scan,
        Rule::LargeUpload,
        Rule::DnsUnreachable,
        Rule::NewDestination,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::LateralMovement => "lateral_movement",
            Rule::UnsolicitedMdns => "unsolicited_mdns",
            Rule::NtpFanout => "ntp_fanout",
            Rule::FirmwareOverHttp => "firmware_over_http",
            Rule::Cleartext => "cleartext",
            Rule::GatewayPing => "gateway_ping",
            Rule::CloudInitiated => "cloud_initiated",
            Rule::NewDevice => "new_device",
            Rule::Scan => "scan",
            Rule::LargeUpload => "large_upload",
            Rule::DnsUnreachable => "dns_unreachable",
            Rule::NewDestination => "new_destination",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::serialize_as_text!(Rule);

/// Thresholds and windows, each a `--detect.*` flag of the agent (defaults in the README).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// One finding per device and rule within this many seconds; more occurrences raise its count.
    pub window_s: f64,
    /// HTTP to another LAN host within this many seconds of the device's discovery.
    pub lateral_window_s: f64,
    /// More distinct NTP servers than this within `window_s`.
    pub ntp_servers: usize,
    /// A binary download (by its Content-Type) of at least this many bytes is firmware even
    /// without a firmware-like name.
    pub firmware_min_bytes: u64,
    /// Distinct hosts, or distinct ports of one host, opened within `scan_window_s`.
    pub scan_hosts: usize,
    pub scan_ports: usize,
    pub scan_window_s: f64,
    /// Echo requests to the gateway, over at least three polls, that make a periodic ping.
    pub ping_min_packets: u64,
    /// Bytes sent to one Internet peer within `window_s`.
    pub upload_bytes: u64,
    /// Conversations first seen this soon after the start may have begun before it: their first
    /// direction is unknown, so `cloud_initiated` leaves them alone. With no known devices
    /// remembered, `new_device` learns the devices present for this long.
    pub startup_grace_s: f64,
    /// What a device talks to in its first this many seconds on the Internet is what it
    /// normally talks to (`new_destination`).
    pub destination_baseline_s: f64,
}

impl Config {
    /// The defaults (the flags' defaults too).
    pub const DEFAULT: Config = Config {
        window_s: 3600.0,
        lateral_window_s: 300.0,
        ntp_servers: 10,
        firmware_min_bytes: 256 * 1024,
        scan_hosts: 64,
        scan_ports: 64,
        scan_window_s: 60.0,
        ping_min_packets: 10,
        upload_bytes: 512 << 20,
        startup_grace_s: 30.0,
        destination_baseline_s: 3600.0,
    };
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Findings kept for the report; older ones leave first and are counted.
pub const MAX_FINDINGS: usize = 2_000;
/// (rule, device) pairs counted on their own; see [`Findings::raised`].
pub const MAX_RAISED: usize = 16_384;
/// Evidence (event ids and excerpts) kept per finding.
pub const MAX_EVIDENCE: usize = 16;
/// Devices each detector keeps state for; past it the stalest device's state is dropped.
pub const MAX_DEVICES: usize = 4_096;

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub id: u64,
    /// When the finding was first raised, and when it was last raised again within its window.
    pub ts: f64,
    pub last_ts: f64,
    pub rule: Rule,
    pub mac: Mac,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub summary: String,
    /// Occurrences within the window (1 when first raised).
    pub count: u64,
    /// The rule's own fields, the latest state of what it saw in the window.
    pub details: serde_json::Value,
    /// Ids of the events that raised it (`id` in the event log and the report's events); empty
    /// for rules over counted conversations, whose evidence is in `excerpts` alone.
    pub evidence: Vec<u64>,
    /// What those events said, or what the counters saw, one short line each.
    pub excerpts: Vec<String>,
}

/// What a detector found: the store decides whether it is a new finding or one more occurrence.
#[derive(Clone, Debug)]
pub struct Hit {
    pub rule: Rule,
    pub mac: Mac,
    pub ip: Option<IpAddr>,
    pub ts: f64,
    pub summary: String,
    pub details: serde_json::Value,
    /// (event id, excerpt); id [`COUNTED`] for a line about counted conversations.
    pub evidence: Vec<(u64, String)>,
}

/// The fields of findings' details that are times (seconds since the epoch).
pub const TIME_DETAILS: [&str; 2] = ["discovery_ts", "since"];

/// The "event id" of evidence that is what the counters saw, not an event (events count from 1).
pub const COUNTED: u64 = 0;

/// One line of a conversation as evidence: who to whom, how much, since when.
pub(crate) fn counted(d: &Delta, clock: crate::clock::Clock) -> (u64, String) {
    let (src, dst) = crate::ledger::conv_ips(&d.key)
        .map_or_else(|| ("-".to_owned(), "-".to_owned()), |(s, t)| (s.to_string(), t.to_string()));
    let proto = crate::ledger::protocol_name(&d.key);
    let ports = if matches!(proto, "tcp" | "udp") {
        (format!(":{}", d.key.src_port), format!(":{}", d.key.dst_port))
    } else {
        (String::new(), String::new())
    };
    // How long, not since when: a clock jump moves the finding's times, never its text.
    let span = clock.seconds(d.last_seen_ns) - clock.seconds(d.first_seen_ns);
    (
        COUNTED,
        format!(
            "{src}{} -> {dst}{} {proto}: {} packets, {} bytes in {span:.0} s",
            ports.0, ports.1, d.packets, d.bytes
        ),
    )
}

/// The findings, deduplicated per device and rule within the window, and bounded.
#[derive(Debug, Default)]
pub struct Findings {
    list: VecDeque<Finding>,
    /// Open finding per (rule, device): its id.
    open: HashMap<(Rule, Mac), u64>,
    next_id: u64,
    /// Findings raised per rule and device since the start (the metric's source), for at most
    /// [`MAX_RAISED`] pairs; the rest per rule in `raised_folded` (a flood of spoofed MACs would
    /// otherwise grow it without end).
    pub raised: BTreeMap<(Rule, Mac), u64>,
    pub raised_folded: BTreeMap<Rule, u64>,
    /// Findings that left the report for room.
    pub dropped: u64,
    /// New findings not yet taken by the event log.
    fresh: Vec<u64>,
}

impl Findings {
    pub fn list(&self) -> impl Iterator<Item = &Finding> {
        self.list.iter()
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Finding> {
        // Ids grow with the list's order: a binary search finds it.
        let i = self.list.binary_search_by_key(&id, |f| f.id).ok()?;
        self.list.get_mut(i)
    }

    fn add(&mut self, hit: Hit, window_s: f64) {
        if let Some(&id) = self.open.get(&(hit.rule, hit.mac))
            && let Some(f) = self.get_mut(id)
            && hit.ts - f.ts < window_s
        {
            f.count += 1;
            f.last_ts = f.last_ts.max(hit.ts);
            f.summary = hit.summary;
            f.details = hit.details;
            f.ip = hit.ip.or(f.ip);
            for (id, excerpt) in hit.evidence {
                let known = if id == COUNTED { f.excerpts.contains(&excerpt) } else { f.evidence.contains(&id) };
                if f.excerpts.len() < MAX_EVIDENCE && !known {
                    if id != COUNTED {
                        f.evidence.push(id);
                    }
                    f.excerpts.push(excerpt);
                }
            }
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        let lines: Vec<(u64, String)> = hit.evidence.into_iter().take(MAX_EVIDENCE).collect();
        let evidence = lines.iter().map(|l| l.0).filter(|id| *id != COUNTED).collect();
        let excerpts = lines.into_iter().map(|l| l.1).collect();
        if self.list.len() >= MAX_FINDINGS
            && let Some(old) = self.list.pop_front()
        {
            // Only if it is still the open one: a newer finding of the same device and rule
            // (raised after the window) stays open.
            if self.open.get(&(old.rule, old.mac)) == Some(&old.id) {
                self.open.remove(&(old.rule, old.mac));
            }
            self.dropped += 1;
        }
        if self.raised.len() < MAX_RAISED || self.raised.contains_key(&(hit.rule, hit.mac)) {
            *self.raised.entry((hit.rule, hit.mac)).or_default() += 1;
        } else {
            *self.raised_folded.entry(hit.rule).or_default() += 1;
        }
        self.open.insert((hit.rule, hit.mac), id);
        self.fresh.push(id);
        self.list.push_back(Finding {
            id,
            ts: hit.ts,
            last_ts: hit.ts,
            rule: hit.rule,
            mac: hit.mac,
            ip: hit.ip,
            summary: hit.summary,
            count: 1,
            details: hit.details,
            evidence,
            excerpts,
        });
    }

    /// The wall clock jumped by `delta` seconds: the findings' times move with it, those in
    /// their details too ([`TIME_DETAILS`]).
    pub fn shift_times(&mut self, delta: f64) {
        for f in &mut self.list {
            (f.ts, f.last_ts) = (f.ts + delta, f.last_ts + delta);
            for key in TIME_DETAILS {
                if let Some(v) = f.details.get_mut(key)
                    && let Some(ts) = v.as_f64()
                {
                    *v = (ts + delta).into();
                }
            }
        }
    }

    /// Findings raised since the last call (for the event log), in order.
    pub fn take_fresh(&mut self) -> Vec<Finding> {
        let fresh = std::mem::take(&mut self.fresh);
        fresh.iter().filter_map(|id| self.list.iter().rev().find(|f| f.id == *id).cloned()).collect()
    }
}

/// What detectors read besides the event or deltas in hand.
pub struct Context<'a> {
    pub scopes: &'a ScopeClassifier,
    pub oui: &'a Oui,
    pub identities: &'a Identities,
    /// ASN, country and provider of Internet peers.
    pub peers: &'a PeerDb,
}

/// All detectors, fed by the pipeline: every event, and every poll's deltas.
#[derive(Debug, Default)]
pub struct Detectors {
    pub config: Config,
    pub findings: Findings,
    pub discovery: discovery::Discovery,
    pub ntp: ntp::NtpFanout,
    pub firmware: firmware::Firmware,
    pub cleartext: cleartext::Cleartext,
    pub conversations: conversations::Conversations,
    pub presence: presence::Presence,
    pub unreachable: unreachable::Unreachable,
    pub destinations: destinations::Destinations,
}

impl Detectors {
    pub fn new(config: Config) -> Self {
        Self { config, ..Self::default() }
    }

    pub fn on_event(&mut self, ev: &Event, cx: &Context<'_>) {
        let mut hits = Vec::new();
        self.discovery.on_event(ev, cx, &self.config, &mut hits);
        self.ntp.on_event(ev, &self.config, &mut hits);
        self.firmware.on_event(ev, &self.config, &mut hits);
        self.cleartext.on_event(ev, cx, &mut hits);
        self.unreachable.on_event(ev, &mut hits);
        self.record(hits);
    }

    /// One poll: the conversations' growth, and the per-MAC counters (`now` is wall time).
    pub fn on_poll(
        &mut self,
        deltas: &[Delta],
        macs: &[(Mac, u64)],
        now: f64,
        clock: crate::clock::Clock,
        cx: &Context<'_>,
    ) {
        let mut hits = Vec::new();
        self.conversations.on_poll(deltas, now, clock, cx, &self.config, &mut hits);
        self.presence.on_poll(macs, now, self.config.startup_grace_s, cx, &mut hits);
        self.destinations.on_poll(deltas, clock, cx, &self.config, &mut hits);
        self.record(hits);
    }

    /// The wall clock jumped by `delta` seconds: every time kept moves with it, so that the
    /// windows over events before and after the jump still measure true durations.
    pub fn shift_times(&mut self, delta: f64) {
        self.findings.shift_times(delta);
        self.discovery.shift_times(delta);
        self.ntp.shift_times(delta);
        self.firmware.shift_times(delta);
        self.conversations.shift_times(delta);
        self.presence.shift_times(delta);
        self.unreachable.shift_times(delta);
        self.destinations.shift_times(delta);
    }

    fn record(&mut self, hits: Vec<Hit>) {
        for hit in hits {
            self.findings.add(hit, self.config.window_s);
        }
    }
}

/// One short line for a finding's excerpts: what an event said.
pub(crate) fn excerpt(ev: &Event) -> String {
    let ip = |ip: Option<IpAddr>, port: Option<u16>| match (ip, port) {
        (Some(ip), Some(port)) => format!("{ip}:{port}"),
        (Some(ip), None) => ip.to_string(),
        _ => "-".to_owned(),
    };
    let what = match &ev.fields {
        crate::proto::EventFields::Http(h) => match (&h.method, &h.uri, h.status) {
            (Some(m), uri, _) => format!("{m} {}", uri.as_deref().unwrap_or("?")),
            (None, _, Some(s)) => {
                format!("HTTP {s} {}", h.content_type.as_deref().unwrap_or(""))
            }
            _ => "http".to_owned(),
        },
        crate::proto::EventFields::Ssdp(s) => format!("SSDP {}", s.method),
        f => f.kind().name().to_owned(),
    };
    crate::labels::sanitize(
        &format!("#{} {} -> {} {what}", ev.id, ip(ev.src_ip, ev.src_port), ip(ev.dst_ip, ev.dst_port)),
        160,
    )
}

/// Keeps at most `cap` keys: when a new key needs room, the stalest eighth (by `age`, larger is
/// newer) leaves at once, so that a flood of new keys costs one sort per `cap / 8` of them.
pub(crate) fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    age: impl Fn(&V) -> f64,
) {
    if map.len() < cap {
        return;
    }
    let mut by_age: Vec<(f64, K)> = map.iter().map(|(k, v)| (age(v), k.clone())).collect();
    let n = (cap / 8).clamp(1, by_age.len());
    by_age.select_nth_unstable_by(n - 1, |a, b| a.0.total_cmp(&b.0));
    for (_, k) in by_age.into_iter().take(n) {
        map.remove(&k);
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(rule: Rule, mac: u8, ts: f64, ev: u64) -> Hit {
        Hit {
            rule,
            mac: Mac([2, 0, 0, 0, 0, mac]),
            ip: None,
            ts,
            summary: format!("at {ts}"),
            details: serde_json::json!({"ts": ts}),
            evidence: vec![(ev, format!("#{ev}"))],
        }
    }

    #[test]
    fn one_finding_per_device_and_rule_per_window() {
        let mut f = Findings::default();
        f.add(hit(Rule::Scan, 1, 100.0, 1), 3600.0);
        f.add(hit(Rule::Scan, 1, 200.0, 2), 3600.0);
        f.add(hit(Rule::Scan, 2, 200.0, 3), 3600.0);
        f.add(hit(Rule::NtpFanout, 1, 200.0, 4), 3600.0);
        let list: Vec<_> = f.list().collect();
        assert_eq!(list.len(), 3);
        assert_eq!((list[0].count, list[0].last_ts, list[0].evidence.clone()), (2, 200.0, vec![1, 2]));
        assert_eq!(list[0].details["ts"], 200.0);
        assert_eq!(f.take_fresh().len(), 3);
        assert!(f.take_fresh().is_empty());
        // After the window, a new finding.
        f.add(hit(Rule::Scan, 1, 3700.0, 5), 3600.0);
        assert_eq!(f.list().count(), 4);
        assert_eq!(f.raised[&(Rule::Scan, Mac([2, 0, 0, 0, 0, 1]))], 2);
        assert_eq!(f.take_fresh()[0].ts, 3700.0);
    }

    #[test]
    fn room_is_made_by_dropping_the_stalest() {
        let mut m: HashMap<u32, f64> = (0..16).map(|i| (i, f64::from(i))).collect();
        make_room(&mut m, 16, |v| *v);
        assert_eq!(m.len(), 14);
        assert!(!m.contains_key(&0) && !m.contains_key(&1) && m.contains_key(&2));
        make_room(&mut m, 16, |v| *v);
        assert_eq!(m.len(), 14, "below the cap: nothing leaves");
    }

    #[test]
    fn the_store_is_bounded_and_counts_what_it_dropped() {
        let mut f = Findings::default();
        for i in 0..(MAX_FINDINGS + 10) {
            f.add(hit(Rule::NewDevice, (i % 250) as u8, i as f64 * 10_000.0, i as u64), 3600.0);
        }
        assert_eq!(f.list().count(), MAX_FINDINGS);
        assert_eq!(f.dropped, 10);
        for i in 0..(MAX_EVIDENCE as u64 + 5) {
            f.add(hit(Rule::Scan, 1, 1e9, 100_000 + i), 3600.0);
        }
        let scan = f.list().find(|x| x.rule == Rule::Scan).unwrap();
        assert_eq!((scan.evidence.len(), scan.count), (MAX_EVIDENCE, MAX_EVIDENCE as u64 + 5));
    }

    #[test]
    fn an_old_finding_leaving_for_room_leaves_the_newer_one_of_its_device_open() {
        let mut f = Findings::default();
        f.add(hit(Rule::Scan, 1, 0.0, 1), 3600.0);
        f.add(hit(Rule::Scan, 1, 4000.0, 2), 3600.0); // after the window: a second finding
        for i in 0..(MAX_FINDINGS - 1) {
            f.add(hit(Rule::NewDevice, (i % 250) as u8, i as f64 * 10_000.0, 10 + i as u64), 3600.0);
        }
        assert_eq!(f.dropped, 1, "the first scan finding left");
        f.add(hit(Rule::Scan, 1, 4100.0, 99_999), 3600.0);
        let scans: Vec<_> = f.list().filter(|x| x.rule == Rule::Scan).collect();
        assert_eq!((scans.len(), scans[0].count), (1, 2), "merged into the open one, not a third");
    }
}
