//! A flood through the bridge (issue 14): thousands of spoofed source MACs and a million distinct
//! IPv6 addresses, one new conversation per frame, while two real devices ping each other. The
//! agent, with its default bounds, must stay alive and under its documented memory bound, keep
//! its tables within their bounds with every eviction counted, keep /metrics
//! within its label caps, count the real devices exactly, and count every frame, MAC,
//! conversation and sample that did not fit.
//!
//! Oracles: what the generator handed the kernel, the kernel's own veth and bridge counters,
//! and ping's count. Prefix `iwx1`.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Stdio,
    time::Duration,
};

use iotwatch_tests::{agent_bin, privileged_test, temp_dir};
use xtask::{
    HomeLab, LabOptions, Sample,
    agent::Agent,
    benchmem::BOUND_BYTES,
    flood::{self, Family, Plan},
    metrics::{scrape, sum},
    netns::LinkCounters,
};

const SPOOFED_MACS: u32 = 5_000;
const CONVERSATIONS: u32 = 1_000_000;
const PINGS: u32 = 100;
/// The agent's defaults (README, "Running on a real bridge").
const MAX_MACS: u64 = 4096;
const MAX_DEVICES: usize = 256;
const TOP_PORTS: usize = 10;
const TOP_DESTINATIONS: usize = 10;

fn bpf(samples: &[Sample], event: &str) -> u64 {
    sum(samples, "iotwatch_bpf_events_total", &[("event", event)])
}

/// Distinct values of `label` per value of `by`, over the series of `name`, "other" left out.
fn labels_per(samples: &[Sample], name: &str, by: &[&str], label: &str) -> BTreeMap<Vec<String>, usize> {
    let mut sets: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let key = by.iter().map(|k| s.label(k).unwrap_or_default().to_owned()).collect();
        if let Some(v) = s.label(label).filter(|v| *v != "other") {
            sets.entry(key).or_default().insert(v.to_owned());
        }
    }
    sets.into_iter().map(|(k, v)| (k, v.len())).collect()
}

/// `N packets transmitted, M received` of ping's summary.
fn ping_counts(out: &str) -> (u64, u64) {
    let line = out.lines().find(|l| l.contains("packets transmitted")).expect("ping's summary");
    let num = |what: &str| -> u64 {
        let before = line.split(what).next().expect("field");
        before.trim_end().rsplit([' ', ',']).next().expect("number").parse().expect("a number")
    };
    (num(" packets transmitted"), num(" received"))
}

privileged_test! {
    fn a_flood_stays_within_bounds_and_every_loss_is_counted() {
        let dir = temp_dir("iotwatch-flood");
        let lab = HomeLab::create(LabOptions { prefix: "iwx1".into(), devices: 4, ipv6: false, static_neighbors: true })
            .expect("create the lab");
        // Interfaces coming up send IGMP reports for a second or two; let that pass.
        std::thread::sleep(Duration::from_secs(3));
        let (a, b, flooder, sink) = (&lab.devices[0], &lab.devices[1], &lab.devices[2], &lab.devices[3]);
        flood::pin_to_port(&sink.port, &sink.mac).expect("a static forwarding entry for the sink");
        let log = dir.join("agent.log");
        let mut agent =
            Agent::spawn(&agent_bin(), &lab.bridge, "tc", "127.0.0.1:19495", &[], Some(&log)).expect("start the agent");
        agent.wait_ready(Duration::from_secs(20)).expect("agent ready");

        let links: Vec<String> = lab.devices.iter().map(|d| d.port.clone()).chain([lab.gateway.port.clone(), lab.bridge.clone()]).collect();
        let before: Vec<LinkCounters> = links.iter().map(|l| LinkCounters::read(l).expect("counters")).collect();

        // The real devices talk before the flood (so that they hold their MAC entries and label
        // series, as devices present before an attack do) and through it.
        let mut ping = lab.exec(&a.ns, &["ping", "-n", "-q", "-c", &PINGS.to_string(), "-i", "0.05", "-s", "100", "-W", "2", &b.ip.to_string()]);
        let ping = ping.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start ping");
        std::thread::sleep(Duration::from_millis(1500));
        scrape(&agent.listen).expect("scrape before the flood");

        let plan = Plan {
            macs: SPOOFED_MACS,
            conversations: CONVERSATIONS,
            family: Family::V6,
            dst_mac: flood::mac_bytes(&sink.mac).expect("MAC"),
            dst_ports: 1000,
        };
        let sock = flood::packet_socket(&flooder.ns, "eth0").expect("a packet socket in the flooder");
        let sent = flood::send(&sock, &plan, Duration::from_secs(90)).expect("flood");
        eprintln!("flood: {} frames, {} distinct IPs, in {:.1} s", sent.frames, plan.distinct_ips(), sent.elapsed.as_secs_f64());
        assert!(sent.complete, "the flood did not finish in time: {sent:?}");
        let ping = ping.wait_with_output().expect("ping ends");
        assert!(ping.status.success(), "ping: {}", String::from_utf8_lossy(&ping.stderr));
        let (transmitted, received) = ping_counts(&String::from_utf8_lossy(&ping.stdout));
        assert_eq!(transmitted, u64::from(PINGS));

        // A poll of the maps (every 5 s by default), then the figures.
        std::thread::sleep(Duration::from_secs(6));
        let samples = scrape(&agent.listen).expect("scrape after the flood");
        let memory = agent.memory().expect("the agent's memory");
        agent.check_alive().expect("the agent survives the flood");
        let after: Vec<LinkCounters> = links.iter().map(|l| LinkCounters::read(l).expect("counters")).collect();
        let delta: BTreeMap<&str, LinkCounters> =
            links.iter().zip(after.iter().zip(&before)).map(|(l, (n, o))| (l.as_str(), n.since(*o))).collect();
        eprintln!(
            "agent: VmRSS {:.1} MiB, VmHWM {:.1} MiB; /metrics: {} series",
            memory.rss as f64 / 1048576.0,
            memory.hwm as f64 / 1048576.0,
            samples.len()
        );

        // The agent's tables: within their bounds, and a million addresses overflowed the ones
        // they feed, each eviction counted.
        let table = |name: &str, table: &str| sum(&samples, name, &[("table", table)]);
        let mut tables = BTreeSet::new();
        for s in samples.iter().filter(|s| s.name == "iotwatch_table_max_entries") {
            let t = s.label("table").expect("a table label");
            let (entries, max) = (table("iotwatch_table_entries", t), s.value as u64);
            assert!(entries <= max, "table {t}: {entries} entries over its bound {max}");
            tables.insert(t.to_owned());
        }
        for t in ["devices", "peers", "ips", "openers", "macs", "report_events", "event_counts", "remote_names", "identities"] {
            assert!(tables.contains(t), "no table {t} in /metrics: {tables:?}");
        }
        // The sink's peers, one per spoofed source (5,000), are more than a device keeps: every
        // poll during the flood sees them. How many addresses and openers overflow depends on
        // how many polls fell within the flood's seconds (each sees the conversation map's worth).
        let evicted = table("iotwatch_table_evictions_total", "peers");
        assert!(evicted > 0, "the sink's {SPOOFED_MACS} peers overflowed nothing");
        let table_bytes = sum(&samples, "iotwatch_table_bytes", &[]);
        eprintln!("tables: {:.1} MiB estimated", table_bytes as f64 / 1048576.0);
        // Series caps: devices beyond --metrics.max-devices, ports beyond --metrics.top-ports and
        // destinations beyond --metrics.top-destinations are "other".
        let macs: BTreeSet<&str> =
            samples.iter().filter_map(|s| s.label("mac")).filter(|m| *m != "other").collect();
        assert!(macs.len() <= MAX_DEVICES, "{} MACs with series of their own", macs.len());
        for (key, n) in labels_per(&samples, "iotwatch_device_port_packets_total", &["mac", "proto"], "port") {
            assert!(n <= TOP_PORTS, "{key:?}: {n} port series");
        }
        for (metric, label) in [("iotwatch_device_country_bytes_total", "country"), ("iotwatch_device_provider_bytes_total", "provider")] {
            for (key, n) in labels_per(&samples, metric, &["mac", "direction"], label) {
                assert!(n <= TOP_DESTINATIONS, "{key:?}: {n} {label} series");
            }
        }
        let overflow = sum(&samples, "iotwatch_label_overflow_total", &[("label", "device")]);
        let mac_entries = sum(&samples, "iotwatch_bpf_map_entries", &[("map", "DEVICE_STATS")]);
        assert!(
            overflow + MAX_DEVICES as u64 >= mac_entries,
            "{mac_entries} MACs in the map, {MAX_DEVICES} with series and only {overflow} folded into other"
        );

        // The real devices, exactly: what each sent is what its port received, and the reverse.
        assert_eq!(delta[a.port.as_str()].rx_packets, transmitted, "the lab was quiet but for the pings");
        for d in [a, b] {
            let port = delta[d.port.as_str()];
            let get = |name: &str, dir: &str| sum(&samples, name, &[("mac", &d.mac), ("direction", dir)]);
            assert_eq!(get("iotwatch_mac_packets_total", "tx"), port.rx_packets, "{} tx packets", d.mac);
            assert_eq!(get("iotwatch_mac_bytes_total", "tx"), port.rx_bytes, "{} tx bytes", d.mac);
            assert_eq!(get("iotwatch_mac_packets_total", "rx"), port.tx_packets, "{} rx packets", d.mac);
            assert_eq!(get("iotwatch_mac_bytes_total", "rx"), port.tx_bytes, "{} rx bytes", d.mac);
        }
        assert_eq!(delta[b.port.as_str()].rx_packets, received, "B answered every echo that arrived");

        // Every frame: the flooder's port took all the generator sent, and the program counted
        // every frame that entered the bridge (the ports' ingress, the host's egress).
        assert_eq!((delta[flooder.port.as_str()].rx_packets, delta[flooder.port.as_str()].rx_bytes), (sent.frames, sent.bytes));
        let entered: u64 = lab.devices.iter().map(|d| delta[d.port.as_str()].rx_packets).sum::<u64>()
            + delta[lab.gateway.port.as_str()].rx_packets
            + delta[lab.bridge.as_str()].tx_packets;
        let frames = bpf(&samples, "frames");
        assert_eq!(frames, entered, "frames counted against the kernel's link counters");

        // A full MAC map: each frame counts for its source and its destination, or the failed
        // insert is counted.
        let failed = bpf(&samples, "device_insert_failed");
        assert!(mac_entries <= MAX_MACS && failed > 0, "{mac_entries} MACs in the map, {failed} failed inserts");
        let tx = sum(&samples, "iotwatch_mac_packets_total", &[("direction", "tx")]);
        let rx = sum(&samples, "iotwatch_mac_packets_total", &[("direction", "rx")]);
        assert_eq!(tx + rx + failed, 2 * frames, "per-MAC counts ({tx} tx, {rx} rx) and failed inserts ({failed})");

        // Conversations: every flood frame opened one; each is in the map, aged out or counted
        // as evicted.
        let inserts = bpf(&samples, "conversation_inserts");
        let insert_failed = bpf(&samples, "conversation_insert_failed");
        let real = delta[a.port.as_str()].rx_packets + delta[b.port.as_str()].rx_packets;
        assert!(
            (u64::from(CONVERSATIONS)..=u64::from(CONVERSATIONS) + real).contains(&(inserts + insert_failed)),
            "{inserts} inserts and {insert_failed} failures for {CONVERSATIONS} flooded conversations"
        );
        let evicted = sum(&samples, "iotwatch_bpf_conversation_evictions_total", &[]);
        let aged = sum(&samples, "iotwatch_bpf_map_aged_out_total", &[("map", "CONVERSATIONS")]);
        let live = sum(&samples, "iotwatch_bpf_map_entries", &[("map", "CONVERSATIONS")]);
        assert_eq!(evicted + aged + live, inserts, "evicted {evicted}, aged out {aged}, in the map {live}");
        assert!(evicted > 0, "a million conversations do not fit the default map");

        // Samples: every flood frame's first packet asked for a flow sample; each was sent or
        // counted as dropped, suppressed or capped.
        let flow: u64 = ["sent", "dropped", "suppressed", "capped"]
            .iter()
            .map(|o| sum(&samples, "iotwatch_samples_total", &[("kind", "flow"), ("outcome", o)]))
            .sum();
        assert_eq!(flow, u64::from(CONVERSATIONS), "flow samples by outcome");
        let held_back = sum(&samples, "iotwatch_samples_total", &[("kind", "flow"), ("outcome", "suppressed")])
            + sum(&samples, "iotwatch_samples_total", &[("kind", "flow"), ("outcome", "capped")]);
        assert!(held_back > 0, "the rate limits held the flood back");

        agent.stop().expect("the agent stops cleanly");
        // Memory last, so that a failure here still shows that the counting held.
        assert!(memory.hwm <= BOUND_BYTES, "VmHWM {} bytes over the documented bound of {BOUND_BYTES}", memory.hwm);
    }
}
