//! Small helpers over `ip` for network namespaces and links, and an RAII guard that removes
//! what a lab or test created, even on panic.
//!
//! Names carry a caller-given prefix of at most 5 characters (`iwt1` for tests, `iwlab` for
//! the lab), so that `{prefix}p123` stays within the kernel's 15-character interface names
//! and `sweep` can find what a killed earlier run left behind. Namespaces are named
//! `{prefix}-...`, root-namespace links `{prefix}<letter>...`. A prefix must not be another
//! prefix followed by a letter (`iwt` and `iwtx` would sweep each other).

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail, ensure};

use crate::cmd;

/// Longest prefix that keeps `{prefix}p{index}` (index <= 244) within 15 characters.
pub const MAX_PREFIX: usize = 5;

/// Checks a prefix: 1..=5 characters of `[a-z0-9]`, starting with a letter.
pub fn check_prefix(prefix: &str) -> Result<()> {
    ensure!(
        (1..=MAX_PREFIX).contains(&prefix.len())
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "name prefix {prefix:?} must be 1 to {MAX_PREFIX} characters of a-z0-9, starting with a letter"
    );
    Ok(())
}

/// Runs `ip ARGS` in the root namespace; returns stdout.
pub fn ip(args: &[&str]) -> Result<String> {
    cmd::output(&mut cmd::command("ip", args))
}

/// `ip netns exec NS ARGS...` as a Command, for the caller to run or spawn.
pub fn exec(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// Runs a command inside a namespace to completion; returns stdout.
pub fn ns_run(ns: &str, args: &[&str]) -> Result<String> {
    cmd::output(&mut exec(ns, args))
}

/// Runs `ip ARGS` inside a namespace (`ip -n NS ARGS`).
pub fn ns_ip(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Writes a sysctl under /proc/sys (key in dotted form) in a namespace, or in the root
/// namespace when `ns` is None. Through /proc rather than `sysctl(8)`, which a minimal
/// Debian lacks. Interface names with dots are not supported (ours have none).
pub fn sysctl(ns: Option<&str>, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    match ns {
        None => std::fs::write(&path, value).with_context(|| format!("cannot write {value} to {path}")),
        Some(ns) => {
            // A process in the namespace sees that namespace's net sysctls under /proc/sys.
            let script = format!("echo {value} > {path}");
            ns_run(ns, &["sh", "-c", &script]).map(drop)
        }
    }
}

/// A root-namespace link's kernel counters (/sys/class/net/NAME/statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl LinkCounters {
    pub fn read(name: &str) -> Result<Self> {
        let get = |c: &str| -> Result<u64> {
            let path = format!("/sys/class/net/{name}/statistics/{c}");
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
            text.trim().parse().with_context(|| format!("{path} holds {text:?}"))
        };
        Ok(Self {
            rx_packets: get("rx_packets")?,
            rx_bytes: get("rx_bytes")?,
            tx_packets: get("tx_packets")?,
            tx_bytes: get("tx_bytes")?,
        })
    }

    /// What was counted since `earlier`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            rx_packets: self.rx_packets - earlier.rx_packets,
            rx_bytes: self.rx_bytes - earlier.rx_bytes,
            tx_packets: self.tx_packets - earlier.tx_packets,
            tx_bytes: self.tx_bytes - earlier.tx_bytes,
        }
    }
}

/// Names of all network namespaces (`ip netns list` prints `name (id: N)`).
pub fn list_netns() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?.lines().filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect())
}

/// Names of all links in the root namespace (without the `@peer` suffix).
pub fn list_links() -> Result<Vec<String>> {
    Ok(ip(&["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect())
}

/// Whether a root-namespace link name belongs to `prefix` (see the module doc).
pub fn link_owned_by(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// Whether a namespace name belongs to `prefix`.
pub fn netns_owned_by(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('-'))
}

/// Kills the processes still running in a namespace (a traffic generator of a killed run
/// would keep it alive after `ip netns del`).
fn kill_netns_processes(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.lines().filter_map(|p| p.trim().parse::<libc::pid_t>().ok()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid was listed as a
            // process inside our own lab namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Deletes a root link; a link that vanished meanwhile (with its namespace) is no error.
fn delete_link(name: &str) -> Result<()> {
    match ip(&["link", "del", name]) {
        Err(_) if !Path::new(&format!("/sys/class/net/{name}")).exists() => Ok(()),
        r => r.map(drop),
    }
}

/// Removes the namespaces and root links a killed earlier run with this prefix left behind.
pub fn sweep(prefix: &str) -> Result<()> {
    check_prefix(prefix)?;
    let mut failed = Vec::new();
    // Links first: deleting a veth's root end removes its namespace end at once, while a
    // deleted namespace frees its devices asynchronously, which would let a stale
    // `{prefix}p1` collide with the one about to be created.
    for link in list_links()?.into_iter().filter(|l| link_owned_by(prefix, l)) {
        eprintln!("netns: removing link {link} left by an earlier run");
        if let Err(e) = delete_link(&link) {
            failed.push(format!("{e:#}"));
        }
    }
    for ns in list_netns()?.into_iter().filter(|n| netns_owned_by(prefix, n)) {
        eprintln!("netns: removing namespace {ns} left by an earlier run");
        kill_netns_processes(&ns);
        if let Err(e) = ip(&["netns", "del", &ns]) {
            failed.push(format!("{e:#}"));
        }
    }
    if !failed.is_empty() {
        bail!("could not sweep prefix {prefix}: {}; remove them by hand", failed.join("; "));
    }
    Ok(())
}

/// Owns namespaces and root-namespace links and deletes them on drop (also during a
/// panic's unwinding). Register every object right after creating it.
#[derive(Debug)]
pub struct NetGuard {
    prefix: String,
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl NetGuard {
    /// Sweeps what an earlier run with this prefix left, then starts empty.
    pub fn new(prefix: &str) -> Result<Self> {
        sweep(prefix)?;
        Ok(Self { prefix: prefix.to_owned(), namespaces: Vec::new(), links: Vec::new() })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates `{prefix}-{suffix}` with its loopback up; returns its name.
    pub fn add_netns(&mut self, suffix: &str) -> Result<String> {
        let name = format!("{}-{suffix}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ns_ip(&name, &["link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// Records a root-namespace link created by the caller, so it is deleted on drop.
    pub fn own_link(&mut self, name: &str) {
        self.links.push(name.to_owned());
    }

    /// Deletes one namespace now (kills what runs in it) and forgets it.
    pub fn remove_netns(&mut self, name: &str) -> Result<()> {
        kill_netns_processes(name);
        ip(&["netns", "del", name])?;
        self.namespaces.retain(|n| n != name);
        Ok(())
    }

    /// Deletes one root link now (if it still exists) and forgets it.
    pub fn remove_link(&mut self, name: &str) -> Result<()> {
        delete_link(name)?;
        self.links.retain(|n| n != name);
        Ok(())
    }
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        // Links first, for the reason given in `sweep`.
        for link in self.links.drain(..).rev() {
            if let Err(e) = delete_link(&link) {
                eprintln!("netns: cleanup: {e:#}");
            }
        }
        for ns in self.namespaces.drain(..).rev() {
            kill_netns_processes(&ns);
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("netns: cleanup: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_by_prefix() {
        assert!(link_owned_by("iwt1", "iwt1br"));
        assert!(link_owned_by("iwt1", "iwt1p3"));
        assert!(!link_owned_by("iwt1", "iwt12br"));
        assert!(!link_owned_by("iwt1", "iwt1"));
        assert!(!link_owned_by("iwt1", "eth0"));
        assert!(netns_owned_by("iwlab", "iwlab-d1"));
        assert!(!netns_owned_by("iwlab", "iwlabx-d1"));
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix("iwlab").is_ok());
        assert!(check_prefix("iwt1").is_ok());
        assert!(check_prefix("iwlabs").is_err());
        assert!(check_prefix("1abc").is_err());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a-b").is_err());
    }
}
