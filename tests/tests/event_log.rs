//! The event log on a full file system: a 64 KiB tmpfs, mounted in a mount namespace of the
//! test's own (nothing is mounted where the host sees it, and nothing is left mounted), filled
//! up but for a page. The writer, live (its thread) and replay's (inline), goes on, counts what
//! it could not write, and leaves only whole JSON lines, the next event never glued to a torn
//! one; once there is room again, the next events are written whole. Then `iotwatch replay
//! --events` on such a file system: it runs to the end, says so once, and counts the loss.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use iotwatch::output::event_log::{EventLog, Mode};
use iotwatch_core::{
    events::Event,
    mac::Mac,
    proto::{EventFields, Kind, flow::FlowEvent},
};
use iotwatch_tests::{agent_bin, oracle, privileged_test, temp_dir};

/// tmpfs size, and what the filler leaves free: one page.
const TMPFS: &str = "size=64k";
const FILLER: usize = 15 * 4096;

fn event(i: u64) -> Event {
    Event {
        id: i,
        ts: 1_700_000_000.0 + i as f64,
        kind: Kind::Flow,
        src_mac: Mac([2, 0, 0, 0, 0, 1]),
        src_ip: None,
        src_port: None,
        dst_mac: Mac([2, 0, 0, 0, 0, 2]),
        dst_ip: None,
        dst_port: None,
        fields: EventFields::Flow(FlowEvent {
            transport: "udp",
            payload_bytes: i,
            payload_class: "text",
            format: Some("json"),
            printable_ratio: 0.987_654_321,
        }),
    }
}

/// Every line whole JSON: the events' `payload_bytes`, in file order.
fn lines(path: &Path) -> Vec<u64> {
    let text = fs::read_to_string(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "the file ends inside a line: {text:?}");
    text.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("a line that is not whole JSON ({e}): {l:?}"));
            v["payload_bytes"].as_u64().expect("an event")
        })
        .collect()
}

/// The number of lines of an event log, each asserted to be a whole JSON event or finding.
fn whole_json_lines(text: &str) -> u64 {
    assert!(text.is_empty() || text.ends_with('\n'), "the file ends inside a line: {text:?}");
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not whole JSON ({e}): {l:?}"));
        assert!(v["kind"].is_string(), "{l}");
    }
    text.lines().count() as u64
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// Runs `f` in a thread with a mount namespace of its own, where `dir` is a 64 KiB tmpfs (the
/// writer thread the log starts inherits the namespace). The namespace, and the mount, end
/// with the thread.
fn on_small_tmpfs(dir: PathBuf, f: impl FnOnce(&Path) + Send + 'static) {
    std::thread::spawn(move || {
        let d = c(dir.to_str().expect("UTF-8 path"));
        // SAFETY: unshare and mount take valid NUL-terminated strings (or null where the kernel
        // allows it) and change only this thread's mount namespace.
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare: {}", std::io::Error::last_os_error());
            let root = c("/");
            let private = libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            assert_eq!(private, 0, "make / private: {}", std::io::Error::last_os_error());
            let (tmpfs, size) = (c("tmpfs"), c(TMPFS));
            let mounted = libc::mount(tmpfs.as_ptr(), d.as_ptr(), tmpfs.as_ptr(), 0, size.as_ptr().cast());
            assert_eq!(mounted, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        }
        f(&dir);
    })
    .join()
    .expect("the test thread");
}

/// Waits until `done` holds (the writer thread writes when it gets to it).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn full_file_system(mode: Mode) {
    let dir = temp_dir(&format!("iotwatch-eventlog-full-{mode:?}"));
    on_small_tmpfs(dir.path().to_owned(), move |dir| {
        fs::write(dir.join("fill"), vec![0u8; FILLER]).expect("fill the tmpfs");
        let path = dir.join("events.ndjson");
        let mut log = EventLog::open(path.to_str().expect("UTF-8"), 1 << 30, mode).expect("open the event log");
        // About 300 bytes each: 30 KB for a page of room.
        for i in 0..100 {
            log.write(&event(i));
        }
        log.flush();
        // The writer thread may be between a write the full disk cut short and cutting the file
        // back to its last whole line: wait for a file of whole lines that accounts for every
        // event, then check every line.
        wait_for("every line written or counted", || {
            let text = fs::read_to_string(&path).unwrap_or_default();
            text.ends_with('\n') && text.lines().count() as u64 + log.errors() == 100
        });
        let written = lines(&path);
        let lost = log.errors();
        assert!(!written.is_empty() && lost > 0, "{} written, {lost} lost: the test needs both", written.len());
        assert_eq!(
            written,
            (0..written.len() as u64).collect::<Vec<_>>(),
            "whole lines, in order, up to the first lost"
        );
        assert!(fs::metadata(&path).expect("stat").len() <= 4096, "a page of room");

        // Room again: the next events are written whole, each on a line of its own.
        fs::remove_file(dir.join("fill")).expect("free the tmpfs");
        for i in 100..120 {
            log.write(&event(i));
        }
        log.close();
        let after = lines(&path);
        assert_eq!(&after[..written.len()], written.as_slice());
        assert_eq!(after[written.len()..], (100..120).collect::<Vec<_>>());
        assert_eq!(log.errors(), lost, "nothing lost once there was room");
        assert_eq!(log.dropped(), 0);
    });
}

privileged_test! {
    fn the_live_writer_on_a_full_file_system_keeps_whole_lines() {
        full_file_system(Mode::Background);
    }

    fn the_replay_writer_on_a_full_file_system_keeps_whole_lines() {
        full_file_system(Mode::Inline);
    }

    /// The agent itself: `iotwatch replay --events` into a full tmpfs (in `unshare -m`) runs to
    /// the end with status 0, warns once, reports the lines lost, and the file holds whole lines
    /// only; with room, the same replay logs them all.
    fn replay_with_its_event_log_on_a_full_file_system() {
        let dir = temp_dir("iotwatch-eventlog-replay");
        oracle::make_captures(dir.path());
        let (bin, d) = (agent_bin(), dir.path());
        let room = oracle::replay(d, &["--format", "json", "--events", "room.ndjson", "iot_lan.pcap"]);
        assert_eq!(room.code, 0, "{}", room.stderr);
        let all = whole_json_lines(&fs::read_to_string(d.join("room.ndjson")).expect("the log"));

        let full = d.join("full");
        fs::create_dir(&full).expect("mkdir");
        let script = format!(
            "set -e; mount --make-rprivate /; mount -t tmpfs -o {TMPFS} iwt-events {full}; \
             head -c {FILLER} /dev/zero > {full}/fill; \
             code=0; {bin} replay --format json --events {full}/events.ndjson iot_lan.pcap \
               > report.json 2> stderr.txt || code=$?; \
             cp {full}/events.ndjson full.ndjson; exit $code",
            full = full.display(),
            bin = bin.display(),
        );
        let status = Command::new("unshare").args(["-m", "sh", "-c", &script]).current_dir(d).status().expect("unshare");
        let stderr = fs::read_to_string(d.join("stderr.txt")).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "{stderr}");
        let report: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(d.join("report.json")).expect("report")).expect("JSON report");
        let errors = report["agent"]["event_log_errors"].as_u64().expect("event_log_errors");
        let kept = whole_json_lines(&fs::read_to_string(d.join("full.ndjson")).expect("the full file system's log"));
        assert!(kept > 0 && errors > 0, "{kept} lines kept, {errors} lost: {stderr}");
        assert_eq!(kept + errors, all, "every line written or counted");
        assert_eq!(stderr.matches("events are lost until").count(), 1, "said once: {stderr}");
    }
}
