//! MQTT 3.1/3.1.1/5 fixed header, CONNECT and PUBLISH. Credentials are noted, never kept.

use serde::Serialize;

use super::{ParseError, be_u16, is_false, text};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MqttEvent {
    /// "CONNECT", "PUBLISH", ...
    pub packet_type: &'static str,
    /// The remaining length the fixed header declares.
    pub remaining_length: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_name: Option<String>,
    /// 3 = 3.1, 4 = 3.1.1, 5 = 5.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_level: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// CONNECT carries a user name or a password (their values are not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_credentials: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    /// PUBLISH application payload size from the declared length (MQTT 3.x layout; for
    /// MQTT 5 it includes the properties, which a PUBLISH alone cannot tell apart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

const CONNECT: u8 = 1;
const PUBLISH: u8 = 3;

fn type_name(t: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "RESERVED",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "AUTH",
    ];
    NAMES.get(usize::from(t)).copied().unwrap_or("RESERVED")
}

/// Remaining length: 1-4 bytes, 7 bits each. `Err(TooShort)` when cut inside it.
fn remaining_length(p: &[u8]) -> Result<(u32, usize), ParseError> {
    let mut value = 0u32;
    for i in 0..4 {
        let b = *p.get(1 + i).ok_or(ParseError::TooShort)?;
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, 2 + i));
        }
    }
    Err(ParseError::Malformed("remaining length over 4 bytes"))
}

/// A length-prefixed UTF-8 string at `at`; `None` when cut.
fn string(p: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let n = usize::from(be_u16(p, at)?);
    Some((p.get(at + 2..at + 2 + n)?, at + 2 + n))
}

/// A CONNECT with a known protocol name, or a PUBLISH whose whole topic is readable text.
pub fn looks_like_mqtt(p: &[u8]) -> bool {
    let Some(&first) = p.first() else { return false };
    let Ok((len, at)) = remaining_length(p) else { return false };
    match first >> 4 {
        CONNECT => first == 0x10 && matches!(string(p, at), Some((b"MQTT" | b"MQIsdp", _))),
        PUBLISH => {
            let qos = (first >> 1) & 3;
            match string(p, at) {
                Some((topic, end)) => {
                    qos != 3
                        && !topic.is_empty()
                        && end - at <= len as usize
                        && std::str::from_utf8(topic).is_ok_and(|t| !t.chars().any(char::is_control))
                }
                None => false,
            }
        }
        _ => false,
    }
}

pub fn parse(p: &[u8]) -> Result<MqttEvent, ParseError> {
    let first = *p.first().ok_or(ParseError::TooShort)?;
    let (len, at) = remaining_length(p)?;
    let mut ev = MqttEvent { packet_type: type_name(first >> 4), remaining_length: len, ..Default::default() };
    let end = at.saturating_add(len as usize);
    ev.truncated = p.len() < end;
    let body = p.get(..end).unwrap_or(p);
    match first >> 4 {
        CONNECT => connect(body, at, &mut ev)?,
        PUBLISH => publish(body, at, first, len, &mut ev)?,
        0 => return Err(ParseError::NotProtocol("MQTT packet type 0 is reserved")),
        _ => {}
    }
    Ok(ev)
}

fn connect(p: &[u8], at: usize, ev: &mut MqttEvent) -> Result<(), ParseError> {
    let Some((name, at)) = string(p, at) else {
        ev.truncated = true;
        return Ok(());
    };
    if !matches!(name, b"MQTT" | b"MQIsdp") {
        return Err(ParseError::NotProtocol("CONNECT with an unknown protocol name"));
    }
    ev.protocol_name = Some(text(name));
    let (Some(&level), Some(&flags)) = (p.get(at), p.get(at + 1)) else {
        ev.truncated = true;
        return Ok(());
    };
    ev.protocol_level = Some(level);
    ev.has_credentials = Some(flags & 0xc0 != 0);
    let mut at = at + 4; // level, flags, keep-alive
    if level == 5 {
        // Properties: a variable byte integer length, then the properties we skip.
        let Ok((plen, n)) = remaining_length(p.get(at - 1..).unwrap_or_default()) else {
            ev.truncated = true;
            return Ok(());
        };
        at = at - 1 + n + plen as usize;
    }
    match string(p, at) {
        Some((id, _)) => ev.client_id = Some(text(id)),
        None => ev.truncated = true,
    }
    Ok(())
}

fn publish(p: &[u8], at: usize, first: u8, len: u32, ev: &mut MqttEvent) -> Result<(), ParseError> {
    let qos = (first >> 1) & 3;
    if qos == 3 {
        return Err(ParseError::Malformed("PUBLISH with QoS 3"));
    }
    ev.qos = Some(qos);
    let Some(topic_len) = be_u16(p, at) else {
        ev.truncated = true;
        return Ok(());
    };
    let header = 2 + u64::from(topic_len) + if qos > 0 { 2 } else { 0 };
    ev.payload_bytes =
        Some(u64::from(len).checked_sub(header).ok_or(ParseError::Malformed("topic longer than the packet"))?);
    match string(p, at) {
        Some((topic, _)) => ev.topic = Some(text(topic)),
        None => ev.truncated = true,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures, *};

    #[test]
    fn connect_with_and_without_credentials() {
        let ev = parse(&fixtures::mqtt_connect_credentials()).expect("parses");
        assert_eq!(ev.packet_type, "CONNECT");
        assert_eq!((ev.protocol_name.as_deref(), ev.protocol_level), (Some("MQTT"), Some(4)));
        assert_eq!(ev.client_id.as_deref(), Some("E25105525"));
        assert_eq!(ev.has_credentials, Some(true));
        let json = serde_json::to_string(&ev).expect("json");
        assert!(!json.contains("s3cret") && !json.contains("ezviz"), "{json}");
        let ev = parse(&fixtures::mqtt_connect_anonymous()).expect("parses");
        assert_eq!((ev.has_credentials, ev.client_id.as_deref()), (Some(false), Some("plug-01")));
        assert!(looks_like_mqtt(&fixtures::mqtt_connect_anonymous()));
    }

    #[test]
    fn mqtt5_connect_skips_properties() {
        let mut p = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 3, 0x21, 0, 10, 0, 2, b'i', b'd'];
        p[1] = (p.len() - 2) as u8;
        let ev = parse(&p).expect("parses");
        assert_eq!((ev.protocol_level, ev.client_id.as_deref()), (Some(5), Some("id")));
    }

    #[test]
    fn publish() {
        let ev = parse(&fixtures::mqtt_publish()).expect("parses");
        assert_eq!(ev.packet_type, "PUBLISH");
        assert_eq!(ev.topic.as_deref(), Some("/E25105525/3100/12545"));
        assert_eq!((ev.qos, ev.payload_bytes, ev.truncated), (Some(1), Some(200), true));
        assert!(looks_like_mqtt(&fixtures::mqtt_publish()));
    }

    #[test]
    fn garbage_and_lying_lengths() {
        assert!(!looks_like_mqtt(b"GET / HTTP/1.1"));
        assert!(!looks_like_mqtt(&[0x30, 0x05, 0, 9, b'a']));
        assert!(parse(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(parse(&[0x30, 0x03, 0x00, 0x09, b'a']).is_err()); // topic longer than packet
        assert!(parse(&[0x36, 0x00]).is_err()); // QoS 3
        assert!(parse(&[0x10, 0x0c, 0, 4, b'X', b'M', b'P', b'P']).is_err());
        assert_eq!(parse(&[0xc0, 0x00]).map(|e| e.packet_type), Ok("PINGREQ"));
    }

    #[test]
    fn every_prefix_is_safe() {
        for full in [fixtures::mqtt_connect_credentials(), fixtures::mqtt_connect_anonymous(), fixtures::mqtt_publish()]
        {
            for n in 0..full.len() {
                if let Ok(ev) = parse(full.get(..n).unwrap_or_default()) {
                    assert!(ev.truncated, "prefix {n}");
                    assert!(ev.client_id.is_none() || ev.client_id.as_deref().is_some_and(|c| !c.is_empty()));
                }
            }
        }
    }
}
