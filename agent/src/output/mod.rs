//! Where results go: Prometheus metrics, the web server (/metrics, /api/v1/report; TLS and basic
//! auth in web_config.rs), the event log, the agent's own log (logging.rs).

pub mod event_log;
pub mod logging;
pub mod metrics;
pub mod state;
pub mod web;
pub mod web_config;
