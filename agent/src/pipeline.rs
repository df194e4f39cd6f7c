//! The userspace pipeline shared by the live agent and replay: map reads become deltas, deltas
//! feed the ledger. Only the source of frames and the clock differ.

use crate::{
    collect::{Collector, Snapshot},
    event_log::EventLog,
    events::EventStore,
    ledger::Ledger,
    oui::Oui,
    report::Clock,
    samples::{SampleCounts, Samples},
    scope::ScopeClassifier,
};

/// What the metrics read: borrowed parts of a pipeline (or of a test's fixtures).
pub struct View<'a> {
    pub ledger: &'a Ledger,
    pub last: &'a Snapshot,
    pub oui: &'a Oui,
    pub events: &'a EventStore,
    pub sample_counts: &'a SampleCounts,
    pub event_log_errors: u64,
}

pub struct Pipeline {
    collector: Collector,
    samples: Samples,
    pub ledger: Ledger,
    pub events: EventStore,
    pub log: Option<EventLog>,
    pub scopes: ScopeClassifier,
    pub oui: Oui,
    pub clock: Clock,
    /// What the latest poll saw: exact per-MAC counters and the program's statistics.
    pub last: Snapshot,
    pub sample_counts: SampleCounts,
}

impl Pipeline {
    pub fn new(collector: Collector, samples: Samples, scopes: ScopeClassifier, oui: Oui, clock: Clock) -> Self {
        Self {
            collector,
            samples,
            ledger: Ledger::default(),
            events: EventStore::default(),
            log: None,
            scopes,
            oui,
            clock,
            last: Snapshot::default(),
            sample_counts: SampleCounts::default(),
        }
    }

    pub fn view(&self) -> View<'_> {
        View {
            ledger: &self.ledger,
            last: &self.last,
            oui: &self.oui,
            events: &self.events,
            sample_counts: &self.sample_counts,
            event_log_errors: self.log.as_ref().map_or(0, |l| l.errors),
        }
    }

    /// A descriptor that becomes readable when samples wait in the ring.
    pub fn samples_fd(&self) -> anyhow::Result<std::os::fd::OwnedFd> {
        self.samples.ready_fd()
    }

    /// Turns every waiting sample into an event.
    pub fn drain_samples(&mut self) -> usize {
        let (events, log, clock) = (&mut self.events, &mut self.log, self.clock);
        self.samples.drain(|record| {
            if let (Some(ev), Some(log)) = (events.handle(record, clock), log.as_mut()) {
                log.write(ev);
            }
        })
    }

    /// Reads the maps once; conversations idle since before `idle_before_ns` leave the map.
    pub fn poll(&mut self, idle_before_ns: Option<u64>) -> anyhow::Result<()> {
        self.drain_samples();
        self.sample_counts = self.samples.counts()?;
        let snap = self.collector.poll(idle_before_ns)?;
        for delta in &snap.deltas {
            self.ledger.apply(delta, &self.scopes);
        }
        self.last = snap;
        Ok(())
    }
}
