//! The report, schema `iotwatch.report/v1` (shared/design.md): one schema for `iotwatch replay`
//! and for the live agent's `/api/v1/report`. Extend it, never rename a field.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use agent_common::sample::{SampleKind, outcome};
use serde::Serialize;

use crate::{
    bounded::TableSize,
    clock::Clock,
    detect::Finding,
    events::Event,
    identity::{Name, Source},
    ledger::{Direction, FirstDirection, Totals, Transport},
    mac::Mac,
    peerdb::{CountryCode, PeerInfo},
    scope::Scope,
    vecmap::VecMap,
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
    /// Input that was invalid and skipped, with where it was: the first
    /// [`MAX_INVALID_LISTED`], so that a hostile file cannot grow the report without bound.
    pub invalid: Vec<InvalidInput>,
    /// Invalid input past those listed: counted (and in its file's `errors`), not listed.
    pub invalid_not_listed: u64,
}

/// Invalid input listed in a report at most; the rest is counted in `invalid_not_listed`.
pub const MAX_INVALID_LISTED: usize = 100;

impl Capture {
    /// Notes invalid input: listed while fewer than [`MAX_INVALID_LISTED`] are, counted after.
    /// Returns whether it was listed.
    pub fn add_invalid(&mut self, input: InvalidInput) -> bool {
        if self.invalid.len() < MAX_INVALID_LISTED {
            self.invalid.push(input);
            true
        } else {
            self.invalid_not_listed += 1;
            false
        }
    }
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
    #[serde(serialize_with = "crate::peerdb::serialize_org")]
    pub org: Option<Arc<str>>,
    pub country: Option<CountryCode>,
    /// The provider behind the ASN or organisation (`Amazon`, `Google`...), Internet peers only.
    pub provider: Option<&'static str>,
    pub packets: u64,
    pub bytes: u64,
    pub first_direction: FirstDirection,
    pub first_ts: f64,
    /// `packets` and `bytes` by direction: sent to the peer (tx), received from it (rx).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub last_ts: f64,
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
    /// The name to show: the best of `name_sources` by the documented order, else the vendor
    /// with the MAC's last three bytes, else the MAC; `name_source` says which won.
    pub name: String,
    pub name_source: &'static str,
    /// The names that name the device (not its software), best first.
    pub names: Vec<String>,
    /// Every name learnt, with its source and when it was last seen.
    pub name_sources: Vec<Name>,
    /// A locally administered MAC: randomised (phones) or virtual; it has no vendor.
    pub randomised: bool,
    /// Other randomised MACs that gave the same DHCP or mDNS host name: the same device.
    pub same_device_as: Vec<Mac>,
    /// When the device was first seen (remembered across restarts), if known.
    pub first_seen: Option<f64>,
    pub ips: Vec<IpAddr>,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Sent and received bytes by peer scope (by name: the report's keys are text).
    pub scopes: VecMap<&'static str, ProtocolRow>,
    pub peers: Vec<PeerRow>,
    /// What the device sent, by service port (the port of the side that accepted the
    /// conversation: its own when it answers, the server's when it is the client), busiest first.
    pub ports: Vec<PortRow>,
    pub ntp_servers: Vec<String>,
    pub protocols: VecMap<&'static str, ProtocolRow>,
}

#[derive(Debug, Default, Serialize)]
pub struct AgentSection {
    /// Samples the kernel sent, dropped because the ring was full, suppressed by the rate limit.
    pub samples: u64,
    pub samples_dropped: u64,
    pub samples_suppressed: u64,
    /// Over the CPU's rate, whatever their source.
    pub samples_capped: u64,
    /// Samples no parser could read, and records that could not be decoded.
    pub parse_errors: u64,
    /// Per kind: sent, dropped, suppressed, parse_errors.
    pub samples_by_kind: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// TCP segments joined to the head before them (a method alone, a head cut anywhere), held
    /// heads that went out alone (no continuation in time), of those the ones pushed out of the
    /// bounded table, and TCP samples dropped as retransmissions (`reassembly`).
    pub segments_joined: u64,
    pub segments_unjoined: u64,
    pub reassembly_evictions: u64,
    pub retransmissions: u64,
    pub event_log_errors: u64,
    /// Event log lines dropped because its writer fell behind (live only).
    pub event_log_dropped: u64,
    /// The kernel program's own statistics (as `iotwatch_bpf_events_total`).
    pub bpf: BTreeMap<&'static str, u64>,
    pub conversation_evictions: u64,
    /// The agent's tables: entries, estimated bytes, bound and evictions (`bounded`). The
    /// `report_events` evicted are events no longer in `events`; the `openers` evicted are
    /// conversations whose opener was forgotten (one that comes back with its answer alone counts
    /// under the answer's destination port in the device's `ports`).
    pub tables: Vec<TableSize>,
    /// Findings that left the report to make room for newer ones.
    pub findings_dropped: u64,
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
    /// Findings of the detectors, oldest first (at most `detect::MAX_FINDINGS`).
    pub findings: Vec<Finding>,
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
        .map(|(mac, c)| MacRow {
            mac: *mac,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
        })
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
    let ports = p
        .ledger
        .ports()
        .iter()
        .map(|((proto, port), t)| PortRow { proto: *proto, port: *port, packets: t.packets, bytes: t.bytes })
        .collect();

    let mut devices: Vec<DeviceRow> = p
        .ledger
        .devices()
        .iter()
        .map(|(mac, d)| {
            let (tx, rx) = (d.total(Direction::Tx), d.total(Direction::Rx));
            let mut scopes: VecMap<&'static str, (Totals, Totals)> = VecMap::default();
            for ((dir, scope), t) in &d.traffic {
                let e = scopes.or_default(scope.as_str());
                let side = if *dir == Direction::Tx { &mut e.0 } else { &mut e.1 };
                side.add(t.packets, t.bytes);
            }
            let mut peers: Vec<PeerRow> = d
                .peers
                .iter()
                .map(|(ip, peer)| {
                    let scope = p.scopes.of_ip(*ip);
                    // Only Internet peers: the LAN's addresses are nobody's ASN.
                    let info = if scope == Scope::Internet { p.peers.lookup(*ip) } else { PeerInfo::default() };
                    PeerRow {
                        ip: *ip,
                        scope,
                        names: p.events.names.remote(*ip),
                        asn: info.asn,
                        org: info.org,
                        country: info.country,
                        provider: info.provider,
                        packets: peer.totals().packets,
                        bytes: peer.totals().bytes,
                        first_direction: peer.first_direction,
                        first_ts: clock.seconds(peer.first_seen_ns),
                        tx_packets: peer.tx.packets,
                        tx_bytes: peer.tx.bytes,
                        rx_packets: peer.rx.packets,
                        rx_bytes: peer.rx.bytes,
                        last_ts: clock.seconds(peer.last_seen_ns),
                    }
                })
                .collect();
            // Unstable: the tie-break is the peer's address, unique (as the devices' MAC below).
            peers.sort_unstable_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.ip.cmp(&b.ip)));
            let mut ports: Vec<PortRow> = d
                .ports
                .iter()
                .map(|((proto, port), t)| PortRow { proto: *proto, port: *port, packets: t.packets, bytes: t.bytes })
                .collect();
            ports.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.port.cmp(&b.port)));
            let vendor = p.oui.vendor(*mac);
            let display = p.identities.display(*mac, vendor);
            let name_sources = p.identities.names(*mac);
            let mut names: Vec<String> = Vec::new();
            for n in name_sources.iter().filter(|n| Source::PREFERENCE.contains(&n.source)) {
                if !names.contains(&n.name) {
                    names.push(n.name.clone());
                }
            }
            DeviceRow {
                mac: *mac,
                vendor: vendor.map(str::to_owned),
                name: display.name,
                name_source: display.source,
                names,
                name_sources,
                randomised: mac.is_local(),
                same_device_as: Vec::new(),
                first_seen: p.detectors.presence.known().get(mac).copied(),
                ips: d.ips.keys().copied().collect(),
                tx_packets: tx.packets,
                tx_bytes: tx.bytes,
                rx_packets: rx.packets,
                rx_bytes: rx.bytes,
                scopes: scopes.into_iter().map(|(s, (t, r))| (s, txrx_row(t, r))).collect(),
                peers,
                ports,
                ntp_servers: p
                    .events
                    .ntp_servers
                    .get(mac)
                    .map(|s| s.servers.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                protocols: d.protocols.iter().map(|(k, v)| (*k, txrx_row(v.tx, v.rx))).collect(),
            }
        })
        .collect();
    let same_device = p.identities.same_device();
    for d in &mut devices {
        d.same_device_as = same_device.get(&d.mac).cloned().unwrap_or_default();
    }
    devices.sort_unstable_by(|a, b| {
        (b.tx_bytes + b.rx_bytes).cmp(&(a.tx_bytes + a.rx_bytes)).then_with(|| a.mac.cmp(&b.mac))
    });

    let bpf = agent_common::Stat::ALL
        .iter()
        .map(|s| (s.name(), p.last.stats.get(*s as usize).copied().unwrap_or(0)))
        .collect();
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
        samples_capped: total(outcome::CAPPED),
        parse_errors: p.events.parse_errors.values().sum::<u64>() + p.events.undecodable,
        samples_by_kind,
        segments_joined: p.events.reassembly.stats.segments_joined,
        segments_unjoined: p.events.reassembly.stats.segments_unjoined,
        reassembly_evictions: p.events.reassembly.stats.evictions,
        retransmissions: p.events.reassembly.stats.retransmissions,
        event_log_errors: p.event_log_errors,
        event_log_dropped: p.event_log_dropped,
        bpf,
        conversation_evictions: p.last.evictions,
        tables: p.tables(),
        findings_dropped: p.detectors.findings.dropped,
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
        findings: p.detectors.findings.list().cloned().collect(),
        agent,
    }
}

#[cfg(test)]
mod tests {

    use agent_common::{ConvKey, DeviceCounters, Stat};

    use super::*;
    use crate::{
        events::{EventStore, sample_record},
        ledger::{Delta, Ledger},
        oui::Oui,
        proto::{Kind, fixtures},
        scope::ScopeClassifier,
        snapshot::{SampleCounts, Snapshot},
    };

    /// The client of the DHCP fixture.
    const CAMERA: [u8; 6] = [0xd8, 0xf1, 0x5b, 0xaa, 0xbb, 0xcc];
    const HUB: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x14];
    const GATEWAY: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x01];
    const SSDP_GROUP: [u8; 6] = [0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa];
    const T0: u64 = 1_620_261_673_000_000_000;

    fn key(src_mac: [u8; 6], dst_mac: [u8; 6], src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> ConvKey {
        let ip = |a: &str| a.parse::<std::net::Ipv4Addr>().expect("IPv4").octets();
        crate::ledger::v4_key(src_mac, dst_mac, ip(src), ip(dst), proto, sport, dport)
    }

    fn delta(key: ConvKey, packets: u64, bytes: u64, first_s: u64) -> Delta {
        Delta {
            key,
            packets,
            bytes,
            first_seen_ns: T0 + first_s * 1_000_000_000,
            last_seen_ns: T0 + (first_s + 9) * 1_000_000_000,
        }
    }

    /// A sample of `payload` behind 42 bytes of (unread) headers, as the ring hands it over.
    fn sample(kind: Kind, key: ConvKey, payload: &[u8], at_s: u64) -> Vec<u8> {
        sample_record(kind, key, payload, T0 + at_s * 1_000_000_000)
    }

    /// Everything an agent holds after a little traffic: a camera that discovers with SSDP,
    /// resolves and talks to the cloud and asks for time; a hub; the gateway.
    /// The state a [`View`] borrows.
    struct State {
        ledger: Ledger,
        last: Snapshot,
        oui: Oui,
        scopes: ScopeClassifier,
        events: EventStore,
        counts: SampleCounts,
        detectors: crate::detect::Detectors,
        identities: crate::identity::Identities,
        peers: crate::peerdb::PeerDb,
    }

    impl State {
        fn view(&self) -> View<'_> {
            View {
                ledger: &self.ledger,
                last: &self.last,
                oui: &self.oui,
                peers: &self.peers,
                scopes: &self.scopes,
                events: &self.events,
                identities: &self.identities,
                detectors: &self.detectors,
                sample_counts: &self.counts,
                event_log_errors: 0,
                event_log_dropped: 0,
                clock_jumps: Default::default(),
            }
        }
    }

    fn state() -> State {
        let scopes = ScopeClassifier::new(vec!["192.168.77.0/24".parse().expect("prefix")]);
        let cloud = key(CAMERA, GATEWAY, "192.168.77.151", "203.0.113.7", 6, 40_000, 443);
        let reply = key(GATEWAY, CAMERA, "203.0.113.7", "192.168.77.151", 6, 443, 40_000);
        let ntp = key(CAMERA, GATEWAY, "192.168.77.151", "198.51.100.5", 17, 40_001, 123);
        let ssdp = key(CAMERA, SSDP_GROUP, "192.168.77.151", "239.255.255.250", 17, 58_002, 1900);
        let lan = key(HUB, CAMERA, "192.168.77.20", "192.168.77.151", 6, 50_000, 8815);
        let mut ledger = Ledger::default();
        for d in [
            delta(cloud, 10, 4_000, 2),
            delta(reply, 8, 9_000, 3),
            delta(ntp, 2, 180, 1),
            delta(ssdp, 1, 167, 0),
            delta(lan, 3, 300, 4),
        ] {
            ledger.apply(&d, &scopes);
        }
        let counters = |tx_packets, tx_bytes, rx_packets, rx_bytes| DeviceCounters {
            tx_packets,
            tx_bytes,
            rx_packets,
            rx_bytes,
            ..DeviceCounters::default()
        };
        let mut stats = vec![0; Stat::ALL.len()];
        stats[Stat::Frames as usize] = 24;
        stats[Stat::Ipv4 as usize] = 24;
        let last = Snapshot {
            macs: vec![
                (Mac(CAMERA), counters(13, 4_347, 11, 9_300)),
                (Mac(HUB), counters(3, 300, 0, 0)),
                (Mac(GATEWAY), counters(8, 9_000, 12, 4_180)),
                (Mac(SSDP_GROUP), counters(0, 0, 1, 167)),
            ],
            stats,
            conversation_entries: 5,
            mac_entries: 4,
            evictions: 1,
            ..Snapshot::default()
        };
        let oui = Oui::parse("D8-F1-5B   (hex)\t\tExample Cameras Ltd.\n");
        let mut events = EventStore::default();
        let dns_reply = key(GATEWAY, CAMERA, "192.168.77.1", "192.168.77.151", 17, 53, 40_002);
        let dhcp = key(CAMERA, [0xff; 6], "0.0.0.0", "255.255.255.255", 17, 68, 67);
        for record in [
            sample(Kind::Ssdp, ssdp, &fixtures::ssdp_msearch(), 0),
            sample(Kind::Dhcp, dhcp, &fixtures::dhcp_discover(), 0),
            sample(Kind::Dns, dns_reply, &fixtures::dns_cname_chain(), 1),
            sample(Kind::Ntp, ntp, &fixtures::ntp_client(), 1),
            sample(Kind::Ntp, ntp, &[0x20], 2), // mode 0: not NTP
            // After its discovery, the camera fetches from the hub: lateral movement.
            sample(
                Kind::Http,
                key(CAMERA, HUB, "192.168.77.151", "192.168.77.20", 6, 43_412, 8815),
                &fixtures::http_get_range(),
                3,
            ),
        ] {
            events.handle(&record, Clock::Epoch, |_| {});
        }
        let mut identities = crate::identity::Identities::default();
        for ev in &events.recent {
            identities.learn(ev, &scopes);
        }
        let mut detectors = crate::detect::Detectors::default();
        let peers = peer_db();
        let cx = crate::detect::Context { scopes: &scopes, oui: &oui, identities: &identities, peers: &peers };
        for ev in &events.recent {
            detectors.on_event(ev, &cx);
        }
        let mut counts = SampleCounts::default();
        counts[Kind::Ssdp as usize] = [1, 0, 0, 0];
        counts[Kind::Ntp as usize] = [2, 1, 3, 4];
        State { ledger, last, oui, scopes, events, counts, detectors, identities, peers }
    }

    /// The test "Internet": 203.0.113.0/24 is Amazon's in the US, 198.51.100.0/24 nobody's.
    fn peer_db() -> crate::peerdb::PeerDb {
        crate::peerdb::PeerDb::from_csv_texts(
            "203.0.113.0,203.0.113.255,16509,\"Amazon.com, Inc.\"\n",
            "203.0.113.0,203.0.113.255,US\n",
        )
    }

    fn snapshot_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/report.json")
    }

    /// The whole report, schema iotwatch.report/v1, from hand-made state: its field names and
    /// shapes are fixed by `agent-core/snapshots/report.json` (rewrite it with
    /// `UPDATE_SNAPSHOTS=1 cargo test -p iotwatch-core report` after a deliberate change, and
    /// review the diff: the schema is extended, never renamed).
    #[test]
    fn the_report_matches_its_snapshot() {
        let state = state();
        let view = View { event_log_errors: 2, event_log_dropped: 3, ..state.view() };
        let report =
            build(&view, Some(Capture { packets: 24, wire_bytes: 13_647, ..Capture::default() }), Clock::Epoch);
        let json = serde_json::to_string_pretty(&report).expect("serialises") + "\n";
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(snapshot_path().parent().expect("dir")).expect("mkdir");
            std::fs::write(snapshot_path(), &json).expect("write snapshot");
        }
        let want = std::fs::read_to_string(snapshot_path()).expect("agent-core/snapshots/report.json");
        assert_eq!(json, want, "the report changed: see the test's doc comment");
    }

    /// A file of a million bad records lists the first ones and counts the rest.
    #[test]
    fn invalid_input_is_listed_up_to_a_bound_and_counted_after() {
        let mut c = Capture::default();
        let listed = (0..MAX_INVALID_LISTED as u64 + 5)
            .filter(|&i| c.add_invalid(InvalidInput { file: "bad.pcap".into(), offset: i, message: "zero".into() }))
            .count();
        assert_eq!((listed, c.invalid.len(), c.invalid_not_listed), (MAX_INVALID_LISTED, MAX_INVALID_LISTED, 5));
        assert_eq!(c.invalid.last().map(|i| i.offset), Some(MAX_INVALID_LISTED as u64 - 1), "the first are kept");
    }

    /// What the snapshot holds, said in words: facts a reader of the report relies on.
    #[test]
    fn the_report_says_who_talked_to_whom() {
        let state = state();
        let view = state.view();
        let r = build(&view, None, Clock::Epoch);
        let camera = r.devices.iter().find(|d| d.mac == Mac(CAMERA)).expect("the camera is a device");
        assert_eq!(camera.vendor.as_deref(), Some("Example Cameras Ltd."));
        assert_eq!(camera.names, ["HS105"], "its DHCP hostname");
        assert_eq!((camera.name.as_str(), camera.name_source), ("HS105", "dhcp_hostname"));
        let sources: Vec<_> = camera.name_sources.iter().map(|n| n.source.as_str()).collect();
        assert_eq!(sources, ["dhcp_hostname", "dhcp_vendor_class", "dhcp_fingerprint", "http_user_agent"]);
        let hub = r.devices.iter().find(|d| d.mac == Mac(HUB)).expect("the hub");
        assert_eq!((hub.name.as_str(), hub.name_source, hub.randomised), ("02:77:00:00:00:14", "mac", true));
        let cloud = camera.peers.iter().find(|p| p.ip.to_string() == "203.0.113.7").expect("the cloud peer");
        assert_eq!(
            (cloud.scope, cloud.first_direction, cloud.bytes),
            (Scope::Internet, FirstDirection::Outbound, 13_000)
        );
        assert_eq!((cloud.tx_bytes, cloud.rx_bytes), (4_000, 9_000), "sent to it, received from it");
        let gateway = r.devices.iter().find(|d| d.mac == Mac(GATEWAY)).expect("the gateway is a device");
        let gateway_ports: Vec<_> = gateway.ports.iter().map(|p| p.port).collect();
        assert_eq!(gateway_ports, [443], "it relays the cloud's answers: the service port, not the camera's 40000");
        assert_eq!(camera.ntp_servers, ["198.51.100.5"]);
        assert_eq!(
            (cloud.asn, cloud.org.as_deref(), cloud.country.as_ref().map(CountryCode::as_str), cloud.provider),
            (Some(16509), Some("Amazon.com, Inc."), Some("US"), Some("Amazon"))
        );
        let ntp = camera.peers.iter().find(|p| p.ip.to_string() == "198.51.100.5").expect("the NTP server");
        assert_eq!((ntp.asn, ntp.country, ntp.provider), (None, None, None), "not in the database");
        // The text report: the display name, and where the camera's Internet traffic goes.
        let text = crate::text::render(&r);
        let line = text.lines().find(|l| l.starts_with("d8:f1:5b:aa:bb:cc")).expect("the camera's line");
        assert!(line.contains(" HS105 ") && line.contains("Amazon | US"), "{line}");
        assert_eq!(r.macs.len(), 4, "every MAC, multicast destinations included");
        assert_eq!(r.agent.samples_dropped, 1);
        assert_eq!(r.agent.parse_errors, 1, "the NTP sample in mode 0");
        assert_eq!(r.events.len(), 5);
        let rules: Vec<_> = r.findings.iter().map(|f| (f.rule.as_str(), f.mac, f.evidence.clone())).collect();
        assert_eq!(
            rules,
            [("lateral_movement", Mac(CAMERA), vec![1, 5])],
            "M-SEARCH (event 1), then GET from the hub (5)"
        );
        assert_eq!(
            cloud.names,
            ["eu.pool.ntp.example.net", "time.example.com"],
            "the name it asked for and the CNAME's end"
        );
    }
}
