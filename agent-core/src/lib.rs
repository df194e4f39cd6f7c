//! iotwatch's pure core: everything that is logic over bytes and counters, with no kernel, no
//! runtime and no server. The `iotwatch` binary (agent/) moves data between the kernel, this
//! core and the outputs; the fuzz targets (fuzz/) depend on this crate alone.
//!
//! - Input: [`capture`] (pcap/pcapng reader), [`proto`] (one parser per sampled protocol, typed
//!   results), [`reassembly`] (TCP heads split over segments joined, retransmissions dropped),
//!   [`events`] (ring records become events), [`snapshot`] (what a poll of the maps
//!   saw, and deltas between polls), [`macbook`] (per-MAC totals that outlive the kernel's
//!   entries, and which idle MACs to age out).
//! - State: [`ledger`] (per-device totals from conversation deltas), [`identity`] (device names
//!   with their sources), [`names`] (remote names), [`scope`], [`oui`], [`peerdb`] (ASN,
//!   organisation, country and provider of Internet peers), [`labels`] (bounded label values),
//!   [`bounded`] (every table's bounds: the least recently seen make room, counted), [`vecmap`]
//!   (the small maps each device holds), [`clock`].
//! - Findings: [`detect`] (one module per group of rules; findings deduplicated and bounded).
//! - Output models: [`view`] (the plain view every output reads), [`report`] (schema
//!   `iotwatch.report/v1`), [`text`] (the report as a table).

/// Serialises typed values (MACs, addresses' scopes, record types...) as their text, made
/// once, here at the edge: the report and the event log carry text, the code carries types.
macro_rules! serialize_as_text {
    ($($t:ty),* $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
pub(crate) use serialize_as_text;

pub mod bounded;
pub mod capture;
pub mod clock;
pub mod detect;
pub mod events;
pub mod identity;
pub mod labels;
pub mod ledger;
pub mod mac;
pub mod macbook;
pub mod names;
pub mod oui;
pub mod peerdb;
pub mod proto;
pub mod reassembly;
pub mod report;
pub mod scope;
pub mod snapshot;
pub mod text;
pub mod vecmap;
pub mod view;

#[cfg(test)]
mod jump_tests;
