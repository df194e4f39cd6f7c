//! The wall clock's jumps, against an independent oracle: an agent whose clock was right all
//! along. The same samples and conversation deltas (program clock) go to it and to an agent
//! started with the wall clock two days off, which the clock then corrects (as NTP does on a
//! Pi without a real-time clock): once every stored time has moved by the jump, the two must
//! hold the same state, compared whole (report, state files, last-seen times), and must go on
//! to raise the same findings. Each step of the script is there so that a time left behind
//! changes what follows (a window, a baseline, a grace period).

use agent_common::ConvKey;
use serde_json::json;

use crate::{
    clock::{Clock, Offsets},
    detect::{Config, Context, Detectors, destinations},
    events::{EventStore, sample_record},
    identity::{self, Identities},
    ledger::{Delta, Ledger, v4_key},
    oui::Oui,
    peerdb::PeerDb,
    proto::{Kind, fixtures},
    report,
    scope::ScopeClassifier,
    snapshot::{SampleCounts, Snapshot},
    view::View,
};

/// The DHCP fixture's client.
const CAM: [u8; 6] = [0xd8, 0xf1, 0x5b, 0xaa, 0xbb, 0xcc];
const HUB: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x14];
const GW: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x01];
const DOOR: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x33];
const PLUG: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x34];
const TV: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x36];
const MDNS_GROUP: [u8; 6] = [1, 0, 0x5e, 0, 0, 0xfb];
const SSDP_GROUP: [u8; 6] = [1, 0, 0x5e, 0x7f, 0xff, 0xfa];
/// The true wall clock against the program's, and a jump of two days.
const TRUE_NS: i64 = 1_700_000_000_000_000_000;
const TWO_DAYS_NS: i64 = 172_800_000_000_000;
/// Yesterday, in what the state files remember.
const YESTERDAY: f64 = 1_700_000_000.0 - 86_400.0;

fn ns(at_s: u64) -> u64 {
    1_000_000_000_000 + at_s * 1_000_000_000
}

fn key(src: [u8; 6], dst: [u8; 6], sip: [u8; 4], dip: [u8; 4], proto: u8, sport: u16, dport: u16) -> ConvKey {
    v4_key(src, dst, sip, dip, proto, sport, dport)
}

fn delta(key: ConvKey, packets: u64, bytes: u64, (first_s, last_s): (u64, u64)) -> Delta {
    Delta { key, packets, bytes, first_seen_ns: ns(first_s), last_seen_ns: ns(last_s) }
}

/// An mDNS question for `_ewelink._tcp.local` PTR (what the announcement fixture answers).
fn mdns_question() -> Vec<u8> {
    let mut m = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend(b"\x08_ewelink\x04_tcp\x05local\x00\x00\x0c\x00\x01");
    m
}

/// The state files a restart left: names of the camera and a device's destinations, from
/// yesterday. (No known devices: the first minute then learns them, a period that must move too.)
fn remember(identities: &mut Identities, detectors: &mut Detectors) {
    let ids = json!({"schema": identity::SCHEMA, "devices": [{"mac": "d8:f1:5b:aa:bb:cc", "names": [
        {"name": "HS105", "source": "dhcp_hostname", "last_seen": YESTERDAY},
        {"name": "old-cam", "source": "mdns_host", "last_seen": YESTERDAY}]}]});
    identities.remember(identity::parse_file(&ids.to_string()).expect("identities"));
    let dest = json!({"schema": destinations::SCHEMA, "devices": [
        {"mac": "02:77:00:00:00:33", "since": YESTERDAY, "last": YESTERDAY, "countries": ["US"], "providers": []}]});
    detectors.destinations.remember(destinations::parse_file(&dest.to_string()).expect("destinations"));
}

struct Agent {
    clock: Clock,
    events: EventStore,
    identities: Identities,
    detectors: Detectors,
    scopes: ScopeClassifier,
    oui: Oui,
    peers: PeerDb,
}

impl Agent {
    fn new(wall_ns: i64) -> Self {
        let config = Config { upload_bytes: 1_000, ..Config::default() };
        let mut agent = Self {
            clock: Clock::Live(Offsets { wall_boot_ns: wall_ns, boot_mono_ns: 0 }),
            events: EventStore::default(),
            identities: Identities::default(),
            detectors: Detectors::new(config),
            scopes: ScopeClassifier::new(vec!["192.168.77.0/24".parse().expect("prefix")]),
            oui: Oui::default(),
            peers: PeerDb::from_csv_texts(
                "203.0.113.0,203.0.113.255,16509,\"Amazon.com, Inc.\"\n198.51.100.0,198.51.100.255,45102,Alibaba (US) Technology Co. Ltd.\n",
                "203.0.113.0,203.0.113.255,US\n198.51.100.0,198.51.100.255,CN\n",
            ),
        };
        remember(&mut agent.identities, &mut agent.detectors);
        agent
    }

    /// A sample of `payload` behind 42 bytes of headers at program second `at_s`, as the
    /// pipeline takes it: an event, the identities, the detectors.
    fn sample(&mut self, kind: Kind, key: ConvKey, payload: &[u8], at_s: u64) {
        let Self { events, identities, detectors, scopes, oui, peers, clock } = self;
        events.handle(&sample_record(kind, key, payload, ns(at_s)), *clock, |ev| {
            identities.learn(ev, scopes);
            detectors.on_event(ev, &Context { scopes, oui, identities, peers });
        });
    }

    fn poll(&mut self, deltas: &[Delta], macs: &[([u8; 6], u64)], at_s: u64) {
        let macs: Vec<_> = macs.iter().map(|(m, tx)| (crate::mac::Mac(*m), *tx)).collect();
        let cx = Context { scopes: &self.scopes, oui: &self.oui, identities: &self.identities, peers: &self.peers };
        self.detectors.on_poll(deltas, &macs, self.clock.seconds(ns(at_s)), self.clock, &cx);
    }

    /// The wall clock is now right: what the pipeline does when it reads it.
    fn synchronise(&mut self, shift: bool) {
        let Some(delta) = self.clock.follow(Offsets { wall_boot_ns: TRUE_NS, boot_mono_ns: 0 }) else { return };
        if shift {
            self.events.shift_times(delta);
            self.identities.shift_times(delta);
            self.detectors.shift_times(delta);
        }
    }

    /// Everything the agent shows and saves.
    fn state(&self) -> serde_json::Value {
        let (ledger, last, counts) = (Ledger::default(), Snapshot::default(), SampleCounts::default());
        let view = View {
            ledger: &ledger,
            last: &last,
            oui: &self.oui,
            peers: &self.peers,
            scopes: &self.scopes,
            events: &self.events,
            identities: &self.identities,
            detectors: &self.detectors,
            sample_counts: &counts,
            event_log_errors: 0,
            event_log_dropped: 0,
            clock_jumps: Default::default(),
        };
        let mut last_seen: Vec<_> = self.detectors.presence.last_seen().map(|(m, t)| (m.to_string(), t)).collect();
        last_seen.sort_by(|a, b| a.0.cmp(&b.0));
        json!({
            "report": report::build(&view, None, self.clock),
            "known": self.detectors.presence.to_file(),
            "identities": self.identities.to_file(),
            "destinations": self.detectors.destinations.to_file(),
            "last_seen": last_seen,
        })
    }
}

const LAN: fn(u8) -> [u8; 4] = |h| [192, 168, 77, h];
const UDP: u8 = 17;
const TCP: u8 = 6;

/// Before the clock is right: discovery, names, NTP, mDNS, a firmware range, conversations.
fn before(a: &mut Agent) {
    a.sample(
        Kind::Ssdp,
        key(CAM, SSDP_GROUP, LAN(11), [239, 255, 255, 250], UDP, 58002, 1900),
        &fixtures::ssdp_msearch(),
        80,
    );
    // The hub discovers and fetches from the camera: a finding never raised again (its details'
    // times move with it).
    a.sample(
        Kind::Ssdp,
        key(HUB, SSDP_GROUP, LAN(20), [239, 255, 255, 250], UDP, 58003, 1900),
        &fixtures::ssdp_msearch(),
        80,
    );
    a.sample(Kind::Http, key(HUB, CAM, LAN(20), LAN(11), TCP, 43413, 8815), &fixtures::http_get_range(), 81);
    a.sample(Kind::Dhcp, key(CAM, [0xff; 6], [0; 4], [255; 4], UDP, 68, 67), &fixtures::dhcp_discover(), 81);
    for i in 1..=6 {
        a.sample(
            Kind::Ntp,
            key(CAM, GW, LAN(11), [198, 51, 100, i], UDP, 40001, 123),
            &fixtures::ntp_client(),
            81 + u64::from(i),
        );
    }
    let hub_mdns = key(HUB, MDNS_GROUP, LAN(20), [224, 0, 0, 251], UDP, 5353, 5353);
    a.sample(Kind::Mdns, hub_mdns, &fixtures::mdns_announcement(), 88);
    let firmware = |sport| key(CAM, GW, LAN(11), [198, 51, 100, 20], TCP, sport, 8080);
    let reply = |sport| key(GW, CAM, [198, 51, 100, 20], LAN(11), TCP, 8080, sport);
    a.sample(Kind::Http, firmware(40010), &fixtures::http_get_range(), 90);
    a.sample(Kind::Http, reply(40010), &fixtures::http_206(), 91);
    let mut deltas = vec![
        delta(key(CAM, GW, LAN(11), [203, 0, 113, 7], TCP, 40000, 443), 8, 800, (85, 95)),
        delta(key(CAM, GW, LAN(11), LAN(1), 1, 0, 0), 6, 600, (85, 95)),
        // The plug uploads and goes quiet: its finding, destinations and last-seen stay as made.
        delta(key(PLUG, GW, LAN(40), [203, 0, 113, 7], TCP, 40100, 443), 12, 1_200, (85, 95)),
    ];
    deltas.extend((0..40).map(|h| delta(key(CAM, GW, LAN(11), [192, 0, 2, h], TCP, 50000, 23), 1, 60, (94, 94))));
    a.poll(&deltas, &[(CAM, 20), (HUB, 5), (GW, 9), (TV, 2)], 95);
    a.sample(Kind::Mdns, key(CAM, MDNS_GROUP, LAN(11), [224, 0, 0, 251], UDP, 5353, 5353), &mdns_question(), 99);
}

/// After: each step meets a time kept from before.
fn after(a: &mut Agent) {
    let hub_mdns = key(HUB, MDNS_GROUP, LAN(20), [224, 0, 0, 251], UDP, 5353, 5353);
    // Answers the question of second 99: not unsolicited.
    a.sample(Kind::Mdns, hub_mdns, &fixtures::mdns_announcement(), 101);
    for i in 7..=11 {
        a.sample(
            Kind::Ntp,
            key(CAM, GW, LAN(11), [198, 51, 100, i], UDP, 40001, 123),
            &fixtures::ntp_client(),
            95 + u64::from(i),
        );
    }
    let deltas: Vec<_> =
        (40..70).map(|h| delta(key(CAM, GW, LAN(11), [192, 0, 2, h], TCP, 50000, 23), 1, 60, (108, 108))).collect();
    let inbound = delta(key(GW, CAM, [198, 51, 100, 9], LAN(11), TCP, 50000, 8080), 2, 120, (105, 106));
    a.poll(&[deltas, vec![inbound]].concat(), &[(CAM, 30), (HUB, 6), (GW, 12), (DOOR, 3), (PLUG, 1)], 110);
    // Unsolicited again within the hour: the same finding, counted twice.
    a.sample(Kind::Mdns, hub_mdns, &fixtures::mdns_announcement(), 120);
    a.sample(Kind::Http, key(CAM, HUB, LAN(11), LAN(20), TCP, 43412, 8815), &fixtures::http_get_range(), 150);
    a.sample(Kind::Http, key(CAM, GW, LAN(11), [198, 51, 100, 20], TCP, 40011, 8080), &fixtures::http_get_range(), 151);
    a.sample(Kind::Http, key(GW, CAM, [198, 51, 100, 20], LAN(11), TCP, 8080, 40011), &fixtures::http_206(), 152);
    let deltas = [
        delta(key(CAM, GW, LAN(11), [203, 0, 113, 7], TCP, 40000, 443), 8, 800, (85, 160)),
        delta(key(CAM, GW, LAN(11), [198, 51, 100, 30], TCP, 40002, 443), 2, 100, (158, 160)),
        delta(key(CAM, GW, LAN(11), LAN(1), 1, 0, 0), 6, 600, (85, 160)),
    ];
    a.poll(&deltas, &[(CAM, 40), (HUB, 7), (GW, 14), (DOOR, 3), (PLUG, 1)], 160);
    a.poll(&[], &[(CAM, 41), ([0x02, 0x77, 0, 0, 0, 0x35], 1)], 200);
}

fn rules(state: &serde_json::Value) -> Vec<(String, u64)> {
    let findings = state["report"]["findings"].as_array().expect("findings");
    let mut rules: Vec<_> = findings
        .iter()
        .map(|f| (f["rule"].as_str().unwrap_or("").to_owned(), f["count"].as_u64().unwrap_or(0)))
        .collect();
    rules.sort();
    rules
}

#[test]
fn after_a_jump_the_state_is_what_a_right_clock_would_have_made() {
    let mut right = Agent::new(TRUE_NS);
    before(&mut right);
    right.synchronise(true);
    after(&mut right);
    let want = right.state();
    // The script makes what it should, so that a time left behind would change it.
    assert_eq!(
        rules(&want),
        [
            ("firmware_over_http", 2),
            ("gateway_ping", 1),
            ("large_upload", 1),
            ("large_upload", 1),
            ("lateral_movement", 1),
            ("lateral_movement", 1),
            ("new_device", 1),
            ("ntp_fanout", 1),
            ("scan", 1),
            ("unsolicited_mdns", 2),
        ]
        .map(|(r, n)| (r.to_owned(), n)),
        "{want:#}"
    );
    for off in [-TWO_DAYS_NS, TWO_DAYS_NS] {
        let mut late = Agent::new(TRUE_NS + off);
        before(&mut late);
        late.synchronise(true);
        after(&mut late);
        assert_eq!(late.state(), want, "the clock off by {off} ns, then right");
        // Without the shift, the same script makes another state: the comparison can fail.
        let mut unshifted = Agent::new(TRUE_NS + off);
        before(&mut unshifted);
        unshifted.synchronise(false);
        after(&mut unshifted);
        assert_ne!(rules(&unshifted.state()), rules(&want), "the clock off by {off} ns, not followed");
    }
}
