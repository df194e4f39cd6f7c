//! Attaching to a bridge so that every frame is counted exactly once:
//! - ingress of every port (TC by default, XDP on request): frames from devices, whether the
//!   bridge forwards them to another port or delivers them to the host;
//! - TC egress of the bridge device: frames the host itself sends into the bridge.
//!
//! Frames forwarded between ports never pass the bridge device, and frames to the host never
//! pass a port's egress, so no frame is seen twice. XDP on the bridge device itself would miss
//! forwarded frames, which is why nothing attaches there.

use std::{collections::BTreeMap, io};

use aya::{
    Ebpf,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError, qdisc_add_clsact, qdisc_detach_program},
        xdp::XdpLinkId,
    },
    util::KernelVersion,
};

use crate::kernel::{
    load::{LoadError, TC_PROGRAM, XDP_PROGRAM, program},
    netif,
    offloads::{self, Check},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// TC (tcx on kernels >= 6.6, clsact below) on every port: coexists with other TC users and
    /// keeps GRO/TSO.
    Tc,
    /// Native XDP on every port: only for drivers with native XDP; veth loses GRO/TSO with it.
    Xdp,
    /// Generic (skb-mode) XDP on every port: only on ports that receive no GRO/TSO aggregates
    /// (it sees one buffer per aggregate, without its segment count); others are refused.
    XdpSkb,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    TcIngress,
    TcEgress,
    Xdp,
}

impl Hook {
    pub const fn as_str(self) -> &'static str {
        match self {
            Hook::TcIngress => "tc_ingress",
            Hook::TcEgress => "tc_egress",
            Hook::Xdp => "xdp",
        }
    }
}

enum Link {
    Tc(SchedClassifierLinkId),
    Xdp(XdpLinkId),
}

pub struct Attacher {
    bridge: String,
    mode: AttachMode,
    /// Per interface (ports and the bridge itself): its hook, link and the interface's index. A
    /// device deleted and created again under the same name (a VM or container restart, a
    /// driver reload, hostapd restarting wlan0) has a new index and none of our programs.
    links: BTreeMap<String, (Hook, Link, u32)>,
    /// Ports not attached because the mode cannot count them exactly, with the index they had
    /// and why; checked again on every sync (the offload may have been switched off).
    refused: BTreeMap<String, (u32, offloads::Aggregates)>,
    /// Interfaces whose attach failed, tried again on every sync.
    failed: Failures,
}

/// Why an interface is not attached, as the log and the metrics say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The interface's index when it failed: a device created anew under the same name is
    /// another attempt, logged again.
    pub ifindex: u32,
    /// A label value: `xdp_busy`, `no_native_xdp`, `tc`, `xdp`, `load`, `aggregates`.
    pub reason: &'static str,
    pub message: String,
}

/// The interfaces whose attach failed. A failure is logged when it is new (another reason or
/// another device under the name), not on every retry; a success after one is logged too.
#[derive(Default)]
struct Failures(BTreeMap<String, Failure>);

impl Failures {
    /// Notes a failure; true when it is news (to be logged).
    fn note(&mut self, iface: &str, failure: Failure) -> bool {
        let news = self.0.get(iface).is_none_or(|old| (old.ifindex, old.reason) != (failure.ifindex, failure.reason));
        self.0.insert(iface.to_owned(), failure);
        news
    }

    /// The interface is attached, or gone: true when it had failed.
    fn clear(&mut self, iface: &str) -> bool {
        self.0.remove(iface).is_some()
    }

    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.0.retain(|i, _| keep(i));
    }
}

/// At start: the agent goes on when at least one port is attached, or when nothing failed (a
/// bridge without ports yet: they are attached as they join); when every port failed, it stops
/// with the first failure.
fn start_verdict<'a>(ports_attached: usize, mut failures: impl Iterator<Item = &'a str>) -> Result<(), String> {
    match failures.next() {
        Some(first) if ports_attached == 0 => Err(first.to_owned()),
        _ => Ok(()),
    }
}

/// An error and its sources, as one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let more = e.to_string();
        if !line.contains(&more) {
            line = format!("{line}: {more}");
        }
        cur = e.source();
    }
    line
}

/// The errno behind an attach error, if any.
fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        cur = e.source();
    }
    None
}

/// Why a hook could not be attached; a caller can fall back on the kind (for example from
/// native XDP to TC), and each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("reading the ports of bridge {bridge} (did it go away?)")]
    Ports { bridge: String, source: io::Error },
    #[error(
        "port {iface} already has an XDP program attached (another tool, or an iotwatch still running): \
         use `--attach tc` (the default, coexists with other programs), or remove it with `ip link set dev {iface} xdp off`"
    )]
    XdpBusy { iface: String },
    #[error("the driver of port {iface} has no native XDP: use `--attach tc` (the default) or `--attach xdp-skb`")]
    NoNativeXdp { iface: String },
    #[error("attaching TC {} to {iface} failed: the kernel needs tcx (>= 6.6) or clsact support (CONFIG_NET_CLS_BPF, CONFIG_NET_SCH_INGRESS)", hook.as_str())]
    Tc { iface: String, hook: Hook, source: ProgramError },
    #[error(
        "port {iface} refused for `--attach xdp-skb`: {}, so it receives aggregated buffers that stand for many \
         wire frames, and generic XDP sees each once, without its segment count (it would undercount): use \
         `--attach tc` (the default, reads the segment count), or switch the offload off: `{}`",
        why.what, why.fix
    )]
    Aggregates { iface: String, why: offloads::Aggregates },
    #[error("attaching XDP to {iface} failed")]
    Xdp { iface: String, source: ProgramError },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no port of bridge {bridge} could be attached: {first}")]
    NothingAttached { bridge: String, first: String },
}

impl AttachError {
    /// The reason as a metric label.
    pub const fn reason(&self) -> &'static str {
        match self {
            AttachError::Ports { .. } => "ports",
            AttachError::XdpBusy { .. } => "xdp_busy",
            AttachError::NoNativeXdp { .. } => "no_native_xdp",
            AttachError::Tc { .. } => "tc",
            AttachError::Aggregates { .. } => "aggregates",
            AttachError::Xdp { .. } => "xdp",
            AttachError::Load(_) => "load",
            AttachError::NothingAttached { .. } => "nothing_attached",
        }
    }
}

/// clsact filters (kernels below 6.6), unlike tcx and XDP links, outlive the process that added
/// them: an agent killed with SIGKILL leaves its filter, and the next one would stack a second
/// (every frame counted by both, one of them into maps nobody reads). Filters carry the program's
/// name, so ours are found by it and removed before attaching.
fn remove_stale_filters(iface: &str, attach_type: TcAttachType) {
    match qdisc_detach_program(iface, attach_type, TC_PROGRAM) {
        Ok(()) => tracing::info!(interface = iface, "removed the {TC_PROGRAM} filter an earlier agent left behind"),
        Err(TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(interface = iface, "could not look for filters an earlier agent left behind: {e}"),
    }
}

impl Attacher {
    pub fn new(bridge: &str, mode: AttachMode) -> Self {
        Self {
            bridge: bridge.to_owned(),
            mode,
            links: BTreeMap::new(),
            refused: BTreeMap::new(),
            failed: Failures::default(),
        }
    }

    /// Interfaces and hooks currently attached.
    pub fn attached(&self) -> Vec<(String, Hook)> {
        self.links.iter().map(|(i, (h, _, _))| (i.clone(), *h)).collect()
    }

    /// Ports refused because the attach mode cannot count them exactly.
    pub fn refused(&self) -> Vec<String> {
        self.refused.keys().cloned().collect()
    }

    /// Every interface not attached, and why: ports whose attach failed (and the bridge, if its
    /// egress failed), and ports refused (`aggregates`).
    pub fn failures(&self) -> Vec<(String, &'static str)> {
        let failed = self.failed.0.iter().map(|(i, f)| (i.clone(), f.reason));
        let refused = self.refused.keys().map(|i| (i.clone(), "aggregates"));
        let mut all: Vec<_> = failed.chain(refused).collect();
        all.sort();
        all
    }

    /// Egress of the bridge plus every current port. A port that fails (or is refused) is
    /// logged and left out while the others are attached; only when no port at all could be
    /// attached does it fail, with the first reason (the caller detaches what was attached).
    pub fn attach_all(&mut self, ebpf: &mut Ebpf) -> Result<(), AttachError> {
        self.sync_ports(ebpf)?;
        let ports_attached = self.links.keys().filter(|i| **i != self.bridge).count();
        let refused: Vec<String> = self
            .refused
            .iter()
            .map(|(port, (_, why))| AttachError::Aggregates { iface: port.clone(), why: why.clone() }.to_string())
            .collect();
        let failed = self.failed.0.values().map(|f| f.message.as_str());
        start_verdict(ports_attached, failed.chain(refused.iter().map(String::as_str)))
            .map_err(|first| AttachError::NothingAttached { bridge: self.bridge.clone(), first })
    }

    /// Attaches `hook` to `iface`, or notes (and logs, when it is news) why it failed.
    fn try_attach(&mut self, ebpf: &mut Ebpf, iface: &str, hook: Hook) -> bool {
        match self.attach_one(ebpf, iface, hook) {
            Ok(()) => {
                if self.failed.clear(iface) {
                    tracing::info!(interface = iface, "attached after failing before");
                }
                true
            }
            Err(e) => {
                let failure = Failure { ifindex: netif::ifindex(iface), reason: e.reason(), message: chain(&e) };
                if self.failed.note(iface, failure.clone()) {
                    tracing::warn!(
                        interface = iface,
                        reason = failure.reason,
                        "{}; the other ports are still counted, this one is tried again every poll \
                         (iotwatch_attach_failed_interfaces)",
                        failure.message
                    );
                }
                false
            }
        }
    }

    /// Whether skb-mode XDP can count `port` exactly; a port it cannot is logged (once per
    /// reason) and remembered as refused. A port whose veth peer cannot be read is attached with
    /// a warning.
    fn admit(&mut self, port: &str) -> bool {
        if self.mode != AttachMode::XdpSkb {
            return true;
        }
        let why = match offloads::check_xdp_skb(port) {
            Ok(Check::Exact) => None,
            Ok(Check::Aggregates(why)) => Some(why),
            Ok(Check::PeerUnknown(what)) => {
                tracing::warn!(
                    interface = port,
                    "{what}: if that peer has segmentation offload on, `--attach xdp-skb` undercounts this port; \
                     `--attach tc` counts it exactly"
                );
                None
            }
            Err(e) => {
                tracing::warn!(interface = port, "cannot read the offloads of {port} ({e}); attaching anyway");
                None
            }
        };
        let Some(why) = why else {
            if self.refused.remove(port).is_some() {
                tracing::info!(interface = port, "offloads now allow `--attach xdp-skb`");
            }
            return true;
        };
        let entry = (netif::ifindex(port), why);
        if self.refused.get(port) != Some(&entry) {
            let line = AttachError::Aggregates { iface: port.to_owned(), why: entry.1.clone() };
            tracing::warn!(interface = port, "{line}; the other ports are still counted");
            self.refused.insert(port.to_owned(), entry);
        }
        false
    }

    /// Attaches to ports that joined the bridge or came back under the same name (and to the
    /// bridge's egress, likewise), tries again those that failed, and forgets ports that left
    /// it; returns what changed as (interface, joined). Fails only when the ports cannot be
    /// read: one port's failure leaves the others attached.
    pub fn sync_ports(&mut self, ebpf: &mut Ebpf) -> Result<Vec<(String, bool)>, AttachError> {
        let ports = netif::bridge_ports(&self.bridge)
            .map_err(|source| AttachError::Ports { bridge: self.bridge.clone(), source })?;
        let mut changes = Vec::new();
        // Gone, or back under the same name as another device: forget the old link.
        let stale: Vec<String> = self
            .links
            .iter()
            .filter(|(i, (_, _, index))| (**i != self.bridge && !ports.contains(i)) || netif::ifindex(i) != *index)
            .map(|(i, _)| i.clone())
            .collect();
        for iface in stale {
            self.detach_one(ebpf, &iface);
            changes.push((iface, false));
        }
        if !self.links.contains_key(&self.bridge) {
            let bridge = self.bridge.clone();
            self.try_attach(ebpf, &bridge, Hook::TcEgress);
        }
        let hook = match self.mode {
            AttachMode::Tc => Hook::TcIngress,
            AttachMode::Xdp | AttachMode::XdpSkb => Hook::Xdp,
        };
        self.refused.retain(|port, _| ports.contains(port));
        let bridge = self.bridge.clone();
        self.failed.retain(|i| i == bridge || ports.iter().any(|p| p == i));
        for port in ports {
            if self.links.contains_key(&port) {
                continue;
            }
            if !self.admit(&port) {
                // Refused, not tried: its reason is the refusal now.
                self.failed.clear(&port);
                continue;
            }
            if self.try_attach(ebpf, &port, hook) {
                changes.push((port, true));
            }
        }
        Ok(changes)
    }

    fn attach_one(&mut self, ebpf: &mut Ebpf, iface: &str, hook: Hook) -> Result<(), AttachError> {
        let link = match hook {
            Hook::TcIngress | Hook::TcEgress => {
                let below_tcx = KernelVersion::current().map(|v| v < KernelVersion::new(6, 6, 0)).unwrap_or(false);
                let attach_type = if hook == Hook::TcIngress { TcAttachType::Ingress } else { TcAttachType::Egress };
                if below_tcx {
                    // clsact may exist already (ours from before, or someone's shaping): fine.
                    let _ = qdisc_add_clsact(iface);
                    remove_stale_filters(iface, attach_type);
                }
                let tc: &mut SchedClassifier = program(ebpf, TC_PROGRAM)?;
                // tcx runs its programs in order, and one that ends the chain hides every frame
                // from those after it: go first. The program returns "next", so the others still
                // run after it. (clsact, below 6.6, has no such order to ask for.)
                let options = if below_tcx {
                    TcAttachOptions::Netlink(NlOptions::default())
                } else {
                    TcAttachOptions::TcxOrder(LinkOrder::first())
                };
                let id = tc.attach_with_options(iface, attach_type, options).map_err(|source| AttachError::Tc {
                    iface: iface.to_owned(),
                    hook,
                    source,
                })?;
                Link::Tc(id)
            }
            Hook::Xdp => {
                let mode = if self.mode == AttachMode::XdpSkb { XdpMode::Skb } else { XdpMode::Driver };
                let xdp: &mut Xdp = program(ebpf, XDP_PROGRAM)?;
                match xdp.attach(iface, mode) {
                    Ok(id) => Link::Xdp(id),
                    Err(source) => {
                        let iface = iface.to_owned();
                        return Err(match os_error(&source) {
                            Some(libc::EEXIST | libc::EBUSY) => AttachError::XdpBusy { iface },
                            Some(libc::EOPNOTSUPP | libc::EINVAL) if mode == XdpMode::Driver => {
                                AttachError::NoNativeXdp { iface }
                            }
                            _ => AttachError::Xdp { iface, source },
                        });
                    }
                }
            }
        };
        tracing::info!(interface = iface, hook = hook.as_str(), "attached");
        self.links.insert(iface.to_owned(), (hook, link, netif::ifindex(iface)));
        Ok(())
    }

    fn detach_one(&mut self, ebpf: &mut Ebpf, iface: &str) {
        let Some((hook, link, _)) = self.links.remove(iface) else { return };
        // A port deleted outright took its link with it; detaching then fails harmlessly.
        let result = match link {
            Link::Tc(id) => program::<SchedClassifier>(ebpf, TC_PROGRAM).map(|p| p.detach(id)),
            Link::Xdp(id) => program::<Xdp>(ebpf, XDP_PROGRAM).map(|p| p.detach(id)),
        };
        match result {
            Ok(Ok(())) => tracing::info!(interface = iface, hook = hook.as_str(), "detached"),
            Ok(Err(e)) => tracing::debug!(interface = iface, "detach: {e} (interface probably gone)"),
            Err(e) => tracing::debug!(interface = iface, "detach: {e}"),
        }
    }

    pub fn detach_all(&mut self, ebpf: &mut Ebpf) {
        let ifaces: Vec<String> = self.links.keys().cloned().collect();
        for iface in ifaces {
            self.detach_one(ebpf, &iface);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(ifindex: u32, reason: &'static str) -> Failure {
        Failure { ifindex, reason, message: format!("{reason} on {ifindex}") }
    }

    /// A port that keeps failing the same way is logged once, not on every retry; another
    /// reason, or the device created anew, is news; a success clears it.
    #[test]
    fn a_failure_is_news_once_until_it_changes_or_clears() {
        let mut f = Failures::default();
        assert!(f.note("eth0", failure(3, "no_native_xdp")));
        assert!(!f.note("eth0", failure(3, "no_native_xdp")), "a retry that fails the same way");
        assert!(f.note("wlan0", failure(4, "xdp_busy")), "another port");
        assert!(f.note("eth0", failure(3, "xdp_busy")), "another reason");
        assert!(f.note("eth0", failure(9, "xdp_busy")), "the device created anew");
        assert!(f.clear("eth0"));
        assert!(!f.clear("eth0"));
        assert!(f.note("eth0", failure(9, "xdp_busy")), "failing again after it worked");
        f.retain(|i| i != "wlan0");
        assert_eq!(f.0.keys().collect::<Vec<_>>(), ["eth0"], "a port that left is forgotten");
    }

    /// At start: one attached port is enough to go on; a bridge with no ports yet is fine; only
    /// when every port failed does the agent stop, with the first reason.
    #[test]
    fn the_agent_starts_unless_every_port_failed() {
        assert_eq!(start_verdict(1, ["port eth0: no native XDP"].into_iter()), Ok(()));
        assert_eq!(start_verdict(0, std::iter::empty()), Ok(()));
        assert_eq!(start_verdict(0, ["first", "second"].into_iter()), Err("first".to_owned()));
    }

    #[test]
    fn reasons_are_distinct_labels() {
        let iface = || "p".to_owned();
        let errors = [
            AttachError::Ports { bridge: iface(), source: io::Error::other("x") },
            AttachError::XdpBusy { iface: iface() },
            AttachError::NoNativeXdp { iface: iface() },
            AttachError::NothingAttached { bridge: iface(), first: iface() },
        ];
        let mut reasons: Vec<_> = errors.iter().map(AttachError::reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), errors.len());
        assert!(reasons.iter().all(|r| r.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }
}
