//! Helpers for the privileged tests: the skip-or-fail gate, frame builders, metrics scraping.

pub mod capture;
pub mod frames;
pub mod oracle;

use std::path::PathBuf;

/// The agent binary under test: `cargo xtask test` builds it and passes its path.
pub fn agent_bin() -> PathBuf {
    let p = std::env::var_os("IOTWATCH_BIN")
        .map_or_else(|| xtask::workspace_root().join("target/release/iotwatch"), PathBuf::from);
    assert!(p.exists(), "{} missing: run the privileged tests through `cargo xtask test`", p.display());
    p
}

/// Privileged tests need root (BPF, netns). Outside CI they skip with a reason; in CI
/// (`CI=true`) a skip would hide a broken set-up, so they fail instead.
#[must_use]
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let reason = if !root {
        Some("needs root (BPF and network namespaces)")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("kernel without BTF")
    } else {
        None
    };
    match reason {
        None => true,
        Some(r) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{test}: cannot run in CI: {r}"),
        Some(r) => {
            eprintln!("SKIP {test}: {r}");
            false
        }
    }
}
