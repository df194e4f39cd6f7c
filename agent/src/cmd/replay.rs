//! `iotwatch replay FILE...`: captures through the same eBPF program (BPF_PROG_TEST_RUN) and the
//! same userspace pipeline as live traffic, with the capture's timestamps as the clock.
//!
//! How each frame reaches the program honestly:
//! - Ethernet frames go to replay's XDP program, in batches of as many as fit in one test run's
//!   data (up to 32), each with its original length and capture time
//!   ([`agent_common::ReplayBatch`]); a frame's data is at most [`MAX_REPLAY_FRAME`] bytes of
//!   it, enough for every header. The program shares the live programs' parser and accounting
//!   (one `account` function) and takes every frame, where a socket buffer refuses some (an IP
//!   ethertype with less than an IP header behind it, or over 64 KiB). A test run costs about
//!   1.3 us, ten times what the program does with a frame, hence the batches. Only replay's two
//!   programs are loaded and verified.
//! - Test-run workers, each pinned to its CPU (one per CPU but the one the replay's own thread
//!   keeps busy), run the batches; all frames of one source MAC run on one worker in capture
//!   order (`kernel::workers` says why that gives the result of one worker). At every barrier
//!   the sample records are handed on in frame order.
//! - Every quarter of the conversation map's capacity in frames the maps are read (each read
//!   costs two system calls per entry) and conversations idle for
//!   `--bpf.conversation-idle` of capture time leave them, as they do live; should the
//!   conversation map pass half its capacity all the same, it is emptied. So nothing is lost
//!   to the LRU map, memory stays flat, and a conversation's first packets are sampled once, as
//!   live. Between two reads, barriers come often enough that the ring never holds more than
//!   it can of records of the largest size, so no sample is lost to a full ring; at a barrier
//!   the records before the previous one are handed on while the workers go on.

use std::{
    io::{IsTerminal as _, Write as _},
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::sample::Sample;
use anyhow::Context as _;
use iotwatch_core::{
    capture::{self, CaptureError, Format, Packet, linktype},
    clock::Clock,
    report::{Capture, CaptureFile, InvalidInput, MAX_INVALID_LISTED, Report},
    scope::ScopeClassifier,
    text,
};

use crate::{
    cli::{ReplayArgs, ReportFormat},
    kernel::{
        collect::Collector,
        ring::{Record, RingView},
        test_run::MAX_REPLAY_FRAME,
        workers::{self, Frame, Pool},
    },
    pipeline::{self, Pipeline},
};

/// The LAN when the user names none: replaying a capture, the bridge's subnets are unknown, so
/// the private and unique-local ranges stand in for them (said in the report's `lan_prefixes`).
pub const DEFAULT_REPLAY_LAN: [&str; 4] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

/// The outcome: the report, and whether any input was invalid (the exit code says so).
pub struct Outcome {
    pub report: Report,
    pub invalid: bool,
    /// The event log went to stdout and its reader went away: the replay stopped there.
    pub stdout_closed: bool,
}

/// Exit statuses of `iotwatch replay`, apart from the argument parser's usage error (2).
pub mod exit {
    /// Every frame was read.
    pub const OK: u8 = 0;
    /// Invalid input was skipped (said on stderr and in the report's `capture.invalid`).
    pub const INVALID_INPUT: u8 = 1;
    /// The replay itself failed (the programs did not load, a worker failed...): no report.
    pub const FAILED: u8 = 3;
}

/// `iotwatch replay`: runs the replay and writes the report. A reader that goes away before
/// the end (`| head`) ends it quietly, with the status of what was read.
pub fn main(args: &ReplayArgs) -> ExitCode {
    let start = Instant::now();
    let outcome = match run(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("iotwatch: {e:#}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = ExitCode::from(if outcome.invalid { exit::INVALID_INPUT } else { exit::OK });
    if outcome.stdout_closed {
        return code;
    }
    if args.stats {
        let frames = outcome.report.capture.as_ref().map_or(0, |c| c.packets);
        let secs = start.elapsed().as_secs_f64();
        eprintln!("replayed {frames} frames in {secs:.3} s: {:.0} frames/s", frames as f64 / secs);
    }
    let format =
        args.format.unwrap_or(if std::io::stdout().is_terminal() { ReportFormat::Text } else { ReportFormat::Json });
    let text = match format {
        ReportFormat::Text => text::render(&outcome.report),
        ReportFormat::Json => match serde_json::to_string_pretty(&outcome.report) {
            Ok(j) => j + "\n",
            Err(e) => {
                eprintln!("iotwatch: encoding the report: {e}");
                return ExitCode::from(exit::FAILED);
            }
        },
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("iotwatch: writing the report: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}

struct Replayer {
    pool: Pool,
    view: Arc<RingView>,
    pipeline: Pipeline,
    collector: Collector,
    capture: Capture,
    /// Frames handed to the workers so far.
    seq: u64,
    since_poll: u64,
    since_barrier: u64,
    /// Frames between barriers at most: as many records of the largest size as the ring holds.
    barrier_every: u64,
    /// The latest capture time seen (captures may go backwards: the clock never does).
    clock_ns: u64,
    idle_ns: u64,
    capacity: u64,
    /// Positions of records handed on whose space is not given back yet.
    handled: std::collections::BTreeSet<u64>,
    /// Records no worker claimed (should never happen): handed on in ring order, said once.
    unclaimed_warned: bool,
    timing: Timing,
}

/// Where the replay's own thread spent its time besides reading (`--log.level debug`).
#[derive(Default, Debug)]
struct Timing {
    barriers: u64,
    /// Waiting for the workers to finish what they were given.
    waiting: Duration,
    polling: Duration,
}

impl Replayer {
    /// Replays one record; `Ok(Some(message))` when the record itself is invalid.
    fn feed(&mut self, p: Packet) -> anyhow::Result<Option<&'static str>> {
        if p.data.is_empty() {
            return Ok(Some("zero-length record"));
        }
        let c = &mut self.capture;
        c.packets += 1;
        c.wire_bytes += u64::from(p.orig_len.max(p.data.len() as u32));
        c.captured_bytes += p.data.len() as u64;
        if (p.data.len() as u64) < u64::from(p.orig_len) {
            c.truncated_frames += 1;
        }
        if p.ts_ns != 0 {
            let ts = p.ts_ns as f64 / 1e9;
            c.first_ts = Some(c.first_ts.map_or(ts, |f| f.min(ts)));
            c.last_ts = Some(c.last_ts.map_or(ts, |l| l.max(ts)));
        }
        if p.linktype != linktype::ETHERNET || p.data.len() < 14 {
            c.skipped_frames += 1;
            let key = if p.linktype == linktype::ETHERNET {
                "1 (shorter than an Ethernet header)".to_owned()
            } else {
                p.linktype.to_string()
            };
            *c.skipped_link_types.entry(key).or_default() += 1;
            return Ok(None);
        }
        let wire_len = p.orig_len.max(p.data.len() as u32);
        let data = &p.data[..p.data.len().min(MAX_REPLAY_FRAME)];
        self.pool.push(&Frame { seq: self.seq, offset: p.offset, ts_ns: p.ts_ns, wire_len, data })?;
        self.seq += 1;
        self.clock_ns = self.clock_ns.max(p.ts_ns);
        self.since_poll += 1;
        self.since_barrier += 1;
        // At most half full after a poll, plus a quarter of new entries: never full.
        if self.since_poll >= (self.capacity / 4).max(1) {
            self.poll()?;
        } else if self.since_barrier >= self.barrier_every {
            self.barrier()?;
        }
        Ok(None)
    }

    /// A barrier in the stream of frames, so the ring never fills: the records of the frames
    /// before the previous barrier go to the pipeline and give their space back, while the
    /// workers go on. The ring holds at most three intervals' records: the one handed on,
    /// the one before this barrier, and the one after it.
    fn barrier(&mut self) -> anyhow::Result<()> {
        self.since_barrier = 0;
        self.pool.mark()?;
        if self.pool.outstanding() > 1 {
            let waited = Instant::now();
            let claims = self.pool.collect()?;
            self.timing.waiting += waited.elapsed();
            self.take(&claims.sampled, claims.before_barrier);
        }
        Ok(())
    }

    /// Waits until every frame so far has run and hands every record on (before a map read,
    /// which must see exactly the frames before it, and at the end).
    fn sync(&mut self) -> anyhow::Result<()> {
        self.since_barrier = 0;
        self.pool.mark()?;
        let waited = Instant::now();
        while self.pool.outstanding() > 0 {
            let claims = self.pool.collect()?;
            self.take(&claims.sampled, claims.before_barrier);
        }
        self.timing.waiting += waited.elapsed();
        // Every worker waits: every record in the ring is handed on by now.
        self.take(&[], self.view.producer_pos());
        Ok(())
    }

    /// Hands the records at `claimed` on, in order, then gives back the ring's space up to
    /// `release` (every record before it was made by a frame whose records were handed on).
    fn take(&mut self, claimed: &[(u64, u64)], release: u64) {
        self.timing.barriers += 1;
        let view = Arc::clone(&self.view);
        for &(_, pos) in claimed {
            if let Record::Ready { data, .. } = view.record(pos) {
                self.pipeline.handle_sample(data);
                self.handled.insert(pos);
            }
        }
        // Every record before `release` was handed on; one no worker claimed (never seen) is
        // handed on all the same, in ring order.
        let mut pos = view.consumer_pos();
        while pos != release {
            pos = match view.record(pos) {
                Record::Busy => view.next_after(pos),
                Record::Discarded { next } => next,
                Record::Ready { data, next } => {
                    if !self.handled.remove(&pos) {
                        self.pipeline.handle_sample(data);
                        if !self.unclaimed_warned {
                            self.unclaimed_warned = true;
                            tracing::warn!(
                                "a sample record no replay worker claimed: events may be out of frame order"
                            );
                        }
                    }
                    next
                }
            };
        }
        view.release(release);
    }

    /// Takes the counts, ages idle conversations out by capture time, and empties the map if it
    /// is over half full all the same.
    fn poll(&mut self) -> anyhow::Result<()> {
        self.sync()?;
        self.since_poll = 0;
        let polling = Instant::now();
        self.pipeline.poll(&mut self.collector, Some(self.clock_ns.saturating_sub(self.idle_ns)))?;
        if self.pipeline.last().conversation_entries * 2 > self.capacity {
            self.pipeline.poll(&mut self.collector, Some(u64::MAX))?;
        }
        self.timing.polling += polling.elapsed();
        Ok(())
    }
}

/// Progress on stderr for long files, when stderr is a terminal.
struct Progress {
    enabled: bool,
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        Self { enabled: std::io::stderr().is_terminal(), last: Instant::now() }
    }

    fn show(&mut self, file: &Path, offset: u64, size: u64, packets: u64) {
        if self.enabled && self.last.elapsed() > Duration::from_millis(200) && size > 0 {
            self.last = Instant::now();
            let pct = (offset as f64 / size as f64 * 100.0).min(100.0);
            let filled = (pct / 5.0) as usize;
            eprint!(
                "\r{} [{}{}] {pct:5.1}% {packets} frames",
                file.display(),
                "#".repeat(filled),
                " ".repeat(20 - filled.min(20))
            );
        }
    }

    fn done(&self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
    }
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<Outcome> {
    let lan = if args.enrich.lan_prefixes.is_empty() {
        DEFAULT_REPLAY_LAN.iter().filter_map(|p| p.parse().ok()).collect()
    } else {
        args.enrich.lan_prefixes.clone()
    };
    let load = args.maps.load_options(&args.sampling, true, false);
    let ring_bytes = load.sampling.ring_bytes;
    let (pipeline, collector, ebpf) = Pipeline::open(pipeline::Options {
        load,
        scopes: ScopeClassifier::new(lan),
        enrich: args.enrich.clone(),
        events: args.sampling.events.clone(),
        events_max_bytes: args.sampling.events_max_bytes,
        clock: Clock::Epoch,
        ring_view: true,
        detect: args.detect.config(),
        state_dir: None,
    })?;
    let view = pipeline.ring_view().context("the sample ring is not mapped for replay")?;
    let mut cpus = workers::allowed_cpus();
    // The replay's own thread (reading the files, samples to events) keeps a CPU busy: by
    // default one worker for each of the others (on two CPUs, one worker ran the benchmark's
    // capture in 1.25 s and two in 1.38 s).
    let wanted = if args.workers > 0 { args.workers } else { cpus.len().saturating_sub(1).max(1) };
    cpus.truncate(wanted);
    tracing::debug!(workers = cpus.len(), ?cpus, "replay workers");
    // A record is its header (8 bytes) and at most one Sample, padded to 8.
    let largest = (size_of::<Sample>() as u64 + 8).next_multiple_of(8);
    let mut r = Replayer {
        pool: Pool::start(Arc::new(ebpf), Arc::clone(&view), &cpus)?,
        view,
        pipeline,
        collector,
        capture: Capture::default(),
        seq: 0,
        since_poll: 0,
        since_barrier: 0,
        barrier_every: (u64::from(ring_bytes) / largest / 3).max(1),
        clock_ns: 0,
        idle_ns: args.maps.conversation_idle.saturating_mul(1_000_000_000),
        capacity: u64::from(args.maps.max_conversations),
        handled: std::collections::BTreeSet::new(),
        unclaimed_warned: false,
        timing: Timing::default(),
    };
    let started = Instant::now();
    let mut progress = Progress::new();
    // Invalid input past the report's list is counted, not said line by line either.
    let mut not_shown_told = false;
    let mut invalid = |capture: &mut Capture, file: &str, e: &CaptureError, what: &str| {
        if capture.add_invalid(InvalidInput { file: file.to_owned(), offset: e.offset, message: e.message.clone() }) {
            eprintln!("iotwatch: {file}: {e}{what}");
        } else if !std::mem::replace(&mut not_shown_told, true) {
            eprintln!(
                "iotwatch: more than {MAX_INVALID_LISTED} invalid records or blocks: the rest are counted in the \
                 report (capture.files[].errors, capture.invalid_not_listed), not shown"
            );
        }
    };
    let mut stdout_closed = false;

    'files: for path in &args.files {
        let name = path.display().to_string();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut summary = CaptureFile { path: name.clone(), ..CaptureFile::default() };
        match capture::open(path) {
            Err(e) => {
                summary.errors += 1;
                invalid(&mut r.capture, &name, &e, "");
            }
            Ok(reader) => {
                summary.format = Some(match reader.format() {
                    Format::Pcap => "pcap",
                    Format::PcapNg => "pcapng",
                });
                for item in reader {
                    let error = match item {
                        Ok(packet) => {
                            let offset = packet.offset;
                            let invalid = r.feed(packet).with_context(|| name.clone())?;
                            summary.packets += u64::from(invalid.is_none());
                            progress.show(path, offset, size, summary.packets);
                            invalid.map(|m| CaptureError { offset, message: m.to_owned(), fatal: false })
                        }
                        Err(e) => Some(e),
                    };
                    if let Some(e) = error {
                        progress.done();
                        summary.errors += 1;
                        let what = if e.fatal { "; the rest of this file is skipped" } else { "; skipped" };
                        invalid(&mut r.capture, &name, &e, what);
                        if e.fatal {
                            break;
                        }
                    }
                    if r.pipeline.event_log_closed() {
                        // `--events -` into a pipe whose reader is gone: nobody reads on.
                        stdout_closed = true;
                        progress.done();
                        r.capture.files.push(summary);
                        break 'files;
                    }
                }
            }
        }
        progress.done();
        r.capture.files.push(summary);
    }
    // The end: every frame run, every conversation's last counts.
    r.sync()?;
    r.pipeline.poll(&mut r.collector, Some(u64::MAX))?;
    r.pipeline.flush_samples();
    tracing::debug!(workers = cpus.len(), seconds = ?started.elapsed(), timing = ?r.timing, "replayed");
    r.pipeline.close_event_log();
    let invalid = !r.capture.invalid.is_empty();
    let stdout_closed = stdout_closed || r.pipeline.event_log_closed();
    let report = r.pipeline.report(Some(r.capture));
    Ok(Outcome { report, invalid, stdout_closed })
}
