//! The event log: NDJSON, one event per line, to a file (`--events PATH`) or stdout (`-`).
//!
//! - A file is size-bounded: past `max_bytes` it is renamed to `PATH.1` (replacing the previous
//!   one) and started anew, so at most twice `max_bytes` is on disk. It is created with mode
//!   0600 (events hold names, addresses and URLs of the household).
//! - Live, lines go to a writer thread through a bounded queue (lines and bytes): the pipeline,
//!   which runs under the agent's lock, never waits on the disk; a line that finds the queue
//!   full is dropped and counted. Replay writes in its own thread and waits for the disk:
//!   nothing is lost and the lines keep the order of the events.
//! - Only whole lines reach the file: lines are written in batches, and a write that fails part
//!   way (a full file system) is cut back to the last whole line; should that fail too, the next
//!   write starts on a fresh line. Lines lost are counted; the first error of a run of them is
//!   logged, and the recovery with the count.
//! - A file moved or removed (logrotate) is noticed before each batch (its path names another
//!   inode, or none) and a new one is created at the path; [`EventLog::reopen`] (SIGHUP) does
//!   the same whatever the path holds.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    thread::JoinHandle,
};

use anyhow::Context as _;
use iotwatch_core::{detect::Finding, events::Event};
use serde::Serialize;

/// Lines the live queue holds at most, and their bytes (an event of compressed DNS names can
/// reach some 170 KB: the byte bound is the one that holds memory).
pub const QUEUE_LINES: usize = 4096;
pub const QUEUE_BYTES: usize = 8 << 20;
/// A batch is written once it holds this many bytes (and whenever the queue runs dry).
const BATCH_BYTES: usize = 64 << 10;

/// How lines reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In the caller's thread, waiting for the disk (replay).
    Inline,
    /// Through a writer thread and a bounded queue (live).
    Background,
}

/// Counts shared by the pipeline's handle and the writer thread.
#[derive(Default)]
struct Stats {
    /// Lines lost to write errors (and items that could not be encoded).
    errors: AtomicU64,
    /// Lines dropped because the writer's queue was full.
    dropped: AtomicU64,
    rotations: AtomicU64,
    /// Times a new file was opened at the path (moved away, removed, or asked).
    reopens: AtomicU64,
    /// A reopen asked for ([`EventLog::reopen`]), done before the next batch.
    reopen: AtomicBool,
    /// The log goes to stdout and its reader went away (`| head`).
    closed_pipe: AtomicBool,
}

enum Target {
    Stdout,
    File {
        path: PathBuf,
        file: File,
        /// Device and inode of the open file, to notice when the path names another.
        id: (u64, u64),
        /// The file's length as last seen or written.
        len: u64,
    },
}

fn open_file(path: &Path) -> io::Result<(File, (u64, u64), u64)> {
    let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let m = file.metadata()?;
    Ok((file, (m.dev(), m.ino()), m.len()))
}

/// Writes whole lines to the target; owned by the writer thread (live) or the log (replay).
struct Writer {
    target: Target,
    max_bytes: u64,
    stats: Arc<Stats>,
    /// Lines waiting to be written, and where each ends.
    pending: Vec<u8>,
    ends: Vec<usize>,
    /// A write failed part way and the torn line could not be cut off: the next write starts
    /// with a newline, so that no event is glued to it.
    torn: bool,
    /// Lines lost since the first error of the current run of errors (None: writing fine).
    failing: Option<u64>,
    /// A rename or reopen failed and was logged (logged again only after it worked).
    rename_failing: bool,
    reopen_failing: bool,
}

impl Writer {
    fn push(&mut self, line: &[u8]) {
        self.pending.extend_from_slice(line);
        self.ends.push(self.pending.len());
        if self.pending.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Writes the pending lines: after following the path (rotated away, SIGHUP), in pieces
    /// that keep the file under its bound.
    fn flush(&mut self) {
        if self.ends.is_empty() {
            return;
        }
        self.follow_path();
        let pending = std::mem::take(&mut self.pending);
        let ends = std::mem::take(&mut self.ends);
        let (mut start, mut lines) = (0, 0);
        for (i, &end) in ends.iter().enumerate() {
            let line_start = if i == 0 { 0 } else { ends[i - 1] };
            let len = match &self.target {
                Target::File { len, .. } => *len,
                Target::Stdout => 0,
            };
            let before = len + (line_start - start) as u64;
            if matches!(self.target, Target::File { .. })
                && before > 0
                && before + (end - line_start) as u64 > self.max_bytes
            {
                self.write_lines(&pending[start..line_start], lines);
                self.rotate();
                (start, lines) = (line_start, 0);
            }
            lines += 1;
        }
        self.write_lines(&pending[start..], lines);
        // Keep the buffer's capacity, up to one batch.
        self.pending = pending;
        self.pending.clear();
        self.pending.shrink_to(BATCH_BYTES);
        self.ends = ends;
        self.ends.clear();
    }

    /// Before a batch: a new file at the path if asked (SIGHUP) or if the path no longer names
    /// the open file (rotated away or removed); the length as it is now (truncated by another
    /// tool, say).
    fn follow_path(&mut self) {
        let Target::File { path, file, id, len } = &mut self.target else { return };
        let asked = self.stats.reopen.swap(false, Ordering::Relaxed);
        let moved = fs::metadata(&*path).map_or(true, |m| (m.dev(), m.ino()) != *id);
        if asked || moved {
            match open_file(path) {
                Ok((f, new_id, new_len)) => {
                    let why = if asked { "on request (SIGHUP)" } else { "its file was moved or removed" };
                    tracing::info!("event log {}: writing to a new file there, {why}", path.display());
                    (*file, *id, *len) = (f, new_id, new_len);
                    self.stats.reopens.fetch_add(1, Ordering::Relaxed);
                    self.reopen_failing = false;
                    return;
                }
                Err(e) if !self.reopen_failing => {
                    self.reopen_failing = true;
                    tracing::warn!(
                        "event log {}: cannot open a new file there ({e}); writing on to the old one",
                        path.display()
                    );
                }
                Err(_) => {}
            }
        }
        if let Ok(m) = file.metadata() {
            *len = m.len();
        }
    }

    /// The file to `PATH.1`, a new one at `PATH`. A failure is logged (once until a rotation
    /// works) and the lines go on to the current file.
    fn rotate(&mut self) {
        let Target::File { path, file, id, len } = &mut self.target else { return };
        let mut old = path.clone().into_os_string();
        old.push(".1");
        match fs::rename(&*path, &old).and_then(|()| open_file(path)) {
            Ok((f, new_id, new_len)) => {
                (*file, *id, *len) = (f, new_id, new_len);
                self.stats.rotations.fetch_add(1, Ordering::Relaxed);
                self.rename_failing = false;
            }
            Err(e) if !self.rename_failing => {
                self.rename_failing = true;
                tracing::warn!("rotating the event log {}: {e}; it grows past its bound", path.display());
            }
            Err(_) => {}
        }
    }

    /// Writes `lines` whole lines, `buf`. On an error, the part of a line written is cut off
    /// (or, if it cannot be, the next write starts on a fresh line), and the lines not written
    /// are counted.
    fn write_lines(&mut self, buf: &[u8], lines: u64) {
        if buf.is_empty() {
            return;
        }
        let fresh_line;
        let data = if self.torn {
            fresh_line = [b"\n".as_slice(), buf].concat();
            fresh_line.as_slice()
        } else {
            buf
        };
        let prefix = usize::from(self.torn);
        let (mut done, mut error) = (0, None);
        while done < data.len() {
            let result = match &mut self.target {
                Target::Stdout => io::stdout().lock().write(&data[done..]),
                Target::File { file, .. } => file.write(&data[done..]),
            };
            match result {
                Ok(0) => {
                    error = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Target::Stdout = self.target {
            let _ = io::stdout().lock().flush();
        }
        // Whole lines written: up to the last newline written (the fresh-line newline not one).
        let whole = data[..done].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let written_lines = data[prefix.min(whole)..whole].iter().filter(|&&b| b == b'\n').count() as u64;
        if whole > 0 {
            self.torn = false;
        }
        if done > whole {
            // A line written in part: cut it off where the file allows it.
            self.torn = match &mut self.target {
                Target::File { file, len, .. } => file.set_len(*len + whole as u64).is_err(),
                Target::Stdout => true,
            };
        }
        if let Target::File { len, .. } = &mut self.target {
            *len += if self.torn { done } else { whole } as u64;
        }
        let lost = lines - written_lines.min(lines);
        match error {
            None => {
                if let Some(lost) = self.failing.take() {
                    tracing::info!("{}: written again; {lost} line(s) were lost", self.name());
                }
            }
            Some(e) if e.kind() == io::ErrorKind::BrokenPipe && matches!(self.target, Target::Stdout) => {
                // The reader stopped reading: not the disk's fault, and nothing to tell it.
                self.stats.errors.fetch_add(lost, Ordering::Relaxed);
                if !self.stats.closed_pipe.swap(true, Ordering::Relaxed) {
                    tracing::debug!("the event log's reader (stdout) went away");
                }
            }
            Some(e) => {
                self.stats.errors.fetch_add(lost, Ordering::Relaxed);
                match &mut self.failing {
                    Some(n) => *n += lost,
                    None => {
                        self.failing = Some(lost);
                        tracing::warn!(
                            "{}: {e}; events are lost until it can be written again \
                             (counted in iotwatch_event_log_errors_total)",
                            self.name()
                        );
                    }
                }
            }
        }
    }

    fn name(&self) -> String {
        match &self.target {
            Target::Stdout => "the event log (stdout)".to_owned(),
            Target::File { path, .. } => format!("the event log {}", path.display()),
        }
    }
}

enum Sink {
    Inline(Writer),
    Background {
        tx: Option<SyncSender<Vec<u8>>>,
        queued: Arc<AtomicUsize>,
        thread: Option<JoinHandle<()>>,
        /// Dropping lines now (logged when it starts).
        dropping: bool,
    },
}

pub struct EventLog {
    sink: Sink,
    stats: Arc<Stats>,
}

fn background(mut w: Writer, rx: Receiver<Vec<u8>>, queued: Arc<AtomicUsize>) {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(line) = next {
            queued.fetch_sub(line.len(), Ordering::Relaxed);
            w.push(&line);
            next = rx.try_recv().ok();
        }
        w.flush();
    }
    w.flush();
}

impl EventLog {
    pub fn open(spec: &str, max_bytes: u64, mode: Mode) -> anyhow::Result<Self> {
        let target = if spec == "-" {
            Target::Stdout
        } else {
            let path = PathBuf::from(spec);
            let (file, id, len) = open_file(&path).with_context(|| {
                format!("cannot open the event log {} (check the directory exists and is writable)", path.display())
            })?;
            Target::File { path, file, id, len }
        };
        let stats = Arc::new(Stats::default());
        let writer = Writer {
            target,
            max_bytes: max_bytes.max(1024),
            stats: Arc::clone(&stats),
            pending: Vec::new(),
            ends: Vec::new(),
            torn: false,
            failing: None,
            rename_failing: false,
            reopen_failing: false,
        };
        let sink = match mode {
            Mode::Inline => Sink::Inline(writer),
            Mode::Background => {
                let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_LINES);
                let queued = Arc::new(AtomicUsize::new(0));
                let q = Arc::clone(&queued);
                let thread = std::thread::Builder::new()
                    .name("event-log".to_owned())
                    .spawn(move || background(writer, rx, q))
                    .context("starting the event log's writer thread")?;
                Sink::Background { tx: Some(tx), queued, thread: Some(thread), dropping: false }
            }
        };
        Ok(Self { sink, stats })
    }

    /// Lines lost to write errors.
    pub fn errors(&self) -> u64 {
        self.stats.errors.load(Ordering::Relaxed)
    }

    /// Lines dropped because the writer fell behind (live only).
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    pub fn rotations(&self) -> u64 {
        self.stats.rotations.load(Ordering::Relaxed)
    }

    pub fn reopens(&self) -> u64 {
        self.stats.reopens.load(Ordering::Relaxed)
    }

    /// The log goes to stdout and its reader went away (`iotwatch replay --events - | head`).
    pub fn closed_pipe(&self) -> bool {
        self.stats.closed_pipe.load(Ordering::Relaxed)
    }

    /// Writes the lines held so far (replay; live, the writer thread writes whenever lines wait).
    pub fn flush(&mut self) {
        if let Sink::Inline(w) = &mut self.sink {
            w.flush();
        }
    }

    /// Opens the file at the path anew before the next lines (SIGHUP after an outside rotation).
    pub fn reopen(&self) {
        self.stats.reopen.store(true, Ordering::Relaxed);
    }

    pub fn write(&mut self, ev: &Event) {
        self.write_line(ev);
    }

    /// A finding as a line of its own, `"kind": "finding"`, when it is first raised.
    pub fn write_finding(&mut self, f: &Finding) {
        #[derive(Serialize)]
        struct Line<'a> {
            kind: &'static str,
            #[serde(flatten)]
            finding: &'a Finding,
        }
        self.write_line(&Line { kind: "finding", finding: f });
    }

    fn write_line(&mut self, item: &impl Serialize) {
        let mut line = match serde_json::to_vec(item) {
            Ok(l) => l,
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        line.push(b'\n');
        match &mut self.sink {
            Sink::Inline(w) => w.push(&line),
            Sink::Background { tx, queued, dropping, .. } => {
                let Some(tx) = tx else { return };
                let len = line.len();
                let full = queued.load(Ordering::Relaxed) + len > QUEUE_BYTES;
                let sent = if full {
                    Err(TrySendError::Full(line))
                } else {
                    queued.fetch_add(len, Ordering::Relaxed);
                    tx.try_send(line).inspect_err(|_| {
                        queued.fetch_sub(len, Ordering::Relaxed);
                    })
                };
                match sent {
                    Ok(()) => *dropping = false,
                    Err(TrySendError::Full(_)) => {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        if !*dropping {
                            *dropping = true;
                            tracing::warn!(
                                "the event log's writer falls behind (a slow or stuck disk): events are dropped \
                                 (counted in iotwatch_event_log_dropped_total)"
                            );
                        }
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Writes everything still held and, live, waits for the writer thread to finish.
    pub fn close(&mut self) {
        match &mut self.sink {
            Sink::Inline(w) => w.flush(),
            Sink::Background { tx, thread, .. } => {
                tx.take();
                if let Some(t) = thread.take()
                    && t.join().is_err()
                {
                    tracing::error!("the event log's writer thread panicked");
                }
            }
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use iotwatch_core::proto::{EventFields, flow::FlowEvent};

    use super::*;

    fn event(i: u64) -> Event {
        Event {
            id: i,
            ts: i as f64,
            kind: iotwatch_core::proto::Kind::Flow,
            src_mac: iotwatch_core::mac::Mac([2, 0, 0, 0, 0, 1]),
            src_ip: None,
            src_port: None,
            dst_mac: iotwatch_core::mac::Mac([2, 0, 0, 0, 0, 2]),
            dst_ip: None,
            dst_port: None,
            fields: EventFields::Flow(FlowEvent {
                transport: "udp",
                payload_bytes: i,
                payload_class: "binary",
                format: None,
                printable_ratio: 0.0,
            }),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iotwatch-eventlog-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The `payload_bytes` of every line, each line whole JSON.
    fn ids(text: &str) -> Vec<u64> {
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
                assert_eq!(v["kind"], "flow");
                v["payload_bytes"].as_u64().unwrap()
            })
            .collect()
    }

    #[test]
    fn lines_are_json_and_the_file_rotates_at_its_bound() {
        for mode in [Mode::Inline, Mode::Background] {
            let dir = temp_dir(&format!("rotate-{mode:?}"));
            let path = dir.join("events.ndjson");
            let mut log = EventLog::open(path.to_str().unwrap(), 2048, mode).unwrap();
            for i in 0..40 {
                log.write(&event(i));
            }
            log.close();
            let current = fs::read_to_string(&path).unwrap();
            let older = fs::read_to_string(dir.join("events.ndjson.1")).unwrap();
            let mode_bits = fs::metadata(&path).unwrap().mode() & 0o777;
            fs::remove_dir_all(&dir).unwrap();
            assert!(log.rotations() >= 1);
            assert!(current.len() <= 2048 && older.len() <= 2048);
            assert_eq!(mode_bits, 0o600, "only its owner reads the event log");
            // The newest events are all there, in order, up to the last written.
            let all = ids(&(older + &current));
            assert_eq!(all.last(), Some(&39));
            assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
            assert_eq!((log.errors(), log.dropped()), (0, 0));
        }
    }

    /// logrotate's way (rename, then the program goes on) and SIGHUP's: the next lines go to a
    /// new file at the path, none lost, none in the old file after the move.
    #[test]
    fn a_file_moved_away_or_a_reopen_asked_gives_a_new_file_at_the_path() {
        for mode in [Mode::Inline, Mode::Background] {
            let dir = temp_dir(&format!("follow-{mode:?}"));
            let path = dir.join("events.ndjson");
            let mut log = EventLog::open(path.to_str().unwrap(), 1 << 20, mode).unwrap();
            let sync = |log: &mut EventLog, path: &Path, n: usize| {
                // Live, the writer thread writes when it gets to it.
                for _ in 0..500 {
                    log.flush();
                    if fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0) >= n {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                panic!("{n} lines never reached {}", path.display());
            };
            for i in 0..3 {
                log.write(&event(i));
            }
            sync(&mut log, &path, 3);
            fs::rename(&path, dir.join("events.ndjson-20240101")).unwrap();
            for i in 3..5 {
                log.write(&event(i));
            }
            sync(&mut log, &path, 2);
            // logrotate's `create` then SIGHUP: the file it created at the path is written.
            fs::rename(&path, dir.join("events.ndjson-20240102")).unwrap();
            fs::write(&path, "").unwrap();
            log.reopen();
            for i in 5..7 {
                log.write(&event(i));
            }
            sync(&mut log, &path, 2);
            log.close();
            let read = |name: &str| ids(&fs::read_to_string(dir.join(name)).unwrap());
            assert_eq!(read("events.ndjson-20240101"), [0, 1, 2]);
            assert_eq!(read("events.ndjson-20240102"), [3, 4]);
            assert_eq!(read("events.ndjson"), [5, 6]);
            for made in ["events.ndjson-20240101", "events.ndjson-20240102"] {
                assert_eq!(fs::metadata(dir.join(made)).unwrap().mode() & 0o777, 0o600, "{made}");
            }
            assert_eq!(log.reopens(), 2, "{mode:?}");
            assert_eq!((log.errors(), log.dropped()), (0, 0));
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// /dev/full fails every write with ENOSPC: every line is counted, nothing stops.
    #[test]
    fn write_errors_are_counted_and_never_fatal() {
        let mut log = EventLog::open("/dev/full", 1 << 30, Mode::Inline).unwrap();
        for i in 0..10 {
            log.write(&event(i));
        }
        log.close();
        assert_eq!(log.errors(), 10);
    }

    /// Live, a line is written or, when the writer is behind by the queue's bound, counted as
    /// dropped; the lines written are whole and in order.
    #[test]
    fn every_line_is_written_or_counted_as_dropped() {
        let dir = temp_dir("queue");
        let path = dir.join("events.ndjson");
        let mut log = EventLog::open(path.to_str().unwrap(), 1 << 30, Mode::Background).unwrap();
        let n = QUEUE_LINES as u64 * 4;
        for i in 0..n {
            log.write(&event(i));
        }
        log.close();
        let written = ids(&fs::read_to_string(&path).unwrap());
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(written.len() as u64 + log.dropped(), n, "every line written or counted");
        assert!(written.windows(2).all(|w| w[0] < w[1]));
    }
}
