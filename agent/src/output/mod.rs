//! Where results go: Prometheus metrics, the web server (/metrics, /api/v1/report; TLS and basic
//! auth in web_config.rs), the event log.

pub mod event_log;
pub mod metrics;
pub mod state;
pub mod web;
pub mod web_config;
