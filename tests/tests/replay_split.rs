//! HTTP requests whose head is split over TCP segments (`POST ` alone then the rest, a URI cut in
//! the middle, `P` then `OST ...`), and the same capture with every frame twice, through
//! `iotwatch replay`: one HTTP event per request with its method, URI, host and the time of its
//! first segment, and not one more for the repeated frames. tshark, reassembling TCP, is the
//! oracle for the requests (tests/captures/make_split.py makes both captures).

use std::{collections::BTreeMap, path::Path, process::Command};

use iotwatch_tests::{agent_bin, oracle::PYTHON, privileged_test, temp_dir};
use serde_json::Value;

fn replay(file: &Path) -> Value {
    let out = Command::new(agent_bin()).args(["replay", "--format", "json"]).arg(file).output().expect("replay");
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn tshark(file: &Path, args: &[&str]) -> Vec<Vec<String>> {
    let out = Command::new("tshark")
        .args(["-n", "-T", "fields", "-E", "separator=/t"])
        .args(args)
        .arg("-r")
        .arg(file)
        .output()
        .expect("tshark");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect()
}

/// A request: method, URI, host, and the time of its first segment (microseconds).
type Request = (String, String, String, u64);

fn micros(seconds: &str) -> u64 {
    (seconds.parse::<f64>().expect("a time") * 1e6).round() as u64
}

/// The requests tshark reassembles, each with the time of the first of its segments.
fn tshark_requests(file: &Path) -> Vec<Request> {
    let times: BTreeMap<String, String> = tshark(file, &["-e", "frame.number", "-e", "frame.time_epoch"])
        .into_iter()
        .map(|f| (f[0].clone(), f[1].clone()))
        .collect();
    let fields = ["-e", "http.request.method", "-e", "http.request.uri", "-e", "http.host", "-e", "tcp.segment"];
    let mut args = vec!["-Y", "http.request", "-E", "occurrence=a", "-E", "aggregator=,"];
    args.extend(fields);
    tshark(file, &args)
        .into_iter()
        .map(|f| {
            let first_segment = f[3].split(',').next().expect("segments").to_owned();
            (f[0].clone(), f[1].clone(), f[2].clone(), micros(&times[&first_segment]))
        })
        .collect()
}

fn events<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    r["events"].as_array().expect("events").iter().filter(|e| e["kind"] == kind).collect()
}

fn requests(r: &Value) -> Vec<Request> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    events(r, "http")
        .into_iter()
        .filter(|e| e.get("method").is_some())
        .map(|e| {
            (
                text(&e["method"]),
                text(&e["uri"]),
                text(&e["host"]),
                (e["ts"].as_f64().expect("ts") * 1e6).round() as u64,
            )
        })
        .collect()
}

privileged_test! {
    fn split_heads_make_one_request_each_and_repeated_frames_none() {
        let dir = temp_dir("iotwatch-split");
        let script = xtask::workspace_root().join("tests/captures/make_split.py");
        let made = Command::new(PYTHON).arg(&script).arg(dir.path()).output().expect("python3");
        assert!(made.status.success(), "make_split.py: {}", String::from_utf8_lossy(&made.stderr));

        let want = tshark_requests(&dir.join("split.pcap"));
        let uris: Vec<(&str, &str, &str)> = want.iter().map(|(m, u, h, _)| (m.as_str(), u.as_str(), h.as_str())).collect();
        assert_eq!(
            uris,
            [
                ("POST", "/api/upload", "cloud.example.com"),
                ("GET", "/firmware/cam-5.3.0.bin", "fw.example.net:8080"),
                ("POST", "/x", "h.example.org")
            ],
            "the oracle reads the three requests"
        );

        let split = replay(&dir.join("split.pcap"));
        assert_eq!(requests(&split), want, "one event per request, with the first segment's time");
        let statuses: Vec<_> = events(&split, "http").iter().filter_map(|e| e["status"].as_u64()).collect();
        assert_eq!(statuses, [200, 206, 200]);
        // The pieces became requests, not flows: the only flow is the UDP control.
        let flows = events(&split, "flow");
        assert_eq!(flows.iter().map(|e| e["transport"].as_str()).collect::<Vec<_>>(), [Some("udp")]);
        let agent = &split["agent"];
        assert_eq!(
            (
                agent["segments_joined"].as_u64(),
                agent["segments_unjoined"].as_u64(),
                agent["retransmissions"].as_u64(),
                agent["parse_errors"].as_u64()
            ),
            (Some(3), Some(0), Some(0), Some(0))
        );

        // Every frame twice: the same HTTP events, byte for byte, not twice as many.
        let doubled = replay(&dir.join("doubled.pcap"));
        assert_eq!(events(&doubled, "http"), events(&split, "http"));
        assert_eq!(requests(&doubled), want);
        // The repeats of the four segments the kernel samples by their content (the GET's first
        // piece and the three answers) are dropped in userspace; the repeats of the first packets
        // the kernel does not sample again.
        let agent = &doubled["agent"];
        assert_eq!((agent["segments_joined"].as_u64(), agent["retransmissions"].as_u64()), (Some(3), Some(4)));
        // UDP repeats cannot be told from messages sent twice: both stay.
        assert_eq!(events(&doubled, "flow").len(), 2);
    }
}
