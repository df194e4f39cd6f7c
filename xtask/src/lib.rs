//! iotwatch's orchestration: toolchain set-up, the network-namespace home lab (reused by
//! the privileged tests in `tests/`), the lab and run commands, tests and benchmarks.
//! Deliberately independent of the agent crate: it must build before set-up ran.

pub mod agent;
pub mod bench;
pub mod benchmem;
pub mod cmd;
pub mod dashboard;
pub mod deploycheck;
pub mod dhcp;
pub mod dist;
pub mod flood;
pub mod lab;
pub mod labcheck;
pub mod metrics;
pub mod mixcap;
pub mod netns;
pub mod prometheus;
pub mod run;
pub mod scenarios;
pub mod setup;
pub mod signal;
pub mod structure;
pub mod test;
pub mod tmp;
pub mod traffic;
pub mod vm;

pub use lab::{HomeLab, LabDevice, LabOptions};
pub use metrics::{Sample, parse_metrics};
pub use setup::setup;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}
