//! The wall clock jumps under the live agent, as on a Pi without a real-time clock whose NTP
//! client synchronises after the agent started: the real agent runs under libfaketime
//! (LD_PRELOAD) with its wall clock three days back, the monotonic clock left true (the kernel
//! stamps samples with bpf_ktime_get_ns, which no preload can fake). A device sends; then the
//! faked clock is put right (the timestamp file rewritten, re-read on every call) and the
//! device sends again. The oracle is this test's own, unfaked wall clock: both events must
//! show in the report within a minute of when they were really sent, and /metrics must count
//! one jump of about three days.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use iotwatch_tests::{daemons::*, privileged_test};
use xtask::{HomeLab, agent::Agent, metrics::scrape};

const THREE_DAYS: f64 = 3.0 * 86_400.0;

/// libfaketime as Debian installs it (`cargo xtask setup`), for this machine's architecture.
fn libfaketime() -> PathBuf {
    let found = fs::read_dir("/usr/lib")
        .ok()
        .and_then(|dirs| dirs.flatten().map(|d| d.path().join("faketime/libfaketimeMT.so.1")).find(|p| p.exists()));
    found.expect("libfaketime missing: run `cargo xtask setup` (Debian package libfaketime)")
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

/// A UDP datagram of text from device 1 to the Internet host's `port` (a new conversation,
/// whose first packet becomes a `flow` event); returns the true time it was sent.
fn send(lab: &HomeLab, port: u16) -> f64 {
    let sent = now();
    let cmd = format!("echo hello from before and after > /dev/udp/203.0.113.10/{port}");
    run(lab, &lab.devices[0].ns, 5, &["bash", "-c", &cmd]);
    sent
}

/// The time of device 1's flow event to `port` in the report, once it is there.
fn event_ts(r: &Json, mac: &str, port: u16) -> Option<f64> {
    r["events"]
        .items()
        .iter()
        .find(|e| e["src_mac"].as_str() == Some(mac) && e["dst_port"].as_u64() == Some(u64::from(port)))
        .and_then(|e| e["ts"].as_f64())
}

fn metric(agent: &Agent, name: &str) -> f64 {
    sum(&scrape(&agent.listen).expect("scrape /metrics"), name, &[])
}

/// Waits (at most 10 s) for the agent's log to say `what`.
fn wait_log(log: &Path, what: &str) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(Instant::now() < end, "after 10 s the agent's log does not say {what:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

privileged_test! {
    fn event_times_follow_a_wall_clock_jump() {
        let lab = lab("iwcj", false);
        let dir = Workdir::new("iwcj");
        let stamp = dir.path("faketime");
        fs::write(&stamp, "-3d\n").expect("timestamp file");
        let lib = libfaketime();
        let env: [(&str, &Path); 4] = [
            ("LD_PRELOAD", &lib),
            ("FAKETIME_TIMESTAMP_FILE", &stamp),
            ("FAKETIME_NO_CACHE", Path::new("1")),
            ("FAKETIME_DONT_FAKE_MONOTONIC", Path::new("1")),
        ];
        let (agent, _events) = start_agent_env(&lab, &dir, 19490, &[], &env);
        let mac = lab.devices[0].mac.clone();

        let before = send(&lab, 9001);
        let r = wait_report(&agent, "the flow event to port 9001", |r| event_ts(r, &mac, 9001).is_some());
        let faked = event_ts(&r, &mac, 9001).expect("event");
        // libfaketime works on the agent: the event has the faked time, three days back.
        assert!((faked - (before - THREE_DAYS)).abs() < 60.0, "stamped {faked}, sent at {before} (3 days back?)");
        assert_eq!(metric(&agent, "iotwatch_clock_jumps_total"), 0.0);

        // NTP synchronises: the faked clock is right again.
        fs::write(&stamp, "+0\n").expect("timestamp file");
        let after = send(&lab, 9002);
        let r = wait_report(&agent, "the flow event to port 9002", |r| event_ts(r, &mac, 9002).is_some());
        let (ts1, ts2) = (event_ts(&r, &mac, 9001).expect("event"), event_ts(&r, &mac, 9002).expect("event"));
        assert!((ts1 - before).abs() < 60.0, "the event before the jump at {ts1}, sent at {before}");
        assert!((ts2 - after).abs() < 60.0, "the event after the jump at {ts2}, sent at {after}");
        for f in r["findings"].items() {
            let ts = f["ts"].as_f64().expect("ts");
            assert!((ts - now()).abs() < 600.0, "a finding with a time from before the jump: {f}");
        }
        assert_eq!(metric(&agent, "iotwatch_clock_jumps_total"), 1.0);
        let jump = metric(&agent, "iotwatch_clock_last_jump_seconds");
        assert!((jump - THREE_DAYS).abs() < 60.0, "the jump: {jump} s");
        wait_log(&dir.path("agent.log"), "NTP synchronised?");
    }
}
