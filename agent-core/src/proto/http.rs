//! HTTP/1.x request and response heads (also the head reader for SSDP, which is HTTP over UDP).

use serde::Serialize;

use super::{
    ParseError, is_false, text,
    upnp::{UpnpDevice, parse_description},
};

/// Enough for real heads; more is refused rather than allocated.
const MAX_HEADERS: usize = 64;

const METHODS: [&[u8]; 9] =
    [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_range: Option<String>,
    /// A response whose body is a UPnP description: the device it describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upnp: Option<UpnpDevice>,
    /// The snapshot cut the header block; the fields above are those before the cut.
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// A request method: the standard ones by name, any other token as it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Head,
    Delete,
    Options,
    Patch,
    Connect,
    Trace,
    Other(String),
}

impl Method {
    pub fn from_token(token: &str) -> Self {
        match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "HEAD" => Method::Head,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            "CONNECT" => Method::Connect,
            "TRACE" => Method::Trace,
            other => Method::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Head => "HEAD",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
            Method::Other(token) => token,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::serialize_as_text!(Method);

/// The start line of a head.
#[derive(Debug, Clone, PartialEq)]
pub enum StartLine {
    Request { method: String, uri: Option<String> },
    Response { status: Option<u16> },
}

/// A parsed head: header names lowercased, values lossy UTF-8, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    pub truncated: bool,
}

impl Head {
    /// The first value of a header, by lowercase name.
    pub fn get(&self, lower_name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == lower_name).map(|(_, v)| v.as_str())
    }
}

/// A request method token or "HTTP/1." at the start.
pub fn looks_like_http(payload: &[u8]) -> bool {
    payload.starts_with(b"HTTP/1.") || METHODS.iter().any(|m| payload.starts_with(m))
}

pub fn parse(payload: &[u8]) -> Result<HttpEvent, ParseError> {
    if !looks_like_http(payload) {
        return Err(ParseError::NotProtocol("no HTTP method or version"));
    }
    let head = parse_head(payload)?;
    let mut ev = HttpEvent { truncated: head.truncated, ..Default::default() };
    let owned = |n: &str| head.get(n).map(str::to_owned);
    match &head.start {
        StartLine::Request { method, uri } => {
            ev.method = Some(Method::from_token(method));
            ev.uri = uri.clone();
            ev.host = owned("host");
            ev.user_agent = owned("user-agent");
            ev.range = owned("range");
        }
        StartLine::Response { status } => {
            ev.status = *status;
            ev.content_type = owned("content-type");
            ev.content_length = head.get("content-length").and_then(|v| v.trim().parse().ok());
            ev.content_range = owned("content-range");
            ev.upnp = body(payload).and_then(parse_description);
        }
    }
    Ok(ev)
}

/// The bytes after the head's blank line, if the head ended.
fn body(payload: &[u8]) -> Option<&[u8]> {
    let end = payload.windows(4).position(|w| w == b"\r\n\r\n")?;
    payload.get(end + 4..)
}

/// Reads an HTTP-style head. A block cut by the snapshot is parsed up to its last complete
/// line (httparse would only answer `Partial`), and the result is marked truncated.
pub fn parse_head(payload: &[u8]) -> Result<Head, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let is_response = payload.starts_with(b"HTTP/");
    if let Some(head) = parse_block(payload, is_response, &mut headers)? {
        return Ok(head);
    }
    // Partial: keep the complete lines and close the block ourselves.
    let Some(last_nl) = payload.iter().rposition(|&b| b == b'\n') else {
        return Ok(Head { start: cut_start_line(payload, is_response)?, headers: Vec::new(), truncated: true });
    };
    let mut block = payload.get(..=last_nl).unwrap_or_default().to_vec();
    block.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match parse_block(&block, is_response, &mut headers)? {
        Some(mut head) => {
            head.truncated = true;
            Ok(head)
        }
        None => Err(ParseError::Malformed("header block did not close")),
    }
}

/// One httparse pass: `Ok(None)` when the block is incomplete.
fn parse_block<'b>(
    buf: &'b [u8],
    is_response: bool,
    headers: &mut [httparse::Header<'b>],
) -> Result<Option<Head>, ParseError> {
    let malformed = |e: httparse::Error| ParseError::Malformed(http_error(e));
    let (start, hdrs): (StartLine, &[httparse::Header<'_>]) = if is_response {
        let mut resp = httparse::Response::new(headers);
        match resp.parse(buf).map_err(malformed)? {
            httparse::Status::Partial => return Ok(None),
            httparse::Status::Complete(_) => {}
        }
        (StartLine::Response { status: resp.code }, resp.headers)
    } else {
        let mut req = httparse::Request::new(headers);
        match req.parse(buf).map_err(malformed)? {
            httparse::Status::Partial => return Ok(None),
            httparse::Status::Complete(_) => {}
        }
        let method = req.method.unwrap_or_default().to_owned();
        (StartLine::Request { method, uri: req.path.map(str::to_owned) }, req.headers)
    };
    let headers = hdrs.iter().map(|h| (h.name.to_ascii_lowercase(), text(h.value).trim().to_owned())).collect();
    Ok(Some(Head { start, headers, truncated: false }))
}

/// The start line itself was cut: keep the method (and the URI if it ended), or the status.
fn cut_start_line(payload: &[u8], is_response: bool) -> Result<StartLine, ParseError> {
    let mut parts = payload.split(|&b| b == b' ');
    let first = parts.next().unwrap_or_default();
    let second = parts.next();
    // The second part is whole only if a third follows it.
    let second_whole = second.filter(|_| parts.next().is_some());
    if is_response {
        let status = second_whole.and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse().ok());
        return Ok(StartLine::Response { status });
    }
    if first.is_empty() || !first.iter().all(|b| b.is_ascii_uppercase() || *b == b'-') || second.is_none() {
        return Err(ParseError::TooShort);
    }
    Ok(StartLine::Request { method: text(first), uri: second_whole.map(text) })
}

fn http_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures, *};

    #[test]
    fn get_with_range() {
        let ev = parse(&fixtures::http_get_range()).expect("parses");
        assert_eq!(ev.method, Some(Method::Get));
        assert_eq!(ev.uri.as_deref(), Some("/firmware/cam-5.3.0.bin"));
        assert_eq!(ev.host.as_deref(), Some("198.51.100.20:8080"));
        assert_eq!(ev.user_agent.as_deref(), Some("EZVIZ-OTA/1.0"));
        assert_eq!(ev.range.as_deref(), Some("bytes=0-4095"));
        assert!(!ev.truncated);
    }

    #[test]
    fn partial_content_response() {
        let ev = parse(&fixtures::http_206()).expect("parses");
        assert_eq!(ev.status, Some(206));
        assert_eq!(ev.content_type.as_deref(), Some("application/octet-stream"));
        assert_eq!(ev.content_length, Some(4096));
        assert_eq!(ev.content_range.as_deref(), Some("bytes 0-4095/7340032"));
        assert_eq!(ev.method, None);
    }

    #[test]
    fn cut_block_keeps_complete_lines() {
        let full = fixtures::http_get_range();
        let cut = full.iter().position(|&b| b == b'R').expect("has Range"); // cut inside "Range:"
        let ev = parse(full.get(..cut + 3).expect("prefix")).expect("parses");
        assert!(ev.truncated);
        assert_eq!(ev.host.as_deref(), Some("198.51.100.20:8080"));
        assert_eq!(ev.range, None);
        // Cut inside the request line.
        let ev = parse(b"GET /firmware/cam-5").expect("parses");
        assert_eq!(
            (ev.method.as_ref().map(Method::as_str), ev.uri.as_deref(), ev.truncated),
            (Some("GET"), None, true)
        );
        let ev = parse(b"GET /rootdesc.xml HTT").expect("parses");
        assert_eq!(ev.uri.as_deref(), Some("/rootdesc.xml"));
        let ev = parse(b"HTTP/1.1 206 Parti").expect("parses");
        assert_eq!(ev.status, Some(206));
    }

    #[test]
    fn every_prefix_is_safe() {
        for full in [fixtures::http_get_range(), fixtures::http_206()] {
            for n in 0..=full.len() {
                let p = full.get(..n).unwrap_or_default();
                match parse(p) {
                    Ok(ev) => assert_eq!(ev.truncated, n < full.len(), "prefix {n}"),
                    Err(e) => assert!(n < 8, "prefix {n}: {e}"),
                }
            }
        }
    }

    #[test]
    fn non_utf8_values_are_kept_lossily() {
        let ev = parse(b"GET / HTTP/1.1\r\nHost: cam\r\nUser-Agent: Cam\xff\xfeOS\r\n\r\n").expect("parses");
        assert_eq!(ev.user_agent.as_deref(), Some("Cam\u{fffd}\u{fffd}OS"));
    }

    #[test]
    fn rejects_garbage_and_lying_lengths() {
        assert!(parse(b"\x16\x03\x01").is_err());
        assert!(parse(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").is_err());
        let ev = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n").expect("parses");
        assert_eq!(ev.content_length, None);
        assert!(looks_like_http(b"HTTP/1.0 200 OK") && !looks_like_http(b"GETX"));
    }
}
