//! ICMP and ICMPv6 destination unreachable, with the datagram they quote: which conversation
//! was refused, and why. The kernel samples only these (SampleKind::Icmp). IPv4 or IPv6 is told
//! by the quoted header's version, so the parser needs nothing but the message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{ParseError, be_u16, is_false};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IcmpEvent {
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Why, by type and code: "port", "host", "network", "protocol", "admin" or "other".
    pub reason: &'static str,
    /// The quoted datagram: the conversation the unreachable answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_proto: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_src_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_dst_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_dst_port: Option<u16>,
    /// The quote ended before its ports.
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

impl IcmpEvent {
    /// A UDP datagram to port 53 refused for want of a listener: DNS with nobody serving it.
    pub fn refuses_dns(&self) -> bool {
        self.reason == "port" && self.original_proto == Some(17) && self.original_dst_port == Some(53)
    }
}

/// Reason of a destination unreachable: ICMP type 3 codes, ICMPv6 type 1 codes.
fn reason(v6: bool, code: u8) -> &'static str {
    match (v6, code) {
        (false, 3) | (true, 4) => "port",
        (false, 1) | (true, 3) => "host",
        (false, 0) | (true, 0) => "network",
        (false, 2) => "protocol",
        (false, 9 | 10 | 13) | (true, 1) => "admin",
        _ => "other",
    }
}

pub fn parse(p: &[u8]) -> Result<IcmpEvent, ParseError> {
    let [icmp_type, icmp_code, ..] = *p else { return Err(ParseError::TooShort) };
    // The quote follows the 8-byte header; its version says which ICMP this is.
    let quote = p.get(8..).unwrap_or(&[]);
    let version = quote.first().map(|b| b >> 4);
    let v6 = match (icmp_type, version) {
        (3, Some(4) | None) => false,
        (1, Some(6) | None) => true,
        (3 | 1, Some(_)) => return Err(ParseError::Malformed("the quoted header is of the other IP version")),
        _ => return Err(ParseError::NotProtocol("not a destination unreachable")),
    };
    let mut ev = IcmpEvent {
        icmp_type,
        icmp_code,
        reason: reason(v6, icmp_code),
        original_proto: None,
        original_src_ip: None,
        original_dst_ip: None,
        original_src_port: None,
        original_dst_port: None,
        truncated: true,
    };
    let ports_at = if v6 {
        let (Some(next), Some(src), Some(dst)) = (quote.get(6), quote.get(8..24), quote.get(24..40)) else {
            return Ok(ev);
        };
        let addr = |b: &[u8]| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes")));
        (ev.original_proto, ev.original_src_ip, ev.original_dst_ip) = (Some(*next), Some(addr(src)), Some(addr(dst)));
        40
    } else {
        let (Some(first), Some(proto), Some(src), Some(dst)) =
            (quote.first(), quote.get(9), quote.get(12..16), quote.get(16..20))
        else {
            return Ok(ev);
        };
        let ihl = usize::from(first & 0x0f) * 4;
        if ihl < 20 {
            return Err(ParseError::Malformed("quoted IPv4 header shorter than 20 bytes"));
        }
        let addr = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
        (ev.original_proto, ev.original_src_ip, ev.original_dst_ip) = (Some(*proto), Some(addr(src)), Some(addr(dst)));
        ihl
    };
    if matches!(ev.original_proto, Some(6 | 17))
        && let (Some(sport), Some(dport)) = (be_u16(quote, ports_at), be_u16(quote, ports_at + 2))
    {
        (ev.original_src_port, ev.original_dst_port) = (Some(sport), Some(dport));
        ev.truncated = false;
    } else {
        ev.truncated = !matches!(ev.original_proto, Some(p) if p != 6 && p != 17);
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures, *};

    #[test]
    fn a_port_unreachable_quoting_a_dns_query() {
        let ev = parse(&fixtures::icmp_port_unreachable_dns()).unwrap();
        assert_eq!((ev.icmp_type, ev.icmp_code, ev.reason), (3, 3, "port"));
        assert_eq!(ev.original_src_ip, Some("192.168.2.190".parse().unwrap()));
        assert_eq!(ev.original_dst_ip, Some("192.168.2.1".parse().unwrap()));
        assert_eq!((ev.original_src_port, ev.original_dst_port), (Some(41000), Some(53)));
        assert!(ev.refuses_dns() && !ev.truncated);
    }

    #[test]
    fn icmpv6_cut_quotes_and_what_is_not_an_unreachable() {
        let mut v6 = vec![1, 4, 0, 0, 0, 0, 0, 0, 0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend([0xfd; 16]);
        v6.extend([0xfe; 16]);
        v6.extend([0x9c, 0x40, 0, 53]);
        let ev = parse(&v6).unwrap();
        assert_eq!((ev.reason, ev.original_proto, ev.original_dst_port), ("port", Some(17), Some(53)));
        let cut = parse(&v6[..30]).unwrap();
        assert!(cut.truncated && cut.original_src_ip.is_none());
        assert_eq!(parse(&[8, 0, 0, 0]), Err(ParseError::NotProtocol("not a destination unreachable")));
        assert_eq!(parse(&[3]), Err(ParseError::TooShort));
        assert!(matches!(
            parse(&v6.iter().enumerate().map(|(i, b)| if i == 0 { 3 } else { *b }).collect::<Vec<_>>()),
            Err(ParseError::Malformed(_))
        ));
        let mut bad_ihl = fixtures::icmp_port_unreachable_dns();
        bad_ihl[8] = 0x41;
        assert!(matches!(parse(&bad_ihl), Err(ParseError::Malformed(_))));
    }
}
