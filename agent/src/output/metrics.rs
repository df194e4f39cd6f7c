//! The Prometheus view of the ledger and the program's statistics.
//!
//! The ledger and the maps hold the truth as cumulative totals; each sync raises the counters to
//! those totals. Label values from traffic go through budgets (see `labels`), so cardinality is
//! bounded and counters stay monotonic.

use std::collections::{BTreeMap, HashMap};

use agent_common::{
    CONVERSATIONS, DEVICE_STATS, Stat,
    sample::{SampleKind, outcome},
};
use iotwatch_core::{
    labels::{LabelBudget, OTHER, sanitize},
    ledger::{Direction, Totals, Transport, TxRx},
    mac::Mac,
    peerdb,
    scope::Scope,
    view::View,
};
use prometheus::{Encoder as _, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::kernel::attach::Hook;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_devices: usize,
    pub top_ports: usize,
    /// Countries, and providers, with series of their own per device.
    pub top_destinations: usize,
    /// How far back the distinct peers of `iotwatch_device_peers` count (program clock).
    pub peer_window_ns: u64,
    pub map_capacity_macs: u32,
    pub map_capacity_conversations: u32,
}

pub struct Metrics {
    registry: Registry,
    /// Every metric name the agent exports (for checking the dashboard and rules against).
    names: Vec<String>,
    device_packets: IntCounterVec,
    device_bytes: IntCounterVec,
    mac_packets: IntCounterVec,
    mac_bytes: IntCounterVec,
    port_packets: IntCounterVec,
    port_bytes: IntCounterVec,
    device_peers: IntGaugeVec,
    /// Bytes and packets to and from Internet peers by their country and provider.
    country_bytes: IntCounterVec,
    country_packets: IntCounterVec,
    provider_bytes: IntCounterVec,
    provider_packets: IntCounterVec,
    peerdb_lookups: IntCounterVec,
    peerdb_entries: IntGaugeVec,
    table_entries: IntGaugeVec,
    table_bytes: IntGaugeVec,
    table_max_entries: IntGaugeVec,
    table_evictions: IntCounterVec,
    device_info: IntGaugeVec,
    bpf_events: IntCounterVec,
    map_entries: IntGaugeVec,
    map_capacity: IntGaugeVec,
    aged_out: IntCounterVec,
    evictions: IntCounter,
    overflow: IntCounterVec,
    attached: IntGaugeVec,
    refused: IntGaugeVec,
    attach_failed: IntGaugeVec,
    events: IntCounterVec,
    samples: IntCounterVec,
    parse_errors: IntCounterVec,
    event_log_errors: IntCounter,
    event_log_dropped: IntCounter,
    clock_jumps: IntCounter,
    clock_last_jump: Gauge,
    scrape_duration: Gauge,
    findings: IntCounterVec,
    findings_dropped: IntCounter,
    reassembly: IntCounterVec,
    last_seen: GaugeVec,
    ntp_servers: IntGaugeVec,
    scan_hosts: IntGaugeVec,
    firmware_bytes: IntGaugeVec,
    mdns_leak_score: IntGaugeVec,
    limits: Limits,
    devices: LabelBudget<Mac>,
    ports: HashMap<Mac, LabelBudget<(Transport, u16)>>,
    /// Per device, the countries and the providers with series of their own.
    destinations: HashMap<(Mac, Place), LabelBudget<String>>,
}

/// What a destination label names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Place {
    Country,
    Provider,
}

fn raise(c: &IntCounter, target: u64) {
    let cur = c.get();
    if target > cur {
        c.inc_by(target - cur);
    }
}

macro_rules! register {
    ($reg:expr, $names:expr, $metric:expr) => {{
        let m = $metric.expect("metric definitions are static and valid");
        $names.extend(prometheus::core::Collector::desc(&m).iter().map(|d| d.fq_name.clone()));
        $reg.register(Box::new(m.clone())).expect("metric names are unique");
        m
    }};
}

impl Metrics {
    pub fn new(limits: Limits) -> Self {
        let r = Registry::new();
        let names = &mut Vec::new();
        let counters = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels);
        let gauges = |name: &str, help: &str, labels: &[&str]| IntGaugeVec::new(Opts::new(name, help), labels);
        let build =
            register!(r, names, gauges("iotwatch_build_info", "Build of the running agent.", &["version", "aya"]));
        build.with_label_values(&[env!("CARGO_PKG_VERSION"), "0.14.0"]).set(1);
        let mut m = Self {
            device_packets: register!(
                r,
                names,
                counters(
                    "iotwatch_device_packets_total",
                    "Wire frames a device sent (tx) or received (rx), by the scope of its peer.",
                    &["mac", "direction", "scope"]
                )
            ),
            device_bytes: register!(
                r,
                names,
                counters(
                    "iotwatch_device_bytes_total",
                    "Wire bytes a device sent (tx) or received (rx), by the scope of its peer.",
                    &["mac", "direction", "scope"]
                )
            ),
            mac_packets: register!(
                r,
                names,
                counters(
                    "iotwatch_mac_packets_total",
                    "Exact per-MAC wire frames from the kernel's never-evicting map (tx: source MAC, rx: destination MAC, group MACs included).",
                    &["mac", "direction"]
                )
            ),
            mac_bytes: register!(
                r,
                names,
                counters(
                    "iotwatch_mac_bytes_total",
                    "Exact per-MAC wire bytes, see iotwatch_mac_packets_total.",
                    &["mac", "direction"]
                )
            ),
            port_packets: register!(
                r,
                names,
                counters(
                    "iotwatch_device_port_packets_total",
                    "Wire frames a device sent, by transport and service port: the port of the side that accepted the \
                     conversation, its own when it answers, the server's when it is the client (top ports per device, \
                     the rest as port=\"other\").",
                    &["mac", "proto", "port"]
                )
            ),
            port_bytes: register!(
                r,
                names,
                counters(
                    "iotwatch_device_port_bytes_total",
                    "Wire bytes a device sent, by transport and service port, see iotwatch_device_port_packets_total.",
                    &["mac", "proto", "port"]
                )
            ),
            device_peers: register!(
                r,
                names,
                gauges(
                    "iotwatch_device_peers",
                    "Distinct remote addresses of the LAN (scope=\"lan\") and of the Internet (scope=\"internet\") a \
                     device exchanged traffic with within --metrics.peer-window.",
                    &["mac", "scope"]
                )
            ),
            country_bytes: register!(
                r,
                names,
                counters(
                    "iotwatch_device_country_bytes_total",
                    "Wire bytes a device sent to (tx) or received from (rx) Internet peers, by the peers' country \
                     (ISO 3166 code; \"unknown\" where the country database has none; top countries per device, the \
                     rest \"other\").",
                    &["mac", "direction", "country"]
                )
            ),
            country_packets: register!(
                r,
                names,
                counters(
                    "iotwatch_device_country_packets_total",
                    "Wire frames a device sent to (tx) or received from (rx) Internet peers, by the peers' country.",
                    &["mac", "direction", "country"]
                )
            ),
            provider_bytes: register!(
                r,
                names,
                counters(
                    "iotwatch_device_provider_bytes_total",
                    "Wire bytes a device sent to (tx) or received from (rx) Internet peers, by the peers' provider \
                     (Amazon, Google...; \"unknown\" where the ASN is not a known provider's; top providers per \
                     device, the rest \"other\").",
                    &["mac", "direction", "provider"]
                )
            ),
            provider_packets: register!(
                r,
                names,
                counters(
                    "iotwatch_device_provider_packets_total",
                    "Wire frames a device sent to (tx) or received from (rx) Internet peers, by the peers' provider.",
                    &["mac", "direction", "provider"]
                )
            ),
            peerdb_lookups: register!(
                r,
                names,
                counters(
                    "iotwatch_peerdb_lookups_total",
                    "Lookups of Internet peers in the ASN and country databases, answered from the cache (hit) or \
                     not (miss).",
                    &["outcome"]
                )
            ),
            peerdb_entries: register!(
                r,
                names,
                gauges(
                    "iotwatch_peerdb_entries",
                    "Ranges (CSV) or nodes (MMDB) loaded per database kind (asn, country); 0: none loaded, peers go \
                     without that enrichment.",
                    &["kind"]
                )
            ),
            table_entries: register!(
                r,
                names,
                gauges("iotwatch_table_entries", "Entries in one of the agent's bounded tables.", &["table"])
            ),
            table_bytes: register!(
                r,
                names,
                gauges(
                    "iotwatch_table_bytes",
                    "Estimated heap bytes of one of the agent's bounded tables (entries and the text they hold).",
                    &["table"]
                )
            ),
            table_max_entries: register!(
                r,
                names,
                gauges("iotwatch_table_max_entries", "The bound in entries of one of the agent's tables.", &["table"])
            ),
            table_evictions: register!(
                r,
                names,
                counters(
                    "iotwatch_table_evictions_total",
                    "Entries evicted from one of the agent's tables to stay within its bounds (the least recently \
                     seen go; what they counted stays in the sums). openers: a conversation whose opener was \
                     forgotten and that comes back with its answer alone counts under the answer's destination port.",
                    &["table"]
                )
            ),
            device_info: register!(
                r,
                names,
                gauges(
                    "iotwatch_device_info",
                    "A device (unicast MAC seen on the bridge): its IEEE vendor, its display name and the source that gave it (name_source: upnp_friendly_name, dhcp_hostname, mdns_host, dhcpv6_fqdn, mdns_service, upnp_model, oui_vendor or mac), and whether its MAC is randomised (locally administered).",
                    &["mac", "vendor", "name", "name_source", "randomised"]
                )
            ),
            bpf_events: register!(
                r,
                names,
                counters(
                    "iotwatch_bpf_events_total",
                    "The kernel program's own statistics: frames, parse outcomes, map update failures.",
                    &["event"]
                )
            ),
            map_entries: register!(r, names, gauges("iotwatch_bpf_map_entries", "Entries in a BPF map.", &["map"])),
            map_capacity: register!(
                r,
                names,
                gauges(
                    "iotwatch_bpf_map_capacity",
                    "Entries a BPF map holds without loss (CONVERSATIONS: before the LRU evicts; the kernel map is larger by the free entries its LRU keeps per CPU).",
                    &["map"]
                )
            ),
            aged_out: register!(
                r,
                names,
                counters(
                    "iotwatch_bpf_map_aged_out_total",
                    "Entries the agent removed from a BPF map after they were idle (--bpf.mac-idle, --bpf.conversation-idle), their counts kept.",
                    &["map"]
                )
            ),
            evictions: register!(
                r,
                names,
                IntCounter::new(
                    "iotwatch_bpf_conversation_evictions_total",
                    "Conversations evicted from the LRU map before the agent aged them out (their latest counts are lost)."
                )
            ),
            overflow: register!(
                r,
                names,
                counters(
                    "iotwatch_label_overflow_total",
                    "Distinct label values folded into \"other\" because of a cardinality cap.",
                    &["label"]
                )
            ),
            attached: register!(
                r,
                names,
                gauges(
                    "iotwatch_attached_interfaces",
                    "Interfaces the program is attached to, by hook.",
                    &["interface", "hook"]
                )
            ),
            refused: register!(
                r,
                names,
                gauges(
                    "iotwatch_refused_interfaces",
                    "Bridge ports not attached because the attach mode cannot count them exactly (xdp-skb on a \
                     port that receives GRO/TSO aggregates; the log says which offload).",
                    &["interface"]
                )
            ),
            attach_failed: register!(
                r,
                names,
                gauges(
                    "iotwatch_attach_failed_interfaces",
                    "1 per interface not attached, by reason: the attach failed (xdp_busy: another XDP program holds \
                     the port; no_native_xdp: its driver has none; tc, xdp, load: the kernel refused, the log says \
                     why; tried again every poll) or the attach mode refused it (aggregates). The other ports are \
                     counted.",
                    &["interface", "reason"]
                )
            ),
            events: register!(
                r,
                names,
                counters(
                    "iotwatch_events_total",
                    "Protocol events (parsed header samples) a device sent, by kind.",
                    &["mac", "kind"]
                )
            ),
            samples: register!(
                r,
                names,
                counters(
                    "iotwatch_samples_total",
                    "Header samples by kind and outcome: sent to userspace, dropped (ring buffer full), suppressed (per-source rate limit).",
                    &["kind", "outcome"]
                )
            ),
            parse_errors: register!(
                r,
                names,
                counters("iotwatch_sample_parse_errors_total", "Samples no parser could read.", &["kind"])
            ),
            event_log_errors: register!(
                r,
                names,
                IntCounter::new(
                    "iotwatch_event_log_errors_total",
                    "Event log lines (events and findings) lost to write errors (a full disk, ...)."
                )
            ),
            event_log_dropped: register!(
                r,
                names,
                IntCounter::new(
                    "iotwatch_event_log_dropped_total",
                    "Event log lines dropped because its writer fell behind the events (a slow or stuck disk)."
                )
            ),
            clock_jumps: register!(
                r,
                names,
                IntCounter::new(
                    "iotwatch_clock_jumps_total",
                    "Jumps of the wall clock (more than 1 s; NTP synchronising a Pi with no real-time clock) that moved the times of events, findings and device state."
                )
            ),
            clock_last_jump: register!(
                r,
                names,
                Gauge::new(
                    "iotwatch_clock_last_jump_seconds",
                    "Size of the latest wall clock jump (negative: backwards); 0 before any."
                )
            ),
            scrape_duration: register!(
                r,
                names,
                Gauge::new("iotwatch_scrape_duration_seconds", "Time the last refresh of the maps took.")
            ),
            findings: register!(
                r,
                names,
                counters(
                    "iotwatch_findings_total",
                    "Findings raised per rule and device (one per device and rule per --detect.window; \
                     the report and the event log carry their evidence).",
                    &["rule", "mac"]
                )
            ),
            findings_dropped: register!(
                r,
                names,
                IntCounter::new(
                    "iotwatch_findings_dropped_total",
                    "Findings that left the report to make room for newer ones (the counters keep them)."
                )
            ),
            reassembly: register!(
                r,
                names,
                counters(
                    "iotwatch_tcp_segments_total",
                    "Sampled TCP segments before parsing: joined to the head before them (a request split after its \
                     method), held heads that went out alone (unjoined; evicted: the table was full), and \
                     retransmissions dropped.",
                    &["outcome"]
                )
            ),
            last_seen: register!(
                r,
                names,
                GaugeVec::new(
                    Opts::new(
                        "iotwatch_device_last_seen_timestamp_seconds",
                        "When a device last sent a frame (as of the poll that saw it), seconds since the epoch."
                    ),
                    &["mac"]
                )
            ),
            ntp_servers: register!(
                r,
                names,
                gauges(
                    "iotwatch_device_ntp_servers",
                    "Distinct NTP servers a device asked within --detect.window (ntp_fanout above --detect.ntp-servers).",
                    &["mac"]
                )
            ),
            scan_hosts: register!(
                r,
                names,
                gauges(
                    "iotwatch_device_opened_hosts",
                    "Distinct hosts a device opened conversations to within --detect.scan-window (scan at --detect.scan-hosts).",
                    &["mac"]
                )
            ),
            firmware_bytes: register!(
                r,
                names,
                gauges(
                    "iotwatch_device_firmware_download_bytes",
                    "Bytes of firmware downloads over plain HTTP a device fetched within --detect.window.",
                    &["mac"]
                )
            ),
            mdns_leak_score: register!(
                r,
                names,
                gauges(
                    "iotwatch_device_mdns_leak_score",
                    "Kinds of private data (model, serial, MAC, firmware version, a person's name) in a device's latest \
                     unsolicited mDNS announcement, 0 to 5.",
                    &["mac"]
                )
            ),
            registry: r,
            names: std::mem::take(names),
            limits,
            devices: LabelBudget::new(limits.max_devices),
            ports: HashMap::new(),
            destinations: HashMap::new(),
        };
        // The agent's own resident and virtual memory, CPU time, open and maximum file
        // descriptors, threads and start time (`process_*`, read from /proc/self on each scrape),
        // under the names Prometheus' client libraries give them.
        let process = prometheus::process_collector::ProcessCollector::for_self();
        m.names.extend(prometheus::core::Collector::desc(&process).iter().map(|d| d.fq_name.clone()));
        m.registry.register(Box::new(process)).expect("process metric names are unique");
        m.map_capacity.with_label_values(&[DEVICE_STATS]).set(i64::from(limits.map_capacity_macs));
        m.map_capacity.with_label_values(&[CONVERSATIONS]).set(i64::from(limits.map_capacity_conversations));
        m
    }

    /// The devices with series of their own.
    pub fn devices_with_series(&self) -> Vec<Mac> {
        self.devices.admitted().copied().collect()
    }

    fn mac_label(&mut self, mac: Mac) -> String {
        if self.devices.admit(&mac) { mac.to_string() } else { OTHER.to_owned() }
    }

    /// Raises the counters and sets the gauges to what `p` holds; `now_ns` is the program's
    /// clock now (the clock of the ledger's last-seen times).
    pub fn sync(&mut self, p: &View<'_>, now_ns: u64, attached: &[(String, Hook)], seconds: f64) {
        let (ledger, snap, oui) = (p.ledger, p.last, p.oui);
        // Busiest first, so that when the cap bites, the busiest devices keep their own series.
        let mut devices: Vec<_> = ledger.devices().iter().collect();
        devices.sort_by_key(|(_, d)| std::cmp::Reverse(d.total(Direction::Tx).bytes + d.total(Direction::Rx).bytes));
        // Names arrive later than traffic: rebuilt each time so an old name leaves no stale series.
        self.device_info.reset();
        let mut traffic: BTreeMap<(String, Direction, &str), Totals> = BTreeMap::new();
        let mut ports: BTreeMap<(String, Transport, String), Totals> = BTreeMap::new();
        for (mac, dev) in devices {
            let label = self.mac_label(*mac);
            if label != OTHER {
                let vendor = oui.vendor(*mac);
                let display = p.identities.display(*mac, vendor);
                let (vendor, name) = (sanitize(vendor.unwrap_or(""), 64), sanitize(&display.name, 64));
                let randomised = if mac.is_local() { "true" } else { "false" };
                self.device_info
                    .with_label_values(&[label.as_str(), &vendor, &name, display.source, randomised])
                    .set(1);
            }
            for ((dir, scope), t) in &dev.traffic {
                traffic.entry((label.clone(), *dir, scope.as_str())).or_default().add(t.packets, t.bytes);
            }
            if label == OTHER {
                continue;
            }
            let budget = self.ports.entry(*mac).or_insert_with(|| LabelBudget::new(self.limits.top_ports));
            let mut by_bytes: Vec<_> = dev.ports.iter().collect();
            by_bytes.sort_by_key(|(_, t)| std::cmp::Reverse(t.bytes));
            for ((proto, port), t) in by_bytes {
                let port_label = if budget.admit(&(*proto, *port)) { port.to_string() } else { OTHER.to_owned() };
                ports.entry((label.clone(), *proto, port_label)).or_default().add(t.packets, t.bytes);
            }
        }
        // Evicted devices never had series of their own (those are pinned in the ledger).
        for ((dir, scope), t) in ledger.departed() {
            traffic.entry((OTHER.to_owned(), *dir, scope.as_str())).or_default().add(t.packets, t.bytes);
        }
        for ((mac, dir, scope), t) in &traffic {
            let l = [mac.as_str(), dir.as_str(), scope];
            raise(&self.device_packets.with_label_values(&l), t.packets);
            raise(&self.device_bytes.with_label_values(&l), t.bytes);
        }
        for ((mac, proto, port), t) in &ports {
            let l = [mac.as_str(), proto.as_str(), port.as_str()];
            raise(&self.port_packets.with_label_values(&l), t.packets);
            raise(&self.port_bytes.with_label_values(&l), t.bytes);
        }

        let mut macs: BTreeMap<(String, Direction), Totals> = BTreeMap::new();
        for (mac, c) in &snap.macs {
            let label = self.mac_label(*mac);
            macs.entry((label.clone(), Direction::Tx)).or_default().add(c.tx_packets, c.tx_bytes);
            macs.entry((label, Direction::Rx)).or_default().add(c.rx_packets, c.rx_bytes);
        }
        let gone = snap.macs_departed;
        macs.entry((OTHER.to_owned(), Direction::Tx)).or_default().add(gone.tx_packets, gone.tx_bytes);
        macs.entry((OTHER.to_owned(), Direction::Rx)).or_default().add(gone.rx_packets, gone.rx_bytes);
        for ((mac, dir), t) in &macs {
            let l = [mac.as_str(), dir.as_str()];
            raise(&self.mac_packets.with_label_values(&l), t.packets);
            raise(&self.mac_bytes.with_label_values(&l), t.bytes);
        }

        for stat in Stat::ALL {
            if let Some(v) = snap.stats.get(*stat as usize) {
                raise(&self.bpf_events.with_label_values(&[stat.name()]), *v);
            }
        }
        self.map_entries.with_label_values(&[DEVICE_STATS]).set(snap.mac_entries as i64);
        self.map_entries.with_label_values(&[CONVERSATIONS]).set(snap.conversation_entries as i64);
        raise(&self.aged_out.with_label_values(&[DEVICE_STATS]), snap.macs_aged_out);
        raise(&self.aged_out.with_label_values(&[CONVERSATIONS]), snap.aged_out);
        raise(&self.evictions, snap.evictions);
        for t in p.tables() {
            let l = [t.table];
            self.table_entries.with_label_values(&l).set(t.entries as i64);
            self.table_bytes.with_label_values(&l).set(t.bytes as i64);
            self.table_max_entries.with_label_values(&l).set(t.max_entries as i64);
            raise(&self.table_evictions.with_label_values(&l), t.evicted);
        }
        raise(&self.overflow.with_label_values(&["device"]), self.devices.overflow());
        raise(&self.overflow.with_label_values(&["port"]), self.ports.values().map(LabelBudget::overflow).sum());
        let mut events: BTreeMap<(String, &str), u64> = BTreeMap::new();
        for (mac, counted) in &p.events.counts {
            let label = self.mac_label(*mac);
            for (kind, n) in &counted.by_kind {
                *events.entry((label.clone(), kind.name())).or_default() += n;
            }
        }
        // Devices evicted from the counts were never ones with series of their own (pinned).
        for (kind, n) in &p.events.counts_departed {
            *events.entry((OTHER.to_owned(), kind.name())).or_default() += n;
        }
        for ((mac, kind), n) in &events {
            raise(&self.events.with_label_values(&[mac.as_str(), kind]), *n);
        }
        for kind in SampleKind::ALL {
            for (o, name) in outcome::NAMES.iter().enumerate() {
                raise(&self.samples.with_label_values(&[kind.name(), name]), p.sample_counts[kind as usize][o]);
            }
            raise(
                &self.parse_errors.with_label_values(&[kind.name()]),
                p.events.parse_errors.get(&kind).copied().unwrap_or(0),
            );
        }
        raise(&self.event_log_errors, p.event_log_errors);
        raise(&self.event_log_dropped, p.event_log_dropped);
        raise(&self.clock_jumps, p.clock_jumps.count);
        self.clock_last_jump.set(p.clock_jumps.last_s);
        self.sync_findings(p);
        self.sync_peers(p, now_ns);
        self.sync_destinations(p);
        self.attached.reset();
        for (iface, hook) in attached {
            self.attached.with_label_values(&[iface.as_str(), hook.as_str()]).set(1);
        }
        self.scrape_duration.set(seconds);
    }

    /// The detectors' findings and the per-device figures their rules judge by.
    fn sync_findings(&mut self, p: &View<'_>) {
        let d = p.detectors;
        let mut raised: BTreeMap<(&str, String), u64> = BTreeMap::new();
        for ((rule, mac), n) in &d.findings.raised {
            *raised.entry((rule.as_str(), self.mac_label(*mac))).or_default() += n;
        }
        for (rule, n) in &d.findings.raised_folded {
            *raised.entry((rule.as_str(), OTHER.to_owned())).or_default() += n;
        }
        for ((rule, mac), n) in &raised {
            raise(&self.findings.with_label_values(&[rule, mac.as_str()]), *n);
        }
        raise(&self.findings_dropped, d.findings.dropped);
        let r = p.events.reassembly.stats;
        for (outcome, n) in [
            ("joined", r.segments_joined),
            ("unjoined", r.segments_unjoined),
            ("evicted", r.evictions),
            ("retransmission", r.retransmissions),
        ] {
            raise(&self.reassembly.with_label_values(&[outcome]), n);
        }
        // Gauges: devices folded into "other" have no series (a sum of times or servers means nothing).
        let admitted = |m: &mut Self, mac: Mac| -> Option<String> { m.devices.admit(&mac).then(|| mac.to_string()) };
        let last_seen: Vec<_> = d.presence.last_seen().collect();
        for (mac, ts) in last_seen {
            if let Some(l) = admitted(self, mac) {
                self.last_seen.with_label_values(&[l.as_str()]).set(ts);
            }
        }
        self.ntp_servers.reset();
        let ntp: Vec<_> = d.ntp.all().collect();
        for (mac, n) in ntp {
            if let Some(l) = admitted(self, mac) {
                self.ntp_servers.with_label_values(&[l.as_str()]).set(n as i64);
            }
        }
        self.scan_hosts.reset();
        let opened: Vec<_> = d.conversations.opened_hosts().collect();
        for (mac, n) in opened {
            if let Some(l) = admitted(self, mac) {
                self.scan_hosts.with_label_values(&[l.as_str()]).set(n as i64);
            }
        }
        self.mdns_leak_score.reset();
        let scores: Vec<_> = d.discovery.leak_scores().collect();
        for (mac, n) in scores {
            if let Some(l) = admitted(self, mac) {
                self.mdns_leak_score.with_label_values(&[l.as_str()]).set(n as i64);
            }
        }
        self.firmware_bytes.reset();
        for (mac, n) in d.firmware.bytes_by_device() {
            if let Some(l) = admitted(self, mac) {
                self.firmware_bytes.with_label_values(&[l.as_str()]).set(n as i64);
            }
        }
    }

    /// Each device's traffic with Internet peers, by their country and by their provider (devices
    /// with series of their own; the Internet traffic of the others is in `mac="other"` of
    /// iotwatch_device_bytes_total). Sums over the ledger's peers and what its evicted peers
    /// left under their place, so the counters only rise.
    fn sync_destinations(&mut self, p: &View<'_>) {
        let mut sums: BTreeMap<(String, Direction, Place, String), Totals> = BTreeMap::new();
        for (mac, dev) in p.ledger.devices() {
            if !self.devices.admit(mac) {
                continue;
            }
            let live = dev.peers.iter().filter(|(ip, _)| p.scopes.of_ip(**ip) == Scope::Internet);
            let live = live.map(|(ip, peer)| (p.peers.place(*ip), TxRx { tx: peer.tx, rx: peer.rx }));
            let mut peers: Vec<(peerdb::Place, TxRx)> = live.collect();
            peers.extend(dev.departed_peers.iter().map(|(place, t)| (place.clone(), *t)));
            // Busiest first, so that the cap keeps the busiest countries and providers.
            peers.sort_by_key(|(_, t)| std::cmp::Reverse(t.tx.bytes + t.rx.bytes));
            for ((country, provider), peer) in peers {
                for (place, value) in [(Place::Country, country), (Place::Provider, provider)] {
                    let budget = self
                        .destinations
                        .entry((*mac, place))
                        .or_insert_with(|| LabelBudget::new(self.limits.top_destinations));
                    let value = if budget.admit(&value) { value } else { OTHER.to_owned() };
                    for (dir, t) in [(Direction::Tx, peer.tx), (Direction::Rx, peer.rx)] {
                        sums.entry((mac.to_string(), dir, place, value.clone())).or_default().add(t.packets, t.bytes);
                    }
                }
            }
        }
        for ((mac, dir, place, value), t) in &sums {
            let l = [mac.as_str(), dir.as_str(), value.as_str()];
            let (bytes, packets) = match place {
                Place::Country => (&self.country_bytes, &self.country_packets),
                Place::Provider => (&self.provider_bytes, &self.provider_packets),
            };
            raise(&bytes.with_label_values(&l), t.bytes);
            raise(&packets.with_label_values(&l), t.packets);
        }
        for (place, name) in [(Place::Country, "country"), (Place::Provider, "provider")] {
            let folded = self.destinations.iter().filter(|((_, pl), _)| *pl == place).map(|(_, b)| b.overflow()).sum();
            raise(&self.overflow.with_label_values(&[name]), folded);
        }
        let cache = p.peers.cache_stats();
        raise(&self.peerdb_lookups.with_label_values(&["hit"]), cache.hits);
        raise(&self.peerdb_lookups.with_label_values(&["miss"]), cache.misses);
        for (kind, name) in [(peerdb::SourceKind::Asn, "asn"), (peerdb::SourceKind::Country, "country")] {
            let entries: usize = p.peers.sources().iter().filter(|s| s.kind == kind).map(|s| s.entries).sum();
            self.peerdb_entries.with_label_values(&[name]).set(entries as i64);
        }
    }

    /// Distinct LAN and Internet peers of each device with its own series, seen since
    /// `--metrics.peer-window` before `now_ns` (devices folded into "other" have none: a sum of
    /// distinct counts means nothing).
    fn sync_peers(&mut self, p: &View<'_>, now_ns: u64) {
        self.device_peers.reset();
        let since = now_ns.saturating_sub(self.limits.peer_window_ns);
        for (mac, dev) in p.ledger.devices() {
            if !self.devices.admit(mac) {
                continue;
            }
            let (mut lan, mut internet) = (0, 0);
            for ip in dev.peers.iter().filter(|(_, peer)| peer.last_seen_ns >= since).map(|(ip, _)| *ip) {
                match p.scopes.of_ip(ip) {
                    Scope::Lan => lan += 1,
                    Scope::Internet => internet += 1,
                    _ => {}
                }
            }
            let label = mac.to_string();
            self.device_peers.with_label_values(&[label.as_str(), Scope::Lan.as_str()]).set(lan);
            self.device_peers.with_label_values(&[label.as_str(), Scope::Internet.as_str()]).set(internet);
        }
    }

    /// Ports refused by the attach mode, 1 each; a port attached or gone disappears.
    pub fn set_refused(&mut self, refused: &[String]) {
        self.refused.reset();
        for iface in refused {
            self.refused.with_label_values(&[iface.as_str()]).set(1);
        }
    }

    /// Interfaces not attached and why, 1 each; one attached since, or gone, disappears.
    pub fn set_attach_failures(&mut self, failures: &[(String, &'static str)]) {
        self.attach_failed.reset();
        for (iface, reason) in failures {
            self.attach_failed.with_label_values(&[iface.as_str(), reason]).set(1);
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!("encoding metrics: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{ConvKey, DeviceCounters, ip_version};
    use iotwatch_core::{
        events::EventStore,
        ledger::{Delta, Ledger},
        oui::Oui,
        scope::ScopeClassifier,
        snapshot::{SampleCounts, Snapshot},
    };

    use super::*;

    static DETECTORS: std::sync::LazyLock<iotwatch_core::detect::Detectors> =
        std::sync::LazyLock::new(iotwatch_core::detect::Detectors::default);
    static PEERS: std::sync::LazyLock<iotwatch_core::peerdb::PeerDb> =
        std::sync::LazyLock::new(iotwatch_core::peerdb::PeerDb::empty);
    static IDENTITIES: std::sync::LazyLock<iotwatch_core::identity::Identities> =
        std::sync::LazyLock::new(iotwatch_core::identity::Identities::default);

    fn view<'a>(
        ledger: &'a Ledger,
        last: &'a Snapshot,
        oui: &'a Oui,
        scopes: &'a ScopeClassifier,
        events: &'a EventStore,
        counts: &'a SampleCounts,
    ) -> View<'a> {
        View {
            ledger,
            last,
            oui,
            scopes,
            events,
            identities: &IDENTITIES,
            peers: &PEERS,
            detectors: &DETECTORS,
            sample_counts: counts,
            event_log_errors: 0,
            event_log_dropped: 0,
            clock_jumps: Default::default(),
        }
    }

    fn limits(max_devices: usize, top_ports: usize) -> Limits {
        Limits {
            max_devices,
            top_ports,
            top_destinations: 2,
            peer_window_ns: 100,
            map_capacity_macs: 16,
            map_capacity_conversations: 64,
        }
    }

    fn delta(src: u8, dport: u16, bytes: u64) -> Delta {
        let mut key = ConvKey {
            src_mac: [2, 0, 0, 0, 0, src],
            dst_mac: [2, 0, 0, 0, 0, 1],
            ip_version: ip_version::V4,
            proto: 17,
            dst_port: dport,
            ..ConvKey::default()
        };
        key.src_ip[..4].copy_from_slice(&[192, 168, 77, src]);
        key.dst_ip[..4].copy_from_slice(&[203, 0, 113, 10]);
        Delta { key, packets: 1, bytes, first_seen_ns: 1, last_seen_ns: 1 }
    }

    fn line<'a>(text: &'a str, start: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(start))
    }

    /// The process metrics client libraries export, read from /proc/self at each render.
    #[test]
    fn process_metrics_are_exported_and_listed() {
        let m = Metrics::new(limits(1, 1));
        let text = m.render();
        for name in [
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(m.names().iter().any(|n| n == name), "{name} in {:?}", m.names());
            let value: f64 = line(&text, &format!("{name} "))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"));
            assert!(value > 0.0 || name == "process_cpu_seconds_total", "{name} = {value}");
        }
    }

    #[test]
    fn counters_only_rise_when_the_ledger_evicts_devices() {
        let scopes = ScopeClassifier::new(vec!["192.168.77.0/24".parse().unwrap()]);
        let bounds = iotwatch_core::ledger::Bounds { devices: 3, peers: 100, ips: 100 };
        let mut ledger = Ledger::with_bounds(bounds, 100);
        let (oui, events, counts, snap) =
            (Oui::default(), EventStore::default(), SampleCounts::default(), Snapshot::default());
        // Series of their own for two devices (the receiver ...:01 and ...:0a); the rest in other.
        let mut m = Metrics::new(limits(2, 2));
        let mut other = 0;
        let mut seen = BTreeMap::new();
        for (poll, src) in [10u8, 11, 12, 13, 14, 10, 15, 16, 10].into_iter().enumerate() {
            let mut d = delta(src, 53, 100);
            (d.first_seen_ns, d.last_seen_ns) = (poll as u64, poll as u64);
            ledger.apply(&d, &scopes);
            ledger.enforce_bounds(|_| None);
            other += if src == 10 { 0 } else { 100 };
            m.sync(&view(&ledger, &snap, &oui, &scopes, &events, &counts), 1, &[], 0.01);
            ledger.pin(m.devices_with_series());
            let text = m.render();
            for l in text.lines().filter(|l| l.starts_with("iotwatch_device_bytes_total")) {
                let (series, v) = l.rsplit_once(' ').unwrap();
                let v: u64 = v.parse().unwrap();
                assert!(v >= seen.get(series).copied().unwrap_or(0), "{series} fell to {v}");
                seen.insert(series.to_owned(), v);
            }
            let own = r#"iotwatch_device_bytes_total{direction="tx",mac="02:00:00:00:00:0a",scope="internet"}"#;
            assert_eq!(seen.get(own), Some(&(100 * (1 + u64::from(poll >= 5) + u64::from(poll >= 8)))), "{text}");
            if poll > 0 {
                let o = r#"iotwatch_device_bytes_total{direction="tx",mac="other",scope="internet"}"#;
                assert_eq!(seen.get(o), Some(&other), "poll {poll}: {text}");
            }
        }
        let evicted = ledger.tables()[0].evicted;
        assert!(evicted >= 3, "the spoofed devices made room: {evicted}");
    }

    #[test]
    fn caps_fold_into_other_and_count_overflow() {
        let scopes = ScopeClassifier::new(vec!["192.168.77.0/24".parse().unwrap()]);
        let mut ledger = Ledger::default();
        for (src, port, bytes) in [(10, 53, 1000), (10, 123, 500), (10, 443, 100), (11, 80, 50)] {
            ledger.apply(&delta(src, port, bytes), &scopes);
        }
        let snap = Snapshot {
            macs: vec![(
                Mac([2, 0, 0, 0, 0, 10]),
                DeviceCounters { tx_packets: 3, tx_bytes: 1600, ..Default::default() },
            )],
            stats: vec![7; Stat::ALL.len()],
            mac_entries: 13,
            macs_aged_out: 5,
            aged_out: 2,
            ..Snapshot::default()
        };
        // Two series: device ...:0a (busiest) and the receiver ...:01; ...:0b folds into other.
        let mut m = Metrics::new(limits(2, 2));
        let (oui, events, mut counts) = (Oui::default(), EventStore::default(), SampleCounts::default());
        counts[SampleKind::Ssdp as usize][outcome::SUPPRESSED] = 3;
        m.sync(&view(&ledger, &snap, &oui, &scopes, &events, &counts), 1, &[("p1".into(), Hook::TcIngress)], 0.01);
        let text = m.render();
        assert!(
            line(&text, r#"iotwatch_device_bytes_total{direction="tx",mac="02:00:00:00:00:0a",scope="internet"} 1600"#)
                .is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"iotwatch_device_bytes_total{direction="rx",mac="02:00:00:00:00:01",scope="lan"} 1650"#)
                .is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"iotwatch_device_bytes_total{direction="tx",mac="other",scope="internet"} 50"#).is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"iotwatch_device_port_bytes_total{mac="02:00:00:00:00:0a",port="53",proto="udp"} 1000"#)
                .is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"iotwatch_device_port_bytes_total{mac="02:00:00:00:00:0a",port="123",proto="udp"} 500"#)
                .is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"iotwatch_device_port_bytes_total{mac="02:00:00:00:00:0a",port="other",proto="udp"} 100"#)
                .is_some(),
            "{text}"
        );
        assert!(line(&text, r#"iotwatch_label_overflow_total{label="device"} 1"#).is_some(), "{text}");
        assert!(line(&text, r#"iotwatch_label_overflow_total{label="port"} 1"#).is_some(), "{text}");
        assert!(line(&text, r#"iotwatch_bpf_events_total{event="frames"} 7"#).is_some(), "{text}");
        assert!(line(&text, r#"iotwatch_attached_interfaces{hook="tc_ingress",interface="p1"} 1"#).is_some(), "{text}");
        assert!(line(&text, r#"iotwatch_bpf_map_capacity{map="CONVERSATIONS"} 64"#).is_some(), "{text}");
        assert!(line(&text, r#"iotwatch_bpf_map_capacity{map="DEVICE_STATS"} 16"#).is_some(), "{text}");
        assert!(line(&text, r#"iotwatch_bpf_map_entries{map="DEVICE_STATS"} 13"#).is_some(), "{text}");
        assert!(line(&text, r#"iotwatch_bpf_map_aged_out_total{map="DEVICE_STATS"} 5"#).is_some(), "{text}");
        assert!(line(&text, r#"iotwatch_bpf_map_aged_out_total{map="CONVERSATIONS"} 2"#).is_some(), "{text}");
        assert!(
            line(&text, r#"iotwatch_mac_bytes_total{direction="tx",mac="02:00:00:00:00:0a"} 1600"#).is_some(),
            "{text}"
        );
        assert!(line(&text, r#"iotwatch_samples_total{kind="ssdp",outcome="suppressed"} 3"#).is_some(), "{text}");
        assert!(
            line(&text, r#"iotwatch_samples_total{kind="mqtt",outcome="dropped"} 0"#).is_some(),
            "every loss is exported from the start: {text}"
        );

        // More traffic later: counters rise to the new totals, the folded device stays folded.
        ledger.apply(&delta(11, 80, 50), &scopes);
        ledger.apply(&delta(10, 443, 900), &scopes);
        m.sync(&view(&ledger, &snap, &oui, &scopes, &events, &counts), 1, &[], 0.01);
        let text = m.render();
        assert!(
            line(&text, r#"iotwatch_device_bytes_total{direction="tx",mac="other",scope="internet"} 100"#).is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"iotwatch_device_port_bytes_total{mac="02:00:00:00:00:0a",port="other",proto="udp"} 1000"#)
                .is_some(),
            "{text}"
        );
        assert!(line(&text, "iotwatch_attached_interfaces{").is_none(), "detached interfaces disappear");
    }

    /// A TCP or UDP direction between two devices' (last byte of MAC and IP, port), first seen
    /// at `first` and last seen at `last`.
    fn conv(from: (u8, u16), to: (u8, u16), remote: Option<[u8; 4]>, first: u64, last: u64, bytes: u64) -> Delta {
        let mut key = ConvKey {
            src_mac: [2, 0, 0, 0, 0, from.0],
            dst_mac: [2, 0, 0, 0, 0, to.0],
            ip_version: ip_version::V4,
            proto: 6,
            src_port: from.1,
            dst_port: to.1,
            ..ConvKey::default()
        };
        key.src_ip[..4].copy_from_slice(&[192, 168, 77, from.0]);
        key.dst_ip[..4].copy_from_slice(&remote.unwrap_or([192, 168, 77, to.0]));
        Delta { key, packets: 1, bytes, first_seen_ns: first, last_seen_ns: last }
    }

    #[test]
    fn distinct_peers_in_the_window_by_scope_and_none_for_other() {
        let scopes = ScopeClassifier::new(vec!["192.168.77.0/24".parse().unwrap()]);
        let mut ledger = Ledger::default();
        for d in [
            // Device 10 (the busiest): a LAN peer at 950, Internet peers at 990 and 800 (before the
            // window of 100 that ends at 1000), a multicast group (not counted).
            conv((10, 40_000), (20, 80), None, 900, 950, 5000),
            conv((10, 40_001), (1, 443), Some([203, 0, 113, 7]), 900, 990, 5000),
            conv((10, 40_002), (1, 443), Some([198, 51, 100, 9]), 700, 800, 5000),
            conv((10, 40_003), (1, 1900), Some([239, 255, 255, 250]), 990, 990, 5000),
            // Device 11: folded into "other", like device 20 (a cap of 2: devices 10 and 1, the
            // gateway, the busiest).
            conv((11, 40_000), (1, 443), Some([203, 0, 113, 7]), 990, 990, 10),
        ] {
            ledger.apply(&d, &scopes);
        }
        let mut m = Metrics::new(limits(2, 10));
        let (oui, events, counts, snap) =
            (Oui::default(), EventStore::default(), SampleCounts::default(), Snapshot::default());
        m.sync(&view(&ledger, &snap, &oui, &scopes, &events, &counts), 1000, &[], 0.01);
        let text = m.render();
        for want in [
            r#"iotwatch_device_peers{mac="02:00:00:00:00:0a",scope="lan"} 1"#,
            r#"iotwatch_device_peers{mac="02:00:00:00:00:0a",scope="internet"} 1"#,
            // The gateway's peers are the LAN addresses of devices 10 and 11.
            r#"iotwatch_device_peers{mac="02:00:00:00:00:01",scope="lan"} 2"#,
            r#"iotwatch_device_peers{mac="02:00:00:00:00:01",scope="internet"} 0"#,
            r#"iotwatch_label_overflow_total{label="device"} 2"#,
        ] {
            assert!(line(&text, want).is_some(), "{want} in {text}");
        }
        assert!(line(&text, r#"iotwatch_device_peers{mac="other""#).is_none(), "{text}");
        for folded in ["0b", "14"] {
            let start = format!(r#"iotwatch_device_peers{{mac="02:00:00:00:00:{folded}""#);
            assert!(line(&text, &start).is_none(), "{text}");
        }
        // Later, with nothing new: the peers leave the window, the series stay at 0.
        m.sync(&view(&ledger, &snap, &oui, &scopes, &events, &counts), 2000, &[], 0.01);
        let text = m.render();
        assert!(
            line(&text, r#"iotwatch_device_peers{mac="02:00:00:00:00:0a",scope="internet"} 0"#).is_some(),
            "{text}"
        );
    }

    /// A server answering many clients has one port series: its own service port, not one per
    /// client's ephemeral port folded into "other".
    #[test]
    fn a_servers_answers_fill_no_port_budget() {
        let scopes = ScopeClassifier::new(vec!["192.168.77.0/24".parse().unwrap()]);
        let mut ledger = Ledger::default();
        for i in 0..23u8 {
            let client = (100 + i, 50_000 + u16::from(i));
            let first = 10 * u64::from(i);
            ledger.apply(&conv(client, (20, 8815), None, first, first + 2, 100), &scopes);
            ledger.apply(&conv((20, 8815), client, None, first + 1, first + 2, 1000), &scopes);
        }
        let mut m = Metrics::new(limits(64, 2));
        let (oui, events, counts, snap) =
            (Oui::default(), EventStore::default(), SampleCounts::default(), Snapshot::default());
        m.sync(&view(&ledger, &snap, &oui, &scopes, &events, &counts), 300, &[], 0.01);
        let text = m.render();
        let hub: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with(r#"iotwatch_device_port_bytes_total{mac="02:00:00:00:00:14""#))
            .collect();
        assert_eq!(hub, [r#"iotwatch_device_port_bytes_total{mac="02:00:00:00:00:14",port="8815",proto="tcp"} 23000"#]);
        assert!(
            line(&text, r#"iotwatch_device_port_bytes_total{mac="02:00:00:00:00:64",port="8815",proto="tcp"} 100"#)
                .is_some(),
            "a client counts the server's port: {text}"
        );
        assert!(line(&text, r#"iotwatch_label_overflow_total{label="port"} 0"#).is_some(), "{text}");
        assert!(line(&text, r#"iotwatch_table_evictions_total{table="openers"} 0"#).is_some(), "{text}");
        assert!(line(&text, r#"iotwatch_table_max_entries{table="devices"} 16384"#).is_some(), "{text}");
    }

    #[test]
    fn internet_traffic_by_country_and_provider_with_a_cap() {
        let peers = iotwatch_core::peerdb::PeerDb::from_csv_texts(
            "203.0.113.0,203.0.113.255,16509,\"Amazon.com, Inc.\"\n198.18.0.0,198.19.255.255,45102,Alibaba (US) Technology Co.\n",
            "203.0.113.0,203.0.113.255,US\n198.18.0.0,198.19.255.255,CN\n192.0.2.0,192.0.2.255,DE\n",
        );
        let scopes = ScopeClassifier::new(vec!["192.168.77.0/24".parse().unwrap()]);
        let mut ledger = Ledger::default();
        // Busiest first: US (Amazon) 1000, CN (Alibaba) 500, DE (no provider) 100, and a peer
        // nobody knows 10: with two of each kept, DE and the unknown fold into "other".
        for (dst, bytes) in
            [([203, 0, 113, 10], 1000), ([198, 18, 0, 1], 500), ([192, 0, 2, 1], 100), ([198, 51, 100, 1], 10)]
        {
            let mut d = delta(10, 443, bytes);
            d.key.dst_ip[..4].copy_from_slice(&dst);
            ledger.apply(&d, &scopes);
        }
        let (snap, oui, events, counts) =
            (Snapshot::default(), Oui::default(), EventStore::default(), SampleCounts::default());
        let mut m = Metrics::new(limits(8, 4));
        let v = View { peers: &peers, ..view(&ledger, &snap, &oui, &scopes, &events, &counts) };
        m.sync(&v, 1, &[], 0.0);
        let text = m.render();
        let mac = "02:00:00:00:00:0a";
        for (metric, value, bytes) in [
            ("country", "US", 1000),
            ("country", "CN", 500),
            ("country", "other", 110),
            ("provider", "Amazon", 1000),
            ("provider", "Alibaba", 500),
            ("provider", "other", 110),
        ] {
            // Labels in the exposition are sorted by name.
            let want = if metric == "country" {
                format!(
                    r#"iotwatch_device_country_bytes_total{{country="{value}",direction="tx",mac="{mac}"}} {bytes}"#
                )
            } else {
                format!(
                    r#"iotwatch_device_provider_bytes_total{{direction="tx",mac="{mac}",provider="{value}"}} {bytes}"#
                )
            };
            assert!(text.lines().any(|l| l == want), "{want} in:\n{text}");
        }
        assert!(line(&text, r#"iotwatch_label_overflow_total{label="country"} 2"#).is_some(), "DE and unknown folded");
        assert!(line(&text, r#"iotwatch_peerdb_entries{kind="asn"} 2"#).is_some());
        assert!(line(&text, r#"iotwatch_peerdb_lookups_total{outcome="miss"} 4"#).is_some(), "{text}");
    }
}
