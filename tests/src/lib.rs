//! Helpers for the privileged tests: the skip-or-fail gate and the `privileged_test!` macro,
//! the BPF_PROG_TEST_RUN harness, frame builders, tcpdump, the tshark oracle, the daemon lab.

pub mod capture;
pub mod daemons;
pub mod frames;
pub mod harness;
pub mod oracle;

use std::path::PathBuf;

pub use xtask::tmp::TempDir;

/// The agent binary under test: `cargo xtask test` builds it and passes its path.
pub fn agent_bin() -> PathBuf {
    let p = std::env::var_os("IOTWATCH_BIN")
        .map_or_else(|| xtask::workspace_root().join("target/release/iotwatch"), PathBuf::from);
    assert!(p.exists(), "{} missing: run the privileged tests through `cargo xtask test`", p.display());
    p
}

/// A temporary directory for one test, removed at its end (also on panic).
pub fn temp_dir(prefix: &str) -> TempDir {
    TempDir::new(prefix).expect("create a temporary directory")
}

/// Privileged tests need root (BPF and network namespaces; the agent does not need the kernel's
/// BTF). Outside CI they skip with a reason; in CI (`CI=true`) a skip would hide a broken
/// set-up, so they fail instead.
#[must_use]
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    let reason = "needs root (BPF and network namespaces)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run in CI: {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
    false
}

/// A test that needs root: `privileged_test! { /// doc
/// fn name() { body } }` is a `#[test]` that runs `body` when [`privileged`] lets it (named by
/// the function) and otherwise skips, or fails in CI. Doc comments and attributes before `fn`
/// are kept; several functions may follow one another in one invocation.
#[macro_export]
macro_rules! privileged_test {
    ($($(#[$attr:meta])* fn $name:ident() $body:block)+) => {
        $(
            $(#[$attr])*
            #[test]
            fn $name() {
                if !$crate::privileged(stringify!($name)) {
                    return;
                }
                $body
            }
        )+
    };
}
