//! DNS and mDNS messages (one wire format). Own reader; why, see the module doc of `proto`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{ParseError, be_u16, be_u32, is_false};

const MAX_NAME: usize = 255;
/// Pointers must go strictly backwards, which already bounds the hops; this is a backstop.
const MAX_HOPS: usize = 128;
const LONG_TXT: usize = 100;
const BASE64_RUN: usize = 24;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DnsEvent {
    pub response: bool,
    pub opcode: u8,
    pub rcode: u8,
    /// Counts as the header states them.
    pub questions: u16,
    pub answers: u16,
    pub authority: u16,
    pub additional: u16,
    /// Counts of what was actually read (less than the header's when cut).
    pub questions_parsed: usize,
    pub answers_parsed: usize,
    /// A response with no question: an mDNS announcement.
    pub unsolicited: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qtype: Option<RecordType>,
    /// mDNS QU bit of the first question (asks for a unicast answer).
    #[serde(skip_serializing_if = "is_false")]
    pub unicast_response: bool,
    /// Every name seen (questions, owners, targets), first occurrence order, no duplicates.
    pub names: Vec<String>,
    /// Records of all three sections, in order (EDNS OPT left out).
    pub records: Vec<DnsRecord>,
    /// Every TXT character-string, lossy UTF-8.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub txt: Vec<String>,
    /// Flags for `txt`, index by index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub txt_flags: Vec<TxtFlags>,
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: RecordType,
    pub data: RecordData,
    pub ttl: u32,
    /// mDNS: the top bit of the class asks caches to drop older records.
    #[serde(skip_serializing_if = "is_false")]
    pub cache_flush: bool,
}

/// A record type by its number; its name (`A`, `TYPE99`) is text made when serialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordType(pub u16);

impl RecordType {
    pub const A: Self = Self(1);
    pub const NS: Self = Self(2);
    pub const CNAME: Self = Self(5);
    pub const PTR: Self = Self(12);
    pub const MX: Self = Self(15);
    pub const TXT: Self = Self(16);
    pub const AAAA: Self = Self(28);
    pub const SRV: Self = Self(33);
    /// EDNS: transport metadata, not a record.
    pub const OPT: Self = Self(41);

    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "A",
            2 => "NS",
            5 => "CNAME",
            6 => "SOA",
            12 => "PTR",
            13 => "HINFO",
            15 => "MX",
            16 => "TXT",
            28 => "AAAA",
            33 => "SRV",
            41 => "OPT",
            47 => "NSEC",
            64 => "SVCB",
            65 => "HTTPS",
            255 => "ANY",
            _ => return None,
        })
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

/// What a record says, decoded for the types that name hosts and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// A and AAAA.
    Addr(IpAddr),
    /// NS, CNAME and PTR.
    Name(String),
    Mx {
        preference: u16,
        exchange: String,
    },
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    /// The character-strings of a TXT record (lossy UTF-8).
    Txt(Vec<String>),
    /// Any other type: its length and first bytes (RFC 3597's generic form).
    Other {
        len: usize,
        head: Vec<u8>,
    },
}

/// Bytes of an undecoded record kept (and shown in hex).
const GENERIC_HEAD: usize = 64;

impl std::fmt::Display for RecordData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordData::Addr(a) => write!(f, "{a}"),
            RecordData::Name(n) => f.write_str(n),
            RecordData::Mx { preference, exchange } => write!(f, "{preference} {exchange}"),
            RecordData::Srv { priority, weight, port, target } => write!(f, "{priority} {weight} {port} {target}"),
            RecordData::Txt(strings) => f.write_str(&strings.join(" ")),
            RecordData::Other { len, head } => {
                write!(f, "\\# {len} ")?;
                head.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

crate::serialize_as_text!(RecordType, RecordData);

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TxtFlags {
    /// Longer than 100 bytes: more than service metadata usually needs.
    pub long: bool,
    /// Holds a long run of base64 alphabet with mixed case and digits (an encoded blob).
    pub base64_like: bool,
}

/// Why a name or record could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The snapshot ended: keep what was read.
    Cut,
    Bad(&'static str),
}

type R<T> = Result<T, Stop>;

/// Parses a DNS/mDNS message; over TCP the 2-byte length prefix comes first.
pub fn parse(payload: &[u8], transport_is_tcp: bool) -> Result<DnsEvent, ParseError> {
    let msg = if transport_is_tcp {
        let len = usize::from(be_u16(payload, 0).ok_or(ParseError::TooShort)?);
        let body = payload.get(2..).unwrap_or_default();
        // A longer prefix than the message is a cut; further messages in the segment are ignored.
        body.get(..len).unwrap_or(body)
    } else {
        payload
    };
    parse_message(msg)
}

fn parse_message(msg: &[u8]) -> Result<DnsEvent, ParseError> {
    let flags = be_u16(msg, 2).ok_or(ParseError::TooShort)?;
    let count = |at| be_u16(msg, at).ok_or(ParseError::TooShort);
    let mut ev = DnsEvent {
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: (flags & 0xf) as u8,
        questions: count(4)?,
        answers: count(6)?,
        authority: count(8)?,
        additional: count(10)?,
        ..Default::default()
    };
    ev.unsolicited = ev.response && ev.questions == 0;
    match read_sections(msg, &mut ev) {
        Ok(()) => {}
        Err(Stop::Cut) => ev.truncated = true,
        Err(Stop::Bad(why)) => return Err(ParseError::Malformed(why)),
    }
    Ok(ev)
}

fn read_sections(msg: &[u8], ev: &mut DnsEvent) -> R<()> {
    let mut pos = 12;
    for _ in 0..ev.questions {
        let (name, next) = read_name(msg, pos)?;
        let qtype = be_u16(msg, next).ok_or(Stop::Cut)?;
        let qclass = be_u16(msg, next + 2).ok_or(Stop::Cut)?;
        pos = next + 4;
        if ev.questions_parsed == 0 {
            ev.qname = Some(name.clone());
            ev.qtype = Some(RecordType(qtype));
            ev.unicast_response = qclass & 0x8000 != 0;
        }
        ev.questions_parsed += 1;
        add_name(&mut ev.names, name);
    }
    let records = u32::from(ev.answers) + u32::from(ev.authority) + u32::from(ev.additional);
    for i in 0..records {
        let (rec, next) = read_record(msg, pos)?;
        pos = next;
        if i < u32::from(ev.answers) {
            ev.answers_parsed += 1;
        }
        let Some(Read { record: rec, rdata }) = rec else { continue };
        if rec.rtype == RecordType::TXT {
            for s in split_txt(msg.get(rdata).ok_or(Stop::Cut)?)? {
                ev.txt_flags.push(txt_flags(s));
                ev.txt.push(String::from_utf8_lossy(s).into_owned());
            }
        }
        add_name(&mut ev.names, rec.name.clone());
        if let RecordData::Name(target) | RecordData::Srv { target, .. } = &rec.data {
            add_name(&mut ev.names, target.clone());
        }
        ev.records.push(rec);
    }
    Ok(())
}

/// A record plus where its RDATA lies (TXT is decoded from it again).
struct Read {
    record: DnsRecord,
    rdata: std::ops::Range<usize>,
}

/// Reads one resource record; `None` for EDNS OPT, which is transport metadata.
fn read_record(msg: &[u8], pos: usize) -> R<(Option<Read>, usize)> {
    let (name, next) = read_name(msg, pos)?;
    let rtype = be_u16(msg, next).ok_or(Stop::Cut)?;
    let class = be_u16(msg, next + 2).ok_or(Stop::Cut)?;
    let ttl = be_u32(msg, next + 4).ok_or(Stop::Cut)?;
    let rdlen = usize::from(be_u16(msg, next + 8).ok_or(Stop::Cut)?);
    let start = next + 10;
    let end = start + rdlen;
    let rdata = msg.get(start..end).ok_or(Stop::Cut)?;
    let rtype = RecordType(rtype);
    if rtype == RecordType::OPT {
        return Ok((None, end));
    }
    let data = match rtype {
        RecordType::A => RecordData::Addr(
            Ipv4Addr::from(<[u8; 4]>::try_from(rdata).map_err(|_| Stop::Bad("A record not 4 bytes"))?).into(),
        ),
        RecordType::AAAA => RecordData::Addr(
            Ipv6Addr::from(<[u8; 16]>::try_from(rdata).map_err(|_| Stop::Bad("AAAA record not 16 bytes"))?).into(),
        ),
        RecordType::NS | RecordType::CNAME | RecordType::PTR => RecordData::Name(rdata_name(msg, start, end)?),
        RecordType::MX => {
            let preference = be_u16(rdata, 0).ok_or(Stop::Bad("short MX"))?;
            RecordData::Mx { preference, exchange: rdata_name(msg, start + 2, end)? }
        }
        RecordType::SRV => {
            let f = |at| be_u16(rdata, at).ok_or(Stop::Bad("short SRV"));
            RecordData::Srv { priority: f(0)?, weight: f(2)?, port: f(4)?, target: rdata_name(msg, start + 6, end)? }
        }
        RecordType::TXT => {
            RecordData::Txt(split_txt(rdata)?.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        }
        _ => RecordData::Other { len: rdata.len(), head: rdata[..rdata.len().min(GENERIC_HEAD)].to_vec() },
    };
    let record = DnsRecord { name, rtype, data, ttl, cache_flush: class & 0x8000 != 0 };
    Ok((Some(Read { record, rdata: start..end }), end))
}

/// A name inside RDATA must not run past the RDATA.
fn rdata_name(msg: &[u8], at: usize, end: usize) -> R<String> {
    let (name, next) = read_name(msg, at)?;
    if next > end {
        return Err(Stop::Bad("name runs past its record"));
    }
    Ok(name)
}

/// TXT RDATA: length-prefixed character-strings that must fill it exactly.
fn split_txt(mut rdata: &[u8]) -> R<Vec<&[u8]>> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = rdata.split_first() {
        let s = rest.get(..usize::from(len)).ok_or(Stop::Bad("TXT string longer than its record"))?;
        out.push(s);
        rdata = rest.get(usize::from(len)..).unwrap_or_default();
    }
    Ok(out)
}

/// Reads a possibly compressed name at `pos`; returns it and the offset after it in place.
fn read_name(msg: &[u8], pos: usize) -> R<(String, usize)> {
    let mut out = String::new();
    let mut wire_len = 1; // the root label
    let mut at = pos;
    // Where reading continues once the name ends: after the first pointer, or after the root.
    let mut resume = None;
    // Every pointer must aim before the start of the run of labels that contained it.
    let mut run_start = pos;
    for _ in 0..MAX_HOPS {
        let len = *msg.get(at).ok_or(Stop::Cut)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                if out.is_empty() {
                    out.push('.');
                }
                return Ok((out, resume.unwrap_or(at + 1)));
            }
            0x00 => {
                let len = usize::from(len); // at most 63: the top two bits are clear
                wire_len += len + 1;
                if wire_len > MAX_NAME {
                    return Err(Stop::Bad("name over 255 bytes"));
                }
                let label = msg.get(at + 1..at + 1 + len).ok_or(Stop::Cut)?;
                if !out.is_empty() {
                    out.push('.');
                }
                push_label(&mut out, label);
                at += 1 + len;
            }
            0xc0 => {
                let lo = *msg.get(at + 1).ok_or(Stop::Cut)?;
                let target = usize::from(len & 0x3f) << 8 | usize::from(lo);
                if target >= run_start {
                    return Err(Stop::Bad("compression pointer not backwards"));
                }
                resume.get_or_insert(at + 2);
                run_start = target;
                at = target;
            }
            // 0x40 and 0x80 prefixes: extended (obsolete) and reserved label types; read as a
            // length they would exceed 63.
            _ => return Err(Stop::Bad("label over 63 bytes")),
        }
    }
    Err(Stop::Bad("too many compression pointers"))
}

/// Label bytes as text: UTF-8 kept (mDNS instance names), dots, backslashes and control
/// bytes escaped so the name reads back unambiguously.
fn push_label(out: &mut String, label: &[u8]) {
    for c in String::from_utf8_lossy(label).chars() {
        match c {
            '.' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\{:03}", u32::from(c))),
            c => out.push(c),
        }
    }
}

fn add_name(names: &mut Vec<String>, name: String) {
    if !names.contains(&name) {
        names.push(name);
    }
}

fn txt_flags(s: &[u8]) -> TxtFlags {
    TxtFlags { long: s.len() > LONG_TXT, base64_like: base64_like(s) }
}

/// A run of at least 24 base64-alphabet bytes that mixes upper case, lower case and digits:
/// keys and tokens look like that, `model=HS105` or `txtvers=1` do not.
pub fn base64_like(s: &[u8]) -> bool {
    s.split(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')))
        .filter(|run| run.len() >= BASE64_RUN)
        .any(|run| {
            run.iter().any(u8::is_ascii_uppercase)
                && run.iter().any(u8::is_ascii_lowercase)
                && run.iter().any(u8::is_ascii_digit)
        })
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures, *};

    fn header(flags: u16, qd: u16, an: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34];
        for v in [flags, qd, an, 0, 0] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m
    }

    #[test]
    fn mdns_announcement_with_compression() {
        let ev = parse(&fixtures::mdns_announcement(), false).expect("parses");
        assert!(ev.response && ev.unsolicited && !ev.truncated);
        assert_eq!((ev.questions, ev.answers, ev.additional), (0, 3, 1));
        assert_eq!(ev.answers_parsed, 3);
        let inst = "eWeLink_1000ac354c._ewelink._tcp.local";
        let types: Vec<_> = ev.records.iter().map(|r| (r.rtype.to_string(), r.name.as_str())).collect();
        assert_eq!(
            types,
            [
                ("PTR".to_owned(), "_ewelink._tcp.local"),
                ("SRV".to_owned(), inst),
                ("TXT".to_owned(), inst),
                ("A".to_owned(), "eWeLink_1000ac354c.local")
            ]
        );
        assert_eq!(ev.records.first().map(|r| r.data.to_string()).as_deref(), Some(inst));
        assert_eq!(ev.records.get(1).map(|r| r.data.to_string()).as_deref(), Some("0 0 8081 eWeLink_1000ac354c.local"));
        assert_eq!(
            ev.records.get(3).map(|r| &r.data),
            Some(&RecordData::Addr("192.168.2.154".parse().expect("an address")))
        );
        assert!(ev.records.get(1).is_some_and(|r| r.cache_flush));
        assert!(ev.names.contains(&"eWeLink_1000ac354c.local".to_owned()));
        assert_eq!(ev.txt.len(), 4);
        assert_eq!(ev.txt.first().map(String::as_str), Some("txtvers=1"));
        let flags = ev.txt_flags.last().copied().unwrap_or_default();
        assert!(flags.long && flags.base64_like);
        assert!(!ev.txt_flags.first().copied().unwrap_or_default().base64_like);
    }

    #[test]
    fn response_with_cname_chain() {
        let ev = parse(&fixtures::dns_cname_chain(), false).expect("parses");
        assert!(ev.response && !ev.unsolicited);
        assert_eq!(ev.qname.as_deref(), Some("time.example.com"));
        assert_eq!(ev.qtype, Some(RecordType::A));
        let recs: Vec<_> = ev.records.iter().map(|r| (r.rtype.to_string(), r.data.to_string())).collect();
        assert_eq!(
            recs,
            [("CNAME", "pool.ntp.example.net"), ("CNAME", "eu.pool.ntp.example.net"), ("A", "203.0.113.7")]
                .map(|(t, d)| (t.to_owned(), d.to_owned()))
        );
        assert_eq!(ev.names.len(), 3);
        // Same message over TCP, with its length prefix and a second message behind it.
        let mut tcp = (fixtures::dns_cname_chain().len() as u16).to_be_bytes().to_vec();
        tcp.extend(fixtures::dns_cname_chain());
        tcp.extend([0, 12, 1, 2]);
        assert_eq!(parse(&tcp, true), Ok(ev));
    }

    #[test]
    fn query_with_qu_bit_and_unknown_type() {
        let mut m = header(0, 1, 0);
        m.extend(b"\x05_hap_\x04_tcp\x05local\x00\x00\x63\x80\x01");
        let ev = parse(&m, false).expect("parses");
        assert_eq!(
            (ev.qname.as_deref(), ev.qtype.map(|t| t.to_string()).as_deref()),
            (Some("_hap_._tcp.local"), Some("TYPE99"))
        );
        assert!(ev.unicast_response && !ev.response && !ev.unsolicited);
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_rejected() {
        // Self-pointer at 12.
        let mut m = header(0, 1, 0);
        m.extend([0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&m, false), Err(ParseError::Malformed("compression pointer not backwards")));
        // A pointer back to the start of its own name: "a" then ptr 12, a loop for a reader
        // that only checks the pointer is behind itself.
        let mut m = header(0, 1, 0);
        m.extend([1, b'a', 0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&m, false), Err(ParseError::Malformed("compression pointer not backwards")));
        // Two names pointing at each other: 12 -> 14 (forward).
        let mut m = header(0, 1, 0);
        m.extend([0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
        assert!(parse(&m, false).is_err());
        // A backward pointer into the middle of other fields.
        let mut m = header(0x8400, 1, 1);
        m.extend(b"\x01a\x00\x00\x01\x00\x01"); // q: "a" at 12
        m.extend(b"\x01b\xc0\x12"); // answer name at 19: "b", then a pointer into the question's class
        m.extend([0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
        assert!(parse(&m, false).is_err());
        // Out of range.
        let mut m = header(0, 1, 0);
        m.extend([0xff, 0xff, 0, 1, 0, 1]);
        assert!(parse(&m, false).is_err());
    }

    #[test]
    fn long_names_and_labels_are_rejected() {
        let mut m = header(0, 1, 0);
        m.push(64);
        m.extend([b'a'; 64]);
        m.extend([0, 0, 1, 0, 1]);
        assert_eq!(parse(&m, false), Err(ParseError::Malformed("label over 63 bytes")));
        let mut m = header(0, 1, 0);
        for _ in 0..5 {
            m.push(63);
            m.extend([b'a'; 63]);
        }
        m.extend([0, 0, 1, 0, 1]);
        assert_eq!(parse(&m, false), Err(ParseError::Malformed("name over 255 bytes")));
        // Pointers that each add labels cannot build an over-long name either.
        let mut m = header(0, 5, 0);
        let mut prev = None;
        for _ in 0..5 {
            let here = m.len() as u16;
            m.push(60);
            m.extend([b'x'; 60]);
            match prev {
                Some(p) => m.extend(0xc000u16.wrapping_add(p).to_be_bytes()),
                None => m.push(0),
            }
            m.extend([0, 1, 0, 1]);
            prev = Some(here);
        }
        assert_eq!(parse(&m, false), Err(ParseError::Malformed("name over 255 bytes")));
    }

    #[test]
    fn zero_length_labels_and_root() {
        let mut m = header(0x8000, 1, 1);
        m.extend([0, 0, 2, 0, 1]); // root NS question
        m.extend([0, 0, 16, 0, 1, 0, 0, 0, 1, 0, 1, 0]); // TXT at root with one empty string
        let ev = parse(&m, false).expect("parses");
        assert_eq!(ev.qname.as_deref(), Some("."));
        assert_eq!(ev.txt, [""]);
    }

    #[test]
    fn lying_lengths() {
        // TXT string longer than its RDATA.
        let mut m = header(0x8000, 0, 1);
        m.extend([0, 0, 16, 0, 1, 0, 0, 0, 1, 0, 3, 9, b'a', b'b']);
        assert!(parse(&m, false).is_err());
        // RDLENGTH past the end: a cut, not an error.
        let mut m = header(0x8000, 0, 2);
        m.extend([0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 10, 0, 0, 1]);
        m.extend([0, 0, 1, 0, 1, 0, 0, 0, 1, 0x40, 0, 1]);
        let ev = parse(&m, false).expect("parses");
        assert_eq!((ev.records.len(), ev.truncated), (1, true));
        // Header counts far beyond the bytes.
        let ev = parse(&header(0x8000, 65535, 65535), false).expect("parses");
        assert!(ev.truncated && ev.records.is_empty());
        assert!(parse(&[0; 11], false).is_err());
        assert!(parse(&[0], true).is_err());
    }

    #[test]
    fn every_prefix_keeps_what_was_read() {
        for full in [fixtures::mdns_announcement(), fixtures::dns_cname_chain()] {
            let whole = parse(&full, false).expect("parses");
            for n in 0..full.len() {
                match parse(full.get(..n).unwrap_or_default(), false) {
                    Ok(ev) => {
                        assert!(ev.truncated, "prefix {n}");
                        assert!(ev.records.len() <= whole.records.len());
                        assert_eq!(ev.records.as_slice(), whole.records.get(..ev.records.len()).unwrap_or_default());
                    }
                    Err(e) => assert!(n < 12, "prefix {n}: {e}"),
                }
            }
        }
    }

    #[test]
    fn base64_heuristic() {
        assert!(base64_like(b"key=QmFzZTY0RW5jb2RlZFNlY3JldDEyMw=="));
        assert!(!base64_like(b"fn=Living Room Speaker"));
        assert!(!base64_like(b"id=0123456789abcdef0123456789abcdef")); // hex, no upper case
    }
}
