//! Where results go: Prometheus metrics, the web server (/metrics, /api/v1/report), the event log.

pub mod event_log;
pub mod metrics;
pub mod state;
pub mod web;
