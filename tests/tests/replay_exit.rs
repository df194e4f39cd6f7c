//! `iotwatch replay` as a command in a pipeline: its exit statuses (0 read, 1 invalid input
//! skipped, 2 the argument parser's usage error, 3 failed), a reader that goes away (`| head`),
//! and the bound on the invalid input a hostile file can make it list.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use iotwatch_tests::{agent_bin, oracle, privileged_test, temp_dir};

/// A classic pcap (little-endian, microseconds, Ethernet) of `records` records of zero length:
/// each one invalid, none fatal.
fn zero_length_records(path: &Path, records: u32) {
    let mut b = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65_535, 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0..records {
        for v in [1_700_000_000 + i, 0, 0, 60] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(path, b).expect("write the capture");
}

/// No panic and no error line: what a user sees on the terminal when `head` has had enough.
fn assert_quiet(what: &str, stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.lines().any(|l| l.starts_with("iotwatch:")),
        "{what}: stderr should be quiet: {stderr}"
    );
}

privileged_test! {
    fn replay_exit_statuses_are_distinct_from_the_usage_error() {
        let dir = temp_dir("iotwatch-replay-exit");
        xtask::mixcap::write(&dir.join("mix.pcap"), 300).expect("write the mixed capture");
        zero_length_records(&dir.join("bad.pcap"), 3);
        let ok = oracle::replay(dir.path(), &["--format", "json", "mix.pcap"]);
        assert_eq!(ok.code, 0, "{}", ok.stderr);
        let invalid = oracle::replay(dir.path(), &["--format", "json", "bad.pcap", "mix.pcap"]);
        assert_eq!(invalid.code, 1, "{}", invalid.stderr);
        let usage = oracle::replay(dir.path(), &["--no-such-flag", "mix.pcap"]);
        assert_eq!(usage.code, 2, "clap's usage error: {}", usage.stderr);
        // The replay itself fails: the event log cannot be opened.
        let failed = oracle::replay(dir.path(), &["--events", "no-such-dir/events.ndjson", "mix.pcap"]);
        assert_eq!(failed.code, 3, "{}", failed.stderr);
        assert!(failed.stderr.contains("cannot open the event log"), "{}", failed.stderr);
        assert!(failed.stdout.is_empty(), "no report after a failure: {}", failed.stdout);
    }

    /// A file of 250 invalid records: the first 100 listed (stderr and report), the rest
    /// counted, the exit status 1.
    fn replay_lists_the_first_invalid_records_and_counts_the_rest() {
        let dir = temp_dir("iotwatch-replay-bounded");
        zero_length_records(&dir.join("bad.pcap"), 250);
        let r = oracle::replay(dir.path(), &["--format", "json", "bad.pcap"]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let report: serde_json::Value = serde_json::from_str(&r.stdout).expect("a JSON report");
        let capture = &report["capture"];
        assert_eq!(capture["invalid"].as_array().map(Vec::len), Some(100), "{capture}");
        assert_eq!(capture["invalid"][0]["offset"], 24, "the first are kept: {capture}");
        assert_eq!(capture["invalid_not_listed"], 150, "{capture}");
        assert_eq!(capture["files"][0]["errors"], 250, "{capture}");
        let said = r.stderr.lines().filter(|l| l.starts_with("iotwatch: bad.pcap: at byte")).count();
        assert_eq!(said, 100, "{}", r.stderr);
        assert_eq!(r.stderr.lines().filter(|l| l.contains("invalid_not_listed")).count(), 1, "{}", r.stderr);
    }

    /// `iotwatch replay ... | head`: the reader goes away before the report (or the event log)
    /// is written; the replay ends without a panic or an error, with its status.
    fn replay_into_a_closed_pipe_ends_quietly() {
        let dir = temp_dir("iotwatch-replay-pipe");
        xtask::mixcap::write(&dir.join("mix.pcap"), 30_000).expect("write the mixed capture");
        // The report: the read end is closed before the replay writes anything.
        let mut child = Command::new(agent_bin())
            .args(["replay", "--format", "json", "mix.pcap"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start iotwatch replay");
        drop(child.stdout.take());
        let mut stderr = String::new();
        child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "report into a closed pipe: {stderr}");
        assert_quiet("report into a closed pipe", &stderr);

        // The event log on stdout, read for one line (`| head -1`): the replay stops there.
        let mut child = Command::new(agent_bin())
            .args(["replay", "--format", "json", "--events", "-", "mix.pcap"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start iotwatch replay");
        let started = Instant::now();
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("read a line");
        let event: serde_json::Value = serde_json::from_str(&first).expect("the first line is an event");
        assert!(event["kind"].is_string(), "{first}");
        // The reader is dropped here: the pipe is closed.
        let mut stderr = String::new();
        child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "--events - into a closed pipe: {stderr}");
        assert_quiet("--events - into a closed pipe", &stderr);
        assert!(started.elapsed() < Duration::from_secs(60), "the replay did not end: {:?}", started.elapsed());
    }
}
