//! Protocol parsers over sampled payloads (the bytes after the UDP/TCP header).
//!
//! Every parser is a pure function over `&[u8]` that may see a payload cut at any byte by
//! the kernel's snapshot length. A parser returns what it could read (with `truncated: true`
//! when the cut hid the rest) or a [`ParseError`]; none panics on any input, and each one is
//! fuzzed (`fuzz/`, one target per parser; the seed corpus is replayed by a test below).
//!
//! Crates, and where we wrote our own:
//! - HTTP and SSDP heads: `httparse` (hyper's parser). It answers `Partial` for a cut header
//!   block, so [`http::parse_head`] feeds it only the complete lines and marks the result
//!   truncated.
//! - DNS/mDNS: our own reader. `hickory-proto` and `simple-dns` decode a whole message or
//!   fail, and a sampled 530-byte mDNS announcement is often cut inside its last record: we
//!   must keep the records before the cut. The reader is small and strict about the parts
//!   that matter: compression pointers must point strictly backwards (so no loop can exist),
//!   at most 255 bytes per name and 63 per label, and the mDNS cache-flush and
//!   unicast-response bits are masked out of the class.
//! - TLS ClientHello: our own walker. `tls-parser` answers `Incomplete` for a record cut by
//!   the snapshot, which loses the SNI of a post-quantum ClientHello that spans two segments;
//!   using it only for the SNI/ALPN/supported_versions lists would pull nom, phf and a
//!   proc-macro stack into the agent for three length-prefixed lists.
//! - NTP, DHCPv4/v6, MQTT, ICMP unreachables, flow classification: fixed layouts and TLVs, a few dozen lines
//!   each; no crate decodes them tolerant of a cut with fewer dependencies.

use serde::Serialize;

pub mod dhcp;
pub mod dns;
pub mod flow;
pub mod http;
pub mod icmp;
pub mod mqtt;
pub mod ntp;
pub mod ssdp;
pub mod tls;
pub mod upnp;

#[cfg(test)]
pub(crate) mod fixtures;

/// The event kinds of the report (`events[].kind`): the kernel's sample kinds, one list.
pub use agent_common::sample::SampleKind as Kind;

/// Why a payload was not parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Too few bytes to say anything (the fixed header is not all there).
    TooShort,
    /// The bytes are not this protocol.
    NotProtocol(&'static str),
    /// The bytes claim to be this protocol but break its rules (loops, lying lengths...).
    Malformed(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::TooShort => f.write_str("payload too short"),
            ParseError::NotProtocol(why) => write!(f, "not this protocol: {why}"),
            ParseError::Malformed(why) => write!(f, "malformed: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Kind-specific event fields; serialises flat (untagged) so it can be merged into an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventFields {
    Ssdp(ssdp::SsdpEvent),
    Mdns(dns::DnsEvent),
    Ntp(ntp::NtpEvent),
    Http(http::HttpEvent),
    Dns(dns::DnsEvent),
    Dhcp(dhcp::DhcpEvent),
    Tls(tls::TlsEvent),
    Mqtt(mqtt::MqttEvent),
    Flow(flow::FlowEvent),
    Icmp(icmp::IcmpEvent),
}

impl EventFields {
    pub fn kind(&self) -> Kind {
        match self {
            EventFields::Ssdp(_) => Kind::Ssdp,
            EventFields::Mdns(_) => Kind::Mdns,
            EventFields::Ntp(_) => Kind::Ntp,
            EventFields::Http(_) => Kind::Http,
            EventFields::Dns(_) => Kind::Dns,
            EventFields::Dhcp(_) => Kind::Dhcp,
            EventFields::Tls(_) => Kind::Tls,
            EventFields::Mqtt(_) => Kind::Mqtt,
            EventFields::Flow(_) => Kind::Flow,
            EventFields::Icmp(_) => Kind::Icmp,
        }
    }
}

/// Parses `payload` as `kind`. `transport_is_tcp` matters for DNS (2-byte length prefix)
/// and for the flow's `transport`.
pub fn parse(kind: Kind, payload: &[u8], transport_is_tcp: bool) -> Result<EventFields, ParseError> {
    Ok(match kind {
        Kind::Ssdp => EventFields::Ssdp(ssdp::parse(payload)?),
        Kind::Mdns => EventFields::Mdns(dns::parse(payload, transport_is_tcp)?),
        Kind::Ntp => EventFields::Ntp(ntp::parse(payload)?),
        Kind::Http => EventFields::Http(http::parse(payload)?),
        Kind::Dns => EventFields::Dns(dns::parse(payload, transport_is_tcp)?),
        Kind::Dhcp => EventFields::Dhcp(dhcp::parse(payload)?),
        Kind::Tls => EventFields::Tls(tls::parse(payload)?),
        Kind::Mqtt => EventFields::Mqtt(mqtt::parse(payload)?),
        Kind::Flow => EventFields::Flow(flow::classify(payload, transport_is_tcp)),
        Kind::Icmp => EventFields::Icmp(icmp::parse(payload)?),
    })
}

/// Lossy text of attacker-controlled bytes, as the report keeps it.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// Big-endian reads that answer `None` past the end instead of panicking.
pub(crate) fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    let a: [u8; 4] = s.try_into().ok()?;
    Some(u32::from_be_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
    }

    /// Replays the fuzz seed corpus on stable: every file under `fuzz/corpus/<kind>/`
    /// goes through its parser, both as UDP and as TCP, and must not panic.
    #[test]
    fn replay_fuzz_corpus() {
        let mut files = 0;
        let dirs = std::fs::read_dir(corpus_dir()).expect("fuzz/corpus exists");
        for dir in dirs {
            let dir = dir.expect("dir entry").path();
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if name == "capture" {
                // The capture reader's corpus: replayed by capture's own tests.
                continue;
            }
            let kind = Kind::from_name(&name).unwrap_or_else(|| panic!("corpus dir {name} is no kind"));
            for f in std::fs::read_dir(&dir).expect("corpus dir") {
                let bytes = std::fs::read(f.expect("file").path()).expect("read corpus file");
                for tcp in [false, true] {
                    if let Ok(ev) = parse(kind, &bytes, tcp) {
                        serde_json::to_string(&ev).expect("serialises");
                    }
                }
                for k in Kind::ALL {
                    let _ = parse(k, &bytes, false);
                }
                files += 1;
            }
        }
        assert!(files >= 9, "seed corpus has only {files} files");
    }

    /// Writes the test fixtures as the fuzz seed corpus. Run by hand after changing fixtures:
    /// `cargo test -p iotwatch --lib proto::tests::write_seed_corpus -- --ignored`.
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        for (kind, name, bytes) in fixtures::all() {
            let dir = corpus_dir().join(kind.name());
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join(name), bytes).expect("write");
        }
    }

    #[test]
    fn kinds_round_trip_and_every_fixture_parses() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        for (kind, name, bytes) in fixtures::all() {
            match parse(kind, &bytes, name.contains("tcp")) {
                Ok(ev) => assert_eq!(ev.kind(), kind),
                Err(e) => assert!(name.starts_with("bad_"), "{name}: {e}"),
            }
            // Every prefix: no panic, and the serialised form is JSON.
            for n in 0..=bytes.len() {
                if let Ok(ev) = parse(kind, bytes.get(..n).unwrap_or_default(), name.contains("tcp")) {
                    serde_json::to_string(&ev).expect("serialises");
                }
            }
        }
    }

    /// The README documents each kind's fields by their serialised names: every name it lists
    /// is a key of some event of that kind (a fixture, whole or cut). A parenthesised list after
    /// a field names its members when the field holds objects (`records`), else its values.
    #[test]
    fn the_readme_names_the_serialised_fields() {
        use std::collections::{BTreeMap, BTreeSet};

        use serde_json::Value;
        /// Keys, and the keys whose values are objects (or arrays of them).
        fn keys(v: &Value, out: &mut (BTreeSet<String>, BTreeSet<String>)) {
            match v {
                Value::Object(m) => m.iter().for_each(|(k, v)| {
                    out.0.insert(k.clone());
                    if v.is_object() || v.as_array().is_some_and(|a| a.iter().any(Value::is_object)) {
                        out.1.insert(k.clone());
                    }
                    keys(v, out);
                }),
                Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
                _ => {}
            }
        }
        let mut seen: BTreeMap<&str, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
        for (kind, name, bytes) in fixtures::all() {
            for n in 0..=bytes.len() {
                if let Ok(ev) = parse(kind, bytes.get(..n).unwrap_or_default(), name.contains("tcp")) {
                    // mDNS and DNS share one parser and one set of fields.
                    let family = if kind == Kind::Mdns { Kind::Dns } else { kind };
                    keys(&serde_json::to_value(&ev).expect("serialises"), seen.entry(family.name()).or_default());
                }
            }
        }
        let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
        let section = readme.split("Fields by kind").nth(1).expect("the README lists the fields by kind");
        let section = section.split("\n\n").next().unwrap_or_default();
        let mut checked = 0;
        for item in section.split("\n- ").skip(1).take_while(|i| !i.starts_with("every kind")) {
            let (kinds, fields) = item.split_once(':').expect("- `kind`: fields");
            // (field, the backticked words in the parentheses after it)
            let mut listed: Vec<(String, Vec<String>)> = Vec::new();
            let mut depth = 0;
            for (i, part) in fields.split('`').enumerate() {
                if i % 2 == 1 {
                    match (depth, listed.last_mut()) {
                        (0, _) => listed.push((part.to_owned(), Vec::new())),
                        (_, Some((_, inner))) => inner.push(part.to_owned()),
                        (_, None) => {}
                    }
                } else {
                    depth += part.matches('(').count() as i32 - part.matches(')').count() as i32;
                }
            }
            for kind in kinds.split(',').map(|k| k.trim().trim_matches('`')) {
                let family = if kind == "mdns" { "dns" } else { kind };
                let (have, containers) =
                    seen.get(family).unwrap_or_else(|| panic!("README kind {kind} has no fixture"));
                for (field, inner) in &listed {
                    let members = if containers.contains(field) { inner.as_slice() } else { &[] };
                    for f in std::iter::once(field).chain(members) {
                        assert!(have.contains(f), "README names `{f}` for {kind}, which no {kind} event has: {have:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 40, "only {checked} README fields checked: did the section move?");
    }

    /// The kernel's classifier (agent-common, the same code the eBPF program runs) picks, from
    /// ports and the first bytes, a parser that reads each fixture.
    #[test]
    fn the_kernel_classifier_picks_a_parser_that_reads_the_fixture() {
        use agent_common::sample::{Peek, classify_tcp, classify_udp};
        let cases: [(Vec<u8>, bool, u16, u16, Kind); 6] = [
            (fixtures::ssdp_response(), false, 3075, 58002, Kind::Ssdp),
            (fixtures::http_get_range(), true, 43412, 8815, Kind::Http),
            (fixtures::tls13_client_hello(), true, 50000, 8883, Kind::Tls),
            (fixtures::mdns_announcement(), false, 5353, 5353, Kind::Mdns),
            (fixtures::ntp_client(), false, 40000, 123, Kind::Ntp),
            (fixtures::mqtt_publish(), true, 42533, 1883, Kind::Mqtt),
        ];
        for (payload, tcp, sport, dport, want) in cases {
            let p = Peek::of(&payload);
            let got = if tcp { classify_tcp(sport, dport, p) } else { classify_udp(sport, dport, p) };
            assert_eq!(got, Some(want));
            assert!(parse(want, &payload, tcp).is_ok(), "{want:?} fixture parses");
        }
    }
}
