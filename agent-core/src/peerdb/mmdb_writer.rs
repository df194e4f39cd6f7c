//! A small MaxMind DB writer for tests: the repository holds no third-party database, so
//! tests (these unit tests, and the namespace tests of `tests/`) write the ASN and country
//! files they need, in MaxMind's layout or ip-location-db's.
//!
//! It writes format 2.0 as the specification describes it
//! (<https://maxmind.github.io/MaxMind-DB/>): an IPv6 search tree (IPv4 networks live under
//! `::/96`, where readers look for them), 24-, 28- or 32-bit records as the tree's size
//! needs, a data section where equal records are written once, and the metadata. Later
//! inserts replace what earlier ones said for the same addresses.
//!
//! ```
//! use std::net::IpAddr;
//!
//! use iotwatch_core::peerdb::mmdb_writer::{MmdbWriter, Value};
//!
//! let mut w = MmdbWriter::new("GeoLite2-Country");
//! let net: IpAddr = "192.0.2.0".parse().unwrap();
//! w.insert(net, 24, &Value::maxmind_country("DE")).unwrap();
//! let bytes = w.to_bytes();
//! # assert!(bytes.len() > 100);
//! ```

use std::{collections::HashMap, io, net::IpAddr, path::Path};

/// A value of the data section.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Uint16(u16),
    Uint32(u32),
    Uint64(u64),
    Bool(bool),
    Double(f64),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl Value {
    pub fn map<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        Self::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    pub fn string(s: &str) -> Self {
        Self::String(s.to_owned())
    }

    /// An ASN record as GeoLite2-ASN and ip-location-db's `asn-mmdb` write it.
    pub fn asn(asn: u32, org: &str) -> Self {
        Self::map([
            ("autonomous_system_number", Self::Uint32(asn)),
            ("autonomous_system_organization", Self::string(org)),
        ])
    }

    /// A country record as ip-location-db writes it: `{country_code: "DE"}`.
    pub fn ip_location_db_country(code: &str) -> Self {
        Self::map([("country_code", Self::string(code))])
    }

    /// A country record as GeoLite2-Country writes it (with the names and ids beside).
    pub fn maxmind_country(code: &str) -> Self {
        let country = |code: &str| {
            Self::map([
                ("geoname_id", Self::Uint32(2_921_044)),
                ("is_in_european_union", Self::Bool(true)),
                ("iso_code", Self::string(code)),
                ("names", Self::map([("en", Self::string(code)), ("de", Self::string(code))])),
            ])
        };
        Self::map([
            ("continent", Self::map([("code", Self::string("EU")), ("geoname_id", Self::Uint32(6_255_148))])),
            ("country", country(code)),
            ("registered_country", country(code)),
        ])
    }

    /// A MaxMind record with only `registered_country` (as GeoLite2 has for some networks).
    pub fn maxmind_registered_country(code: &str) -> Self {
        Self::map([("registered_country", Self::map([("iso_code", Self::string(code))]))])
    }
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (low, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, vec![]),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65_821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind <= 7 {
        out.push(kind << 5 | low);
    } else {
        out.push(low);
        out.push(kind - 7);
    }
    out.extend(extra);
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    control(out, kind, 8 - skip);
    out.extend(&bytes[skip..]);
}

/// Appends the encoding of `v` (types: 2 string, 3 double, 5 uint16, 6 uint32, 7 map,
/// 9 uint64, 11 array, 14 boolean).
pub fn encode(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => {
            control(out, 2, s.len());
            out.extend(s.as_bytes());
        }
        Value::Double(d) => {
            control(out, 3, 8);
            out.extend(d.to_be_bytes());
        }
        Value::Uint16(n) => uint(out, 5, u64::from(*n)),
        Value::Uint32(n) => uint(out, 6, u64::from(*n)),
        Value::Uint64(n) => uint(out, 9, *n),
        Value::Bool(b) => control(out, 14, usize::from(*b)),
        Value::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(out, &Value::String(k.clone()));
                encode(out, v);
            }
        }
        Value::Array(items) => {
            control(out, 11, items.len());
            for v in items {
                encode(out, v);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Empty,
    Node(u32),
    Data(u32),
}

/// Builds a database in memory; [`MmdbWriter::to_bytes`] or [`MmdbWriter::write`] ends it.
#[derive(Debug)]
pub struct MmdbWriter {
    database_type: String,
    build_epoch: u64,
    min_record_size: u16,
    nodes: Vec<[Child; 2]>,
    data: Vec<u8>,
    /// Offset in `data` of each distinct record.
    offsets: Vec<u32>,
    by_bytes: HashMap<Vec<u8>, u32>,
}

impl MmdbWriter {
    /// An empty IPv6 database of this `database_type` (built at 2026-06-17 00:00 UTC).
    pub fn new(database_type: &str) -> Self {
        Self {
            database_type: database_type.to_owned(),
            build_epoch: 1_781_654_400,
            min_record_size: 24,
            nodes: vec![[Child::Empty; 2]],
            data: Vec::new(),
            offsets: Vec::new(),
            by_bytes: HashMap::new(),
        }
    }

    pub fn build_epoch(mut self, epoch: u64) -> Self {
        self.build_epoch = epoch;
        self
    }

    /// Records of at least `bits` (24, 28 or 32) bits, to exercise every layout on a small file.
    pub fn min_record_size(mut self, bits: u16) -> Self {
        self.min_record_size = bits;
        self
    }

    /// Says `value` for the network `net`/`prefix_len` (an IPv4 network goes under `::/96`).
    pub fn insert(&mut self, net: IpAddr, prefix_len: u8, value: &Value) -> Result<(), String> {
        let (bits, len) = match net {
            IpAddr::V4(a) if (1..=32).contains(&prefix_len) => (u128::from(u32::from(a)), 96 + prefix_len),
            IpAddr::V6(a) if (1..=128).contains(&prefix_len) => (u128::from(a), prefix_len),
            _ => return Err(format!("prefix length {prefix_len} is out of range for {net}")),
        };
        let mut bytes = Vec::new();
        encode(&mut bytes, value);
        let data = match self.by_bytes.get(&bytes) {
            Some(&d) => d,
            None => {
                let d = self.offsets.len() as u32;
                self.offsets.push(self.data.len() as u32);
                self.data.extend(&bytes);
                self.by_bytes.insert(bytes, d);
                d
            }
        };
        let mut node = 0usize;
        for i in 0..len - 1 {
            let bit = (bits >> (127 - i) & 1) as usize;
            node = match self.nodes[node][bit] {
                Child::Node(n) => n as usize,
                // A wider network said something here: its value goes on in both halves.
                fill @ (Child::Empty | Child::Data(_)) => {
                    self.nodes.push([fill; 2]);
                    let n = self.nodes.len() - 1;
                    self.nodes[node][bit] = Child::Node(n as u32);
                    n
                }
            };
        }
        let bit = (bits >> (127 - (len - 1)) & 1) as usize;
        self.nodes[node][bit] = Child::Data(data);
        Ok(())
    }

    /// Parses `"192.0.2.0/24"` and inserts.
    pub fn insert_cidr(&mut self, cidr: &str, value: &Value) -> Result<(), String> {
        let (ip, len) = cidr.split_once('/').ok_or_else(|| format!("{cidr}: no /prefix"))?;
        let ip: IpAddr = ip.parse().map_err(|e| format!("{cidr}: {e}"))?;
        let len: u8 = len.parse().map_err(|e| format!("{cidr}: {e}"))?;
        self.insert(ip, len, value)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let node_count = self.nodes.len() as u64;
        let record = |c: Child| -> u64 {
            match c {
                Child::Empty => node_count,
                Child::Node(n) => u64::from(n),
                Child::Data(d) => node_count + 16 + u64::from(self.offsets[d as usize]),
            }
        };
        let record_size = record_size_for(node_count + 16 + self.data.len() as u64).max(self.min_record_size);
        let mut out = Vec::new();
        for &[l, r] in &self.nodes {
            let (l, r) = (record(l), record(r));
            match record_size {
                24 => {
                    out.extend(&l.to_be_bytes()[5..]);
                    out.extend(&r.to_be_bytes()[5..]);
                }
                28 => {
                    out.extend(&l.to_be_bytes()[5..]);
                    out.push(((l >> 24) as u8 & 0x0F) << 4 | ((r >> 24) as u8 & 0x0F));
                    out.extend(&r.to_be_bytes()[5..]);
                }
                _ => {
                    out.extend(&(l as u32).to_be_bytes());
                    out.extend(&(r as u32).to_be_bytes());
                }
            }
        }
        out.extend([0u8; 16]);
        out.extend(&self.data);
        out.extend(super::mmdb::METADATA_MARKER);
        let metadata = Value::map([
            ("binary_format_major_version", Value::Uint16(2)),
            ("binary_format_minor_version", Value::Uint16(0)),
            ("build_epoch", Value::Uint64(self.build_epoch)),
            ("database_type", Value::String(self.database_type.clone())),
            ("description", Value::map([("en", Value::string("written by iotwatch's tests"))])),
            ("ip_version", Value::Uint16(6)),
            ("languages", Value::Array(vec![Value::string("en")])),
            ("node_count", Value::Uint32(node_count as u32)),
            ("record_size", Value::Uint16(record_size)),
        ]);
        encode(&mut out, &metadata);
        out
    }

    pub fn write(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

/// The smallest record size (bits) that holds `largest`.
fn record_size_for(largest: u64) -> u16 {
    match largest {
        0..0x100_0000 => 24,
        0x100_0000..0x1000_0000 => 28,
        _ => 32,
    }
}

/// The test "Internet" of iotwatch's namespace tests and lab: the three documentation
/// networks and the benchmarking network.
pub const TEST_INTERNET: &[&str] = &["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15"];

#[cfg(test)]
mod tests {
    use maxminddb::Reader;

    use super::*;

    #[test]
    fn control_bytes_and_sizes() {
        let mut out = Vec::new();
        encode(&mut out, &Value::string("ab"));
        assert_eq!(out, [0x42, b'a', b'b']);
        out.clear();
        encode(&mut out, &Value::Uint32(13335));
        assert_eq!(out, [0xC2, 0x34, 0x17]);
        out.clear();
        encode(&mut out, &Value::Uint32(0));
        assert_eq!(out, [0xC0]);
        out.clear();
        encode(&mut out, &Value::Bool(true));
        assert_eq!(out, [0x01, 0x07]);
        out.clear();
        encode(&mut out, &Value::Uint64(1));
        assert_eq!(out, [0x01, 0x02, 0x01]);
        assert_eq!((record_size_for(0xFF_FFFF), record_size_for(0x100_0000)), (24, 28));
        assert_eq!((record_size_for(0xFFF_FFFF), record_size_for(0x1000_0000)), (28, 32));
    }

    fn asn_of(r: &Reader<Vec<u8>>, ip: &str) -> Option<(u32, String)> {
        let res = r.lookup(ip.parse().expect("ip")).expect("lookup");
        let n = res.decode_path(&[maxminddb::PathElement::Key("autonomous_system_number")]).expect("number")?;
        let o = res.decode_path(&[maxminddb::PathElement::Key("autonomous_system_organization")]).expect("org")?;
        Some((n, o))
    }

    #[test]
    fn maxminddb_reads_what_it_writes_at_every_record_size() {
        for size in [24, 28, 32] {
            let mut w = MmdbWriter::new("Test-ASN").min_record_size(size);
            w.insert_cidr("192.0.2.0/24", &Value::asn(64_496, "Doc One")).expect("insert");
            w.insert_cidr("2001:db8::/32", &Value::asn(64_497, "Doc Six")).expect("insert");
            w.insert_cidr("203.0.113.128/25", &Value::asn(4_200_000_000, "Doc Two")).expect("insert");
            // Strings at each boundary of the size encoding.
            let lengths = [0, 28, 29, 284, 285, 65_820, 65_821, 70_000];
            for (i, n) in lengths.iter().enumerate() {
                w.insert(IpAddr::from([10, 0, i as u8, 0]), 24, &Value::asn(i as u32, &"x".repeat(*n))).expect("i");
            }
            let r = Reader::from_source(w.to_bytes()).expect("readable");
            assert_eq!(r.metadata().record_size, size);
            assert_eq!(asn_of(&r, "192.0.2.77"), Some((64_496, "Doc One".into())));
            assert_eq!(asn_of(&r, "2001:db8:1::5"), Some((64_497, "Doc Six".into())));
            assert_eq!(asn_of(&r, "203.0.113.200"), Some((4_200_000_000, "Doc Two".into())));
            assert_eq!(asn_of(&r, "203.0.113.127"), None);
            assert_eq!(asn_of(&r, "192.0.3.1"), None);
            assert_eq!(asn_of(&r, "2001:db9::"), None);
            for (i, n) in lengths.iter().enumerate() {
                assert_eq!(asn_of(&r, &format!("10.0.{i}.9")).map(|(_, o)| o.len()), Some(*n), "{n}");
            }
            r.verify().expect("maxminddb's verifier accepts it");
        }
    }

    #[test]
    fn nested_networks_and_replacement() {
        let mut w = MmdbWriter::new("Test-Country");
        w.insert_cidr("198.18.0.0/15", &Value::ip_location_db_country("US")).expect("wide");
        w.insert_cidr("198.19.7.0/24", &Value::ip_location_db_country("JP")).expect("narrow");
        w.insert_cidr("198.19.8.0/24", &Value::ip_location_db_country("FR")).expect("narrow");
        w.insert_cidr("198.19.8.0/24", &Value::ip_location_db_country("DE")).expect("replaced");
        let r = Reader::from_source(w.to_bytes()).expect("readable");
        let cc = |ip: &str| -> Option<String> {
            r.lookup(ip.parse().expect("ip"))
                .expect("lookup")
                .decode_path(&[maxminddb::PathElement::Key("country_code")])
                .expect("decode")
        };
        assert_eq!(cc("198.18.0.1").as_deref(), Some("US"));
        assert_eq!(cc("198.19.6.255").as_deref(), Some("US"));
        assert_eq!(cc("198.19.7.9").as_deref(), Some("JP"));
        assert_eq!(cc("198.19.8.9").as_deref(), Some("DE"));
        assert_eq!(cc("198.19.9.0").as_deref(), Some("US"));
        assert_eq!(cc("198.20.0.0"), None);
        r.verify().expect("verifier");
        assert!(w.insert_cidr("10.0.0.0/0", &Value::Bool(true)).is_err());
        assert!(w.insert_cidr("10.0.0.0/33", &Value::Bool(true)).is_err());
    }
}
