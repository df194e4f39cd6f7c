//! `iotwatch replay --workers N` gives byte for byte the output of `--workers 1`: the JSON
//! report, the text report and the event log.
//!
//! Why these captures can tell a wrong partition from the right one:
//! - `many_sources.pcap` (make_captures.py): the camera sends 60 DNS queries within about 2 s,
//!   against a sample burst of 5 and a rate of 1 per second: its rate limit (one token bucket
//!   per source MAC and CPU) suppresses most of them. Were frames spread over the workers one by
//!   one (round robin) instead of by source, the camera's frames would meet two buckets and
//!   twice the burst would pass; tried on 2026-11-30 with such a partition: 886 samples sent and
//!   61 suppressed against 720 and 145, and a different event log. The flow-sample quota per
//!   conversation (its key holds the source MAC) would likewise be spent twice.
//! - The records of all workers land in one ring, interleaved: were they handed on in ring order,
//!   not frame order, the event log's order would follow the timing of the threads.
//! - Conversations pause for longer than the idle time (5 s here) and resume, and the maps are
//!   read every 256 frames (a quarter of 1,024): were the reads not at the same frame as with one
//!   worker, conversations would age out at other points and be sampled anew at others.
//! - A small ring (16 KiB: a barrier every 10 frames) makes the workers meet often.
//! - Frames a socket buffer would refuse (replay runs the XDP program, which takes them too).
//! - The mixed capture of the benchmark (xtask's mixcap), 30,000 frames of 40 devices, with a
//!   tight rate limit as well.

use std::path::Path;

use iotwatch::kernel::workers::allowed_cpus;
use iotwatch_tests::{oracle, privileged_test, temp_dir};

/// What one replay printed and logged.
#[derive(PartialEq, Eq)]
struct Output {
    json: String,
    text: String,
    events: String,
}

fn replay(dir: &Path, file: &str, workers: usize, options: &[&str]) -> Output {
    let events = format!("events-{workers}.ndjson");
    let w = workers.to_string();
    let run = |format: &str, log: bool| {
        let mut args = vec!["--workers", &w, "--format", format];
        if log {
            args.extend(["--events", &events]);
        }
        args.extend_from_slice(options);
        args.push(file);
        let r = oracle::replay(dir, &args);
        assert_eq!(r.code, 0, "replay {args:?} failed: {}", r.stderr);
        r.stdout
    };
    let json = run("json", true);
    let text = run("text", false);
    let events = std::fs::read_to_string(dir.join(&events)).expect("the event log");
    Output { json, text, events }
}

/// The first lines where two outputs differ.
fn first_differences(a: &str, b: &str) -> String {
    let (a, b): (Vec<_>, Vec<_>) = (a.lines().collect(), b.lines().collect());
    let mut out = format!("{} lines against {}\n", a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate().filter(|(_, (x, y))| x != y).take(8) {
        out += &format!("line {}:\n- {x}\n+ {y}\n", i + 1);
    }
    out
}

/// Replays `file` with one worker and with 2..=CPUs (at most 4); every output must be the same.
fn same_with_any_number_of_workers(dir: &Path, file: &str, options: &[&str]) -> Output {
    let cpus = allowed_cpus().len();
    if cpus < 2 {
        assert!(std::env::var("CI").is_err(), "only one CPU: several workers cannot be compared with one");
        eprintln!("skipped: this process may use one CPU only");
    }
    let one = replay(dir, file, 1, options);
    for n in 2..=cpus.min(4) {
        let many = replay(dir, file, n, options);
        for (what, a, b) in [
            ("JSON report", &one.json, &many.json),
            ("text report", &one.text, &many.text),
            ("event log", &one.events, &many.events),
        ] {
            assert!(
                a == b,
                "{file}: the {what} with {n} workers differs from one worker's: {}",
                first_differences(a, b)
            );
        }
    }
    one
}

fn agent_field(json: &str, field: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json).expect("the JSON report");
    v["agent"][field].as_u64().unwrap_or_else(|| panic!("agent.{field} missing"))
}

privileged_test! {
    fn replay_with_workers_matches_one_worker_on_many_sources() {
        let dir = temp_dir("iotwatch-replay-workers");
        oracle::make_captures(dir.path());
        let options = [
            "--sample.burst", "5", "--sample.rate", "1", "--bpf.conversation-idle", "5",
            "--bpf.max-conversations", "1024", "--bpf.ring-bytes", "16384",
        ];
        let one = same_with_any_number_of_workers(dir.path(), "many_sources.pcap", &options);
        // The capture does what the comparison needs: many samples, many suppressed by the rate
        // limit, events in the log. (Sixteen sources: every worker gets some; the assignment is
        // unit-tested in the agent.)
        assert!(agent_field(&one.json, "samples") > 300, "{}", one.json);
        assert!(agent_field(&one.json, "samples_suppressed") > 50, "{}", one.json);
        assert!(one.events.lines().count() > 300, "{} events", one.events.lines().count());
    }
}

privileged_test! {
    fn replay_with_workers_matches_one_worker_on_mixed_traffic() {
        let dir = temp_dir("iotwatch-replay-workers-mix");
        xtask::mixcap::write(&dir.join("mix.pcap"), 30_000).expect("write the mixed capture");
        let options = [
            "--sample.burst", "10", "--sample.rate", "2", "--bpf.max-conversations", "4096",
            "--bpf.ring-bytes", "65536",
        ];
        let one = same_with_any_number_of_workers(dir.path(), "mix.pcap", &options);
        assert!(agent_field(&one.json, "samples") > 1000, "{}", one.json);
        assert!(agent_field(&one.json, "samples_suppressed") > 100, "{}", one.json);
    }
}
