//! Range tables loaded from CSV files of inclusive address ranges: ip-location-db's
//! `start,end,asn,org` (`asn-ipv4.csv`, `asn-ipv6.csv`) and `start,end,country_code`.
//!
//! A table is three parallel sorted vectors per address family (starts, ends, values; IPv4
//! as `u32`, IPv6 as `u128`, or `u64` for the ranges on /64 boundaries), searched with a binary
//! search over the starts: 12 bytes a row for IPv4 and 20 or 36 for IPv6, with no padding (a
//! `Vec<(u128, u128, u32)>` would pay 48).
//! An ASN table's value is the ASN itself; organisations are kept once per ASN in
//! [`Orgs`], one string arena sorted by ASN (8 bytes an ASN plus the text).
//!
//! Measured on the development machine (AMD EPYC VM, 2 cores, release build, 2026-12-02)
//! with ip-location-db's `asn` 2.3.2026061719: 411,961 IPv4 rows, 103,197 IPv6 rows (103,014
//! of them on /64 boundaries) and 91,065 organisations take 4.94 MB, 2.07 MB and 2.99 MB of
//! heap, 10.0 MB in all (the IPv6 rows took 3.72 MB as `u128`s); the process's RSS grew by
//! 14.9 MiB (17.5 MiB at the peak of loading: the rows are sorted before they are split into
//! the three vectors; glibc keeps what was freed until `malloc_trim(0)`, which the agent calls
//! after every poll). Loading both files took 0.21 s in the morning; in the afternoon, on a slower
//! machine, 0.26 to 0.33 s against 0.36 s for the reader before IPv4 rows skipped the general
//! parsers (alternating runs). A lookup that misses the cache costs about
//! 0.3 us with the provider (random addresses; 0.1 us from the cache).
//! `peerdb::tests::real_files_cost` (ignored by default) prints these figures:
//! `IOTWATCH_PEERDB_DIR=DIR cargo test -p iotwatch-core --release --lib peerdb::tests::real_files_cost -- --ignored --nocapture`.
//!
//! The CSV reader is ours, not the `csv` crate: the files are one record a line with at most
//! one quoted field, we need the line number of every rejected row and must go on after it,
//! and it keeps iotwatch-core's dependencies (the Raspberry Pi binary) small. It reads
//! RFC 4180 quoting (`"Cloudflare, Inc."`, `"LLC ""SPUTNIK"""`); a quoted field does not
//! span lines.

use std::{borrow::Cow, collections::HashMap, io::BufRead, net::IpAddr};

use foldhash::fast::RandomState;

use super::CountryCode;

/// Sorted, non-overlapping inclusive ranges of one address family.
#[derive(Debug, Clone)]
pub struct RangeVec<K, V> {
    starts: Vec<K>,
    ends: Vec<K>,
    values: Vec<V>,
}

impl<K, V> Default for RangeVec<K, V> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<K, V> RangeVec<K, V> {
    fn with_capacity(n: usize) -> Self {
        Self { starts: Vec::with_capacity(n), ends: Vec::with_capacity(n), values: Vec::with_capacity(n) }
    }

    /// Appends a range after the last (the caller keeps them sorted and apart).
    fn push(&mut self, start: K, end: K, value: V) {
        self.starts.push(start);
        self.ends.push(end);
        self.values.push(value);
    }
}

/// Keys of a [`RangeVec`]: `u32` for IPv4, `u128` for IPv6.
pub trait Key: Copy + Ord {
    /// The key just before this one (never called on the smallest key).
    fn pred(self) -> Self;
}

impl Key for u32 {
    fn pred(self) -> Self {
        self - 1
    }
}

impl Key for u64 {
    fn pred(self) -> Self {
        self - 1
    }
}

impl Key for u128 {
    fn pred(self) -> Self {
        self - 1
    }
}

impl<K: Key, V: Copy> RangeVec<K, V> {
    /// Sorts the rows by start. Where two overlap, the one that starts later wins and the
    /// earlier one is cut short before it (what it covered after the later row is dropped);
    /// the number of rows cut short is returned. ip-location-db's `asn-ipv4.csv` has one
    /// such pair (214.95.0.0-215.0.255.255 and 215.0.0.0-215.1.3.255, both the US DoD).
    pub fn from_rows(mut rows: Vec<(K, K, V)>) -> (Self, usize) {
        rows.sort_by_key(|r| r.0);
        let mut out = Self::with_capacity(rows.len());
        let mut overlaps = 0;
        for (start, end, value) in rows {
            if let Some(last) = out.ends.last_mut()
                && *last >= start
            {
                overlaps += 1;
                if *out.starts.last().expect("parallel vectors") == start {
                    // Same start: the later row replaces the earlier one.
                    out.starts.pop();
                    out.ends.pop();
                    out.values.pop();
                } else {
                    *last = start.pred();
                }
            }
            out.push(start, end, value);
        }
        out.shrink_to_fit();
        (out, overlaps)
    }

    fn shrink_to_fit(&mut self) {
        self.starts.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.values.shrink_to_fit();
    }

    /// The value of the range holding `key`.
    pub fn get(&self, key: K) -> Option<V> {
        let i = self.starts.partition_point(|&s| s <= key).checked_sub(1)?;
        (key <= self.ends[i]).then(|| self.values[i])
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Bytes this table holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        (self.starts.capacity() + self.ends.capacity()) * size_of::<K>() + self.values.capacity() * size_of::<V>()
    }
}

/// IPv6 ranges. Those that start and end on /64 boundaries (all but 183 of ip-location-db's
/// 103,197 ASN rows) are kept as their first 64 bits, 20 bytes a row instead of 36: 1.65 MB
/// less for that file. The rest are kept whole.
#[derive(Debug, Clone)]
pub struct V6Ranges<V> {
    by_64: RangeVec<u64, V>,
    whole: RangeVec<u128, V>,
}

impl<V> Default for V6Ranges<V> {
    fn default() -> Self {
        Self { by_64: RangeVec::default(), whole: RangeVec::default() }
    }
}

impl<V: Copy> V6Ranges<V> {
    /// Splits sorted, non-overlapping ranges ([`RangeVec::from_rows`]): both parts stay so.
    fn split(all: RangeVec<u128, V>) -> Self {
        let on_64 = |start: u128, end: u128| start as u64 == 0 && end as u64 == u64::MAX;
        let n = all.starts.iter().zip(&all.ends).filter(|(s, e)| on_64(**s, **e)).count();
        // Sized up front: no vector grows by doubling beside the whole table.
        let mut out = Self { by_64: RangeVec::with_capacity(n), whole: RangeVec::with_capacity(all.len() - n) };
        for ((start, end), value) in all.starts.into_iter().zip(all.ends).zip(all.values) {
            if on_64(start, end) {
                out.by_64.push((start >> 64) as u64, (end >> 64) as u64, value);
            } else {
                out.whole.push(start, end, value);
            }
        }
        out
    }

    /// The value of the range holding `key`: at most one does, in either part.
    pub fn get(&self, key: u128) -> Option<V> {
        self.whole.get(key).or_else(|| self.by_64.get((key >> 64) as u64))
    }

    pub fn len(&self) -> usize {
        self.by_64.len() + self.whole.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn heap_bytes(&self) -> usize {
        self.by_64.heap_bytes() + self.whole.heap_bytes()
    }
}

/// IPv4 and IPv6 ranges with a value each.
#[derive(Debug, Default, Clone)]
pub struct RangeTable<V> {
    pub v4: RangeVec<u32, V>,
    pub v6: V6Ranges<V>,
}

impl<V: Copy> RangeTable<V> {
    /// The value for `ip`, looked up as the file has it: an IPv4-mapped IPv6 address is an
    /// IPv6 key here (`PeerDb` maps it to IPv4 first).
    pub fn get(&self, ip: IpAddr) -> Option<V> {
        match ip {
            IpAddr::V4(a) => self.v4.get(u32::from(a)),
            IpAddr::V6(a) => self.v6.get(u128::from(a)),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }
}

/// What a CSV load kept and rejected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CsvStats {
    /// Rows kept.
    pub rows: usize,
    /// Rows rejected as malformed (wrong field count, bad address, start after end, mixed
    /// families, bad ASN or country code, unterminated quote).
    pub bad_rows: usize,
    /// The 1-based line number of the first rejected row.
    pub first_bad_line: Option<usize>,
    /// Rows cut short or replaced by a later overlapping row (see [`RangeVec::from_rows`]).
    pub overlaps: usize,
    /// Whether the first line was a header and skipped.
    pub header: bool,
}

/// Why a CSV file gave no table at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsvError {
    #[error("the file is empty")]
    Empty,
    #[error("no row could be read ({bad_rows} malformed, the first at line {first_bad_line}: {sample:?})")]
    NoValidRow { bad_rows: usize, first_bad_line: usize, sample: String },
    #[error("read error at line {line}: {message}")]
    Io { line: usize, message: String },
}

/// Organisation names, one per ASN, in one string arena sorted by ASN.
#[derive(Debug, Default, Clone)]
pub struct Orgs {
    asns: Vec<u32>,
    /// End offset in `text` of each ASN's name; a name starts where the previous one ends.
    ends: Vec<u32>,
    text: String,
}

impl Orgs {
    pub fn get(&self, asn: u32) -> Option<&str> {
        let i = self.asns.binary_search(&asn).ok()?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.text[start..self.ends[i] as usize])
    }

    /// Every (ASN, organisation), by ASN.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.asns.iter().enumerate().map(|(i, &asn)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
            (asn, &self.text[start..self.ends[i] as usize])
        })
    }

    pub fn len(&self) -> usize {
        self.asns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.asns.is_empty()
    }

    pub fn heap_bytes(&self) -> usize {
        (self.asns.capacity() + self.ends.capacity()) * 4 + self.text.capacity()
    }
}

/// Collects organisations while CSV files load: the first name seen for an ASN is kept.
/// Names go to one growing arena, not to an allocation each: 91,000 small allocations freed
/// after loading would stay in the process's heap (RSS) as holes.
#[derive(Debug, Default)]
pub struct OrgsBuilder {
    /// ASN to (start, end) in `text`.
    spans: HashMap<u32, (u32, u32), RandomState>,
    text: String,
}

impl OrgsBuilder {
    /// Whether `asn` has its name already (the first one seen is kept).
    pub fn has(&self, asn: u32) -> bool {
        self.spans.contains_key(&asn)
    }

    pub fn add(&mut self, asn: u32, name: &str) {
        if name.is_empty() || self.spans.contains_key(&asn) {
            return;
        }
        // An arena over 4 GiB cannot be indexed by u32: names past it are dropped (real
        // files hold about 2 MB).
        let (Ok(start), Ok(end)) = (u32::try_from(self.text.len()), u32::try_from(self.text.len() + name.len())) else {
            return;
        };
        self.text.push_str(name);
        self.spans.insert(asn, (start, end));
    }

    /// The names in ASN order, in an arena of their exact size.
    pub fn finish(self) -> Orgs {
        let mut spans: Vec<(u32, (u32, u32))> = self.spans.into_iter().collect();
        spans.sort_unstable_by_key(|s| s.0);
        let mut orgs = Orgs {
            asns: Vec::with_capacity(spans.len()),
            ends: Vec::with_capacity(spans.len()),
            text: String::with_capacity(self.text.len()),
        };
        for (asn, (start, end)) in spans {
            orgs.text.push_str(&self.text[start as usize..end as usize]);
            orgs.asns.push(asn);
            orgs.ends.push(orgs.text.len() as u32);
        }
        orgs
    }
}

/// Where one field of a CSV line lies, without its quotes; `escaped` when it holds a doubled
/// quote (`""`), which [`field`] turns back into one. Positions, not slices, so that one vector
/// serves every line of a file.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
    escaped: bool,
}

/// Splits one CSV line into `out`; `None` for an unterminated or stray quote.
fn split_fields(line: &[u8], out: &mut Vec<Span>) -> Option<()> {
    out.clear();
    let mut i = 0;
    loop {
        if line.get(i) == Some(&b'"') {
            // Quoted: up to a quote not followed by another; `""` is one quote.
            let start = i + 1;
            let mut j = start;
            let mut escaped = false;
            loop {
                match line.get(j)? {
                    b'"' if line.get(j + 1) == Some(&b'"') => {
                        escaped = true;
                        j += 2;
                    }
                    b'"' => break,
                    _ => j += 1,
                }
            }
            out.push(Span { start, end: j, escaped });
            i = j + 1;
            match line.get(i) {
                None => return Some(()),
                Some(b',') => i += 1,
                Some(_) => return None,
            }
        } else {
            let end = line[i..].iter().position(|&c| c == b',').map_or(line.len(), |n| i + n);
            if line[i..end].contains(&b'"') {
                return None;
            }
            out.push(Span { start: i, end, escaped: false });
            if end == line.len() {
                return Some(());
            }
            i = end + 1;
        }
    }
}

/// A field's bytes, its doubled quotes made single.
fn field(line: &[u8], span: Span) -> Cow<'_, [u8]> {
    let bytes = &line[span.start..span.end];
    if !span.escaped {
        return Cow::Borrowed(bytes);
    }
    let mut value = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        value.push(bytes[i]);
        i += if bytes[i] == b'"' { 2 } else { 1 };
    }
    Cow::Owned(value)
}

/// A dotted quad of plain decimal octets, as every IPv4 row of the files is written: read
/// without the UTF-8 check, trimming and general parser the rest go through (the files hold
/// 400,000 of them, read at every start). Exactly what `Ipv4Addr`'s parser takes of such
/// text: no leading zeros, octets up to 255.
fn dotted_quad(s: &[u8]) -> Option<u32> {
    let mut addr = 0u32;
    let mut i = 0;
    for octet in 0..4 {
        if octet > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u32;
        while let Some(d) = s.get(i).filter(|c| c.is_ascii_digit()) {
            value = value * 10 + u32::from(d - b'0');
            i += 1;
            if i - start > 3 {
                return None;
            }
        }
        if i == start || value > 255 || (i - start > 1 && s[start] == b'0') {
            return None;
        }
        addr = addr << 8 | value;
    }
    (i == s.len()).then_some(addr)
}

/// Plain decimal digits that fit a `u32`; anything else (signs, spaces) goes to `str::parse`.
fn decimal(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(s).ok()?.trim().parse().ok();
    }
    Some(s.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

fn parse_range(start: &[u8], end: &[u8]) -> Option<Range> {
    if let (Some(s), Some(e)) = (dotted_quad(start), dotted_quad(end)) {
        return (s <= e).then_some(Range::V4(s, e));
    }
    let start: IpAddr = std::str::from_utf8(start).ok()?.trim().parse().ok()?;
    let end: IpAddr = std::str::from_utf8(end).ok()?.trim().parse().ok()?;
    match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => Some(Range::V4(s.into(), e.into())),
        (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => Some(Range::V6(s.into(), e.into())),
        _ => None,
    }
}

/// Rows of one kind of CSV: how a record's remaining fields become a value.
trait RowValue: Sized + Copy {
    /// The value of a row from its fields after the range (in `line`); `None` rejects the row.
    fn parse(line: &[u8], fields: &[Span], orgs: &mut OrgsBuilder) -> Option<Self>;
}

impl RowValue for u32 {
    /// `asn` or `asn,org`: ip-location-db's and MaxMind-style ASN CSVs.
    fn parse(line: &[u8], fields: &[Span], orgs: &mut OrgsBuilder) -> Option<Self> {
        let (asn, org) = match fields {
            [asn] => (asn, None),
            [asn, org] => (asn, Some(org)),
            _ => return None,
        };
        let asn = decimal(&field(line, *asn))?;
        if let Some(org) = org
            && !orgs.has(asn)
        {
            orgs.add(asn, String::from_utf8_lossy(&field(line, *org)).trim());
        }
        Some(asn)
    }
}

impl RowValue for CountryCode {
    /// `country_code`.
    fn parse(line: &[u8], fields: &[Span], _: &mut OrgsBuilder) -> Option<Self> {
        match fields {
            [cc] => CountryCode::new(std::str::from_utf8(&field(line, *cc)).ok()?.trim()),
            _ => None,
        }
    }
}

/// A header line: printable ASCII, fields apart, and a first field without a digit
/// (`ip_range_start,ip_range_end,...`, `network,...`).
fn is_header(line: &[u8]) -> bool {
    line.iter().all(|c| matches!(c, b' '..=b'~'))
        && line.contains(&b',')
        && !line.split(|&c| c == b',').next().unwrap_or(b"").iter().any(u8::is_ascii_digit)
}

fn load<V: RowValue>(reader: impl BufRead, orgs: &mut OrgsBuilder) -> Result<(RangeTable<V>, CsvStats), CsvError> {
    let mut stats = CsvStats::default();
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut sample = String::new();
    let mut any_line = false;
    let mut reader = reader;
    let mut buf = Vec::with_capacity(256);
    let mut fields = Vec::with_capacity(4);
    let mut line_no = 0;
    loop {
        buf.clear();
        line_no += 1;
        let n =
            reader.read_until(b'\n', &mut buf).map_err(|e| CsvError::Io { line: line_no, message: e.to_string() })?;
        if n == 0 {
            break;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        any_line = true;
        let ok = split_fields(line, &mut fields).and_then(|()| {
            let [start, end, rest @ ..] = &fields[..] else { return None };
            let range = parse_range(&field(line, *start), &field(line, *end))?;
            Some((range, V::parse(line, rest, orgs)?))
        });
        match ok {
            Some((Range::V4(s, e), v)) => v4.push((s, e, v)),
            Some((Range::V6(s, e), v)) => v6.push((s, e, v)),
            None if line_no == 1 && is_header(line) => stats.header = true,
            None => {
                stats.bad_rows += 1;
                if stats.first_bad_line.is_none() {
                    stats.first_bad_line = Some(line_no);
                    sample = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
                }
            }
        }
    }
    stats.rows = v4.len() + v6.len();
    if stats.rows == 0 {
        return Err(match stats.first_bad_line {
            Some(first_bad_line) if any_line => {
                CsvError::NoValidRow { bad_rows: stats.bad_rows, first_bad_line, sample }
            }
            _ => CsvError::Empty,
        });
    }
    let (v4, o4) = RangeVec::from_rows(v4);
    let (v6, o6) = RangeVec::from_rows(v6);
    stats.overlaps = o4 + o6;
    Ok((RangeTable { v4, v6: V6Ranges::split(v6) }, stats))
}

/// An ASN CSV (`start,end,asn,org`; the organisation may be quoted, empty or absent); the
/// organisations go to `orgs`.
pub fn load_asn_csv(reader: impl BufRead, orgs: &mut OrgsBuilder) -> Result<(RangeTable<u32>, CsvStats), CsvError> {
    load(reader, orgs)
}

/// A country CSV (`start,end,country_code`).
pub fn load_country_csv(reader: impl BufRead) -> Result<(RangeTable<CountryCode>, CsvStats), CsvError> {
    load(reader, &mut OrgsBuilder::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        split_fields(line.as_bytes(), &mut out)?;
        Some(out.iter().map(|f| String::from_utf8_lossy(&field(line.as_bytes(), *f)).into_owned()).collect())
    }

    #[test]
    fn dotted_quads_are_read_as_the_standard_parser_reads_them() {
        for text in [
            "0.0.0.0",
            "1.0.0.255",
            "255.255.255.255",
            "10.1.2.3",
            "256.0.0.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.-4",
            "1.2.3.0004",
            "1.2.3.4a",
            "",
            "::1",
            "1.2.3.40",
        ] {
            let std = text.parse::<std::net::Ipv4Addr>().ok().map(u32::from);
            assert_eq!(dotted_quad(text.as_bytes()), std, "{text:?}");
        }
        for (text, want) in [
            ("13335", Some(13335)),
            (" 7 ", Some(7)),
            ("+5", Some(5)),
            ("4294967295", Some(u32::MAX)),
            ("4294967296", None),
            ("x", None),
            ("", None),
        ] {
            assert_eq!(decimal(text.as_bytes()), want, "{text:?}");
        }
    }

    #[test]
    fn csv_fields_with_quotes() {
        assert_eq!(fields("a,b,,d").expect("plain"), ["a", "b", "", "d"]);
        assert_eq!(fields(r#"1,2,3,"Cloudflare, Inc.""#).expect("quoted"), ["1", "2", "3", "Cloudflare, Inc."]);
        assert_eq!(fields(r#"1,"LLC ""SPUTNIK""",x"#).expect("escaped"), ["1", r#"LLC "SPUTNIK""#, "x"]);
        assert_eq!(fields(r#"1,2,3,"""#).expect("empty quoted"), ["1", "2", "3", ""]);
        assert_eq!(fields("1,2,3,").expect("empty last"), ["1", "2", "3", ""]);
        assert!(fields(r#"1,2,3,"open"#).is_none());
        assert!(fields(r#"1,2,3,"a"b"#).is_none());
        assert!(fields(r#"1,2,3,a"b"#).is_none());
    }

    const ASN_CSV: &str = r#"1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."
1.0.4.0,1.0.7.255,38803,Gtelecom Pty Ltd
2.26.200.0,2.26.215.255,201907,"LLC ""SPUTNIK"""
9.9.9.0,9.9.9.255,19281,
10.0.0.0,10.0.0.255,64512
2001::,2001::ffff:ffff:ffff:ffff:ffff:ffff,6939,Hurricane Electric LLC
2001:4:112::,2001:4:112:ffff:ffff:ffff:ffff:ffff,112,DNS-OARC
"#;

    #[test]
    fn ipv6_ranges_on_and_off_64_boundaries_resolve_alike() {
        let rows = [
            ("2001:db8::", "2001:db8:0:ffff:ffff:ffff:ffff:ffff", 1),
            // Inside the /64 2001:db8:1::/64, not on its boundaries: kept whole.
            ("2001:db8:1::100", "2001:db8:1::1ff", 2),
            ("2001:db8:1:0:8000::", "2001:db8:2::ffff:ffff:ffff:ffff", 3),
            ("2001:db8:3::", "2001:db8:3:0:ffff:ffff:ffff:ffff", 4),
        ];
        let ip = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().expect("address"));
        let (all, overlaps) = RangeVec::from_rows(rows.iter().map(|(s, e, v)| (ip(s), ip(e), *v)).collect());
        assert_eq!(overlaps, 0);
        let split = V6Ranges::split(all.clone());
        assert_eq!((split.by_64.len(), split.whole.len()), (2, 2));
        for probe in [
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db8::",
            "2001:db8:0:ffff:ffff:ffff:ffff:ffff",
            "2001:db8:1::",
            "2001:db8:1::100",
            "2001:db8:1::1ff",
            "2001:db8:1::200",
            "2001:db8:1:0:8000::",
            "2001:db8:2::5",
            "2001:db8:2:0:1::",
            "2001:db8:3:0:ffff:ffff:ffff:ffff",
            "2001:db8:3:1::",
        ] {
            assert_eq!(split.get(ip(probe)), all.get(ip(probe)), "{probe}");
        }
        assert_eq!(split.get(ip("2001:db8:1::150")), Some(2));
        assert_eq!(split.get(ip("2001:db8:1::")), None, "a /64 partly covered");
    }

    #[test]
    fn asn_csv_with_quoted_orgs_and_ipv6() {
        let mut b = OrgsBuilder::default();
        let (t, stats) = load_asn_csv(ASN_CSV.as_bytes(), &mut b).expect("loads");
        let orgs = b.finish();
        assert_eq!(stats, CsvStats { rows: 7, ..CsvStats::default() });
        assert_eq!((t.v4.len(), t.v6.len()), (5, 2));
        let asn = |ip: &str| t.get(ip.parse().expect("address"));
        assert_eq!(asn("1.0.0.0"), Some(13335));
        assert_eq!(asn("1.0.0.255"), Some(13335));
        assert_eq!(asn("1.0.1.0"), None);
        assert_eq!(asn("1.0.5.9"), Some(38803));
        assert_eq!(asn("0.255.255.255"), None);
        assert_eq!(asn("255.255.255.255"), None);
        assert_eq!(asn("2001::1"), Some(6939));
        assert_eq!(asn("2001:4:112:1::53"), Some(112));
        assert_eq!(asn("2001:4:113::"), None);
        assert_eq!(asn("::"), None);
        assert_eq!(orgs.get(13335), Some("Cloudflare, Inc."));
        assert_eq!(orgs.get(201907), Some(r#"LLC "SPUTNIK""#));
        assert_eq!(orgs.get(6939), Some("Hurricane Electric LLC"));
        assert_eq!(orgs.get(19281), None, "an empty organisation is none");
        assert_eq!(orgs.get(64512), None, "no organisation column");
        assert_eq!(orgs.len(), 5);
    }

    #[test]
    fn bad_rows_are_counted_with_the_first_line() {
        let text = "1.0.0.0,1.0.0.255,13335,Cloudflare\n\
                    1.0.4.0,1.0.7.255,notanumber,X\n\
                    \n\
                    1.0.8.0,1.0.7.255,1,start after end\n\
                    1.0.9.0,2001::,1,mixed families\n\
                    1.0.10.0,1.0.10.255\n\
                    300.0.0.0,300.0.0.1,1,bad address\n\
                    1.0.11.0,1.0.11.255,1,\"open quote\n\
                    1.0.12.0,1.0.12.255,4294967296,too large\r\n\
                    1.0.13.0,1.0.13.255,7,Ok Org\r\n";
        let mut b = OrgsBuilder::default();
        let (t, stats) = load_asn_csv(text.as_bytes(), &mut b).expect("two good rows");
        assert_eq!(stats.rows, 2);
        assert_eq!(stats.bad_rows, 7);
        assert_eq!(stats.first_bad_line, Some(2));
        assert_eq!(t.get("1.0.13.1".parse().expect("ip")), Some(7));
        assert_eq!(b.finish().get(7), Some("Ok Org"), "CR LF endings are read");
    }

    #[test]
    fn empty_and_unreadable_files_are_errors() {
        let mut b = OrgsBuilder::default();
        assert_eq!(load_asn_csv(&b""[..], &mut b).expect_err("empty"), CsvError::Empty);
        assert_eq!(load_asn_csv(&b"\n\n  \n"[..], &mut b).expect_err("blank"), CsvError::Empty);
        let err = load_asn_csv(&b"\x00\x01garbage\nmore 1 garbage\n"[..], &mut b).expect_err("garbage");
        assert!(matches!(err, CsvError::NoValidRow { bad_rows: 2, first_bad_line: 1, .. }), "{err:?}");
        // A country CSV is not an ASN CSV.
        let err = load_asn_csv(&b"1.0.0.0,1.0.0.255,AU\n"[..], &mut b).expect_err("country rows");
        assert!(matches!(err, CsvError::NoValidRow { bad_rows: 1, .. }), "{err:?}");
        // Only a header.
        assert_eq!(load_asn_csv(&b"start,end,asn,org\n"[..], &mut b).expect_err("header"), CsvError::Empty);
    }

    #[test]
    fn header_is_skipped() {
        let text = "ip_range_start,ip_range_end,autonomous_system_number,autonomous_system_organization\n\
                    1.0.0.0,1.0.0.255,13335,Cloudflare\n";
        let (_, stats) = load_asn_csv(text.as_bytes(), &mut OrgsBuilder::default()).expect("loads");
        assert_eq!(stats, CsvStats { rows: 1, header: true, ..CsvStats::default() });
    }

    #[test]
    fn country_csv() {
        let text = "1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.3.255,cn\n2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,JP\n\
                    1.0.4.0,1.0.4.255,AUS\n1.0.5.0,1.0.5.255,1\n";
        let (t, stats) = load_country_csv(text.as_bytes()).expect("loads");
        assert_eq!((stats.rows, stats.bad_rows, stats.first_bad_line), (3, 2, Some(4)));
        let cc = |ip: &str| t.get(ip.parse().expect("ip")).map(|c| c.to_string());
        assert_eq!(cc("1.0.0.1").as_deref(), Some("AU"));
        assert_eq!(cc("1.0.2.1").as_deref(), Some("CN"), "upper-cased");
        assert_eq!(cc("2001:200::1").as_deref(), Some("JP"));
        assert_eq!(cc("1.0.4.1"), None);
    }

    #[test]
    fn overlapping_rows_later_start_wins() {
        let (t, overlaps) = RangeVec::from_rows(vec![(10u32, 20, 'a'), (15, 30, 'b'), (40, 50, 'c'), (40, 45, 'd')]);
        assert_eq!(overlaps, 2);
        let got: Vec<Option<char>> = [9, 10, 14, 15, 30, 31, 40, 45, 46].iter().map(|&k| t.get(k)).collect();
        assert_eq!(got, [None, Some('a'), Some('a'), Some('b'), Some('b'), None, Some('d'), Some('d'), None]);
        assert_eq!(t.heap_bytes(), 3 * 4 * 2 + 3 * 4);
    }

    #[test]
    fn extremes_of_the_key_space() {
        let (t, _) = RangeVec::from_rows(vec![(0u32, 0, 1u8), (u32::MAX, u32::MAX, 2)]);
        assert_eq!((t.get(0), t.get(1), t.get(u32::MAX)), (Some(1), None, Some(2)));
        let (t, _) = RangeVec::from_rows(vec![(0u128, u128::MAX, 3u8)]);
        assert_eq!(t.get(u128::MAX), Some(3));
        let (e, _) = RangeVec::<u32, u8>::from_rows(Vec::new());
        assert_eq!(e.get(5), None);
    }
}
