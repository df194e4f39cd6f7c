//! `iotwatch replay` against an independent reference: captures made by
//! `tests/captures/make_captures.py` (scapy, written byte by byte), tshark's reading of them
//! aggregated by the kernel program's counting rules (`iotwatch_tests::oracle`), and the
//! report's `macs`, `ips`, `ports` and `capture` sections compared exactly.

use std::path::PathBuf;

use iotwatch_tests::{
    TempDir,
    oracle::{self, Oracle, Replay},
    privileged_test, temp_dir,
};

/// A fresh directory with the captures, removed at the end (also on panic).
struct Captures(TempDir);

impl Captures {
    fn new(test: &str) -> Self {
        let dir = temp_dir(&format!("iotwatch-replay-{test}"));
        oracle::make_captures(dir.path());
        Self(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn oracle(&self, names: &[&str]) -> Oracle {
        oracle::tshark(&names.iter().map(|n| self.path(n)).collect::<Vec<_>>())
    }
    /// `iotwatch replay --format json NAMES...`, run in the directory (paths in the report are
    /// the names as given).
    fn replay(&self, names: &[&str]) -> (Replay, Vec<String>) {
        let mut args = vec!["--format", "json"];
        args.extend_from_slice(names);
        let r = oracle::replay(self.0.path(), &args);
        assert!(r.code == 0 || r.code == 1, "replay {names:?} failed with exit code {}: {}", r.code, r.stderr);
        let lines = oracle::report_lines(&r.stdout);
        (r, lines)
    }
}

/// Every difference between the report's sections and the oracle, empty when none.
fn differences(what: &str, o: &Oracle, lines: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for section in ["mac", "ip", "port"] {
        let (expected, got) = (o.lines(section), oracle::section(lines, section));
        if expected != got {
            problems.push(format!(
                "{what}: `{section}` rows differ from tshark's (- tshark only, + report only):\n{}",
                oracle::diff(&expected, &got)
            ));
        }
    }
    let t = oracle::capture_totals(lines);
    let expect = (o.packets, o.wire_bytes, o.captured_bytes, o.truncated_frames);
    let got = (t.packets, t.wire_bytes, t.captured_bytes, t.truncated_frames);
    if expect != got {
        problems.push(format!(
            "{what}: capture (packets, wire_bytes, captured_bytes, truncated_frames): tshark {expect:?}, report {got:?}"
        ));
    }
    let near = |ns: Option<i128>, s: Option<f64>| match (ns, s) {
        (Some(ns), Some(s)) => (ns as f64 / 1e9 - s).abs() < 2e-6,
        (None, None) => true,
        _ => false,
    };
    if !near(o.first_ts_ns, t.first_ts) || !near(o.last_ts_ns, t.last_ts) {
        problems.push(format!(
            "{what}: first_ts/last_ts: tshark {:?}/{:?} ns, report {:?}/{:?} s",
            o.first_ts_ns, o.last_ts_ns, t.first_ts, t.last_ts
        ));
    }
    problems
}

fn assert_matches(what: &str, o: &Oracle, lines: &[String]) {
    let problems = differences(what, o, lines);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One well-formed capture: exit 0, nothing on stderr but progress, and the report equal to
/// tshark's counts.
fn check_capture(test: &str, name: &str) -> (Oracle, Vec<String>) {
    let c = Captures::new(test);
    let o = c.oracle(&[name]);
    assert!(o.packets > 0, "{name}: tshark read no frames");
    let (r, lines) = c.replay(&[name]);
    assert_eq!(r.code, 0, "{name}: exit code {} (stderr: {})", r.code, r.stderr);
    assert!(!r.stderr.contains("iotwatch:"), "{name}: errors on stderr: {}", r.stderr);
    assert!(lines.iter().any(|l| l.starts_with(&format!("file\t{name}\t"))), "{name}: not in capture.files: {lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("invalid\t")), "{name}: invalid input reported: {lines:?}");
    assert_matches(name, &o, &lines);
    (o, lines)
}

privileged_test! {
    fn replay_iot_lan_matches_tshark() {
        let (o, lines) = check_capture("iot-lan", "iot_lan.pcap");
        // The ICMP port unreachable quotes a UDP header to port 9999 (the 20 LAN datagrams may use
        // it too): the quoted one must not count, which the oracle already says; and the SSDP reply
        // from port 3075 counts by its destination port.
        assert!(o.ports.contains_key("udp\t1900") && o.ports.contains_key("udp\t50123"), "{:?}", o.ports);
        // The LAN and the Internet hosts are told apart (default replay LAN: the private ranges).
        assert_eq!(oracle::ip_scope(&lines, "192.168.77.23").as_deref(), Some("lan"));
        assert_eq!(oracle::ip_scope(&lines, "203.0.113.10").as_deref(), Some("internet"));
    }
}

privileged_test! {
    fn replay_vlan_and_qinq_match_tshark() {
        let (o, _) = check_capture("vlan", "vlan.pcap");
        // Three and four tags are walked; five are one more than the program walks: the MACs
        // count, the IPs and the port do not. PPPoE carries IP and ports, in a tag or not.
        assert!(o.ports.contains_key("udp\t7777") && o.ports.contains_key("udp\t7778"), "{:?}", o.ports);
        assert!(!o.ports.contains_key("udp\t7779"), "the oracle counted a port behind five tags");
        assert!(o.ports.contains_key("udp\t40053") && o.ports.contains_key("tcp\t443"), "PPPoE: {:?}", o.ports);
        assert!(o.ports.contains_key("tcp\t8883") && o.ports.contains_key("udp\t5684"), "{:?}", o.ports);
    }
}

privileged_test! {
    fn replay_ipv6_extension_headers_and_fragments_match_tshark() {
        let (o, _) = check_capture("ipv6-ext", "ipv6_ext.pcap");
        for port in
            ["udp\t2001", "tcp\t2002", "udp\t2003", "udp\t2004", "udp\t2005", "tcp\t2006", "udp\t2007", "tcp\t22"]
        {
            assert!(o.ports.contains_key(port), "oracle misses {port}: {:?}", o.ports);
        }
        assert_eq!(o.ports["udp\t2005"][0], 1, "only the first IPv6 fragment carries the ports");
        assert!(!o.ports.contains_key("udp\t2008"), "seven extension headers: no port");
    }
}

privileged_test! {
    fn replay_ipv4_options_and_fragments_match_tshark() {
        let (o, _) = check_capture("ipv4-frag", "ipv4_opts_frag.pcap");
        assert_eq!(o.ports.get("udp\t3003").map(|c| c[0]), Some(1), "only the first fragment carries the ports");
        assert_eq!(
            o.ports.get("tcp\t3004").map(|c| c[0]),
            Some(1),
            "only the first fragment (sent last) carries the ports"
        );
    }
}

privileged_test! {
    fn replay_snaplen_64_matches_tshark() {
        let (o, _) = check_capture("snap64", "snaplen64.pcap");
        assert!(o.truncated_frames >= 10 && o.wire_bytes > o.captured_bytes, "{o:?}");
        assert!(!o.ips.contains_key("198.51.100.20"), "IPv4 header with options cut at 64: no IP");
        assert!(o.ports.contains_key("udp\t5004"), "6 bytes of UDP header captured: the port counts");
        assert!(!o.ports.contains_key("udp\t5000"), "2 bytes of UDP header captured: no port");
    }
}

privileged_test! {
    fn replay_snaplen_96_nanosecond_matches_tshark() {
        let (o, _) = check_capture("snap96", "snaplen96.pcap");
        assert!(o.truncated_frames >= 10, "{o:?}");
        assert!(o.ips.contains_key("198.51.100.21") && o.ports.contains_key("tcp\t5003"), "{o:?}");
    }
}

privileged_test! {
    fn replay_pcapng_two_interfaces_matches_tshark() {
        // Interface 0 counts microseconds, interface 1 nanoseconds: a reader that took either
        // resolution for both would get first_ts/last_ts (and the order of the frames) wrong.
        let (o, lines) = check_capture("pcapng", "two_interfaces.pcapng");
        assert_eq!(o.packets, 24);
        assert!(lines.iter().any(|l| l == "file\ttwo_interfaces.pcapng\tpcapng\t24\t0"), "{lines:?}");
        assert_ne!(o.last_ts_ns.unwrap() % 1000, 0, "the last frame (interface 1) has nanoseconds");
    }
}

privileged_test! {
    fn replay_nanosecond_pcap_matches_tshark() {
        let (o, lines) = check_capture("nsec", "nanosecond.pcap");
        let t = oracle::capture_totals(&lines);
        // 333 ns apart: microsecond rounding would show in the span.
        let span = t.last_ts.unwrap() - t.first_ts.unwrap();
        assert!((span - 11.0 * 333e-9).abs() < 5e-7, "span {span} s, expected {} s", 11.0 * 333e-9);
        assert_eq!(o.packets, 12);
    }
}

privileged_test! {
    fn replay_big_endian_pcap_matches_tshark() {
        check_capture("be", "big_endian.pcap");
    }
}

privileged_test! {
    fn replay_time_going_backwards_reports_min_and_max() {
        let (_, lines) = check_capture("time", "time_travel.pcap");
        let t = oracle::capture_totals(&lines);
        // make_captures.py: 2001-09-09 .. 2030-03-17, neither the first nor the last frame.
        assert!((t.first_ts.unwrap() - 1_000_000_000.250_006).abs() < 2e-6, "first_ts {:?}", t.first_ts);
        assert!((t.last_ts.unwrap() - 1_900_000_000.250_002).abs() < 2e-6, "last_ts {:?}", t.last_ts);
    }
}

privileged_test! {
    fn replay_frame_longer_than_64k_matches_tshark() {
        let (o, _) = check_capture("gro", "gro.pcap");
        assert_eq!(o.macs["80:9f:9b:45:a3:28"][3], 70_000, "the GRO frame counts at its full length");
        assert_eq!(o.wire_bytes, 54 + 70_000 + 68_000 + 54);
    }
}

privileged_test! {
    fn replay_linux_cooked_capture_is_skipped_not_invalid() {
        let c = Captures::new("sll");
        let o = c.oracle(&["sll.pcap"]);
        let (r, lines) = c.replay(&["sll.pcap"]);
        assert_eq!(r.code, 0, "an unsupported link type is skipped, not invalid: {}", r.stderr);
        assert!(lines.contains(&"linktype\t113\t5".to_owned()), "{lines:?}");
        let t = oracle::capture_totals(&lines);
        assert_eq!((t.packets, t.skipped_frames, t.wire_bytes), (5, 5, o.wire_bytes), "{lines:?}");
        for s in ["mac", "ip", "port"] {
            assert!(oracle::section(&lines, s).is_empty(), "skipped frames must not be counted: {lines:?}");
        }
        assert!(!lines.iter().any(|l| l.starts_with("invalid\t")), "{lines:?}");
    }
}

privileged_test! {
    fn replay_several_files_sum_up() {
        let c = Captures::new("several");
        let names = [
            "iot_lan.pcap",
            "vlan.pcap",
            "two_interfaces.pcapng",
            "sll.pcap",
            "time_travel.pcap",
            "gro.pcap",
            "big_endian.pcap",
        ];
        let o = c.oracle(&names);
        let (r, lines) = c.replay(&names);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(lines.iter().filter(|l| l.starts_with("file\t")).count(), names.len(), "{lines:?}");
        assert_matches("several files", &o, &lines);
    }
}

/// A malformed file: exit 1, the error on stderr with the file and the offset, in the report's
/// `invalid` and counted in its `files[].errors`, and what could be read counted exactly as the
/// clean capture with those frames (malformed.txt, written by make_captures.py, says which).
fn check_malformed(test: &str, name: &str) {
    let c = Captures::new(test);
    let (_, offset, clean) = oracle::malformed(c.0.path())
        .into_iter()
        .find(|m| m.0 == name)
        .unwrap_or_else(|| panic!("{name} not in malformed.txt"));
    let (r, lines) = c.replay(&[name]);
    let what = format!("{name} (invalid at byte {offset})");
    let mut problems = Vec::new();
    if r.code != 1 {
        problems.push(format!("{what}: exit code {}, expected 1", r.code));
    }
    let prefix = format!("iotwatch: {name}: at byte {offset}: ");
    if !r.stderr.lines().any(|l| l.starts_with(&prefix)) {
        problems.push(format!("{what}: no line starting {prefix:?} on stderr: {:?}", r.stderr));
    }
    let invalid: Vec<_> = lines.iter().filter(|l| l.starts_with("invalid\t")).collect();
    if !invalid.iter().any(|l| l.starts_with(&format!("invalid\t{name}\t{offset}\t"))) {
        problems.push(format!("{what}: not in capture.invalid: {invalid:?}"));
    }
    let errors = lines
        .iter()
        .find(|l| l.starts_with(&format!("file\t{name}\t")))
        .and_then(|l| l.split('\t').nth(4))
        .and_then(|e| e.parse::<u64>().ok());
    if errors.unwrap_or(0) == 0 {
        problems.push(format!("{what}: capture.files[].errors is {errors:?}, expected at least 1"));
    }
    match clean {
        Some(clean) => {
            let o = c.oracle(&[&clean]);
            // Invalid records are not frames: what was read equals the clean capture exactly.
            let d = differences(&what, &o, &lines);
            problems.extend(d);
        }
        None => {
            let t = oracle::capture_totals(&lines);
            if t.packets != 0 || !oracle::section(&lines, "mac").is_empty() {
                problems.push(format!("{what}: frames reported from a file with none: {lines:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

privileged_test! {
    fn replay_file_cut_mid_record() {
        check_malformed("cut", "bad_truncated.pcap");
    }
}

privileged_test! {
    fn replay_record_with_huge_incl_len() {
        check_malformed("huge", "bad_huge_incl.pcap");
    }
}

privileged_test! {
    /// Fails against the replay of 2026-11-25 (a bug): the zero-length record is put in `capture.invalid`
    /// but not reported on stderr and not counted in `files[].errors` (replay.rs, Replayer::feed).
    fn replay_zero_length_record() {
        check_malformed("zero", "bad_zero_len.pcap");
    }
}

privileged_test! {
    fn replay_pcapng_with_a_corrupt_block() {
        check_malformed("block", "bad_block.pcapng");
    }
}

privileged_test! {
    fn replay_not_a_capture_file() {
        check_malformed("text", "not_a_capture.txt");
    }
}

privileged_test! {
    fn replay_empty_file() {
        check_malformed("empty", "empty.pcap");
    }
}

privileged_test! {
    fn replay_not_a_capture_next_to_a_good_file() {
        let c = Captures::new("not-capture");
        let (r, lines) = c.replay(&["not_a_capture.txt", "iot_lan.pcap", "empty.pcap"]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        for bad in ["not_a_capture.txt", "empty.pcap"] {
            let prefix = format!("iotwatch: {bad}: at byte 0: ");
            assert!(r.stderr.lines().any(|l| l.starts_with(&prefix)), "no {prefix:?} on stderr: {}", r.stderr);
        }
        assert_eq!(lines.iter().filter(|l| l.starts_with("invalid\t")).count(), 2, "{lines:?}");
        // The good file between them is reported in full.
        assert_matches("iot_lan.pcap next to invalid files", &c.oracle(&["iot_lan.pcap"]), &lines);
    }
}

privileged_test! {
    fn replay_text_format_names_every_device_and_totals() {
        let c = Captures::new("text");
        let (_, lines) = c.replay(&["iot_lan.pcap"]);
        let devices: Vec<String> =
            oracle::section(&lines, "device").iter().map(|l| l["device\t".len()..].to_owned()).collect();
        assert!(devices.len() >= 5, "{lines:?}");
        let r = oracle::replay(c.0.path(), &["--format", "text", "iot_lan.pcap"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        for mac in &devices {
            assert!(r.stdout.contains(mac.as_str()), "device {mac} missing from the text report:\n{}", r.stdout);
        }
        assert!(r.stdout.lines().any(|l| l.starts_with("TOTAL")), "no TOTAL line:\n{}", r.stdout);
        assert!(r.stdout.contains("80:9f:9b:45:a3:28"), "{}", r.stdout);
    }
}
