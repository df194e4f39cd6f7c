//! TLS ClientHello: SNI, ALPN and offered versions, from a record that may be cut
//! (a post-quantum key share pushes the hello over two segments; the SNI usually sits in
//! the first). Own walker; why, see the module doc of `proto`.

use serde::Serialize;

use super::{ParseError, be_u16, is_false, text};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TlsEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
    /// From supported_versions, else the legacy version: "TLS1.2", "TLS1.3"...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;

/// A handshake record (SSL 3.0 to TLS 1.3 framing) whose first message is a ClientHello.
pub fn looks_like_client_hello(p: &[u8]) -> bool {
    matches!(p, [HANDSHAKE, 3, 0..=4, _, _, CLIENT_HELLO, ..])
}

pub fn parse(payload: &[u8]) -> Result<TlsEvent, ParseError> {
    if payload.len() < 6 {
        return Err(ParseError::TooShort);
    }
    if !looks_like_client_hello(payload) {
        return Err(ParseError::NotProtocol("not a TLS ClientHello record"));
    }
    let (hs, mut truncated) = handshake_bytes(payload);
    let hs_len = usize::from(*hs.get(1).unwrap_or(&0)) << 16 | usize::from(be_u16(&hs, 2).unwrap_or(0));
    let body = hs.get(4..).unwrap_or_default();
    truncated |= body.len() < hs_len;
    let body = body.get(..hs_len).unwrap_or(body);
    let mut ev = TlsEvent::default();
    let mut r = Reader(body);
    let legacy = r.u16();
    // random, session_id, cipher_suites, compression_methods
    let fixed = (|| {
        r.take(32)?;
        r.vec8()?;
        r.vec16()?;
        r.vec8()
    })();
    let mut sv = None;
    if fixed.is_none() {
        truncated = true;
    } else if let Some(n) = r.u16() {
        let exts = match r.0.get(..usize::from(n)) {
            Some(b) => b,
            None => {
                truncated = true;
                r.0
            }
        };
        walk_extensions(exts, &mut ev, &mut sv, &mut truncated)?;
    } else {
        // No extensions block: a pre-TLS-1.3 hello, or one cut right before the block.
        truncated |= !r.0.is_empty();
    }
    ev.versions = match sv {
        Some(list) => list,
        // A cut hello may still hold supported_versions further on: the legacy field
        // (TLS1.2 in every TLS 1.3 hello) would then be wrong, so say nothing.
        None if truncated => Vec::new(),
        None => legacy.map(|v| vec![version_text(v)]).unwrap_or_default(),
    };
    ev.truncated = truncated;
    Ok(ev)
}

/// Joins the payloads of consecutive handshake records up to the end of the sample;
/// reports a cut when the last record is not all there.
fn handshake_bytes(mut p: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while let [HANDSHAKE, 3, _, hi, lo, rest @ ..] = p {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        match rest.get(..len) {
            Some(frag) => out.extend_from_slice(frag),
            None => {
                out.extend_from_slice(rest);
                return (out, true);
            }
        }
        p = rest.get(len..).unwrap_or_default();
    }
    (out, false)
}

fn walk_extensions(
    mut exts: &[u8],
    ev: &mut TlsEvent,
    sv: &mut Option<Vec<String>>,
    truncated: &mut bool,
) -> Result<(), ParseError> {
    while !exts.is_empty() {
        let (Some(ty), Some(len)) = (be_u16(exts, 0), be_u16(exts, 2)) else {
            *truncated = true;
            return Ok(());
        };
        let Some(data) = exts.get(4..4 + usize::from(len)) else {
            *truncated = true;
            return Ok(());
        };
        exts = exts.get(4 + usize::from(len)..).unwrap_or_default();
        let mut r = Reader(data);
        match ty {
            0 => {
                // server_name_list: the first host_name entry.
                let mut list = Reader(r.vec16().ok_or(ParseError::Malformed("SNI list length"))?.0);
                while let Some(kind) = list.u8() {
                    let name = list.vec16().ok_or(ParseError::Malformed("SNI name length"))?.0;
                    if kind == 0 && ev.sni.is_none() {
                        ev.sni = Some(text(name));
                    }
                }
            }
            16 => {
                let mut list = Reader(r.vec16().ok_or(ParseError::Malformed("ALPN list length"))?.0);
                while !list.0.is_empty() {
                    let proto = list.vec8().ok_or(ParseError::Malformed("ALPN name length"))?.0;
                    ev.alpn.push(text(proto));
                }
            }
            43 => {
                let mut list = Reader(r.vec8().ok_or(ParseError::Malformed("supported_versions length"))?.0);
                let mut out = Vec::new();
                while let Some(v) = list.u16() {
                    if !is_grease(v) {
                        out.push(version_text(v));
                    }
                }
                *sv = Some(out);
            }
            _ => {}
        }
    }
    Ok(())
}

/// RFC 8701 GREASE values (0x0a0a, 0x1a1a, ...) are noise by design.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

pub fn version_text(v: u16) -> String {
    match v {
        0x0300 => "SSL3.0".to_owned(),
        0x0301 => "TLS1.0".to_owned(),
        0x0302 => "TLS1.1".to_owned(),
        0x0303 => "TLS1.2".to_owned(),
        0x0304 => "TLS1.3".to_owned(),
        _ => format!("0x{v:04x}"),
    }
}

/// A cursor whose reads answer `None` instead of running past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        be_u16(self.take(2)?, 0)
    }
    /// A vector with a one-byte length; returns its body as a reader, consuming it.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.take(usize::from(n)).map(Reader)
    }
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.take(usize::from(n)).map(Reader)
    }
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures, *};

    #[test]
    fn tls13_client_hello() {
        let ev = parse(&fixtures::tls13_client_hello()).expect("parses");
        assert_eq!(ev.sni.as_deref(), Some("a2abc.iot.example.com"));
        assert_eq!(ev.alpn, ["mqtt", "http/1.1"]);
        assert_eq!(ev.versions, ["TLS1.3", "TLS1.2"]);
        assert!(!ev.truncated);
    }

    #[test]
    fn hello_over_two_segments_keeps_the_sni() {
        let full = fixtures::tls13_client_hello();
        // Cut inside the padding extension, which the fixture puts last.
        let ev = parse(full.get(..full.len() - 10).expect("prefix")).expect("parses");
        assert!(ev.truncated);
        assert_eq!(ev.sni.as_deref(), Some("a2abc.iot.example.com"));
        assert_eq!(ev.versions, ["TLS1.3", "TLS1.2"]);
    }

    #[test]
    fn every_prefix_is_safe() {
        let full = fixtures::tls13_client_hello();
        for n in 0..full.len() {
            match parse(full.get(..n).unwrap_or_default()) {
                Ok(ev) => {
                    assert!(ev.truncated, "prefix {n}");
                    assert!(ev.sni.is_none() || ev.sni.as_deref() == Some("a2abc.iot.example.com"));
                }
                Err(e) => assert!(n < 6, "prefix {n}: {e}"),
            }
        }
    }

    #[test]
    fn legacy_version_and_lying_lengths() {
        // TLS 1.2 hello without extensions.
        let mut body = vec![3, 3];
        body.extend([0u8; 32]);
        body.extend([0, 0, 2, 0x00, 0x2f, 1, 0]);
        let mut p = vec![22, 3, 1, 0, body.len() as u8 + 4, 1, 0, 0, body.len() as u8];
        p.extend(&body);
        let ev = parse(&p).expect("parses");
        assert_eq!((ev.versions.as_slice(), ev.truncated), (&["TLS1.2".to_owned()][..], false));
        // SNI list length larger than its extension.
        let mut bad = fixtures::tls13_client_hello();
        let at = bad.windows(4).position(|w| w == [0, 0, 0, 26]).expect("SNI ext") + 4;
        bad[at + 1] = 200;
        assert!(parse(&bad).is_err());
        assert!(parse(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00").is_err()); // ServerHello
    }

    #[test]
    fn grease_is_skipped() {
        assert!(is_grease(0x1a1a) && is_grease(0xfafa) && !is_grease(0x0304) && !is_grease(0x0a1a));
    }
}
