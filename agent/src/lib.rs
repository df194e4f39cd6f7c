//! The `iotwatch` binary's library: the shell around the pure core (`iotwatch-core`). It loads
//! and attaches the kernel programs (`agent-ebpf`, contract in `agent-common`), moves what they
//! count and sample into the core, and serves the results.
//!
//! - [`kernel`]: load, attach, read the maps and the sample ring, BPF_PROG_TEST_RUN.
//! - [`pipeline`]: one pipeline, live and replay: kernel maps and samples into core state.
//! - [`output`]: Prometheus metrics, the web server, the event log.
//! - [`cmd`]: the commands, `run` and `replay`.

pub mod cli;
pub mod cmd;
pub mod kernel;
pub mod output;
pub mod pipeline;
