//! Lookups in MaxMind DB files (the `maxminddb` crate), whatever their vendor:
//!
//! - ASN: `autonomous_system_number` and `autonomous_system_organization` (MaxMind's
//!   GeoLite2-ASN and GeoIP2-ISP, DB-IP's and ip-location-db's ASN files alike);
//! - country: ip-location-db's flat `country_code`, or MaxMind's `country.iso_code`
//!   (GeoLite2-Country, GeoLite2-City, DB-IP's country files), else
//!   `registered_country.iso_code` (the country where the network is registered, which
//!   MaxMind gives alone for some anycast and satellite networks).
//!
//! One record is decoded into a struct that names only these fields; every other field is
//! skipped, so one reader serves every layout.
//!
//! The file is read into memory (`Reader::open_readfile`), not mapped: a map of a file that
//! a user replaces or truncates while the agent runs turns a read into SIGBUS. It costs the
//! file's size (7.8 MB for ip-location-db's `geo-whois-asn-country.mmdb`).

use std::net::IpAddr;

use maxminddb::{MaxMindDbError, Reader};
use serde::Deserialize;

use super::CountryCode;

/// The MaxMind DB metadata marker. The specification puts it in the last 128 KiB of the
/// file; a file holding it there is taken for an MMDB, whatever its name.
pub const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

/// How far from the end of a file the metadata marker may start (the specification's bound).
pub const METADATA_SEARCH_BYTES: usize = 128 * 1024;

/// Whether `tail` (the last [`METADATA_SEARCH_BYTES`] of a file, or all of it) holds the
/// MaxMind DB metadata marker.
pub fn has_metadata_marker(tail: &[u8]) -> bool {
    let from = tail.len().saturating_sub(METADATA_SEARCH_BYTES);
    tail[from..].windows(METADATA_MARKER.len()).any(|w| w == METADATA_MARKER)
}

/// An MMDB file in memory.
pub struct Mmdb {
    reader: Reader<Vec<u8>>,
    len: usize,
}

impl std::fmt::Debug for Mmdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.reader.metadata();
        f.debug_struct("Mmdb")
            .field("database_type", &m.database_type)
            .field("ip_version", &m.ip_version)
            .field("node_count", &m.node_count)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    /// ip-location-db's layout.
    #[serde(borrow)]
    country_code: Option<&'a str>,
    /// MaxMind's layout.
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    registered_country: Option<IsoCode<'a>>,
}

impl Mmdb {
    /// A database from its bytes; an error names what is wrong with them.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, MaxMindDbError> {
        let len = bytes.len();
        Ok(Self { reader: Reader::from_source(bytes)?, len })
    }

    /// The metadata's `database_type` (`GeoLite2-ASN`, `GeoLite2-Country`...).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// When the file was built (seconds since the epoch).
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// Nodes of its search tree.
    pub fn node_count(&self) -> u32 {
        self.reader.metadata().node_count
    }

    /// Bytes on the heap: the file's (the reader's own fields are a few hundred more).
    pub fn heap_bytes(&self) -> usize {
        self.len
    }

    /// The record of `ip`, decoded as `T`; `Ok(None)` where the file has none, and for an
    /// IPv6 address in an IPv4-only file.
    fn record<'a, T: Deserialize<'a>>(&'a self, ip: IpAddr) -> Result<Option<T>, MaxMindDbError> {
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return Ok(None);
        }
        self.reader.lookup(ip)?.decode()
    }

    /// The ASN and organisation of `ip`. A record without a number gives none.
    pub fn asn(&self, ip: IpAddr) -> Result<Option<(u32, Option<&str>)>, MaxMindDbError> {
        Ok(self.record::<AsnRecord>(ip)?.and_then(|r| {
            let org = r.autonomous_system_organization.filter(|o| !o.is_empty());
            r.autonomous_system_number.map(|n| (n, org))
        }))
    }

    /// The country of `ip`: `country_code`, else `country.iso_code`, else
    /// `registered_country.iso_code`, the first that is two letters.
    pub fn country(&self, ip: IpAddr) -> Result<Option<CountryCode>, MaxMindDbError> {
        Ok(self.record::<CountryRecord>(ip)?.and_then(|r| {
            [r.country_code, r.country.and_then(|c| c.iso_code), r.registered_country.and_then(|c| c.iso_code)]
                .into_iter()
                .flatten()
                .find_map(CountryCode::new)
        }))
    }
}
