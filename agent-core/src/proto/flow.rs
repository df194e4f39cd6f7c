//! A first packet that no protocol parser claimed: what kind of bytes it carries
//! (the talk's "private data in cleartext" over an unknown UDP protocol shows up as "text").

use serde::Serialize;

/// Printable share above which a payload counts as text.
const TEXT_RATIO: f64 = 0.85;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowEvent {
    /// "tcp" or "udp".
    pub transport: &'static str,
    /// Bytes in the sample (the kernel may have cut the payload).
    pub payload_bytes: u64,
    /// "empty", "tls", "text" or "binary".
    pub payload_class: &'static str,
    /// Share of printable ASCII (with tab, CR, LF), 0..1, three decimals.
    pub printable_ratio: f64,
    /// "xml" or "json" when text starts like one (the talk's serial numbers went out as XML).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
}

pub fn classify(payload: &[u8], transport_is_tcp: bool) -> FlowEvent {
    let ratio = printable_ratio(payload);
    let class = if payload.is_empty() {
        "empty"
    } else if looks_like_tls_record(payload) {
        "tls"
    } else if ratio >= TEXT_RATIO {
        "text"
    } else {
        "binary"
    };
    FlowEvent {
        transport: if transport_is_tcp { "tcp" } else { "udp" },
        payload_bytes: payload.len() as u64,
        payload_class: class,
        printable_ratio: (ratio * 1000.0).round() / 1000.0,
        format: if class == "text" { text_format(payload) } else { None },
    }
}

/// XML or JSON, by the first non-blank byte.
fn text_format(payload: &[u8]) -> Option<&'static str> {
    match payload.trim_ascii_start().first()? {
        b'<' => Some("xml"),
        b'{' | b'[' => Some("json"),
        _ => None,
    }
}

pub fn printable_ratio(payload: &[u8]) -> f64 {
    if payload.is_empty() {
        return 0.0;
    }
    // Branch-free, so that it vectorizes: flow samples of up to 1,500 bytes are a replay's
    // largest userspace cost per sample otherwise.
    let printable: u32 = payload
        .iter()
        .map(|&b| u32::from((b.wrapping_sub(0x20) < 0x5f) | (b == b'\t') | (b == b'\r') | (b == b'\n')))
        .sum();
    f64::from(printable) / payload.len() as f64
}

/// Any TLS record header (handshake, alert, change cipher spec, application data), SSL 3.0
/// to TLS 1.3: encrypted traffic mid-stream is "tls", not "binary".
fn looks_like_tls_record(p: &[u8]) -> bool {
    matches!(p, [20..=23, 3, 0..=4, ..])
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures, *};

    #[test]
    fn classes() {
        assert_eq!(classify(b"", true).payload_class, "empty");
        let text = classify(b"{\"user\":\"alice\",\"password\":\"hunter2\",\"wifi\":\"home\"}", false);
        assert_eq!((text.payload_class, text.transport, text.printable_ratio), ("text", "udp", 1.0));
        assert_eq!(text.format, Some("json"));
        assert_eq!(classify(b"\r\n<?xml version=\"1.0\"?><sn>A1</sn>", false).format, Some("xml"));
        assert_eq!(classify(b"hello there", false).format, None);
        assert_eq!(classify(&fixtures::tls13_client_hello(), true).payload_class, "tls");
        assert_eq!(classify(&[0x17, 3, 3, 0, 32, 0xde, 0xad], true).payload_class, "tls");
        let bin = classify(&[0u8, 1, 2, 0xff, b'a', 0x80, 0x90, 7], true);
        assert_eq!((bin.payload_class, bin.payload_bytes, bin.printable_ratio), ("binary", 8, 0.125));
    }
}
