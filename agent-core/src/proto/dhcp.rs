//! DHCPv4 (RFC 2131/2132) and DHCPv6 (RFC 8415): who the client says it is.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::{ParseError, be_u16, is_false, text};
use crate::mac::Mac;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DhcpEvent {
    pub ip_version: u8,
    /// Serialised as "DISCOVER", "REQUEST", "SOLICIT", ... or the number when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_type: Option<MessageType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_mac: Option<Mac>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_ip: Option<Ipv4Addr>,
    /// Requested option codes in order, serialised as "1,3,6,15,119,252": a client fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param_list: Option<ParamList>,
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// A DHCPv4 (option 53) or DHCPv6 message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    V4(u8),
    V6(u8),
}

impl MessageType {
    pub fn name(self) -> Option<&'static str> {
        const V4: [&str; 8] = ["DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM"];
        const V6: [&str; 13] = [
            "SOLICIT",
            "ADVERTISE",
            "REQUEST",
            "CONFIRM",
            "RENEW",
            "REBIND",
            "REPLY",
            "RELEASE",
            "DECLINE",
            "RECONFIGURE",
            "INFORMATION-REQUEST",
            "RELAY-FORW",
            "RELAY-REPL",
        ];
        let (names, t): (&[&str], u8) = match self {
            MessageType::V4(t) => (&V4, t),
            MessageType::V6(t) => (&V6, t),
        };
        usize::from(t).checked_sub(1).and_then(|i| names.get(i)).copied()
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.name(), self) {
            (Some(n), _) => f.write_str(n),
            (None, MessageType::V4(t) | MessageType::V6(t)) => write!(f, "{t}"),
        }
    }
}

/// The option codes a client asks for (v4 option 55, v6 option 6), in its order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamList(pub Vec<u16>);

impl std::fmt::Display for ParamList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

crate::serialize_as_text!(MessageType, ParamList);

const V4_OPTIONS: usize = 240;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Relay messages nest; real ones nest a few times at most.
const MAX_RELAY_DEPTH: usize = 8;

/// DHCPv4 or DHCPv6, told apart by content: a v4 message has the BOOTP op/htype/hlen
/// layout (or the magic cookie), a v6 one starts with a message type.
pub fn parse(p: &[u8]) -> Result<DhcpEvent, ParseError> {
    let cookie = p.get(236..V4_OPTIONS) == Some(&MAGIC[..]);
    let bootp = matches!(p, [1 | 2, 1, 6, ..]);
    if cookie || bootp { parse_v4(p) } else { parse_v6(p) }
}

pub fn parse_v4(p: &[u8]) -> Result<DhcpEvent, ParseError> {
    let (&op, &htype, &hlen) = match p {
        [op, htype, hlen, ..] => (op, htype, hlen),
        _ => return Err(ParseError::TooShort),
    };
    if !matches!(op, 1 | 2) {
        return Err(ParseError::NotProtocol("BOOTP op not 1 or 2"));
    }
    let mut ev = DhcpEvent { ip_version: 4, ..Default::default() };
    if htype == 1 && hlen == 6 {
        ev.client_mac = p.get(28..34).and_then(|m| m.try_into().ok()).map(Mac);
    }
    match p.get(236..V4_OPTIONS) {
        None => {
            ev.truncated = true;
            return Ok(ev);
        }
        Some(c) if c != MAGIC => return Err(ParseError::NotProtocol("no DHCP magic cookie")),
        Some(_) => {}
    }
    let mut opts = p.get(V4_OPTIONS..).unwrap_or_default();
    loop {
        let Some((&code, rest)) = opts.split_first() else {
            ev.truncated = true; // no end option before the cut
            break;
        };
        match code {
            0 => {
                opts = rest;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some((&len, rest)) = rest.split_first() else {
            ev.truncated = true;
            break;
        };
        let Some(data) = rest.get(..usize::from(len)) else {
            ev.truncated = true;
            break;
        };
        opts = rest.get(usize::from(len)..).unwrap_or_default();
        match code {
            53 => ev.message_type = data.first().map(|&t| MessageType::V4(t)),
            12 => ev.hostname = Some(text(data)),
            60 => ev.vendor_class = Some(text(data)),
            50 => ev.requested_ip = <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from),
            55 => ev.param_list = Some(ParamList(data.iter().map(|&c| u16::from(c)).collect())),
            _ => {}
        }
    }
    Ok(ev)
}

pub fn parse_v6(p: &[u8]) -> Result<DhcpEvent, ParseError> {
    let mut ev = DhcpEvent { ip_version: 6, ..Default::default() };
    v6_message(p, &mut ev, 0)?;
    Ok(ev)
}

fn v6_message(p: &[u8], ev: &mut DhcpEvent, depth: usize) -> Result<(), ParseError> {
    let t = *p.first().ok_or(ParseError::TooShort)?;
    let relay = matches!(t, 12 | 13);
    if t == 0 || t > 36 {
        return Err(ParseError::NotProtocol("DHCPv6 message type out of range"));
    }
    ev.message_type = Some(MessageType::V6(t));
    // Relay messages: hop count and two addresses; client messages: transaction id.
    let Some(mut opts) = p.get(if relay { 34 } else { 4 }..) else {
        ev.truncated = true;
        return Ok(());
    };
    while !opts.is_empty() {
        let (Some(code), Some(len)) = (be_u16(opts, 0), be_u16(opts, 2)) else {
            ev.truncated = true;
            break;
        };
        let Some(data) = opts.get(4..4 + usize::from(len)) else {
            ev.truncated = true;
            break;
        };
        opts = opts.get(4 + usize::from(len)..).unwrap_or_default();
        match code {
            1 => ev.client_mac = duid_mac(data),
            6 => ev.param_list = Some(ParamList(data.chunks_exact(2).filter_map(|c| be_u16(c, 0)).collect())),
            16 => ev.vendor_class = Some(vendor_class(data)),
            39 => ev.hostname = fqdn(data.get(1..).unwrap_or_default()),
            9 if relay && depth < MAX_RELAY_DEPTH => {
                // The relayed client message is what identifies the device.
                let mut inner = DhcpEvent { ip_version: 6, ..Default::default() };
                v6_message(data, &mut inner, depth + 1)?;
                *ev = DhcpEvent { truncated: ev.truncated || inner.truncated, ..inner };
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}

/// The link-layer address of a DUID-LLT (1) or DUID-LL (3) with hardware type 1 (Ethernet).
fn duid_mac(d: &[u8]) -> Option<Mac> {
    let (kind, hw) = (be_u16(d, 0)?, be_u16(d, 2)?);
    let addr = match kind {
        1 => d.get(8..)?,
        3 => d.get(4..)?,
        _ => return None,
    };
    if hw != 1 {
        return None;
    }
    addr.try_into().ok().map(Mac)
}

/// Vendor class: enterprise number, then length-prefixed strings; kept as the strings.
fn vendor_class(d: &[u8]) -> String {
    let mut rest = d.get(4..).unwrap_or_default();
    let mut parts = Vec::new();
    while let Some(n) = be_u16(rest, 0) {
        let Some(s) = rest.get(2..2 + usize::from(n)) else { break };
        parts.push(text(s));
        rest = rest.get(2 + usize::from(n)..).unwrap_or_default();
    }
    parts.join(",")
}

/// The domain name of the client FQDN option: uncompressed labels (a bare partial name may
/// lack the root label). Over-long labels end it.
fn fqdn(mut d: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    while let Some((&len, rest)) = d.split_first() {
        if len == 0 || len > 63 {
            break;
        }
        labels.push(text(rest.get(..usize::from(len))?));
        d = rest.get(usize::from(len)..).unwrap_or_default();
    }
    (!labels.is_empty()).then(|| labels.join("."))
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures, *};

    #[test]
    fn discover_with_hostname_and_params() {
        let ev = parse(&fixtures::dhcp_discover()).expect("parses");
        assert_eq!(ev.ip_version, 4);
        assert_eq!(ev.message_type.as_ref().map(ToString::to_string).as_deref(), Some("DISCOVER"));
        assert_eq!(ev.client_mac.as_ref().map(ToString::to_string).as_deref(), Some("d8:f1:5b:aa:bb:cc"));
        assert_eq!(ev.hostname.as_deref(), Some("HS105"));
        assert_eq!(ev.vendor_class.as_deref(), Some("udhcp 1.19.4"));
        assert_eq!(ev.requested_ip.as_ref().map(ToString::to_string).as_deref(), Some("192.168.77.23"));
        assert_eq!(ev.param_list.as_ref().map(ToString::to_string).as_deref(), Some("1,3,6,15,119,252"));
        assert!(!ev.truncated);
    }

    #[test]
    fn solicit_v6() {
        let ev = parse(&fixtures::dhcpv6_solicit()).expect("parses");
        assert_eq!(ev.ip_version, 6);
        assert_eq!(ev.message_type.as_ref().map(ToString::to_string).as_deref(), Some("SOLICIT"));
        assert_eq!(ev.client_mac.as_ref().map(ToString::to_string).as_deref(), Some("d8:f1:5b:aa:bb:cc"));
        assert_eq!(ev.hostname.as_deref(), Some("cam-livingroom"));
        assert_eq!(ev.vendor_class.as_deref(), Some("ezviz-cam"));
        assert_eq!(ev.param_list.as_ref().map(ToString::to_string).as_deref(), Some("23,24,39"));
    }

    #[test]
    fn relayed_solicit_reports_the_client() {
        let mut relay = vec![12, 0];
        relay.extend([0u8; 32]);
        let inner = fixtures::dhcpv6_solicit();
        relay.extend(9u16.to_be_bytes());
        relay.extend((inner.len() as u16).to_be_bytes());
        relay.extend(&inner);
        assert_eq!(parse_v6(&relay), parse(&inner));
    }

    #[test]
    fn duid_types() {
        assert_eq!(
            duid_mac(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]).map(|m| m.to_string()).as_deref(),
            Some("01:02:03:04:05:06")
        );
        assert_eq!(duid_mac(&[0, 3, 0, 6, 1, 2, 3, 4, 5, 6]), None); // not Ethernet
        assert_eq!(duid_mac(&[0, 2, 0, 0, 0, 9, 1, 2]), None); // DUID-EN
    }

    #[test]
    fn lying_lengths_and_garbage() {
        let mut p = fixtures::dhcp_discover();
        p.truncate(V4_OPTIONS + 2);
        p.push(200); // option length past the end
        let ev = parse(&p).expect("parses");
        assert!(ev.truncated && ev.client_mac.is_some());
        let mut bad = fixtures::dhcp_discover();
        bad[236] = 0;
        assert!(parse(&bad).is_err());
        assert!(parse(&[]).is_err());
        assert!(parse(&[0xff, 0, 0, 0]).is_err());
    }

    #[test]
    fn every_prefix_is_safe() {
        for full in [fixtures::dhcp_discover(), fixtures::dhcpv6_solicit()] {
            let whole = parse(&full).expect("parses");
            for n in 0..full.len() {
                if let Ok(ev) = parse(full.get(..n).unwrap_or_default()) {
                    // A DHCPv6 prefix that ends between options is a whole, shorter message.
                    assert!(ev.truncated || whole.ip_version == 6, "prefix {n}");
                    assert!(ev.hostname.is_none() || ev.hostname == whole.hostname);
                }
            }
        }
    }
}
