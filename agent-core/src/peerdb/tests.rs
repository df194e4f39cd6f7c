//! The peer database against files the tests write: CSVs, and MMDBs of both layouts from
//! [`super::mmdb_writer`]. Two ignored tests read the installed ip-location-db files
//! (`IOTWATCH_PEERDB_DIR`, default [`DEFAULT_DIR`]): `real_files_cost` prints the memory,
//! load time and lookup cost quoted in the docs; `provider_table_agrees_with_shipped_data`
//! checks the provider table against the organisations there.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use super::{mmdb_writer::MmdbWriter, *};
use crate::peerdb::mmdb_writer::{TEST_INTERNET, Value};

/// A directory of its own for each test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("iotwatch-peerdb-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, bytes).expect("write");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

const ASN_V4: &str = r#"192.0.2.0,192.0.2.255,13335,"Cloudflare, Inc."
198.18.0.0,198.19.255.255,16509,"Amazon.com, Inc."
203.0.113.0,203.0.113.127,4200000001,Amazon Data Services Nowhere
203.0.113.128,203.0.113.255,4200000002,
"#;
const ASN_V6: &str = "2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,15169,Google LLC\n";

/// The test Internet's countries, one layout or the other.
fn country_mmdb(maxmind: bool) -> Vec<u8> {
    let mut w = MmdbWriter::new(if maxmind { "GeoLite2-Country" } else { "geo-whois-asn-country" });
    for (net, cc) in TEST_INTERNET.iter().zip(["AU", "DE", "JP", "US"]) {
        let v = if maxmind { Value::maxmind_country(cc) } else { Value::ip_location_db_country(cc) };
        w.insert_cidr(net, &v).expect("insert");
    }
    w.insert_cidr("2001:db8::/32", &Value::ip_location_db_country("nl")).expect("insert");
    if maxmind {
        w.insert_cidr("198.51.100.128/25", &Value::maxmind_registered_country("SE")).expect("insert");
    }
    w.to_bytes()
}

fn asn_mmdb() -> Vec<u8> {
    let mut w = MmdbWriter::new("GeoLite2-ASN");
    w.insert_cidr("192.0.2.0/24", &Value::asn(64_496, "Example Cloud One")).expect("insert");
    w.insert_cidr("198.51.100.0/24", &Value::asn(14_061, "DIGITALOCEAN-ASN")).expect("insert");
    w.insert_cidr("2001:db8::/32", &Value::asn(32_934, "FACEBOOK")).expect("insert");
    w.insert_cidr("203.0.113.0/24", &Value::map([("autonomous_system_organization", Value::string("No Number"))]))
        .expect("insert");
    w.to_bytes()
}

#[test]
fn csv_asn_and_ip_location_db_country() {
    let dir = TempDir::new("csv");
    let asn = [dir.file("a4", ASN_V4.as_bytes()), dir.file("a6", ASN_V6.as_bytes())];
    let cc = [dir.file("cc", &country_mmdb(false))];
    let (db, warnings) = PeerDb::load(&asn, &cc);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(db.has_asn() && db.has_country());
    assert_eq!(db.sources().iter().map(|s| s.format).collect::<Vec<_>>(), [Format::Csv, Format::Csv, Format::Mmdb]);
    assert_eq!(db.sources()[0].entries, 4);
    assert_eq!(db.sources()[2].database_type.as_deref(), Some("geo-whois-asn-country"));

    let got = db.lookup(ip("192.0.2.10"));
    assert_eq!(got.asn, Some(13335));
    assert_eq!(got.org.as_deref(), Some("Cloudflare, Inc."));
    assert_eq!(got.country.map(|c| c.to_string()).as_deref(), Some("AU"));
    assert_eq!(got.provider, Some("Cloudflare"));

    let got = db.lookup(ip("198.19.255.255"));
    assert_eq!(
        (got.asn, got.provider, got.country.map(|c| c.to_string())),
        (Some(16509), Some("Amazon"), Some("US".into()))
    );
    // Not in the table: the organisation names the provider.
    assert_eq!(db.lookup(ip("203.0.113.5")).provider, Some("Amazon"));
    let got = db.lookup(ip("203.0.113.200"));
    assert_eq!((got.asn, got.org, got.provider), (Some(4_200_000_002), None, None), "empty organisation");
    assert_eq!(got.country.map(|c| c.to_string()).as_deref(), Some("JP"));

    let got = db.lookup(ip("2001:db8::1"));
    assert_eq!((got.asn, got.provider), (Some(15169), Some("Google")));
    assert_eq!(got.country.map(|c| c.to_string()).as_deref(), Some("NL"), "upper-cased");

    // Private and unknown addresses: what the files say, which is nothing.
    for a in ["10.0.0.1", "192.168.77.10", "8.8.8.8", "::1", "fe80::1"] {
        assert!(db.lookup(ip(a)).is_empty(), "{a}");
    }
}

#[test]
fn maxmind_layouts() {
    let dir = TempDir::new("maxmind");
    let asn = [dir.file("GeoLite2-ASN.mmdb", &asn_mmdb())];
    let cc = [dir.file("GeoLite2-Country.mmdb", &country_mmdb(true))];
    let (db, warnings) = PeerDb::load(&asn, &cc);
    assert!(warnings.is_empty(), "{warnings:?}");
    let got = db.lookup(ip("198.51.100.7"));
    assert_eq!(got.asn, Some(14061));
    assert_eq!(got.org.as_deref(), Some("DIGITALOCEAN-ASN"));
    assert_eq!(got.provider, Some("DigitalOcean"), "by ASN: the handle matches no name prefix");
    assert_eq!(got.country.map(|c| c.to_string()).as_deref(), Some("DE"), "country.iso_code");
    let got = db.lookup(ip("198.51.100.200"));
    assert_eq!(got.country.map(|c| c.to_string()).as_deref(), Some("SE"), "registered_country.iso_code");
    let got = db.lookup(ip("2001:db8:5::1"));
    assert_eq!((got.asn, got.provider), (Some(32934), Some("Meta")));
    let got = db.lookup(ip("192.0.2.1"));
    assert_eq!((got.asn, got.org.as_deref(), got.provider), (Some(64_496), Some("Example Cloud One"), None));
    // A record without a number gives no ASN and no organisation.
    let got = db.lookup(ip("203.0.113.1"));
    assert_eq!((got.asn, got.org.is_none()), (None, true));
    assert_eq!(got.country.map(|c| c.to_string()).as_deref(), Some("JP"));
    assert_eq!(db.lookup_errors(), 0);
}

#[test]
fn format_is_told_by_content_not_name() {
    let dir = TempDir::new("names");
    let asn = [dir.file("asn.csv", &asn_mmdb()), dir.file("asn.mmdb", ASN_V6.as_bytes())];
    let (db, warnings) = PeerDb::load(&asn, &[]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(db.sources().iter().map(|s| s.format).collect::<Vec<_>>(), [Format::Mmdb, Format::Csv]);
    assert_eq!(db.lookup(ip("198.51.100.1")).asn, Some(14061));
}

#[test]
fn country_csv_source() {
    let dir = TempDir::new("cccsv");
    let cc = [dir.file("cc.csv", b"192.0.2.0,192.0.2.255,fr\n2001:db8::,2001:db8::ffff,BR\n")];
    let (db, warnings) = PeerDb::load(&[], &cc);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(!db.has_asn());
    let got = db.lookup(ip("192.0.2.9"));
    assert_eq!((got.asn, got.country.map(|c| c.to_string())), (None, Some("FR".into())));
    assert_eq!(db.lookup(ip("2001:db8::5")).country.map(|c| c.to_string()).as_deref(), Some("BR"));
}

#[test]
fn ipv4_mapped_ipv6_is_looked_up_as_ipv4() {
    let dir = TempDir::new("mapped");
    let (db, _) = PeerDb::load(&[dir.file("a4", ASN_V4.as_bytes())], &[dir.file("cc", &country_mmdb(true))]);
    let mapped = db.lookup(ip("::ffff:192.0.2.10"));
    assert_eq!(mapped, db.lookup(ip("192.0.2.10")));
    assert_eq!(mapped.asn, Some(13335));
    assert_eq!(mapped.country.map(|c| c.to_string()).as_deref(), Some("AU"));
    assert_eq!(db.lookup_uncached(ip("::ffff:198.18.0.1")).asn, Some(16509));
}

#[test]
fn first_source_that_knows_answers() {
    let dir = TempDir::new("order");
    let mmdb = dir.file("asn.mmdb", &asn_mmdb());
    let csv = dir.file("asn.csv", ASN_V4.as_bytes());
    let (db, _) = PeerDb::load(&[mmdb.clone(), csv.clone()], &[]);
    // Both know 192.0.2.0/24: the first given answers, with its own organisation.
    let got = db.lookup(ip("192.0.2.1"));
    assert_eq!((got.asn, got.org.as_deref()), (Some(64_496), Some("Example Cloud One")));
    // Only the second knows 198.18.0.0/15.
    assert_eq!(db.lookup(ip("198.18.1.1")).asn, Some(16509));
    let (db, _) = PeerDb::load(&[csv, mmdb], &[]);
    assert_eq!(db.lookup(ip("192.0.2.1")).asn, Some(13335));
}

#[test]
fn missing_and_corrupt_files_warn_once_each_and_the_rest_works() {
    let dir = TempDir::new("broken");
    let good = dir.file("a4", ASN_V4.as_bytes());
    let missing = dir.0.join("absent.csv");
    let empty = dir.file("empty", b"");
    let garbage = dir.file("garbage", &[0x89, b'P', b'N', b'G', 0, 1, 2, 3, b'\n', 0xff, 0xfe]);
    // The marker, with nothing valid before or after it.
    let mut corrupt = vec![0u8; 64];
    corrupt.extend(mmdb::METADATA_MARKER);
    corrupt.extend([0xe0, 0x12, 0x34]);
    let corrupt = dir.file("corrupt.mmdb", &corrupt);
    // A real MMDB cut in half loses its metadata: it reads as a (bad) CSV.
    let truncated = asn_mmdb();
    let truncated = dir.file("truncated.mmdb", &truncated[..truncated.len() / 2]);
    let asn =
        [missing.clone(), empty.clone(), good, garbage.clone(), corrupt.clone(), truncated.clone(), dir.0.clone()];
    let cc = [missing.clone()];
    let (db, warnings) = PeerDb::load(&asn, &cc);
    assert_eq!(warnings.len(), 7, "{warnings:#?}");
    for (w, path) in warnings.iter().zip([&missing, &empty, &garbage, &corrupt, &truncated, &dir.0]) {
        assert!(w.contains(&path.display().to_string()), "{w}");
        assert!(w.contains("cargo xtask setup") && w.contains("--enrich.asn-db"), "{w}");
        assert!(w.contains("no ASN"), "{w}");
        assert!(!w.contains('\n'), "one line: {w}");
    }
    assert!(warnings[0].contains("No such file"), "{}", warnings[0]);
    assert!(warnings[1].contains("empty"), "{}", warnings[1]);
    assert!(warnings[3].contains("not a valid MaxMind DB"), "{}", warnings[3]);
    let country = &warnings[6];
    assert!(country.contains("country database") && country.contains("--enrich.country-db"), "{country}");
    assert!(country.contains("no country"), "{country}");
    // The good file still answers.
    assert_eq!(db.sources().len(), 1);
    assert_eq!(db.lookup(ip("192.0.2.1")).asn, Some(13335));
    assert!(!db.has_country());
}

#[test]
fn malformed_rows_are_one_warning_with_count_and_line() {
    let dir = TempDir::new("rows");
    let text = format!("{ASN_V4}not,a,row\n1.2.3.4,1.2.3.0,5,reversed\n");
    let (db, warnings) = PeerDb::load(&[dir.file("a4", text.as_bytes())], &[]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("skipped 2 malformed row(s) of 6 (the first at line 5)"), "{}", warnings[0]);
    assert_eq!((db.sources()[0].bad_rows, db.sources()[0].first_bad_line), (2, Some(5)));
    assert_eq!(db.lookup(ip("192.0.2.1")).asn, Some(13335));
}

#[test]
fn nothing_loaded_answers_nothing() {
    let (db, warnings) = PeerDb::load(&[], &[]);
    assert!(warnings.is_empty());
    assert!(db.lookup(ip("192.0.2.1")).is_empty());
    assert_eq!(db.heap_bytes(), 0);
    assert!(PeerDb::empty().lookup(ip("::1")).is_empty());
}

#[test]
fn cache_is_bounded_and_counts() {
    let dir = TempDir::new("cache");
    let (db, _) = PeerDb::load(&[dir.file("a4", ASN_V4.as_bytes())], &[]);
    let db = db.with_cache_capacity(100);
    let hot = ip("192.0.2.1");
    for i in 0..1000u32 {
        let a = IpAddr::from((u32::from_be_bytes([198, 18, 0, 0]) + i).to_be_bytes());
        assert_eq!(db.lookup(a).asn, Some(16509));
        // One address in constant use is never evicted.
        assert_eq!(db.lookup(hot).asn, Some(13335));
        let s = db.cache_stats();
        assert!(s.entries <= 100, "{s:?}");
    }
    let s = db.cache_stats();
    assert_eq!(s.capacity, 100);
    assert_eq!(s.misses, 1001, "every new address and the first lookup of the hot one");
    assert_eq!(s.hits, 999);
    assert!(s.evictions >= 800, "{s:?}");
    assert_eq!(s.evictions + s.entries as u64, 1001, "every entry is either kept or counted out");
    // Cached and uncached agree.
    assert_eq!(db.lookup(hot), db.lookup_uncached(hot));

    let none = PeerDb::load(&[dir.file("b4", ASN_V4.as_bytes())], &[]).0.with_cache_capacity(0);
    none.lookup(hot);
    none.lookup(hot);
    assert_eq!((none.cache_stats().entries, none.cache_stats().misses), (0, 2));
    assert_eq!(PeerDb::empty().with_cache_capacity(7).cache_stats().capacity, 6);
}

#[test]
fn default_paths_are_in_the_default_dir() {
    for p in DEFAULT_ASN_PATHS.iter().chain(DEFAULT_COUNTRY_PATHS) {
        assert_eq!(Path::new(p).parent(), Some(Path::new(DEFAULT_DIR)), "{p}");
    }
    assert_eq!(default_asn_paths().len(), 2);
    assert_eq!(default_country_paths().len(), 1);
}

#[test]
fn country_codes() {
    assert_eq!(CountryCode::new("de").map(|c| c.to_string()).as_deref(), Some("DE"));
    assert_eq!(CountryCode::new("DEU"), None);
    assert_eq!(CountryCode::new("1A"), None);
    assert_eq!(CountryCode::new("é"), None);
    assert_eq!(serde_json::to_string(&CountryCode::new("jp")).expect("json"), "\"JP\"");
}

fn real_dir() -> PathBuf {
    std::env::var_os("IOTWATCH_PEERDB_DIR").map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

/// `cargo test -p iotwatch-core --release --lib peerdb::tests::real_files_cost -- --ignored --nocapture`
#[test]
#[ignore = "needs the installed ip-location-db files; prints the figures quoted in ranges.rs"]
fn real_files_cost() {
    let dir = real_dir();
    let asn = [dir.join("asn-ipv4.csv"), dir.join("asn-ipv6.csv")];
    let rss_before = proc_status_kib("VmRSS");
    let t = Instant::now();
    let (db, warnings) = PeerDb::load(&asn, &[]);
    let asn_load = t.elapsed();
    println!(
        "process RSS: {} KiB before, {} KiB after the ASN CSVs (peak {} KiB)",
        rss_before,
        proc_status_kib("VmRSS"),
        proc_status_kib("VmHWM")
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    for s in db.sources() {
        println!("{}: {} ranges, {} heap bytes, {} bad rows", s.path.display(), s.entries, s.heap_bytes, s.bad_rows);
    }
    println!("organisations: {} ASNs, {} heap bytes", db.orgs.len(), db.orgs.heap_bytes());
    println!("ASN CSVs: {} heap bytes in all, loaded in {:.3} s", db.heap_bytes(), asn_load.as_secs_f64());
    let t = Instant::now();
    let (full, warnings) = PeerDb::load(&asn, &[dir.join("geo-whois-asn-country.mmdb")]);
    println!("with the country MMDB: {} heap bytes, loaded in {:.3} s", full.heap_bytes(), t.elapsed().as_secs_f64());
    assert!(warnings.is_empty(), "{warnings:?}");

    // Pseudo-random addresses (xorshift), IPv4 and IPv6 halves.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let addrs: Vec<IpAddr> = (0..200_000)
        .map(|i| {
            let r = next();
            if i % 2 == 0 {
                IpAddr::from((r as u32).to_be_bytes())
            } else {
                IpAddr::from((0x2000_0000_0000_0000_0000_0000_0000_0000u128 | (u128::from(r) << 64 >> 4)).to_be_bytes())
            }
        })
        .collect();
    let t = Instant::now();
    let known = addrs.iter().filter(|a| db.lookup_uncached(**a).asn.is_some()).count();
    println!(
        "uncached lookup (ASN CSV + provider): {:.0} ns ({known} of {} known)",
        t.elapsed().as_secs_f64() / addrs.len() as f64 * 1e9,
        addrs.len()
    );
    let t = Instant::now();
    let known = addrs.iter().filter(|a| full.lookup_uncached(**a).asn.is_some()).count();
    let per = t.elapsed().as_secs_f64() / addrs.len() as f64;
    println!(
        "uncached lookup (ASN CSV + country MMDB + provider): {:.0} ns ({known} of {} known)",
        per * 1e9,
        addrs.len()
    );
    let few = &addrs[..1000];
    for a in few {
        full.lookup(*a);
    }
    let t = Instant::now();
    for _ in 0..100 {
        for a in few {
            full.lookup(*a);
        }
    }
    println!("cached lookup: {:.0} ns", t.elapsed().as_secs_f64() / 100_000.0 * 1e9);
    let cf = full.lookup(ip("1.1.1.1"));
    println!("1.1.1.1: {cf:?}");
    assert_eq!((cf.asn, cf.provider), (Some(13335), Some("Cloudflare")));
}

/// A `kB` line of /proc/self/status (0 where there is none).
fn proc_status_kib(key: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Every ASN of the provider table has, in the shipped data, an organisation that the
/// provider's own name prefixes match; every prefix matches some organisation.
#[test]
#[ignore = "needs the installed ip-location-db files"]
fn provider_table_agrees_with_shipped_data() {
    let dir = real_dir();
    let (db, warnings) = PeerDb::load(&[dir.join("asn-ipv4.csv"), dir.join("asn-ipv6.csv")], &[]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut problems = Vec::new();
    for p in providers::PROVIDERS {
        for &asn in p.asns {
            let org = db.orgs.get(asn);
            if org.and_then(providers::provider_of_org) != Some(p.name) {
                problems.push(format!("{}: AS{asn} is {org:?} in the data", p.name));
            }
        }
        for pre in p.org_prefixes {
            if !db.orgs.iter().any(|(_, org)| providers::starts_with_word(org.trim_start(), pre)) {
                problems.push(format!("{}: no organisation starts with {pre:?}", p.name));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
