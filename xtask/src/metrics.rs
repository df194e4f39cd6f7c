//! Reading the agent's /metrics: a plain HTTP GET (no HTTP crate: xtask must build before
//! set-up, with few dependencies) and a small parser of the Prometheus text format.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Parses Prometheus text exposition: skips comments and blank lines, unescapes label
/// values, ignores timestamps. Lines that do not parse are skipped: this is a reader for
/// tests and a summary table, not a validator (promtool is).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            // Skip separators, then read `key="value"`.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let (start, c) = chars.next()?;
            if c == '}' {
                end = start + 1;
                break;
            }
            let eq = r[start..].find('=')? + start;
            let key = r[start..eq].trim().to_owned();
            while chars.peek().is_some_and(|&(i, c)| i <= eq || c.is_whitespace()) {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
        }
        rest = &r[end..];
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample { name, labels, value })
}

/// GET http://addr/path with HTTP/1.0 (so the server closes and no chunking is needed);
/// returns the body of a 200 response.
/// Sum of a metric's samples whose labels include all of `labels`.
pub fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

/// [`total`] of counters, as an integer.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> u64 {
    total(samples, name, labels) as u64
}

pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<String> {
    let (status, line, body) = http_get_any(addr, path, timeout)?;
    if status != 200 {
        bail!("GET http://{addr}{path}: {line}");
    }
    Ok(body)
}

/// GET http://addr/path with HTTP/1.0, whatever the status: (status code, status line, body).
/// Prometheus's API answers a bad query with 400 and says why in the body.
pub fn http_get_any(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String, String)> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .with_context(|| format!("bad address {addr}"))?
        .next()
        .with_context(|| format!("address {addr} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).with_context(|| format!("reading the answer of {addr}{path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) =
        text.split_once("\r\n\r\n").with_context(|| format!("no HTTP header end in the answer of {addr}{path}"))?;
    let line = head.lines().next().unwrap_or_default();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("GET http://{addr}{path}: no status in {line:?}"))?;
    Ok((status, line.to_owned(), body.to_owned()))
}

/// Scrapes and parses `http://addr/metrics`.
pub fn scrape(addr: &str) -> Result<Vec<Sample>> {
    Ok(parse_metrics(&http_get(addr, "/metrics", Duration::from_secs(5))?))
}

/// Per-device totals over all scopes, from `iotwatch_device_{packets,bytes}_total`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSummary {
    pub mac: String,
    pub tx_packets: f64,
    pub tx_bytes: f64,
    pub rx_packets: f64,
    pub rx_bytes: f64,
    /// Bytes (tx + rx) whose peer scope is `internet`.
    pub internet_bytes: f64,
}

impl DeviceSummary {
    /// Share of the device's bytes exchanged with the Internet, 0..=1.
    pub fn internet_share(&self) -> f64 {
        let total = self.tx_bytes + self.rx_bytes;
        if total > 0.0 { self.internet_bytes / total } else { 0.0 }
    }
}

/// Sums the device counters by MAC (sorted by MAC).
pub fn device_summaries(samples: &[Sample]) -> Vec<DeviceSummary> {
    let mut by_mac: BTreeMap<String, DeviceSummary> = BTreeMap::new();
    for s in samples {
        let bytes = match s.name.as_str() {
            "iotwatch_device_bytes_total" => true,
            "iotwatch_device_packets_total" => false,
            _ => continue,
        };
        let Some(mac) = s.label("mac") else { continue };
        let d =
            by_mac.entry(mac.to_owned()).or_insert_with(|| DeviceSummary { mac: mac.to_owned(), ..Default::default() });
        match (s.label("direction"), bytes) {
            (Some("tx"), false) => d.tx_packets += s.value,
            (Some("rx"), false) => d.rx_packets += s.value,
            (Some("tx"), true) => d.tx_bytes += s.value,
            (Some("rx"), true) => d.rx_bytes += s.value,
            _ => continue,
        }
        if bytes && s.label("scope") == Some("internet") {
            d.internet_bytes += s.value;
        }
    }
    by_mac.into_values().collect()
}

/// A fixed-width table of the summaries; `name_of` gives a role name for a MAC.
pub fn summary_table(rows: &[DeviceSummary], name_of: impl Fn(&str) -> Option<String>) -> String {
    let names: Vec<String> = rows.iter().map(|r| name_of(&r.mac).unwrap_or_default()).collect();
    let w = names.iter().map(String::len).max().unwrap_or(0).max(8);
    let mut out = format!(
        "{:<17} {:<w$} {:>9} {:>11} {:>9} {:>11} {:>9}\n",
        "mac", "name", "tx_pkts", "tx_bytes", "rx_pkts", "rx_bytes", "internet"
    );
    for (r, name) in rows.iter().zip(names) {
        out.push_str(&format!(
            "{:<17} {:<w$} {:>9} {:>11} {:>9} {:>11} {:>8.1}%\n",
            r.mac,
            name,
            r.tx_packets,
            r.tx_bytes,
            r.rx_packets,
            r.rx_bytes,
            r.internet_share() * 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP iotwatch_device_bytes_total Wire bytes.
# TYPE iotwatch_device_bytes_total counter
iotwatch_device_bytes_total{mac="02:77:00:00:00:0b",direction="tx",scope="internet"} 1000
iotwatch_device_bytes_total{mac="02:77:00:00:00:0b",direction="tx",scope="lan"} 500
iotwatch_device_bytes_total{mac="02:77:00:00:00:0b",direction="rx",scope="internet"} 500
iotwatch_device_packets_total{mac="02:77:00:00:00:0b",direction="tx",scope="internet"} 10
iotwatch_device_packets_total{mac="02:77:00:00:00:0b",direction="rx",scope="lan"} 3
iotwatch_device_packets_total{ mac = "02:77:00:00:00:0c" , direction="rx", scope="multicast", } 2 1700000000000
iotwatch_build_info{version="0.1.0",aya="0.14.0"} 1
weird{path="C:\\dir",q="say \"hi\"\n"} +Inf
iotwatch_scrape_duration_seconds 0.0012
broken{mac="x" 1
"#;

    #[test]
    fn parses_names_labels_values() {
        let s = parse_metrics(TEXT);
        assert_eq!(s.len(), 9, "{s:#?}");
        assert_eq!(s[0].name, "iotwatch_device_bytes_total");
        assert_eq!(s[0].label("scope"), Some("internet"));
        assert_eq!(s[0].value, 1000.0);
        assert_eq!(s[5].label("mac"), Some("02:77:00:00:00:0c"));
        assert_eq!(s[5].value, 2.0, "timestamp ignored");
        assert_eq!(s[7].label("path"), Some(r"C:\dir"));
        assert_eq!(s[7].label("q"), Some("say \"hi\"\n"));
        assert!(s[7].value.is_infinite());
        assert_eq!(s[8].name, "iotwatch_scrape_duration_seconds");
        assert!(s[8].labels.is_empty());
    }

    #[test]
    fn sums_devices_over_scopes() {
        let d = device_summaries(&parse_metrics(TEXT));
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].mac, "02:77:00:00:00:0b");
        assert_eq!((d[0].tx_packets, d[0].rx_packets), (10.0, 3.0));
        assert_eq!((d[0].tx_bytes, d[0].rx_bytes), (1500.0, 500.0));
        assert!((d[0].internet_share() - 0.75).abs() < 1e-9);
        assert_eq!(d[1].rx_packets, 2.0);
        assert_eq!(d[1].internet_share(), 0.0);
        let table = summary_table(&d, |m| (m == "02:77:00:00:00:0b").then(|| "camera".to_owned()));
        assert!(table.contains("camera"), "{table}");
        assert!(table.contains("75.0%"), "{table}");
    }
}
