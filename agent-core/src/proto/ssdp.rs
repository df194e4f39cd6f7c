//! SSDP (UPnP discovery): HTTP-formatted heads over UDP, read with [`http::parse_head`].

use serde::Serialize;

use super::{
    ParseError,
    http::{self, StartLine},
    is_false,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SsdpEvent {
    /// "M-SEARCH", "NOTIFY" or "RESPONSE".
    pub method: SsdpMethod,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub st: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mx: Option<u32>,
    /// Status code of a RESPONSE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// `M-SEARCH`/`NOTIFY` requests, or an `HTTP/1.x` response that carries `ST:` or `USN:`
/// (a plain HTTP answer over UDP is not discovery).
pub fn looks_like_ssdp(payload: &[u8]) -> bool {
    let starts = |p: &[u8]| payload.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    if starts(b"M-SEARCH ") || starts(b"NOTIFY ") {
        return true;
    }
    starts(b"HTTP/1.")
        && payload.split(|&b| b == b'\n').skip(1).any(|line| {
            let l = line.trim_ascii_start();
            [&b"st:"[..], b"usn:"].iter().any(|h| l.get(..h.len()).is_some_and(|x| x.eq_ignore_ascii_case(h)))
        })
}

/// What an SSDP message is: discovery, an announcement, or the answer to a discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsdpMethod {
    MSearch,
    Notify,
    Response,
    /// Another request method on an SSDP message, upper-cased.
    Other(String),
}

impl std::fmt::Display for SsdpMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SsdpMethod::MSearch => "M-SEARCH",
            SsdpMethod::Notify => "NOTIFY",
            SsdpMethod::Response => "RESPONSE",
            SsdpMethod::Other(m) => m,
        })
    }
}

crate::serialize_as_text!(SsdpMethod);

pub fn parse(payload: &[u8]) -> Result<SsdpEvent, ParseError> {
    if !looks_like_ssdp(payload) {
        return Err(ParseError::NotProtocol("no M-SEARCH, NOTIFY or SSDP response"));
    }
    let head = http::parse_head(payload)?;
    let (method, status) = match head.start {
        StartLine::Request { ref method, .. } => (
            match method.to_ascii_uppercase().as_str() {
                "M-SEARCH" => SsdpMethod::MSearch,
                "NOTIFY" => SsdpMethod::Notify,
                other => SsdpMethod::Other(other.to_owned()),
            },
            None,
        ),
        StartLine::Response { status } => (SsdpMethod::Response, status),
    };
    let owned = |n: &str| head.get(n).map(str::to_owned);
    Ok(SsdpEvent {
        method,
        st: owned("st"),
        nt: owned("nt"),
        nts: owned("nts"),
        usn: owned("usn"),
        location: owned("location"),
        server: owned("server"),
        user_agent: owned("user-agent"),
        mx: head.get("mx").and_then(|v| v.trim().parse().ok()),
        status,
        truncated: head.truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures, *};

    #[test]
    fn m_search_from_the_talk() {
        let ev = parse(&fixtures::ssdp_msearch()).expect("parses");
        assert_eq!(ev.method, SsdpMethod::MSearch);
        assert_eq!(ev.st.as_deref(), Some("urn:schemas-upnp-org:device:InternetGatewayDevice:1"));
        assert_eq!(ev.mx, Some(2));
        assert_eq!(ev.user_agent.as_deref(), Some("Linux/3.10 UPnP/1.0 EZVIZ/1.0"));
        assert!(!ev.truncated);
    }

    #[test]
    fn notify_and_response() {
        let ev = parse(&fixtures::ssdp_notify()).expect("parses");
        assert_eq!(ev.method, SsdpMethod::Notify);
        assert_eq!(ev.nt.as_deref(), Some("upnp:rootdevice"));
        assert_eq!(ev.nts.as_deref(), Some("ssdp:alive"));
        assert_eq!(ev.usn.as_deref(), Some("uuid:2fac1234-31f8-11b4-a222-08002b34c003::upnp:rootdevice"));
        let ev = parse(&fixtures::ssdp_response()).expect("parses");
        assert_eq!(ev.method, SsdpMethod::Response);
        assert_eq!(ev.status, Some(200));
        assert_eq!(ev.location.as_deref(), Some("http://192.168.2.44:8815/rootdesc.xml"));
        assert_eq!(ev.server.as_deref(), Some("Linux/4.9 UPnP/1.1 MiniUPnPd/2.1"));
        assert!(looks_like_ssdp(&fixtures::ssdp_response()));
    }

    #[test]
    fn headers_are_case_insensitive() {
        let ev = parse(b"m-search * HTTP/1.1\r\nsT: ssdp:all\r\nMx:3\r\n\r\n").expect("parses");
        assert_eq!((ev.method.to_string().as_str(), ev.st.as_deref(), ev.mx), ("M-SEARCH", Some("ssdp:all"), Some(3)));
    }

    #[test]
    fn plain_http_over_udp_is_not_ssdp() {
        assert!(!looks_like_ssdp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"));
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn every_prefix_is_safe() {
        for full in [fixtures::ssdp_msearch(), fixtures::ssdp_notify(), fixtures::ssdp_response()] {
            for n in 0..=full.len() {
                if let Ok(ev) = parse(full.get(..n).unwrap_or_default()) {
                    assert_eq!(ev.truncated, n < full.len(), "prefix {n}");
                }
            }
        }
    }
}
