//! iotwatch: per-device traffic accounting on a Linux bridge, in the kernel, for Prometheus.
//!
//! Kernel side: `agent-ebpf`; contract: `agent-common`. This crate loads and attaches the
//! programs, turns map contents into per-device totals and serves them.

pub mod attach;
pub mod bpf;
pub mod capture;
pub mod cli;
pub mod event_log;
pub mod events;
pub mod collect;
pub mod kernel_bench;
pub mod ledger;
pub mod labels;
pub mod mac;
pub mod metrics;
pub mod names;
pub mod netif;
pub mod oui;
pub mod pipeline;
pub mod proto;
pub mod replay;
pub mod report;
pub mod text;
pub mod run;
pub mod samples;
pub mod scope;
pub mod testrun;
pub mod web;
