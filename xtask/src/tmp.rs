//! Temporary directories: one helper for xtask (the VM's initramfs root) and the privileged
//! tests (captures, daemon configurations, tcpdump files, agent logs).

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, Result};

/// A new empty directory `<temp>/<prefix>-<pid>-<n>`, removed with everything in it when
/// dropped (also when a test panics). The process id and a per-process counter make the name
/// unique; a name left by an earlier process with the same id is skipped, not reused.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self> {
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("{prefix}-{pid}-{n}"));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_created_and_removed() {
        let (a, b) = (TempDir::new("iotwatch-tmp-test").unwrap(), TempDir::new("iotwatch-tmp-test").unwrap());
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir() && b.path().is_dir());
        fs::write(a.join("f"), b"x").unwrap();
        fs::create_dir(a.join("d")).unwrap();
        let p = a.path().to_path_buf();
        drop(a);
        assert!(!p.exists());
    }
}
