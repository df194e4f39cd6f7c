//! NTP (RFC 5905) header: enough to see who asks whom for time (the talk's NTP fan-out).

use std::net::Ipv4Addr;

use serde::Serialize;

use super::{ParseError, is_false};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NtpEvent {
    pub version: u8,
    /// Serialised as its number, 1-7 (0 is reserved and not NTP).
    pub mode: Mode,
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

/// The association mode of the header's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    SymmetricActive = 1,
    SymmetricPassive = 2,
    Client = 3,
    Server = 4,
    Broadcast = 5,
    Control = 6,
    Private = 7,
}

impl Mode {
    const fn from_bits(m: u8) -> Option<Self> {
        Some(match m {
            1 => Mode::SymmetricActive,
            2 => Mode::SymmetricPassive,
            3 => Mode::Client,
            4 => Mode::Server,
            5 => Mode::Broadcast,
            6 => Mode::Control,
            7 => Mode::Private,
            _ => return None,
        })
    }

    /// Modes whose header carries stratum and reference (not control or private messages).
    const fn carries_time(self) -> bool {
        (self as u8) <= Mode::Broadcast as u8
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl NtpEvent {
    pub fn is_client(&self) -> bool {
        self.mode == Mode::Client
    }

    /// A server answer or a broadcast: this peer hands out time.
    pub fn is_server(&self) -> bool {
        matches!(self.mode, Mode::Server | Mode::Broadcast)
    }
}

const HEADER: usize = 48;

pub fn parse(payload: &[u8]) -> Result<NtpEvent, ParseError> {
    let first = *payload.first().ok_or(ParseError::TooShort)?;
    let version = (first >> 3) & 0x7;
    if !(1..=4).contains(&version) {
        return Err(ParseError::NotProtocol("NTP version not 1-4"));
    }
    let Some(mode) = Mode::from_bits(first & 0x7) else {
        return Err(ParseError::NotProtocol("NTP mode 0 is reserved"));
    };
    let data_modes = mode.carries_time();
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
    use super::{super::fixtures, *};

    #[test]
    fn client_and_server() {
        let c = parse(&fixtures::ntp_client()).expect("parses");
        assert_eq!((c.version, c.mode as u8, c.stratum, c.ref_id.as_deref()), (4, 3, Some(0), None));
        assert!(c.is_client() && !c.is_server() && !c.truncated);
        let s = parse(&fixtures::ntp_server()).expect("parses");
        assert_eq!((s.version, s.mode as u8, s.stratum), (4, 4, Some(2)));
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
        assert_eq!((ev.mode as u8, ev.stratum, ev.truncated), (6, None, false));
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
