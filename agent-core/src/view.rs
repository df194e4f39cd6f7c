//! The plain view of the agent's state that the outputs read (metrics, report): borrowed parts
//! of the pipeline, or of a test's hand-made fixtures.

use crate::{
    bounded::TableSize,
    clock::Jumps,
    detect::Detectors,
    events::EventStore,
    identity::Identities,
    ledger::Ledger,
    macbook,
    oui::Oui,
    peerdb::PeerDb,
    scope::ScopeClassifier,
    snapshot::{SampleCounts, Snapshot},
};

pub struct View<'a> {
    pub ledger: &'a Ledger,
    /// What the latest poll saw: exact per-MAC counters and the program's statistics.
    pub last: &'a Snapshot,
    pub oui: &'a Oui,
    /// ASN, organisation, country and provider of Internet peers.
    pub peers: &'a PeerDb,
    pub scopes: &'a ScopeClassifier,
    pub events: &'a EventStore,
    pub identities: &'a Identities,
    pub detectors: &'a Detectors,
    pub sample_counts: &'a SampleCounts,
    /// Event log lines lost to write errors, and dropped because its writer fell behind.
    pub event_log_errors: u64,
    pub event_log_dropped: u64,
    /// The wall clock's jumps (live).
    pub clock_jumps: Jumps,
}

impl View<'_> {
    /// Every bounded table of the agent, with its size and evictions.
    pub fn tables(&self) -> Vec<TableSize> {
        let mut t = Vec::new();
        t.extend(self.ledger.tables());
        t.extend(self.events.tables());
        t.push(self.identities.table());
        t.push(TableSize { table: macbook::TABLE, ..self.last.mac_table });
        t
    }
}
