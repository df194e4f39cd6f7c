//! Rules over conversation deltas (what the kernel counted), not over samples. Times are the
//! conversations' own first- and last-seen times, so a rule judges alike however often the
//! maps are polled (every few seconds live, every few thousand frames in replay).
//!
//! - `scan`: a device opens conversations to at least `scan_hosts` distinct hosts, or to
//!   `scan_ports` distinct ports of one host, within `scan_window_s` (the Telnet sweeps of IoT
//!   botnets on 23/2323). Only conversations the device opened count: from its LAN address, and
//!   from a source port at or above the destination port (a server's answers go from its
//!   service port to clients' higher ephemeral ports).
//! - `cloud_initiated`: an Internet host opens a conversation to a LAN device: the inbound
//!   direction was seen first, and toward a port of the device below the Internet side's (a
//!   service port; a push on a connection the device opened goes to its ephemeral port).
//!   Conversations first seen within `startup_grace_s` of the first one may predate the start.
//! - `gateway_ping`: ICMP from a device to the gateway's LAN address, at least
//!   `ping_min_packets` over at least [`PING_MIN_SPAN_S`]; the period and bytes per day. The
//!   gateway is the MAC that frames to Internet addresses go to.
//! - `large_upload`: more than `upload_bytes` sent to one Internet host within `window_s`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use agent_common::wire::ip_proto;
use serde_json::json;

use super::{Config, Context, Hit, MAX_DEVICES, Rule, counted, make_room};
use crate::{
    bounded::{Generations, hash_capacity},
    clock::Clock,
    ledger::{Delta, conv_ips},
    mac::Mac,
    scope::Scope,
};

/// Pings must span at least this long to be called periodic.
pub const PING_MIN_SPAN_S: f64 = 20.0;
/// Targets remembered per device for `scan`.
const MAX_TARGETS: usize = 8192;
/// MACs remembered as where Internet-bound frames go (the gateway is the busiest).
const MAX_GATEWAYS: usize = 64;
/// Conversations whose first direction was judged, remembered so each is judged once.
const MAX_JUDGED: usize = hash_capacity(65_536);

/// A conversation between a LAN device and an Internet host: device MAC, its address and port,
/// the Internet host's address and port, IP protocol.
type LanInternet = (Mac, IpAddr, u16, IpAddr, u16, u8);

/// A poll's deltas between the LAN and the Internet, each with whether it came from the Internet
/// side: sorted by conversation, they give each conversation's directions. References, not a
/// table keyed by conversation: a flood brings 100k of them in a poll (a B-tree of them took
/// 12 MB).
type Crossings<'a> = Vec<(&'a Delta, bool)>;

/// The conversation of a delta between a LAN device and an Internet host (`inbound`: sent by the
/// Internet host).
fn lan_internet(d: &Delta, inbound: bool) -> Option<LanInternet> {
    let ((src_ip, dst_ip), (sp, dp)) = (conv_ips(&d.key)?, ports(d)?);
    let (src, dst) = (Mac(d.key.src_mac), Mac(d.key.dst_mac));
    Some(if inbound { (dst, dst_ip, dp, src_ip, sp, d.key.proto) } else { (src, src_ip, sp, dst_ip, dp, d.key.proto) })
}

#[derive(Debug, Default)]
struct Ping {
    first_ts: f64,
    last_ts: f64,
    packets: u64,
    bytes: u64,
}

#[derive(Debug, Default)]
struct Upload {
    since: f64,
    last_ts: f64,
    bytes: u64,
}

#[derive(Debug)]
pub struct Conversations {
    /// First-seen time of the earliest conversation (the start, for the grace period).
    start: Option<f64>,
    /// Per device: (host, port) it opened and when.
    opened: HashMap<Mac, HashMap<(IpAddr, u16), f64>>,
    /// Conversations between a LAN device and an Internet host already judged.
    judged: Generations<LanInternet, ()>,
    /// MACs that frames to Internet addresses went to, with how many conversations.
    gateways: HashMap<Mac, u64>,
    pings: HashMap<(Mac, IpAddr), Ping>,
    uploads: HashMap<(Mac, IpAddr), Upload>,
}

impl Default for Conversations {
    fn default() -> Self {
        Self {
            start: None,
            opened: HashMap::new(),
            judged: Generations::new(MAX_JUDGED),
            gateways: HashMap::new(),
            pings: HashMap::new(),
            uploads: HashMap::new(),
        }
    }
}

fn ports(d: &Delta) -> Option<(u16, u16)> {
    matches!(d.key.proto, ip_proto::TCP | ip_proto::UDP).then_some((d.key.src_port, d.key.dst_port))
}

impl Conversations {
    pub fn shift_times(&mut self, delta: f64) {
        self.start = self.start.map(|s| s + delta);
        self.opened.values_mut().flat_map(HashMap::values_mut).for_each(|ts| *ts += delta);
        for p in self.pings.values_mut() {
            (p.first_ts, p.last_ts) = (p.first_ts + delta, p.last_ts + delta);
        }
        for u in self.uploads.values_mut() {
            (u.since, u.last_ts) = (u.since + delta, u.last_ts + delta);
        }
    }

    /// The gateway's MAC: the one most conversations to the Internet went to.
    pub fn gateway(&self) -> Option<Mac> {
        self.gateways.iter().max_by_key(|(_, n)| **n).map(|(m, _)| *m)
    }

    /// Distinct hosts each device opened conversations to within the scan window.
    pub fn opened_hosts(&self) -> impl Iterator<Item = (Mac, usize)> + '_ {
        self.opened.iter().map(|(m, t)| (*m, t.keys().map(|k| k.0).collect::<BTreeSet<_>>().len()))
    }

    pub fn on_poll(
        &mut self,
        deltas: &[Delta],
        now: f64,
        clock: Clock,
        cx: &Context<'_>,
        cfg: &Config,
        hits: &mut Vec<Hit>,
    ) {
        let secs = |ns: u64| clock.seconds(ns);
        for d in deltas {
            if let Some((_, dst)) = conv_ips(&d.key)
                && cx.scopes.of_ip(dst) == Scope::Internet
            {
                // Few MACs route to the Internet; a flood of made-up ones keeps the busiest.
                make_room(&mut self.gateways, MAX_GATEWAYS, |n| *n as f64);
                *self.gateways.entry(Mac(d.key.dst_mac)).or_default() += 1;
            }
            let first = secs(d.first_seen_ns);
            self.start = Some(self.start.map_or(first, |s| s.min(first)));
        }
        let gateway = self.gateway();
        // Devices that opened something new in this poll, with a few of those conversations.
        let mut grew: BTreeMap<Mac, Vec<&Delta>> = BTreeMap::new();
        let mut crossings = Crossings::new();
        for d in deltas {
            let Some((src_ip, dst_ip)) = conv_ips(&d.key) else { continue };
            let (src, dst) = (Mac(d.key.src_mac), Mac(d.key.dst_mac));
            if src.is_group() {
                continue;
            }
            let (src_scope, dst_scope) = (cx.scopes.of_ip(src_ip), cx.scopes.of_ip(dst_ip));
            let (first, last) = (secs(d.first_seen_ns), secs(d.last_seen_ns));
            // scan
            if src_scope == Scope::Lan
                && matches!(dst_scope, Scope::Lan | Scope::Internet)
                && ports(d).is_none_or(|(sp, dp)| sp >= dp)
            {
                make_room(&mut self.opened, MAX_DEVICES, |t| t.values().copied().fold(f64::MIN, f64::max));
                let t = self.opened.entry(src).or_default();
                let target = (dst_ip, ports(d).map_or(0, |p| p.1));
                if let Some(e) = t.get_mut(&target) {
                    *e = e.min(first);
                } else if t.len() < MAX_TARGETS {
                    t.insert(target, first);
                    // The earliest four, whatever order the map was walked in: the same
                    // capture gives the same evidence.
                    let lines = grew.entry(src).or_default();
                    lines.push(d);
                    if lines.len() > 4 {
                        lines.sort_unstable_by_key(|d| (d.first_seen_ns, d.key));
                        lines.truncate(4);
                    }
                }
            }
            // cloud_initiated: both directions of each conversation between the LAN and the Internet.
            if ports(d).is_some() {
                if src_scope == Scope::Internet && dst_scope == Scope::Lan && !dst.is_group() {
                    crossings.push((d, true));
                } else if src_scope == Scope::Lan && dst_scope == Scope::Internet {
                    crossings.push((d, false));
                }
            }
            // gateway_ping
            if matches!(d.key.proto, ip_proto::ICMP | ip_proto::ICMPV6)
                && Some(dst) == gateway
                && dst_scope == Scope::Lan
            {
                make_room(&mut self.pings, MAX_DEVICES, |p| p.last_ts);
                let p = self.pings.entry((src, dst_ip)).or_insert(Ping { first_ts: first, ..Ping::default() });
                p.first_ts = p.first_ts.min(first);
                p.last_ts = p.last_ts.max(last);
                p.packets += d.packets;
                p.bytes += d.bytes;
                self.ping_hit(src, src_ip, dst_ip, counted(d, clock), cfg, hits);
            }
            // large_upload
            if src_scope == Scope::Lan && dst_scope == Scope::Internet {
                make_room(&mut self.uploads, MAX_DEVICES, |u| u.last_ts);
                let u = self.uploads.entry((src, dst_ip)).or_insert(Upload { since: first, ..Upload::default() });
                if last - u.since > cfg.window_s {
                    *u = Upload { since: first, ..Upload::default() };
                }
                u.bytes += d.bytes;
                u.last_ts = last;
                if u.bytes > cfg.upload_bytes {
                    hits.push(Hit {
                        rule: Rule::LargeUpload,
                        mac: src,
                        ip: Some(src_ip),
                        ts: last,
                        summary: format!("sent {} bytes to {dst_ip} within {:.0} s", u.bytes, cfg.window_s),
                        details: json!({"peer": dst_ip, "bytes": u.bytes, "threshold": cfg.upload_bytes, "since": u.since}),
                        evidence: vec![counted(d, clock)],
                    });
                }
            }
        }
        self.scan_hits(grew, now, clock, cfg, hits);
        self.cloud_hits(crossings, now, clock, cfg, hits);
    }

    fn ping_hit(&self, src: Mac, src_ip: IpAddr, gw: IpAddr, seen: (u64, String), cfg: &Config, hits: &mut Vec<Hit>) {
        let Some(p) = self.pings.get(&(src, gw)) else { return };
        let span = p.last_ts - p.first_ts;
        if p.packets < cfg.ping_min_packets || span < PING_MIN_SPAN_S {
            return;
        }
        let period = span / (p.packets - 1) as f64;
        let per_day = p.bytes as f64 / span * 86_400.0;
        hits.push(Hit {
            rule: Rule::GatewayPing,
            mac: src,
            ip: Some(src_ip),
            ts: p.last_ts,
            summary: format!("pings the gateway {gw} every {period:.1} s ({:.0} bytes a day)", per_day),
            details: json!({
                "gateway": gw,
                "packets": p.packets,
                "period_seconds": (period * 10.0).round() / 10.0,
                "bytes_per_day": per_day.round(),
            }),
            evidence: vec![seen],
        });
    }

    /// Judges the devices that opened something new in this poll.
    /// `grew`: a few of each device's new conversations, made into lines of evidence only for a
    /// finding.
    fn scan_hits(
        &mut self,
        grew: BTreeMap<Mac, Vec<&Delta>>,
        now: f64,
        clock: Clock,
        cfg: &Config,
        hits: &mut Vec<Hit>,
    ) {
        for (mac, mut seen) in grew {
            let Some(targets) = self.opened.get_mut(&mac) else { continue };
            seen.sort_unstable_by_key(|d| (d.first_seen_ns, d.key));
            let newest = targets.values().copied().fold(f64::MIN, f64::max).max(now);
            targets.retain(|_, ts| newest - *ts <= cfg.scan_window_s);
            let mut by_host: BTreeMap<IpAddr, BTreeSet<u16>> = BTreeMap::new();
            for (ip, port) in targets.keys() {
                by_host.entry(*ip).or_default().insert(*port);
            }
            let (busiest, ports) =
                by_host.iter().max_by_key(|(_, p)| p.len()).map_or((None, 0), |(ip, p)| (Some(*ip), p.len()));
            if by_host.len() < cfg.scan_hosts && ports < cfg.scan_ports {
                continue;
            }
            let mut port_counts: BTreeMap<u16, usize> = BTreeMap::new();
            for (_, port) in targets.keys() {
                *port_counts.entry(*port).or_default() += 1;
            }
            let mut top: Vec<(u16, usize)> = port_counts.into_iter().collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let summary = if by_host.len() >= cfg.scan_hosts {
                let ports: Vec<String> = top.iter().take(3).map(|(p, _)| p.to_string()).collect();
                format!(
                    "opened conversations to {} hosts within {:.0} s (ports {})",
                    by_host.len(),
                    cfg.scan_window_s,
                    ports.join(", ")
                )
            } else {
                format!(
                    "opened conversations to {ports} ports of {} within {:.0} s",
                    busiest.map_or_else(String::new, |i| i.to_string()),
                    cfg.scan_window_s
                )
            };
            hits.push(Hit {
                rule: Rule::Scan,
                mac,
                ip: None,
                ts: newest,
                summary,
                details: json!({
                    "hosts": by_host.len(),
                    "max_ports_per_host": ports,
                    "busiest_host": busiest,
                    "top_ports": top.iter().take(10).map(|(p, n)| json!({"port": p, "hosts": n})).collect::<Vec<_>>(),
                    "window_seconds": cfg.scan_window_s,
                    "sample_hosts": by_host.keys().take(16).collect::<Vec<_>>(),
                }),
                evidence: seen.into_iter().map(|d| counted(d, clock)).collect(),
            });
        }
    }

    /// Judges each conversation between the LAN and the Internet once, from when each of its
    /// directions was first seen (the earliest of its deltas).
    fn cloud_hits(&mut self, mut crossings: Crossings<'_>, now: f64, clock: Clock, cfg: &Config, hits: &mut Vec<Hit>) {
        let start = self.start.unwrap_or(now);
        let conv_of = |&(d, inbound): &(&Delta, bool)| lan_internet(d, inbound);
        crossings.sort_unstable_by_key(conv_of);
        for same in crossings.chunk_by(|a, b| conv_of(a) == conv_of(b)) {
            let Some(conv) = conv_of(&same[0]) else { continue };
            let first = |inbound: bool| {
                same.iter().filter(move |(_, i)| *i == inbound).map(|(d, _)| (clock.seconds(d.first_seen_ns), *d))
            };
            let inbound = first(true).min_by(|a, b| a.0.total_cmp(&b.0));
            let outbound = first(false).map(|(t, _)| t).min_by(f64::total_cmp);
            let judged = self.judged.contains(&conv);
            self.judged.get_or_default(conv);
            if judged {
                continue;
            }
            let (mac, lan_ip, lan_port, inet_ip, inet_port, proto) = conv;
            let Some((inbound, seen)) = inbound else { continue };
            if outbound.is_some_and(|o| o <= inbound) || lan_port >= inet_port || inbound - start < cfg.startup_grace_s
            {
                continue;
            }
            let transport = if proto == ip_proto::TCP { "tcp" } else { "udp" };
            hits.push(Hit {
                rule: Rule::CloudInitiated,
                mac,
                ip: Some(lan_ip),
                ts: inbound,
                summary: format!(
                    "{inet_ip} on the Internet opened a {transport} conversation to port {lan_port} of this device"
                ),
                details: json!({"peer": inet_ip, "peer_port": inet_port, "port": lan_port, "transport": transport}),
                evidence: vec![counted(seen, clock)],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{super::testing::*, *};

    const TCP: u8 = 6;
    const ICMP: u8 = 1;

    #[test]
    fn a_telnet_sweep_of_a_slash_24_is_a_scan_three_hosts_are_not() {
        let mut t = Bench::default();
        let three: Vec<Delta> = (1..=3)
            .map(|i| delta(CAM, LAN_CAM, 40000 + i, GW, ip(203, 0, 113, i as u8), 443, TCP, (10, 2000), (1.0, 2.0)))
            .collect();
        t.poll(&three, &[], 2.0);
        assert!(t.findings().is_empty());
        let sweep: Vec<Delta> = (1..=254u16)
            .map(|i| {
                delta(
                    HUB,
                    LAN_HUB,
                    50000 + i,
                    GW,
                    ip(198, 51, 100, i as u8),
                    23,
                    TCP,
                    (1, 74),
                    (10.0 + f64::from(i) * 0.1, 10.0 + f64::from(i) * 0.1),
                )
            })
            .collect();
        // Split over two polls: the scan is judged from first-seen times, not per poll.
        t.poll(&sweep[..50], &[], 20.0);
        assert!(t.findings().is_empty(), "50 hosts are below the threshold of 64");
        t.poll(&sweep[50..], &[], 40.0);
        let f = t.only(Rule::Scan);
        assert_eq!(f.mac, HUB);
        assert_eq!(f.details["hosts"], 254);
        assert_eq!(f.details["top_ports"][0]["port"], 23);
    }

    #[test]
    fn answers_from_a_server_to_many_client_ports_are_not_a_scan() {
        let mut t = Bench::default();
        let answers: Vec<Delta> = (0..200u16)
            .map(|i| delta(HUB, LAN_HUB, 8080, CAM, LAN_CAM, 40000 + i, TCP, (2, 300), (1.0, 1.0)))
            .collect();
        t.poll(&answers, &[], 2.0);
        assert!(t.findings().is_empty());
    }

    #[test]
    fn an_internet_host_opening_a_conversation_to_a_device_is_cloud_initiated() {
        let mut t = Bench::default();
        // The start, then the device's own connection out, answered: not cloud-initiated.
        let out = delta(CAM, LAN_CAM, 51000, GW, INET, 443, TCP, (10, 1000), (0.0, 50.0));
        let back = delta(GW, INET, 443, CAM, LAN_CAM, 51000, TCP, (10, 1000), (0.1, 50.0));
        // A push on it much later, after the entries aged out: to an ephemeral port, not a finding.
        let push = delta(GW, INET, 443, CAM, LAN_CAM, 51002, TCP, (1, 100), (100.0, 100.0));
        // An early inbound one, within the grace period: unknown first direction.
        let early = delta(GW, ip(198, 51, 100, 9), 40000, CAM, LAN_CAM, 554, TCP, (1, 60), (5.0, 5.0));
        t.poll(&[out, back, push, early], &[], 100.0);
        assert!(t.findings().is_empty(), "{:?}", t.findings());
        let inbound = delta(GW, INET, 45000, CAM, LAN_CAM, 8080, TCP, (3, 200), (120.0, 121.0));
        let answer = delta(CAM, LAN_CAM, 8080, GW, INET, 45000, TCP, (3, 200), (120.001, 121.0));
        t.poll(&[answer, inbound], &[], 125.0);
        let f = t.only(Rule::CloudInitiated);
        assert_eq!(
            (f.mac, f.details["port"].as_u64(), f.details["peer"].as_str()),
            (CAM, Some(8080), Some("203.0.113.10"))
        );
        // Judged once: the same conversation again raises nothing more.
        t.poll(&[inbound], &[], 130.0);
        assert_eq!(t.only(Rule::CloudInitiated).count, 1);
    }

    #[test]
    fn a_device_pinging_the_gateway_every_2_s_and_bytes_a_day() {
        let mut t = Bench::default();
        let to_inet = delta(CAM, LAN_CAM, 51000, GW, INET, 443, TCP, (1, 100), (0.0, 0.0));
        let ping = |from: f64, n: u64| {
            delta(CAM, LAN_CAM, 0, GW, LAN_GW, 0, ICMP, (n, n * 98), (from, from + 2.0 * (n - 1) as f64))
        };
        t.poll(&[to_inet, ping(0.0, 5)], &[], 10.0);
        assert!(t.findings().is_empty());
        t.poll(&[ping(10.0, 6)], &[], 30.0);
        let f = t.only(Rule::GatewayPing);
        assert_eq!(f.details["period_seconds"], 2.0);
        assert_eq!(f.details["packets"], 11);
        assert_eq!(f.details["bytes_per_day"], (11.0 * 98.0 / 20.0 * 86_400.0_f64).round());
        // Pings to an Internet host are not gateway pings.
        let mut t = Bench::default();
        t.poll(&[to_inet, delta(CAM, LAN_CAM, 0, GW, INET, 0, ICMP, (30, 2940), (0.0, 60.0))], &[], 60.0);
        assert!(t.findings().is_empty());
    }

    #[test]
    fn a_large_upload_to_one_internet_host() {
        let mut t = Bench::with(Config { upload_bytes: 1_000_000, ..Config::default() });
        t.poll(&[delta(CAM, LAN_CAM, 51000, GW, INET, 443, TCP, (700, 900_000), (0.0, 10.0))], &[], 10.0);
        assert!(t.findings().is_empty());
        t.poll(&[delta(CAM, LAN_CAM, 51000, GW, INET, 443, TCP, (100, 200_000), (0.0, 20.0))], &[], 20.0);
        assert_eq!(t.only(Rule::LargeUpload).details["bytes"], 1_100_000);
    }
}
