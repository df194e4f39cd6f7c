//! The replay tests' reference: captures made by `tests/captures/make_captures.py`, the counts
//! that tshark sees in them aggregated by the kernel program's counting rules, and the report
//! of `iotwatch replay --format json` read back.
//!
//! Reading the report: the tests crate has no JSON parser (serde_json is not one of its
//! dependencies and none is added for this), so `tests/captures/report_lines.py` turns the
//! report into tab-separated lines with Python's `json` module, and both sides are compared as
//! those lines: a failure prints the lines that differ.
//!
//! The counting rules (what the kernel program does, and what [`tshark`] reproduces):
//! - every byte count is the frame's original length (`frame.len`);
//! - macs: tx by Ethernet source, rx by destination, for every Ethernet frame with at least 14
//!   captured bytes;
//! - ips: the outermost IPv4 or IPv6 header only (tx = source, rx = destination), behind at
//!   most four VLAN tags (802.1Q or 802.1ad) and a PPPoE session, and only when its fixed
//!   header is captured whole (IPv4: IHL*4 bytes; IPv6: 40 bytes);
//! - ports: by destination port of a TCP or UDP header directly inside that IP header (after at
//!   most 6 IPv6 extension headers), in unfragmented packets and first fragments only, when the
//!   4 port bytes are captured.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The python with scapy (Debian's python3-scapy; `cargo xtask setup` installs it).
pub const PYTHON: &str = "/usr/bin/python3";

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures")
}

fn check(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// Writes the test captures into `dir` (see make_captures.py for the list).
pub fn make_captures(dir: &Path) {
    let out = Command::new(PYTHON)
        .arg(captures_dir().join("make_captures.py"))
        .arg(dir)
        .output()
        .expect("run make_captures.py");
    check("make_captures.py", &out);
}

/// `FILE OFFSET CLEAN` lines of `malformed.txt`: the malformed captures, the byte offset of
/// their first invalid record or block, and a clean capture with the frames still readable.
pub fn malformed(dir: &Path) -> Vec<(String, u64, Option<String>)> {
    let text = std::fs::read_to_string(dir.join("malformed.txt")).expect("malformed.txt");
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[1].parse().expect("offset"), (f[2] != "-").then(|| f[2].to_owned()))
        })
        .collect()
}

/// Counts by key: [tx_packets, tx_bytes, rx_packets, rx_bytes] or [packets, bytes].
type Table<const N: usize> = BTreeMap<String, [u64; N]>;

/// What tshark sees, aggregated by the kernel program's rules.
#[derive(Debug, Default)]
pub struct Oracle {
    pub packets: u64,
    pub wire_bytes: u64,
    pub captured_bytes: u64,
    pub truncated_frames: u64,
    /// Nanoseconds since the epoch.
    pub first_ts_ns: Option<i128>,
    pub last_ts_ns: Option<i128>,
    pub macs: Table<4>,
    pub ips: Table<4>,
    /// Key "proto\tport".
    pub ports: Table<2>,
}

const FIELDS: [&str; 13] = [
    "frame.time_epoch",
    "frame.len",
    "frame.cap_len",
    "eth.src",
    "eth.dst",
    "ip.src",
    "ip.dst",
    "ip.hdr_len",
    "ipv6.src",
    "ipv6.dst",
    "tcp.dstport",
    "udp.dstport",
    "frame.protocols",
];

/// IPv6 extension headers as tshark names them in `frame.protocols`.
const IPV6_EXT: [&str; 5] = ["ipv6.hopopts", "ipv6.routing", "ipv6.fraghdr", "ipv6.dstopts", "ah"];
/// Most extension headers the program walks before giving up on the transport header.
const MAX_EXT_HEADERS: usize = 6;
/// Most VLAN tags the program walks (written here again, not taken from the contract: the
/// oracle states the rule it checks).
const MAX_VLAN_TAGS: usize = 4;
/// PPPoE's header and PPP's protocol field, between the tags and IP: 8 bytes, or 7 when the
/// protocol field is compressed. Only a capture cut inside the IP header could tell the two
/// apart here, and the test captures cut none of their PPPoE frames.
const PPPOE_LEN: u64 = 8;

fn ns_of(epoch: &str) -> i128 {
    let (s, frac) = epoch.split_once('.').unwrap_or((epoch, ""));
    let frac = format!("{frac:0<9}");
    s.parse::<i128>().expect("seconds") * 1_000_000_000 + frac[..9].parse::<i128>().expect("fraction")
}

fn add4(t: &mut Table<4>, key: &str, tx: bool, bytes: u64) {
    let e = t.entry(key.to_owned()).or_default();
    let o = if tx { 0 } else { 2 };
    e[o] += 1;
    e[o + 1] += bytes;
}

impl Oracle {
    /// Adds one frame, given tshark's fields in the order of [`FIELDS`].
    fn frame(&mut self, f: &[&str]) {
        let num =
            |i: usize| f[i].parse::<u64>().unwrap_or_else(|_| panic!("field {} is not a number: {f:?}", FIELDS[i]));
        let (len, cap) = (num(1), num(2));
        self.packets += 1;
        self.wire_bytes += len;
        self.captured_bytes += cap;
        self.truncated_frames += u64::from(cap < len);
        let ts = ns_of(f[0]);
        if ts != 0 {
            self.first_ts_ns = Some(self.first_ts_ns.map_or(ts, |v| v.min(ts)));
            self.last_ts_ns = Some(self.last_ts_ns.map_or(ts, |v| v.max(ts)));
        }
        let protos: Vec<&str> = f[12].split(':').collect();
        if protos.first() != Some(&"eth") || cap < 14 {
            return; // not Ethernet (skipped by replay) or shorter than its header
        }
        add4(&mut self.macs, f[3], true, len);
        add4(&mut self.macs, f[4], false, len);

        // The outermost IP header, behind Ethernet, VLAN tags and a PPPoE session only.
        let Some(ip_at) =
            protos.iter().position(|p| !matches!(*p, "eth" | "ethertype" | "vlan" | "ieee8021ad" | "pppoes" | "ppp"))
        else {
            return;
        };
        let tags = protos[..ip_at].iter().filter(|p| matches!(**p, "vlan" | "ieee8021ad")).count() as u64;
        if tags > MAX_VLAN_TAGS as u64 {
            return;
        }
        let pppoe = if protos[..ip_at].contains(&"pppoes") { PPPOE_LEN } else { 0 };
        let l3 = 14 + 4 * tags + pppoe;
        let (src, dst) = match protos[ip_at] {
            // tshark shows ip.src even when the options are cut off: the program needs IHL*4.
            // (ip.hdr_len is in bytes.)
            "ip" if !f[7].is_empty() && l3 + num(7) <= cap => (f[5], f[6]),
            "ipv6" if l3 + 40 <= cap => (f[8], f[9]),
            _ => return,
        };
        add4(&mut self.ips, src, true, len);
        add4(&mut self.ips, dst, false, len);

        // The transport header directly inside it. tshark dissects no transport layer in a later
        // fragment (with defragmentation off) and none when the ports are cut off. An ICMP error
        // quotes an IP/UDP header: tshark's udp.dstport is the quoted one, excluded here because
        // the first layer after IP is icmp.
        let rest = &protos[ip_at + 1..];
        let ext = rest.iter().take_while(|p| IPV6_EXT.contains(p)).count();
        if ext > MAX_EXT_HEADERS {
            return;
        }
        let (proto, port) = match rest.get(ext) {
            Some(&"tcp") => ("tcp", f[10]),
            Some(&"udp") => ("udp", f[11]),
            _ => return,
        };
        if port.is_empty() {
            return;
        }
        let e = self.ports.entry(format!("{proto}\t{port}")).or_default();
        e[0] += 1;
        e[1] += len;
    }

    /// Sections as report lines (see report_lines.py), sorted.
    pub fn lines(&self, section: &str) -> Vec<String> {
        let mut v: Vec<String> = match section {
            "mac" => {
                self.macs.iter().map(|(k, c)| format!("mac\t{k}\t{}\t{}\t{}\t{}", c[0], c[1], c[2], c[3])).collect()
            }
            "ip" => self.ips.iter().map(|(k, c)| format!("ip\t{k}\t{}\t{}\t{}\t{}", c[0], c[1], c[2], c[3])).collect(),
            "port" => self.ports.iter().map(|(k, c)| format!("port\t{k}\t{}\t{}", c[0], c[1])).collect(),
            _ => panic!("no section {section}"),
        };
        v.sort();
        v
    }
}

/// Runs tshark over `files` (each on its own) and sums what it sees.
pub fn tshark(files: &[PathBuf]) -> Oracle {
    let mut o = Oracle::default();
    for file in files {
        let mut cmd = Command::new("tshark");
        // No reassembly: every frame on its own, as the kernel program sees it. First occurrence
        // of each field: the outermost header's.
        // tshark quirk: an IPv6 payload length of 0 without a jumbo option (what a GRO/BIG TCP
        // frame looks like in a capture) leaves tshark with an empty payload, so it marks the TCP
        // header malformed and shows no port, unless `ipv6.tso_support` is on (it is off by
        // default, unlike `ip.tso_support` for IPv4's total length 0). The program reads the
        // header that is there, so the oracle turns it on.
        cmd.args([
            "-n",
            "-o",
            "ip.defragment:FALSE",
            "-o",
            "ipv6.defragment:FALSE",
            "-o",
            "ip.tso_support:TRUE",
            "-o",
            "ipv6.tso_support:TRUE",
        ]);
        cmd.args(["-o", "tcp.desegment_tcp_streams:FALSE", "-T", "fields", "-E", "occurrence=f", "-E", "separator=/t"]);
        for f in FIELDS {
            cmd.args(["-e", f]);
        }
        let out = cmd.arg("-r").arg(file).output().expect("run tshark");
        check(&format!("tshark -r {}", file.display()), &out);
        for line in String::from_utf8(out.stdout).expect("utf-8").lines() {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), FIELDS.len(), "tshark line {line:?}");
            o.frame(&f);
        }
    }
    o
}

/// One `iotwatch replay` run.
#[derive(Debug)]
pub struct Replay {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `iotwatch replay ARGS...` in `dir`.
pub fn replay(dir: &Path, args: &[&str]) -> Replay {
    let out = Command::new(crate::agent_bin())
        .arg("replay")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run iotwatch replay");
    Replay {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The report's lines (report_lines.py), in the report's order.
pub fn report_lines(json: &str) -> Vec<String> {
    use std::io::Write as _;
    let mut child = Command::new(PYTHON)
        .arg(captures_dir().join("report_lines.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run report_lines.py");
    child.stdin.take().expect("stdin").write_all(json.as_bytes()).expect("write the report");
    let out = child.wait_with_output().expect("report_lines.py");
    check(&format!("report_lines.py on {:.300}", json), &out);
    String::from_utf8(out.stdout).expect("utf-8").lines().map(str::to_owned).collect()
}

/// The lines of one section (the first field), sorted; for mac/ip/port the fields the oracle
/// knows (the ip line without its scope).
pub fn section(lines: &[String], name: &str) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .filter(|l| l.split('\t').next() == Some(name))
        .map(|l| {
            if name == "ip" {
                let f: Vec<&str> = l.split('\t').collect();
                [&f[..2], &f[3..]].concat().join("\t")
            } else {
                l.clone()
            }
        })
        .collect();
    v.sort();
    v
}

/// The scope of an IP in the report's lines.
pub fn ip_scope(lines: &[String], ip: &str) -> Option<String> {
    lines
        .iter()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f[0] == "ip" && f[1] == ip)
        .map(|f| f[2].to_owned())
}

/// Line-by-line difference of two sorted lists, `-` for expected only, `+` for got only.
pub fn diff(expected: &[String], got: &[String]) -> String {
    let mut s = String::new();
    for e in expected.iter().filter(|e| !got.contains(e)) {
        let _ = writeln!(s, "- {e}");
    }
    for g in got.iter().filter(|g| !expected.contains(g)) {
        let _ = writeln!(s, "+ {g}");
    }
    s
}

/// The `capture` line's fields: packets, wire_bytes, captured_bytes, truncated_frames,
/// first_ts, last_ts (seconds, None when absent), skipped_frames.
#[derive(Debug, PartialEq)]
pub struct CaptureTotals {
    pub packets: u64,
    pub wire_bytes: u64,
    pub captured_bytes: u64,
    pub truncated_frames: u64,
    pub first_ts: Option<f64>,
    pub last_ts: Option<f64>,
    pub skipped_frames: u64,
}

pub fn capture_totals(lines: &[String]) -> CaptureTotals {
    let line = lines.iter().find(|l| l.starts_with("capture\t")).expect("a capture section");
    let f: Vec<&str> = line.split('\t').collect();
    let n = |i: usize| f[i].parse::<u64>().expect("number");
    let ts = |i: usize| (f[i] != "-").then(|| f[i].parse::<f64>().expect("timestamp"));
    CaptureTotals {
        packets: n(1),
        wire_bytes: n(2),
        captured_bytes: n(3),
        truncated_frames: n(4),
        first_ts: ts(5),
        last_ts: ts(6),
        skipped_frames: n(7),
    }
}
