//! The report, schema `iotwatch.report/v1` (shared/design.md): one schema for `iotwatch replay`
//! and for the live agent's `/api/v1/report`. Extend it, never rename a field.

use std::{collections::BTreeMap, net::IpAddr};

use serde::Serialize;

use agent_common::sample::{SampleKind, outcome};

use crate::{
    clock::Clock,
    events::Event,
    ledger::{Direction, FirstDirection, Totals, Transport},
    mac::Mac,
    scope::Scope,
    view::View,
};

pub const SCHEMA: &str = "iotwatch.report/v1";

#[derive(Debug, Default, Serialize)]
pub struct Capture {
    pub packets: u64,
    pub wire_bytes: u64,
    pub captured_bytes: u64,
    /// Frames the capture cut short (snapshot length); counted at their original length.
    pub truncated_frames: u64,
    pub first_ts: Option<f64>,
    pub last_ts: Option<f64>,
    pub files: Vec<CaptureFile>,
    /// Frames not replayed: link types other than Ethernet, and frames shorter than an
    /// Ethernet header. They are in `packets` and `wire_bytes`, not in `macs`.
    pub skipped_frames: u64,
    /// Skipped frames by link type number (e.g. "113" for Linux cooked capture).
    pub skipped_link_types: BTreeMap<String, u64>,
    /// Input that was invalid and skipped, with where it was.
    pub invalid: Vec<InvalidInput>,
}

#[derive(Debug, Default, Serialize)]
pub struct CaptureFile {
    pub path: String,
    pub format: Option<&'static str>,
    pub packets: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InvalidInput {
    pub file: String,
    pub offset: u64,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct MacRow {
    pub mac: Mac,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct IpRow {
    pub ip: IpAddr,
    pub scope: Scope,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct PortRow {
    pub proto: Transport,
    pub port: u16,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct PeerRow {
    pub ip: IpAddr,
    pub scope: Scope,
    pub names: Vec<String>,
    pub asn: Option<u32>,
    pub org: Option<String>,
    pub country: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    pub first_direction: FirstDirection,
    pub first_ts: f64,
}

#[derive(Debug, Serialize)]
pub struct ProtocolRow {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct DeviceRow {
    pub mac: Mac,
    pub vendor: Option<String>,
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Sent and received bytes by peer scope (by name: the report's keys are text).
    pub scopes: BTreeMap<&'static str, ProtocolRow>,
    pub peers: Vec<PeerRow>,
    /// Destination ports the device sent to, busiest first.
    pub ports: Vec<PortRow>,
    pub ntp_servers: Vec<String>,
    pub protocols: BTreeMap<&'static str, ProtocolRow>,
}

#[derive(Debug, Default, Serialize)]
pub struct AgentSection {
    /// Samples the kernel sent, dropped because the ring was full, suppressed by the rate limit.
    pub samples: u64,
    pub samples_dropped: u64,
    pub samples_suppressed: u64,
    /// Samples no parser could read, and records that could not be decoded.
    pub parse_errors: u64,
    /// Per kind: sent, dropped, suppressed, parse_errors.
    pub samples_by_kind: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    pub events_not_in_report: u64,
    pub event_log_errors: u64,
    pub names_dropped: u64,
    /// The kernel program's own statistics (as `iotwatch_bpf_events_total`).
    pub bpf: BTreeMap<&'static str, u64>,
    pub conversation_evictions: u64,
    pub peers_dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub capture: Option<Capture>,
    pub lan_prefixes: Vec<String>,
    pub macs: Vec<MacRow>,
    pub ips: Vec<IpRow>,
    pub ports: Vec<PortRow>,
    pub devices: Vec<DeviceRow>,
    /// The most recent events (at most `events::MAX_REPORT_EVENTS`).
    pub events: Vec<Event>,
    pub findings: Vec<serde_json::Value>,
    pub agent: AgentSection,
}

fn txrx_row(tx: Totals, rx: Totals) -> ProtocolRow {
    ProtocolRow { tx_packets: tx.packets, tx_bytes: tx.bytes, rx_packets: rx.packets, rx_bytes: rx.bytes }
}

pub fn build(p: &View<'_>, capture: Option<Capture>, clock: Clock) -> Report {
    let mut macs: Vec<MacRow> = p
        .last
        .macs
        .iter()
        .map(|(mac, c)| MacRow { mac: *mac, tx_packets: c.tx_packets, tx_bytes: c.tx_bytes, rx_packets: c.rx_packets, rx_bytes: c.rx_bytes })
        .collect();
    macs.sort_by_key(|m| m.mac);
    let ips = p
        .ledger
        .ips()
        .iter()
        .map(|(ip, t)| IpRow {
            ip: *ip,
            scope: p.scopes.of_ip(*ip),
            tx_packets: t.tx.packets,
            tx_bytes: t.tx.bytes,
            rx_packets: t.rx.packets,
            rx_bytes: t.rx.bytes,
        })
        .collect();
    let ports = p.ledger.ports().iter().map(|((proto, port), t)| PortRow { proto: *proto, port: *port, packets: t.packets, bytes: t.bytes }).collect();

    let mut devices: Vec<DeviceRow> = p
        .ledger
        .devices()
        .iter()
        .map(|(mac, d)| {
            let (tx, rx) = (d.total(Direction::Tx), d.total(Direction::Rx));
            let mut scopes: BTreeMap<&'static str, (Totals, Totals)> = BTreeMap::new();
            for ((dir, scope), t) in &d.traffic {
                let e = scopes.entry(scope.as_str()).or_default();
                let side = if *dir == Direction::Tx { &mut e.0 } else { &mut e.1 };
                side.add(t.packets, t.bytes);
            }
            let mut peers: Vec<PeerRow> = d
                .peers
                .iter()
                .map(|(ip, peer)| PeerRow {
                    ip: *ip,
                    scope: p.scopes.of_ip(*ip),
                    names: p.events.names.remote(*ip),
                    asn: None,
                    org: None,
                    country: None,
                    packets: peer.totals.packets,
                    bytes: peer.totals.bytes,
                    first_direction: peer.first_direction,
                    first_ts: clock.seconds(peer.first_seen_ns),
                })
                .collect();
            peers.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.ip.cmp(&b.ip)));
            let mut ports: Vec<PortRow> = d.ports.iter().map(|((proto, port), t)| PortRow { proto: *proto, port: *port, packets: t.packets, bytes: t.bytes }).collect();
            ports.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.port.cmp(&b.port)));
            DeviceRow {
                mac: *mac,
                vendor: p.oui.vendor(*mac).map(str::to_owned),
                names: p.events.names.device(*mac),
                ips: d.ips.iter().copied().collect(),
                tx_packets: tx.packets,
                tx_bytes: tx.bytes,
                rx_packets: rx.packets,
                rx_bytes: rx.bytes,
                scopes: scopes.into_iter().map(|(s, (t, r))| (s, txrx_row(t, r))).collect(),
                peers,
                ports,
                ntp_servers: p.events.ntp_servers.get(mac).map(|s| s.iter().map(ToString::to_string).collect()).unwrap_or_default(),
                protocols: d.protocols.iter().map(|(k, v)| (*k, txrx_row(v.tx, v.rx))).collect(),
            }
        })
        .collect();
    devices.sort_by(|a, b| (b.tx_bytes + b.rx_bytes).cmp(&(a.tx_bytes + a.rx_bytes)).then_with(|| a.mac.cmp(&b.mac)));

    let bpf = agent_common::Stat::ALL.iter().map(|s| (s.name(), p.last.stats.get(*s as usize).copied().unwrap_or(0))).collect();
    let total = |o: usize| p.sample_counts.iter().map(|row| row[o]).sum::<u64>();
    let samples_by_kind = SampleKind::ALL
        .iter()
        .map(|k| {
            let row = p.sample_counts[*k as usize];
            let mut m: BTreeMap<&'static str, u64> = outcome::NAMES.iter().zip(row).map(|(n, v)| (*n, v)).collect();
            m.insert("parse_errors", p.events.parse_errors.get(k).copied().unwrap_or(0));
            (k.name(), m)
        })
        .collect();
    let agent = AgentSection {
        samples: total(outcome::SENT),
        samples_dropped: total(outcome::DROPPED),
        samples_suppressed: total(outcome::SUPPRESSED),
        parse_errors: p.events.parse_errors.values().sum::<u64>() + p.events.undecodable,
        samples_by_kind,
        events_not_in_report: p.events.dropped_from_report,
        event_log_errors: p.event_log_errors,
        names_dropped: p.events.names.remotes_dropped,
        bpf,
        conversation_evictions: p.last.evictions,
        peers_dropped: p.ledger.peers_dropped(),
    };
    Report {
        schema: SCHEMA,
        capture,
        lan_prefixes: p.scopes.lan_prefixes().iter().map(|pr| format!("{}/{}", pr.addr, pr.len)).collect(),
        macs,
        ips,
        ports,
        devices,
        events: p.events.recent.iter().cloned().collect(),
        findings: Vec::new(),
        agent,
    }
}
