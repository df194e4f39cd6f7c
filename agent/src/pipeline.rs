//! The userspace pipeline shared by the live agent and replay: map reads become deltas, deltas
//! feed the ledger. Only the source of frames and the clock differ.

use crate::{
    collect::{Collector, Snapshot},
    ledger::Ledger,
    oui::Oui,
    scope::ScopeClassifier,
};

pub struct Pipeline {
    collector: Collector,
    pub ledger: Ledger,
    pub scopes: ScopeClassifier,
    pub oui: Oui,
    /// What the latest poll saw: exact per-MAC counters and the program's statistics.
    pub last: Snapshot,
}

impl Pipeline {
    pub fn new(collector: Collector, scopes: ScopeClassifier, oui: Oui) -> Self {
        Self { collector, ledger: Ledger::default(), scopes, oui, last: Snapshot::default() }
    }

    /// Reads the maps once; conversations idle since before `idle_before_ns` leave the map.
    pub fn poll(&mut self, idle_before_ns: Option<u64>) -> anyhow::Result<()> {
        let snap = self.collector.poll(idle_before_ns)?;
        for delta in &snap.deltas {
            self.ledger.apply(delta, &self.scopes);
        }
        self.last = snap;
        Ok(())
    }
}
