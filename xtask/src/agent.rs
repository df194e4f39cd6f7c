//! Building and supervising the `iotwatch` agent (its CLI: `iotwatch --help`).
//! xtask does not link the agent crate: it must build before set-up installed bpf-linker.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, metrics, workspace_root};

/// The cargo target directory (CARGO_TARGET_DIR or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// `cargo build --release -p iotwatch`; returns the binary's absolute path.
pub fn build_agent() -> Result<PathBuf> {
    cmd::stream(Command::new("cargo").args(["build", "--release", "-p", "iotwatch"]).current_dir(workspace_root()))
        .context("building the agent failed (see the compiler output above); `cargo xtask setup` installs bpf-linker and rust-src")?;
    let bin = target_dir().join("release/iotwatch");
    if !bin.exists() {
        bail!("cargo built the agent but {} is missing", bin.display());
    }
    Ok(bin)
}

/// A running agent; stopped with SIGINT (then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    pub listen: String,
    stderr_log: Option<PathBuf>,
}

impl Agent {
    /// Starts `iotwatch run --bridge BR --attach MODE --web.listen-address LISTEN EXTRA...`.
    /// With `stderr_log`, the agent's stderr goes to that file (shown if it fails);
    /// otherwise it is inherited.
    pub fn spawn(
        bin: &Path,
        bridge: &str,
        attach: &str,
        listen: &str,
        extra: &[String],
        stderr_log: Option<&Path>,
    ) -> Result<Self> {
        Self::spawn_with_env(bin, bridge, attach, listen, extra, stderr_log, &[])
    }

    /// [`Agent::spawn`] with environment variables set for the agent (the lab gives it a
    /// `STATE_DIRECTORY` of its own, as systemd does, so that nothing it remembers outlives the lab).
    pub fn spawn_with_env(
        bin: &Path,
        bridge: &str,
        attach: &str,
        listen: &str,
        extra: &[String],
        stderr_log: Option<&Path>,
        env: &[(&str, &Path)],
    ) -> Result<Self> {
        let mut c = Command::new(bin);
        c.args(["run", "--bridge", bridge, "--attach", attach, "--web.listen-address", listen])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        if let Some(log) = stderr_log {
            if let Some(dir) = log.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
            c.stdout(f.try_clone()?).stderr(f);
        }
        // SIGINT if xtask dies: the agent then detaches its programs.
        cmd::supervised(&mut c, libc::SIGINT);
        let child = c.spawn().with_context(|| {
            format!("cannot start {}: build it with `cargo build --release -p iotwatch`", bin.display())
        })?;
        Ok(Self { child: Some(child), listen: listen.to_owned(), stderr_log: stderr_log.map(Path::to_path_buf) })
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The agent's resident memory now and at its peak, from /proc/PID/status.
    pub fn memory(&self) -> Result<Memory> {
        let pid = self.pid().context("the agent was already stopped")?;
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        Memory::parse(&text).with_context(|| format!("no VmRSS or VmHWM in {path}"))
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.listen)
    }

    /// The agent's captured stderr (empty when inherited).
    pub fn stderr_text(&self) -> String {
        self.stderr_log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }

    /// Fails (with the agent's stderr) if the agent has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else { bail!("the agent was already stopped") };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            bail!("the agent exited early ({status}); its stderr:\n{}", self.stderr_text());
        }
        Ok(())
    }

    /// Waits until /metrics answers.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            match metrics::http_get(&self.listen, "/metrics", Duration::from_secs(2)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > end => {
                    bail!(
                        "the agent did not answer on {} within {timeout:?}: {e:#}\nits stderr:\n{}",
                        self.metrics_url(),
                        self.stderr_text()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// SIGINT and wait (the contract: exit 0 after detaching); fails on another outcome.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        match cmd::stop(&mut child, libc::SIGINT, Duration::from_secs(15)) {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("the agent exited with {s} on SIGINT; its stderr:\n{}", self.stderr_text()),
            None => bail!(
                "the agent did not exit within 15 s of SIGINT and was killed: its programs may still be attached (`bpftool link show`)"
            ),
        }
    }
}

/// Resident memory of a process (`VmRSS`) and its peak so far (`VmHWM`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

impl Memory {
    /// From the text of /proc/PID/status, whose sizes are in kB (KiB).
    pub fn parse(status: &str) -> Option<Self> {
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
            Some(line.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
        };
        Some(Self { rss: kib("VmRSS")?, hwm: kib("VmHWM")? })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("agent: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_from_proc_status() {
        let status = "Name:\tiotwatch\nVmPeak:\t  900 kB\nVmHWM:\t   45056 kB\nVmRSS:\t   40960 kB\nThreads:\t5\n";
        assert_eq!(Memory::parse(status), Some(Memory { rss: 40 << 20, hwm: 44 << 20 }));
        assert_eq!(Memory::parse("VmRSS:\t1 kB\n"), None);
    }
}
