//! The report as a table for people: one line per device, in the spirit of the talk's ntopng
//! host list (who sends how much, to how many LAN and Internet peers, on which ports).

use std::fmt::Write as _;

pub use crate::clock::utc;
use crate::{
    peerdb::CountryCode,
    report::{DeviceRow, Report},
    scope::Scope,
};

/// `1234567` -> `1.2 MB` (decimal units, as capinfos prints them).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// The busiest peer of a scope and how many more there are: `203.0.113.10 (+5)`.
fn peers_summary(d: &DeviceRow, scope: Scope) -> String {
    let mut peers = d.peers.iter().filter(|p| p.scope == scope);
    match (peers.next(), peers.count()) {
        (None, _) => "-".to_owned(),
        (Some(p), 0) => p.ip.to_string(),
        (Some(p), more) => format!("{} (+{more})", p.ip),
    }
}

/// Where a device's Internet traffic goes, busiest first: its top providers (else the
/// organisation) and countries, `Amazon, Tencent | US, CN`; `-` without Internet peers or when
/// the peer databases know none of them.
fn destinations_summary(d: &DeviceRow) -> String {
    let mut providers: Vec<(String, u64)> = Vec::new();
    let mut countries: Vec<(String, u64)> = Vec::new();
    let add = |list: &mut Vec<(String, u64)>, key: Option<&str>, bytes: u64| {
        let Some(key) = key else { return };
        match list.iter_mut().find(|(k, _)| k == key) {
            Some((_, b)) => *b += bytes,
            None => list.push((key.to_owned(), bytes)),
        }
    };
    for p in d.peers.iter().filter(|p| p.scope == Scope::Internet) {
        add(&mut providers, p.provider.or(p.org.as_deref()), p.bytes);
        add(&mut countries, p.country.as_ref().map(CountryCode::as_str), p.bytes);
    }
    let top = |mut list: Vec<(String, u64)>, n: usize| {
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list.into_iter().take(n).map(|(k, _)| k).collect::<Vec<_>>().join(", ")
    };
    match (top(providers, 2), top(countries, 3)) {
        (p, c) if p.is_empty() && c.is_empty() => "-".to_owned(),
        (p, c) => format!("{} | {}", if p.is_empty() { "?" } else { &p }, if c.is_empty() { "?" } else { &c }),
    }
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    if let Some(c) = &r.capture {
        let span = match (c.first_ts, c.last_ts) {
            (Some(f), Some(l)) => format!(", {} .. {} UTC ({:.1} h)", utc(f), utc(l), (l - f) / 3600.0),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{} file(s), {} frames, {} on the wire{span}",
            c.files.len(),
            c.packets,
            human_bytes(c.wire_bytes)
        );
    }
    let _ = writeln!(
        out,
        "LAN: {}\n",
        if r.lan_prefixes.is_empty() { "(none)".to_owned() } else { r.lan_prefixes.join(", ") }
    );
    let _ = writeln!(
        out,
        "{:<17}  {:<32} {:>20}  {:>20}  {:<30} {:<30} {:<30} TOP PORTS",
        "DEVICE", "NAME", "SENT", "RECEIVED", "LAN PEERS", "INTERNET PEERS", "PROVIDERS | COUNTRIES"
    );
    for d in &r.devices {
        let who = match d.name_source {
            crate::identity::FROM_MAC if d.randomised => "(randomised MAC)".to_owned(),
            crate::identity::FROM_MAC => "-".to_owned(),
            _ => d.name.clone(),
        };
        let who: String = who.chars().take(32).collect();
        let ports: Vec<String> = d.ports.iter().take(4).map(|p| format!("{}/{}", p.proto, p.port)).collect();
        let _ = writeln!(
            out,
            "{:<17}  {:<32} {:>20}  {:>20}  {:<30} {:<30} {:<30} {}",
            d.mac,
            who,
            format!("{} pkt {:>9}", d.tx_packets, human_bytes(d.tx_bytes)),
            format!("{} pkt {:>9}", d.rx_packets, human_bytes(d.rx_bytes)),
            truncate(&peers_summary(d, Scope::Lan), 30),
            truncate(&peers_summary(d, Scope::Internet), 30),
            truncate(&destinations_summary(d), 30),
            if ports.is_empty() { "-".to_owned() } else { ports.join(" ") },
        );
    }
    let (tx, bytes): (u64, u64) = r.macs.iter().fold((0, 0), |(p, b), m| (p + m.tx_packets, b + m.tx_bytes));
    let internet: u64 =
        r.devices.iter().filter_map(|d| d.scopes.get(Scope::Internet.as_str())).map(|s| s.tx_bytes).sum();
    let _ = writeln!(
        out,
        "\nTOTAL  {} devices, {tx} frames, {}; {} sent to the Internet",
        r.devices.len(),
        human_bytes(bytes),
        human_bytes(internet)
    );
    if !r.findings.is_empty() {
        let _ = writeln!(out, "\nFINDINGS");
        for f in &r.findings {
            let times = if f.count > 1 { format!(" (x{})", f.count) } else { String::new() };
            let _ = writeln!(out, "{}  {:<18} {}  {}{times}", utc(f.ts), f.rule.as_str(), f.mac, f.summary);
        }
    }
    if let Some(c) = &r.capture {
        if c.truncated_frames > 0 {
            let _ = writeln!(
                out,
                "       {} frames were cut short by the capture; counted at their original length",
                c.truncated_frames
            );
        }
        if c.skipped_frames > 0 {
            let kinds: Vec<String> =
                c.skipped_link_types.iter().map(|(k, n)| format!("{n} of link type {k}")).collect();
            let _ = writeln!(out, "       SKIPPED {} frames not replayed: {}", c.skipped_frames, kinds.join(", "));
        }
        for i in &c.invalid {
            let _ = writeln!(out, "       INVALID {}: at byte {}: {}", i.file, i.offset, i.message);
        }
        if c.invalid_not_listed > 0 {
            let _ = writeln!(out, "       INVALID and {} more, not listed", c.invalid_not_listed);
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_owned() } else { s.chars().take(n - 3).collect::<String>() + "..." }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bytes_and_dates() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_620_261_673.7), "2021-05-06 00:41:13");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(utc(-1.0), "1969-12-31 23:59:59");
        assert_eq!(truncate("abcdefgh", 6), "abc...");
    }
}
