//! `firmware_over_http`: a binary download over plain HTTP, judged from the request's URI and the
//! response's headers, and joined across Range requests and connections into one download.
//!
//! A response is firmware when its type is not one of media or web content (images, video,
//! audio, text, JSON, XML, scripts: however large, those are not firmware) and either the URI
//! names a firmware-like file (an extension such as `.bin`, `.img`, `.ota`, or a path with
//! `firmware`, `fw`, `ota`, `upgrade`, `update` as a word) or the type is binary (`application/octet-stream`
//! and the like) and the download is at least `firmware_min_bytes` long. A download's size is
//! the total of its `Content-Range` (`bytes 0-4095/7340032`), else its `Content-Length`.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use serde_json::json;

use super::{Config, Hit, Rule, excerpt, make_room};
use crate::{
    events::Event,
    mac::Mac,
    proto::{EventFields, http::HttpEvent},
};

/// Requests waiting for their response, and downloads kept.
const MAX_PENDING: usize = 4096;
const MAX_DOWNLOADS: usize = 1024;

const BINARY_TYPES: [&str; 16] = [
    "application/octet-stream",
    "binary/octet-stream",
    "application/x-binary",
    "application/binary",
    "application/x-octet-stream",
    "application/x-firmware",
    "application/macbinary",
    "application/x-tar",
    "application/gzip",
    "application/x-gzip",
    "application/zip",
    "application/x-zip-compressed",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-iso9660-image",
    "application/vnd.android.package-archive",
];
const NOT_FIRMWARE: [&str; 11] = [
    "image/",
    "video/",
    "audio/",
    "text/",
    "font/",
    "application/json",
    "application/xml",
    "application/javascript",
    "application/xhtml+xml",
    "application/pdf",
    "multipart/",
];
const FIRMWARE_EXTENSIONS: [&str; 22] = [
    "bin", "img", "fw", "hex", "ota", "pkg", "swu", "rom", "upd", "dfu", "ipk", "itb", "ubi", "trx", "chk", "elf",
    "tar", "tgz", "gz", "zip", "xz", "squashfs",
];
/// Words of a path (split at every non-alphanumeric byte) that name firmware.
const FIRMWARE_WORDS: [&str; 7] = ["firmware", "fw", "ota", "fota", "upgrade", "update", "flash"];

#[derive(Clone, Debug)]
struct Request {
    uri: String,
    host: Option<String>,
    ts: f64,
    evidence: (u64, String),
}

#[derive(Debug, Default)]
struct Download {
    total_bytes: u64,
    fetched_bytes: u64,
    responses: u64,
    connections: BTreeSet<u16>,
    last_ts: f64,
    content_type: Option<String>,
}

#[derive(Debug, Default)]
pub struct Firmware {
    /// Requests by (client MAC, server address, server port, client port).
    pending: HashMap<(Mac, IpAddr, u16, u16), Request>,
    /// Downloads by (client MAC, host or server address, path).
    downloads: HashMap<(Mac, String, String), Download>,
}

/// `Content-Range: bytes 0-4095/7340032` as (first, last, total).
fn content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = v.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?, total.trim().parse().ok()))
}

/// The URI's path without the query, lowercase.
fn path_of(uri: &str) -> String {
    uri.split(['?', '#']).next().unwrap_or("").to_ascii_lowercase()
}

pub fn firmware_like_name(uri: &str) -> bool {
    let path = path_of(uri);
    let file = path.rsplit('/').next().unwrap_or("");
    let ext = file.rsplit_once('.').map(|(_, e)| e);
    ext.is_some_and(|e| FIRMWARE_EXTENSIONS.contains(&e))
        || path.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| FIRMWARE_WORDS.contains(&w))
}

fn media_type(resp: &HttpEvent) -> Option<String> {
    resp.content_type.as_deref().map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Whether a response to `uri` is a firmware download of `total` bytes.
pub fn is_firmware(uri: Option<&str>, media: Option<&str>, total: u64, min_bytes: u64) -> bool {
    if media.is_some_and(|m| NOT_FIRMWARE.iter().any(|n| m.starts_with(n))) {
        return false;
    }
    let binary = media.is_some_and(|m| BINARY_TYPES.contains(&m));
    uri.is_some_and(firmware_like_name) || (binary && total >= min_bytes)
}

impl Firmware {
    pub fn shift_times(&mut self, delta: f64) {
        self.pending.values_mut().for_each(|r| r.ts += delta);
        self.downloads.values_mut().for_each(|d| d.last_ts += delta);
    }

    pub fn on_event(&mut self, ev: &Event, cfg: &Config, hits: &mut Vec<Hit>) {
        let EventFields::Http(h) = &ev.fields else { return };
        let (Some(src), Some(sport), Some(dst), Some(dport)) = (ev.src_ip, ev.src_port, ev.dst_ip, ev.dst_port) else {
            return;
        };
        if let Some(uri) = &h.uri
            && h.method.is_some()
        {
            make_room(&mut self.pending, MAX_PENDING, |r| r.ts);
            let req = Request { uri: uri.clone(), host: h.host.clone(), ts: ev.ts, evidence: (ev.id, excerpt(ev)) };
            self.pending.insert((ev.src_mac, dst, dport, sport), req);
            return;
        }
        let Some(status) = h.status else { return };
        // The response goes to the client: its request was keyed from the other side.
        let req = self.pending.remove(&(ev.dst_mac, src, sport, dport));
        if !matches!(status, 200 | 206) {
            return;
        }
        let range = h.content_range.as_deref().and_then(content_range);
        let chunk = h.content_length.or(range.map(|(a, b, _)| b.saturating_sub(a) + 1)).unwrap_or(0);
        let total = range.and_then(|r| r.2).or(h.content_length).unwrap_or(0);
        let media = media_type(h);
        if !is_firmware(req.as_ref().map(|r| r.uri.as_str()), media.as_deref(), total, cfg.firmware_min_bytes) {
            return;
        }
        let uri = req.as_ref().map_or_else(|| "?".to_owned(), |r| crate::labels::sanitize(&path_of(&r.uri), 256));
        let host = req.as_ref().and_then(|r| r.host.clone()).unwrap_or_else(|| src.to_string());
        let host = crate::labels::sanitize(&host, 256);
        make_room(&mut self.downloads, MAX_DOWNLOADS, |d| d.last_ts);
        let d = self.downloads.entry((ev.dst_mac, host.clone(), uri.clone())).or_default();
        if ev.ts - d.last_ts > cfg.window_s {
            *d = Download::default();
        }
        d.total_bytes = d.total_bytes.max(total);
        d.fetched_bytes += chunk;
        d.responses += 1;
        d.connections.insert(dport);
        d.last_ts = ev.ts;
        d.content_type = media.clone().or(d.content_type.take());
        let mut evidence: Vec<(u64, String)> = req.map(|r| r.evidence).into_iter().collect();
        evidence.push((ev.id, excerpt(ev)));
        hits.push(Hit {
            rule: Rule::FirmwareOverHttp,
            mac: ev.dst_mac,
            ip: ev.dst_ip,
            ts: ev.ts,
            summary: format!(
                "downloads http://{host}{uri} over plain HTTP: {} bytes in {} response(s) over {} connection(s)",
                d.total_bytes,
                d.responses,
                d.connections.len()
            ),
            details: json!({
                "host": host,
                "server": src,
                "uri": uri,
                "content_type": d.content_type,
                "total_bytes": d.total_bytes,
                "fetched_bytes": d.fetched_bytes,
                "responses": d.responses,
                "connections": d.connections.len(),
            }),
            evidence,
        });
    }

    /// Bytes of firmware downloads seen per device (for the metric).
    pub fn bytes_by_device(&self) -> HashMap<Mac, u64> {
        let mut out = HashMap::new();
        for ((mac, _, _), d) in &self.downloads {
            *out.entry(*mac).or_default() += d.fetched_bytes;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{super::testing::*, *};
    use crate::proto::http::Method;

    const SERVER: IpAddr = INET;

    /// A GET and its response on one connection (client port `port`).
    fn fetch(t: &mut Bench, ts: f64, port: u16, uri: &str, range: Option<&str>, resp: EventFields) {
        t.event(ts, CAM, LAN_CAM, port, GW, SERVER, 80, http_request(Method::Get, uri, "fw.example.com", range));
        t.event(ts + 0.1, GW, SERVER, 80, CAM, LAN_CAM, port, resp);
    }

    #[test]
    fn a_range_download_over_many_connections_is_one_firmware_download() {
        let mut t = Bench::default();
        let total = 7_340_032u64;
        for (i, first) in (0..total).step_by(1 << 20).enumerate() {
            let last = (first + (1 << 20) - 1).min(total - 1);
            let cr = format!("bytes {first}-{last}/{total}");
            let resp = http_response(206, "application/octet-stream", last - first + 1, Some(&cr));
            fetch(
                &mut t,
                i as f64,
                50000 + i as u16,
                "/ota/cam-5.3.0.bin?sig=1",
                Some(&format!("bytes={first}-{last}")),
                resp,
            );
        }
        let f = t.only(Rule::FirmwareOverHttp);
        assert_eq!(f.mac, CAM);
        assert_eq!(f.count, 7);
        assert_eq!(f.details["total_bytes"], total);
        assert_eq!(f.details["fetched_bytes"], total);
        assert_eq!(f.details["connections"], 7);
        assert_eq!(f.details["uri"], "/ota/cam-5.3.0.bin");
        assert_eq!(f.details["host"], "fw.example.com");
    }

    #[test]
    fn a_large_binary_without_a_firmware_name_is_firmware_too() {
        let mut t = Bench::default();
        fetch(&mut t, 1.0, 50000, "/d/8f3a2", None, http_response(200, "application/octet-stream", 4 << 20, None));
        assert_eq!(t.only(Rule::FirmwareOverHttp).details["total_bytes"], 4 << 20);
    }

    #[test]
    fn images_video_pages_and_small_binaries_are_not_firmware() {
        let mut t = Bench::default();
        fetch(&mut t, 1.0, 50000, "/big.jpg", None, http_response(200, "image/jpeg", 8 << 20, None));
        fetch(&mut t, 2.0, 50001, "/clip", None, http_response(200, "video/mp4", 80 << 20, None));
        fetch(&mut t, 3.0, 50002, "/update.html", None, http_response(200, "text/html; charset=utf-8", 1 << 20, None));
        fetch(&mut t, 4.0, 50003, "/status", None, http_response(200, "application/octet-stream", 512, None));
        fetch(&mut t, 5.0, 50004, "/fw.bin", None, http_response(404, "application/octet-stream", 0, None));
        assert!(t.findings().is_empty(), "{:?}", t.findings());
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(content_range("bytes 0-4095/7340032"), Some((0, 4095, Some(7_340_032))));
        assert_eq!(content_range("bytes 10-19/*"), Some((10, 19, None)));
        assert_eq!(content_range("items 1-2/3"), None);
        assert!(firmware_like_name("/firmware/x"));
        assert!(firmware_like_name("/a/B.BIN?x=1"));
        assert!(firmware_like_name("/api/fw_update/x"));
        assert!(!firmware_like_name("/index.html"));
        assert!(!firmware_like_name("/quota/iota"));
    }
}
