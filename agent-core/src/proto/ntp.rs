//! NTP (RFC 5905) header: enough to see who asks whom for time (the talk's NTP fan-out).

use std::net::Ipv4Addr;

use serde::Serialize;

use super::{ParseError, is_false};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NtpEvent {
    pub version: u8,
    /// 0-7: 3 client, 4 server, 5 broadcast, 6 control, 7 private.
    pub mode: u8,
    /// Absent for control and private modes, whose second byte means something else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stratum: Option<u8>,
    /// Dotted IPv4 of the upstream for stratum >= 2; the kiss code (stratum 0) or the
    /// reference clock name (stratum 1) as text; absent when zero or not in the sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

impl NtpEvent {
    pub fn is_client(&self) -> bool {
        self.mode == 3
    }

    /// A server answer or a broadcast: this peer hands out time.
    pub fn is_server(&self) -> bool {
        matches!(self.mode, 4 | 5)
    }
}

const HEADER: usize = 48;

pub fn parse(payload: &[u8]) -> Result<NtpEvent, ParseError> {
    let first = *payload.first().ok_or(ParseError::TooShort)?;
    let version = (first >> 3) & 0x7;
    let mode = first & 0x7;
    if !(1..=4).contains(&version) {
        return Err(ParseError::NotProtocol("NTP version not 1-4"));
    }
    if mode == 0 {
        return Err(ParseError::NotProtocol("NTP mode 0 is reserved"));
    }
    let data_modes = mode <= 5;
    let stratum = payload.get(1).copied().filter(|_| data_modes);
    let ref_id = match (stratum, payload.get(12..16)) {
        (Some(s), Some(id)) if id != [0; 4] => Some(ref_id_text(s, id)),
        _ => None,
    };
    Ok(NtpEvent { version, mode, stratum, ref_id, truncated: data_modes && payload.len() < HEADER })
}

fn ref_id_text(stratum: u8, id: &[u8]) -> String {
    if stratum >= 2 {
        let mut a = [0u8; 4];
        a.copy_from_slice(id.get(..4).unwrap_or(&[0; 4]));
        return Ipv4Addr::from(a).to_string();
    }
    let code = id.iter().take_while(|&&b| b != 0);
    if code.clone().all(|b| b.is_ascii_graphic()) {
        code.map(|&b| char::from(b)).collect()
    } else {
        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn client_and_server() {
        let c = parse(&fixtures::ntp_client()).expect("parses");
        assert_eq!((c.version, c.mode, c.stratum, c.ref_id.as_deref()), (4, 3, Some(0), None));
        assert!(c.is_client() && !c.is_server() && !c.truncated);
        let s = parse(&fixtures::ntp_server()).expect("parses");
        assert_eq!((s.version, s.mode, s.stratum), (4, 4, Some(2)));
        assert_eq!(s.ref_id.as_deref(), Some("192.0.2.123"));
        assert!(s.is_server());
    }

    #[test]
    fn stratum_one_and_kiss_codes() {
        let mut p = fixtures::ntp_server();
        p[1] = 1;
        p[12..16].copy_from_slice(b"GPS\0");
        assert_eq!(parse(&p).expect("parses").ref_id.as_deref(), Some("GPS"));
        p[1] = 0;
        p[12..16].copy_from_slice(b"RATE");
        assert_eq!(parse(&p).expect("parses").ref_id.as_deref(), Some("RATE"));
        p[12..16].copy_from_slice(&[0xff, 1, 2, 3]);
        assert_eq!(parse(&p).expect("parses").ref_id.as_deref(), Some("ff010203"));
    }

    #[test]
    fn control_mode_and_garbage() {
        let ev = parse(&[0x16, 0x02, 0, 1]).expect("mode 6 control");
        assert_eq!((ev.mode, ev.stratum, ev.truncated), (6, None, false));
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x00]).is_err()); // version 0
        assert!(parse(&[0x38]).is_err()); // version 7
        assert!(parse(&[0x20]).is_err()); // mode 0
    }

    #[test]
    fn every_prefix_is_safe() {
        for full in [fixtures::ntp_client(), fixtures::ntp_server()] {
            for n in 1..=full.len() {
                let ev = parse(full.get(..n).unwrap_or_default()).expect("first byte suffices");
                assert_eq!(ev.truncated, n < HEADER);
            }
        }
    }
}
