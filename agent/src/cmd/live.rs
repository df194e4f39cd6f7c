//! The running agent's state and its two locks, so that a scrape never waits behind a sample
//! flood: the maps are read under the collector's lock, which the sample ring's reader never
//! takes, and the pipeline's lock (which it does take) is held only to apply that read and
//! render. The ring is drained [`DRAIN_TURN`] records at a time, and the pipeline's lock is fair
//! (tokio's, first come first served), so a scrape waits at most one turn of the reader.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use iotwatch_core::{clock, mac::Mac, report::Report, snapshot::Snapshot};

use crate::{
    kernel::{attach::Hook, collect::Collector},
    output::{metrics::Metrics, web},
    pipeline::Pipeline,
};

/// Records handed to the pipeline per turn of the ring's reader, between which it lets the lock
/// go: a few milliseconds of parsing on a Pi, a fraction of what the 4 MiB ring holds.
pub const DRAIN_TURN: usize = 256;

/// The pipeline and the metrics it feeds, behind the lock the ring's reader takes.
pub struct Agent {
    pub pipeline: Pipeline,
    pub metrics: Metrics,
    pub attached: Vec<(String, Hook)>,
    /// Ports the attach mode refused (it could not count them exactly).
    pub refused: Vec<String>,
    /// Interfaces not attached, and why (failed or refused).
    pub failures: Vec<(String, &'static str)>,
    /// The program's `xdp_oversized` count at the last warning about it, and when that was: a
    /// warning when it grows, at most every ten minutes.
    oversized_warned: (u64, Option<Instant>),
}

impl Agent {
    pub fn new(pipeline: Pipeline, metrics: Metrics) -> Self {
        Self {
            pipeline,
            metrics,
            attached: Vec::new(),
            refused: Vec::new(),
            failures: Vec::new(),
            oversized_warned: (0, None),
        }
    }

    /// Brings the ledger and the metrics up to date with a read of the maps that took `read`.
    /// Returns the devices with series of their own, which no table may evict.
    fn apply(&mut self, snap: Snapshot, read: Duration) -> Vec<Mac> {
        self.pipeline.apply(snap);
        let p = &self.pipeline;
        self.metrics.sync(&p.view(), p.program_now_ns(), &self.attached, read.as_secs_f64());
        let pinned = self.metrics.devices_with_series();
        self.pipeline.pin_devices(&pinned);
        let p = &self.pipeline;
        self.metrics.set_refused(&self.refused);
        self.metrics.set_attach_failures(&self.failures);
        let oversized = p.view().last.stats.get(agent_common::Stat::XdpOversized as usize).copied().unwrap_or(0);
        let quiet = self.oversized_warned.1.is_some_and(|t| t.elapsed() < Duration::from_secs(600));
        if oversized > self.oversized_warned.0 && !quiet {
            tracing::warn!(
                "{} XDP buffers so far were longer than their port's MTU allows: GRO/TSO aggregates, which \
                 `--attach xdp-skb` counts as one frame each, so the counts are short \
                 (iotwatch_bpf_events_total{{event=\"xdp_oversized\"}}); use `--attach tc`, which reads the segment count",
                oversized
            );
            self.oversized_warned = (oversized, Some(Instant::now()));
        }
        pinned
    }

    /// The report of everything seen since the agent started (`/api/v1/report`).
    fn report(&self) -> Report {
        self.pipeline.report(None)
    }
}

/// The live agent: the maps' reader and the rest, each behind its own lock. Whoever needs both
/// takes the collector first ([`Live::refresh`]); nothing takes it while holding the agent.
pub struct Live {
    collector: Mutex<Collector>,
    pub agent: tokio::sync::Mutex<Agent>,
    /// Conversations idle this long leave the map.
    idle: Duration,
}

impl Live {
    pub fn new(collector: Collector, agent: Agent, idle: Duration) -> Self {
        Self { collector: Mutex::new(collector), agent: tokio::sync::Mutex::new(agent), idle }
    }

    /// Reads the maps without the agent's lock, then applies the read under it and runs `then`.
    /// Blocks: call it off the async workers.
    pub fn refresh<T>(&self, then: impl FnOnce(&mut Agent) -> T) -> anyhow::Result<T> {
        let mut collector = self.collector.lock().unwrap_or_else(PoisonError::into_inner);
        let start = Instant::now();
        let idle_before = clock::monotonic_ns().checked_sub(self.idle.as_nanos() as u64);
        let snap = collector.poll(idle_before)?;
        let read = start.elapsed();
        // The agent's lock is taken before the collector's is let go, so that reads are applied
        // in the order they were made (a later one first would set counters back).
        let mut agent = self.agent.blocking_lock();
        drop(collector);
        let pinned = agent.apply(snap, read);
        let out = then(&mut agent);
        drop(agent);
        self.collector.lock().unwrap_or_else(PoisonError::into_inner).pin_macs(&pinned);
        // A read frees a poll's worth of deltas and whatever the tables evicted: give it back
        // to the system rather than keep the high-water mark of the last flood (a few ms).
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory at the top of the heaps and in free chunks.
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(out)
    }

    /// One turn of the ring's reader: at most [`DRAIN_TURN`] samples; true when the ring may hold
    /// more. Blocks: call it off the async workers.
    fn drain_turn(&self) -> bool {
        self.agent.blocking_lock().pipeline.drain_samples(DRAIN_TURN) == DRAIN_TURN
    }
}

/// The web server's view of the live agent: every request reads the maps anew.
impl web::Source for Live {
    fn metrics(&self) -> anyhow::Result<String> {
        self.refresh(|a| a.metrics.render())
    }

    fn report_json(&self) -> anyhow::Result<web::WriteJson> {
        let report = self.refresh(|a| a.report())?;
        Ok(Box::new(move |out| serde_json::to_writer(out, &report).map_err(Into::into)))
    }
}

/// Drains the ring whenever it has samples, a turn at a time; never holds the lock while
/// waiting.
pub async fn read_samples(fd: std::os::fd::OwnedFd, live: Arc<Live>) {
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open, and refers to the same
    // file, for as long as the registration lives.
    let fd = match unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::error!("cannot wait on the sample ring ({e}); reading it every 100 ms instead");
            None
        }
    };
    loop {
        match &fd {
            Some(fd) => {
                let Ok(mut guard) = fd.readable().await else { return };
                // Clear first: the kernel wakes readers only once they have caught up, so a
                // sample that arrives after the drain below sets readiness again.
                guard.clear_ready();
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        // Turn after turn until the ring is empty (caught up); the lock is free between turns.
        loop {
            let live = Arc::clone(&live);
            match tokio::task::spawn_blocking(move || live.drain_turn()).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::error!("reading the sample ring failed: {e}");
                    break;
                }
            }
        }
    }
}
