//! The peer database: the ASN, organisation, country and provider of an Internet peer, from
//! files installed by set-up or the Debian package (never downloaded at run time), or the
//! user's own MaxMind files.
//!
//! - [`ranges`]: CSV range files (ip-location-db's `asn-ipv4.csv`, `asn-ipv6.csv`;
//!   `start,end,country_code`) as compact sorted tables;
//! - [`mmdb`]: MaxMind DB files of MaxMind's and ip-location-db's layouts;
//! - [`providers`]: ASN (else organisation name) to provider (Amazon, Google...);
//! - `mmdb_writer`: writes MMDB files for tests (public, hidden from the docs).
//!
//! A file's format is recognised by its content (an MMDB holds the metadata marker in its
//! last 128 KiB; anything else is read as CSV), never by its name. Sources are asked in the
//! order given; the first that knows an address answers (ASN and organisation come from the
//! same source). Each missing or unreadable file is one warning, and the database goes on
//! without it. Addresses are looked up as they are: private and documentation addresses get
//! whatever the files say (nothing, in the shipped files), with no special case here.
//!
//! The shipped data is ip-location-db 2.3.2026061719 (2026-06-17): `asn` (RouteViews, DB-IP,
//! NRO; CC BY 4.0) and `geo-whois-asn-country-mmdb` (CC0). Upstream has deprecated its npm
//! releases, so this date will not move by itself: the README's "Peer databases" says how to
//! use newer or MaxMind files.

pub mod mmdb;
#[doc(hidden)]
pub mod mmdb_writer;
pub mod providers;
pub mod ranges;

use std::{
    fmt,
    fs::File,
    io::{BufReader, Read as _, Seek as _, SeekFrom},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use self::{
    mmdb::Mmdb,
    ranges::{CsvStats, Orgs, OrgsBuilder, RangeTable},
};
use crate::bounded::Generations;

/// Where set-up and the Debian package install ip-location-db's files and their licences.
pub const DEFAULT_DIR: &str = "/usr/share/iotwatch/ip-location-db";
/// The default ASN sources: ip-location-db's `asn` CSVs.
pub const DEFAULT_ASN_PATHS: &[&str] =
    &["/usr/share/iotwatch/ip-location-db/asn-ipv4.csv", "/usr/share/iotwatch/ip-location-db/asn-ipv6.csv"];
/// The default country source: ip-location-db's `geo-whois-asn-country` MMDB.
pub const DEFAULT_COUNTRY_PATHS: &[&str] = &["/usr/share/iotwatch/ip-location-db/geo-whois-asn-country.mmdb"];
/// The version of ip-location-db's packages that set-up installs (in `DEFAULT_DIR/VERSION`).
pub const DATA_VERSION: &str = "2.3.2026061719";
/// The date of that data.
pub const DATA_DATE: &str = "2026-06-17";
/// Entries the lookup cache holds at most by default.
pub const DEFAULT_CACHE_ENTRIES: usize = 16_384;

/// `DEFAULT_ASN_PATHS` as paths.
pub fn default_asn_paths() -> Vec<PathBuf> {
    DEFAULT_ASN_PATHS.iter().map(PathBuf::from).collect()
}

/// `DEFAULT_COUNTRY_PATHS` as paths.
pub fn default_country_paths() -> Vec<PathBuf> {
    DEFAULT_COUNTRY_PATHS.iter().map(PathBuf::from).collect()
}

/// An ISO 3166-1 alpha-2 country code, upper case (`DE`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Two ASCII letters, in either case.
    pub fn new(code: &str) -> Option<Self> {
        match code.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Two ASCII letters, checked by `new`.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({self})")
    }
}

crate::serialize_as_text!(CountryCode);

/// The label of a peer the databases know nothing of.
pub const UNKNOWN: &str = "unknown";

/// A peer's country and provider as label values ([`PeerDb::place`]).
pub type Place = (String, String);

/// What the database knows of one address. Every field may be missing on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerInfo {
    pub asn: Option<u32>,
    /// The organisation that holds the ASN (`Cloudflare, Inc.`).
    #[serde(serialize_with = "serialize_org")]
    pub org: Option<Arc<str>>,
    pub country: Option<CountryCode>,
    /// The provider ([`providers`]) behind the ASN or organisation (`Cloudflare`).
    pub provider: Option<&'static str>,
}

pub(crate) fn serialize_org<S: serde::Serializer>(org: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&org.as_deref(), s)
}

impl PeerInfo {
    pub fn is_empty(&self) -> bool {
        self.asn.is_none() && self.org.is_none() && self.country.is_none() && self.provider.is_none()
    }
}

/// What a source gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// ASN and organisation.
    Asn,
    Country,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Asn => "ASN",
            Self::Country => "country",
        })
    }
}

/// A file's format, as its content says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Mmdb,
}

/// One loaded file, for logs and an `_info` metric.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub path: PathBuf,
    pub kind: SourceKind,
    pub format: Format,
    /// Ranges kept (CSV) or search-tree nodes (MMDB).
    pub entries: usize,
    /// Rows rejected (CSV), with the first one's line number.
    pub bad_rows: usize,
    pub first_bad_line: Option<usize>,
    /// The MMDB's `database_type`.
    pub database_type: Option<String>,
    /// The MMDB's build time, seconds since the epoch.
    pub build_epoch: Option<u64>,
    /// Heap bytes of this file's table (CSV; the organisations are counted apart) or of
    /// the file itself (MMDB).
    pub heap_bytes: usize,
}

enum AsnSource {
    Csv(RangeTable<u32>),
    Mmdb(Mmdb),
}

enum CountrySource {
    Csv(RangeTable<CountryCode>),
    Mmdb(Mmdb),
}

/// The lookup cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped to stay within the capacity.
    pub evictions: u64,
    pub entries: usize,
    pub capacity: usize,
}

/// The lookup cache: least recently used addresses forgotten a generation at a time
/// ([`Generations`]); none at all with a capacity of 0.
struct Cache {
    table: Option<Generations<IpAddr, PeerInfo>>,
    hits: u64,
    misses: u64,
}

impl Cache {
    /// `capacity` is rounded down to an even number (two equal generations), at least 2.
    fn new(capacity: usize) -> Self {
        let table = (capacity > 0).then(|| Generations::new((capacity & !1).max(2)));
        Self { table, hits: 0, misses: 0 }
    }

    fn get(&mut self, ip: IpAddr) -> Option<PeerInfo> {
        let hit = self.table.as_mut().and_then(|t| t.get(ip)).cloned();
        if hit.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        hit
    }

    fn put(&mut self, ip: IpAddr, info: PeerInfo) {
        if let Some(t) = &mut self.table {
            *t.get_or_default(ip) = info;
        }
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            evictions: self.table.as_ref().map_or(0, Generations::forgotten),
            entries: self.table.as_ref().map_or(0, Generations::len),
            capacity: self.table.as_ref().map_or(0, Generations::max),
        }
    }
}

/// ASN, organisation, country and provider of addresses. Loaded once; `lookup` takes
/// `&self` (the cache has its own lock), so one database can serve several threads.
pub struct PeerDb {
    asn: Vec<AsnSource>,
    country: Vec<CountrySource>,
    orgs: Orgs,
    sources: Vec<SourceInfo>,
    cache: Mutex<Cache>,
    lookup_errors: AtomicU64,
}

impl fmt::Debug for PeerDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerDb").field("sources", &self.sources).field("orgs", &self.orgs.len()).finish_non_exhaustive()
    }
}

impl Default for PeerDb {
    fn default() -> Self {
        Self::empty()
    }
}

/// How a file was read.
enum Loaded {
    Mmdb(Mmdb),
    Csv(File),
}

/// Opens `path` and tells its format by content: the MMDB marker in the last 128 KiB.
fn open(path: &Path) -> std::io::Result<Loaded> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let tail_len = len.min(mmdb::METADATA_SEARCH_BYTES as u64);
    f.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    (&mut f).take(tail_len).read_to_end(&mut tail)?;
    if mmdb::has_metadata_marker(&tail) {
        f.seek(SeekFrom::Start(0))?;
        let mut all = Vec::with_capacity(len as usize);
        f.read_to_end(&mut all)?;
        return match Mmdb::from_bytes(all) {
            Ok(m) => Ok(Loaded::Mmdb(m)),
            Err(e) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a valid MaxMind DB: {e}"))),
        };
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(Loaded::Csv(f))
}

/// What to do when a file of `kind` cannot be used.
fn remedy(kind: SourceKind) -> String {
    let flag = match kind {
        SourceKind::Asn => "--enrich.asn-db",
        SourceKind::Country => "--enrich.country-db",
    };
    format!(
        "install it (the iotwatch package ships it; on a development machine run `cargo xtask setup`) or pass \
         {flag} PATH (a MaxMind DB or a CSV)"
    )
}

fn what_is_lost(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Asn => "peers get no ASN, organisation or provider from it",
        SourceKind::Country => "peers get no country from it",
    }
}

impl PeerDb {
    /// A database that knows nothing (every lookup is empty).
    pub fn empty() -> Self {
        Self {
            asn: Vec::new(),
            country: Vec::new(),
            orgs: Orgs::default(),
            sources: Vec::new(),
            cache: Mutex::new(Cache::new(DEFAULT_CACHE_ENTRIES)),
            lookup_errors: AtomicU64::new(0),
        }
    }

    /// Loads every file; returns the database and one warning for each file that could not
    /// be used (missing, unreadable, corrupt: the database goes on without it) or that had
    /// malformed rows (skipped and counted). Never fails, never panics.
    pub fn load(asn_paths: &[PathBuf], country_paths: &[PathBuf]) -> (Self, Vec<String>) {
        let mut db = Self::empty();
        let mut warnings = Vec::new();
        let mut orgs = OrgsBuilder::default();
        let sources = asn_paths
            .iter()
            .map(|p| (p, SourceKind::Asn))
            .chain(country_paths.iter().map(|p| (p, SourceKind::Country)));
        for (path, kind) in sources {
            match db.load_one(path, kind, &mut orgs) {
                Ok(Some(w)) => warnings.push(w),
                Ok(None) => {}
                Err(e) => warnings.push(format!(
                    "peer database: cannot use {kind} database {}: {e}; {}. To fix: {}",
                    path.display(),
                    what_is_lost(kind),
                    remedy(kind)
                )),
            }
        }
        db.orgs = orgs.finish();
        (db, warnings)
    }

    /// A database of two CSV texts (ASN rows, country rows), for tests: written to a temporary
    /// directory and loaded as the agent loads files. Panics on a warning.
    #[doc(hidden)]
    pub fn from_csv_texts(asn_csv: &str, country_csv: &str) -> Self {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("iotwatch-peerdb-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (asn, country) = (dir.join("asn.csv"), dir.join("country.csv"));
        std::fs::write(&asn, asn_csv).expect("write the ASN CSV");
        std::fs::write(&country, country_csv).expect("write the country CSV");
        let (db, warnings) = Self::load(&[asn], &[country]);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(warnings.is_empty(), "{warnings:?}");
        db
    }

    /// [`PeerDb::load`] with the default paths.
    pub fn load_defaults() -> (Self, Vec<String>) {
        Self::load(&default_asn_paths(), &default_country_paths())
    }

    /// The same database with a cache of `entries` at most (0: no cache; an odd number is
    /// rounded down).
    pub fn with_cache_capacity(self, entries: usize) -> Self {
        Self { cache: Mutex::new(Cache::new(entries)), ..self }
    }

    /// Loads one file; `Ok(Some(warning))` when it loaded with rejected rows.
    fn load_one(&mut self, path: &Path, kind: SourceKind, orgs: &mut OrgsBuilder) -> Result<Option<String>, String> {
        let loaded = open(path).map_err(|e| e.to_string())?;
        let mut info = SourceInfo {
            path: path.to_owned(),
            kind,
            format: Format::Csv,
            entries: 0,
            bad_rows: 0,
            first_bad_line: None,
            database_type: None,
            build_epoch: None,
            heap_bytes: 0,
        };
        let mut stats = CsvStats::default();
        match loaded {
            Loaded::Mmdb(m) => {
                info.format = Format::Mmdb;
                info.entries = m.node_count() as usize;
                info.database_type = Some(m.database_type().to_owned());
                info.build_epoch = Some(m.build_epoch());
                info.heap_bytes = m.heap_bytes();
                match kind {
                    SourceKind::Asn => self.asn.push(AsnSource::Mmdb(m)),
                    SourceKind::Country => self.country.push(CountrySource::Mmdb(m)),
                }
            }
            Loaded::Csv(f) => {
                let reader = BufReader::with_capacity(1 << 16, f);
                let shape = match kind {
                    SourceKind::Asn => "start,end,asn,organisation",
                    SourceKind::Country => "start,end,country_code",
                };
                let err = |e: ranges::CsvError| format!("not a MaxMind DB, nor a CSV of {shape} rows: {e}");
                match kind {
                    SourceKind::Asn => {
                        let (t, s) = ranges::load_asn_csv(reader, orgs).map_err(err)?;
                        (info.entries, info.heap_bytes, stats) = (t.len(), t.heap_bytes(), s);
                        self.asn.push(AsnSource::Csv(t));
                    }
                    SourceKind::Country => {
                        let (t, s) = ranges::load_country_csv(reader).map_err(err)?;
                        (info.entries, info.heap_bytes, stats) = (t.len(), t.heap_bytes(), s);
                        self.country.push(CountrySource::Csv(t));
                    }
                }
                info.bad_rows = stats.bad_rows;
                info.first_bad_line = stats.first_bad_line;
            }
        }
        self.sources.push(info);
        Ok(stats.first_bad_line.map(|line| {
            format!(
                "peer database: {kind} database {}: skipped {} malformed row(s) of {} (the first at line {line}); \
                 the other rows are used",
                path.display(),
                stats.bad_rows,
                stats.bad_rows + stats.rows
            )
        }))
    }

    /// What was loaded, in order.
    pub fn sources(&self) -> &[SourceInfo] {
        &self.sources
    }

    /// Whether some source gives ASNs (else every `asn`, `org` and `provider` is none).
    pub fn has_asn(&self) -> bool {
        !self.asn.is_empty()
    }

    /// Whether some source gives countries.
    pub fn has_country(&self) -> bool {
        !self.country.is_empty()
    }

    /// Heap bytes of the tables and files (the cache is apart: [`CacheStats::entries`]).
    pub fn heap_bytes(&self) -> usize {
        self.sources.iter().map(|s| s.heap_bytes).sum::<usize>() + self.orgs.heap_bytes()
    }

    /// Lookups an MMDB could not decode (a corrupt record): counted, and the source skipped.
    pub fn lookup_errors(&self) -> u64 {
        self.lookup_errors.load(Ordering::Relaxed)
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.lock().map(|c| c.stats()).unwrap_or_default()
    }

    /// The country and provider of `ip` as label values (`unknown` when the databases do not
    /// say): where the metrics count a device's Internet traffic.
    pub fn place(&self, ip: IpAddr) -> Place {
        let info = self.lookup(ip);
        (
            info.country.map_or(UNKNOWN.to_owned(), |c| c.as_str().to_owned()),
            info.provider.unwrap_or(UNKNOWN).to_owned(),
        )
    }

    /// What the database knows of `ip`, through the cache. An IPv4-mapped IPv6 address
    /// (`::ffff:192.0.2.1`) is looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> PeerInfo {
        let ip = ip.to_canonical();
        if self.asn.is_empty() && self.country.is_empty() {
            return PeerInfo::default();
        }
        if let Some(hit) = self.cache.lock().ok().and_then(|mut c| c.get(ip)) {
            return hit;
        }
        let info = self.lookup_uncached(ip);
        if let Ok(mut c) = self.cache.lock() {
            c.put(ip, info.clone());
        }
        info
    }

    /// [`PeerDb::lookup`] without the cache.
    pub fn lookup_uncached(&self, ip: IpAddr) -> PeerInfo {
        let ip = ip.to_canonical();
        let mut info = PeerInfo::default();
        for source in &self.asn {
            let found = match source {
                AsnSource::Csv(t) => t.get(ip).map(|asn| (asn, self.orgs.get(asn).map(Arc::from))),
                AsnSource::Mmdb(m) => match m.asn(ip) {
                    Ok(v) => v.map(|(asn, org)| (asn, org.map(Arc::from))),
                    Err(_) => {
                        self.lookup_errors.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                },
            };
            if let Some((asn, org)) = found {
                (info.asn, info.org) = (Some(asn), org);
                break;
            }
        }
        for source in &self.country {
            let found = match source {
                CountrySource::Csv(t) => t.get(ip),
                CountrySource::Mmdb(m) => m.country(ip).unwrap_or_else(|_| {
                    self.lookup_errors.fetch_add(1, Ordering::Relaxed);
                    None
                }),
            };
            if found.is_some() {
                info.country = found;
                break;
            }
        }
        info.provider = providers::provider_of(info.asn, info.org.as_deref());
        info
    }
}

#[cfg(test)]
mod tests;
