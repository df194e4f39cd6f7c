//! What a port's offloads mean for generic (skb-mode) XDP.
//!
//! Generic XDP runs in `netif_receive_skb` (net/core/dev.c `do_xdp_generic`), after GRO: a GRO
//! aggregate, or a GSO buffer a veth peer passed through unsegmented, is linearised and shown to
//! the program once, with no segment count (unlike TC, which reads `gso_segs`). So skb-mode XDP
//! counts wire frames only on ports that receive no aggregates:
//! - software GRO (`rx-gro`) off on the port; LRO and hardware GRO the kernel switches off itself
//!   when generic XDP attaches (`dev_disable_lro`, `dev_disable_gro_hw` in `generic_xdp_install`),
//!   so they matter only where the driver cannot switch them off (`[fixed]`);
//! - on a veth port, segmentation offloads (`tx-*-segmentation`, `tx-gso-list`) off on its peer:
//!   veth hands the peer's GSO buffers to the port as they are.
//!
//! Read with the SIOCETHTOOL ioctl (ETHTOOL_GFEATURES and the ETH_SS_FEATURES names): a few
//! plain calls that need no capability, where the netlink ethtool crates would bring an async
//! netlink stack for three requests.

use std::{
    collections::BTreeSet,
    ffi::CStr,
    fs,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_STATS: u32 = 1;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// One feature of an interface, as `ethtool -k` shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Feature {
    pub name: String,
    /// Not switchable (`[fixed]` in `ethtool -k`).
    pub fixed: bool,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

struct Ethtool {
    sock: OwnedFd,
    ifname: String,
}

impl Ethtool {
    /// An ethtool handle on `ifname` in the calling thread's network namespace.
    fn open(ifname: &str) -> std::io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2) and nothing else owns it.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { sock, ifname: ifname.to_owned() })
    }

    /// SIOCETHTOOL with `buf` as the command buffer (its first u32 is the command).
    fn ioctl<T>(&self, buf: &mut [T]) -> std::io::Result<()> {
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: buf.as_mut_ptr().cast(), _pad: [0; 16] };
        if self.ifname.len() >= libc::IFNAMSIZ {
            return Err(std::io::Error::from_raw_os_error(libc::ENODEV));
        }
        for (d, s) in req.name.iter_mut().zip(self.ifname.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: req is a valid ifreq whose data points to a buffer the caller sized for the
        // command in it; the kernel writes no more than the sizes that buffer declares.
        let ret = unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::SIOCETHTOOL as _, &raw mut req) };
        if ret < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }

    /// The driver's name and its number of statistics.
    fn driver(&self) -> std::io::Result<(String, u32)> {
        // struct ethtool_drvinfo: cmd, five 32-byte strings, reserved2[12], then n_priv_flags,
        // n_stats, testinfo_len, eedump_len, regdump_len: 196 bytes.
        let mut buf = [0u32; 49];
        buf[0] = ETHTOOL_GDRVINFO;
        self.ioctl(&mut buf)?;
        let bytes: Vec<u8> = buf[1..9].iter().flat_map(|w| w.to_ne_bytes()).collect();
        let driver = CStr::from_bytes_until_nul(&bytes).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
        Ok((driver, buf[45]))
    }

    /// The names of string set `set` (`count` of them).
    fn strings(&self, set: u32, count: usize) -> std::io::Result<Vec<String>> {
        let mut buf = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
        buf[..3].copy_from_slice(&[ETHTOOL_GSTRINGS, set, count as u32]);
        self.ioctl(&mut buf)?;
        let bytes: Vec<u8> = buf[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        Ok(bytes
            .chunks(ETH_GSTRING_LEN)
            .map(|c| CStr::from_bytes_until_nul(c).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
            .collect())
    }

    fn set_size(&self, set: u32) -> std::io::Result<usize> {
        // struct ethtool_sset_info: cmd, reserved, sset_mask (u64), then one u32 per set asked.
        let mut buf = [0u32; 5];
        buf[0] = ETHTOOL_GSSET_INFO;
        let mask = 1u64 << set;
        buf[2..4].copy_from_slice(&[mask as u32, (mask >> 32) as u32]);
        self.ioctl(&mut buf)?;
        Ok(buf[4] as usize)
    }

    /// The features that are on.
    fn active(&self) -> std::io::Result<Vec<Feature>> {
        let names = self.strings(ETH_SS_FEATURES, self.set_size(ETH_SS_FEATURES)?)?;
        let blocks = names.len().div_ceil(32);
        // struct ethtool_gfeatures: cmd, size, then per block available, requested, active,
        // never_changed.
        let mut buf = vec![0u32; 2 + 4 * blocks];
        buf[..2].copy_from_slice(&[ETHTOOL_GFEATURES, blocks as u32]);
        self.ioctl(&mut buf)?;
        let bit = |i: usize, field: usize| buf[2 + 4 * (i / 32) + field] & (1 << (i % 32)) != 0;
        Ok(names
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bit(*i, 2))
            .map(|(i, name)| Feature { name, fixed: !bit(i, 0) })
            .collect())
    }

    /// A veth's peer, by its index in the peer's own namespace (the `peer_ifindex` statistic).
    fn veth_peer(&self) -> std::io::Result<Option<u32>> {
        let (driver, n_stats) = match self.driver() {
            // A device without driver information (the loopback) is no veth.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(None),
            other => other?,
        };
        if driver != "veth" {
            return Ok(None);
        }
        let names = self.strings(ETH_SS_STATS, n_stats as usize)?;
        let mut buf = vec![0u64; 1 + names.len()];
        // struct ethtool_stats: cmd, n_stats (two u32), then one u64 per statistic.
        let head: Vec<u8> = [ETHTOOL_GSTATS, names.len() as u32].iter().flat_map(|w| w.to_ne_bytes()).collect();
        buf[0] = u64::from_ne_bytes(head.try_into().unwrap_or_default());
        self.ioctl(&mut buf)?;
        Ok(names.iter().position(|n| n == "peer_ifindex").map(|i| buf[1 + i] as u32))
    }
}

/// Why a port would receive aggregated buffers, as one phrase, and the command that stops it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregates {
    pub what: String,
    pub fix: String,
}

/// Receive-side features that make the port itself hand generic XDP aggregates.
fn rx_aggregating(features: &[Feature]) -> Vec<&str> {
    features
        .iter()
        .filter(|f| match f.name.as_str() {
            "rx-gro" => true,
            // Switched off by the kernel when generic XDP attaches, unless the driver cannot.
            "rx-lro" | "rx-gro-hw" => f.fixed,
            _ => false,
        })
        .map(|f| f.name.as_str())
        .collect()
}

/// Transmit-side features that make a veth peer pass GSO buffers through: the segmentation
/// offloads of each protocol. Software GSO alone (`tx-generic-segmentation`) does not: the stack
/// segments a buffer before a driver that lacks its kind.
fn tx_segmenting(features: &[Feature]) -> Vec<&str> {
    features
        .iter()
        .filter(|f| {
            (f.name.starts_with("tx-") && f.name.ends_with("-segmentation") && f.name != "tx-generic-segmentation")
                || f.name == "tx-gso-list"
        })
        .map(|f| f.name.as_str())
        .collect()
}

/// The ethtool command for `names`, with the short names where ethtool has them.
fn ethtool_off(ifname: &str, names: &[&str]) -> String {
    let mut words: Vec<&str> = Vec::new();
    for name in names {
        let short = match *name {
            "rx-gro" => "gro",
            "rx-lro" => "lro",
            n if n.starts_with("tx-tcp") => "tso",
            n => n,
        };
        if !words.contains(&short) {
            words.push(short);
        }
    }
    let args: Vec<String> = words.iter().map(|w| format!("{w} off")).collect();
    format!("ethtool -K {ifname} {}", args.join(" "))
}

/// What the port's own features say.
fn port_aggregates(port: &str, features: &[Feature]) -> Option<Aggregates> {
    let on = rx_aggregating(features);
    (!on.is_empty())
        .then(|| Aggregates { what: format!("receive offload {} is on", on.join(", ")), fix: ethtool_off(port, &on) })
}

/// What a veth peer's features say; `netns` names where the peer lives, if not here.
fn peer_aggregates(peer: &str, netns: Option<&str>, features: &[Feature]) -> Option<Aggregates> {
    let on = tx_segmenting(features);
    let prefix = netns.map(|n| format!("ip netns exec {n} ")).unwrap_or_default();
    let place = netns.map(|n| format!(" in network namespace {n}")).unwrap_or_default();
    (!on.is_empty()).then(|| Aggregates {
        what: format!("its veth peer {peer}{place} has segmentation offload on ({})", on.join(", ")),
        fix: format!("{prefix}{}", ethtool_off(peer, &on)),
    })
}

/// The outcome of checking one port for skb-mode XDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// No aggregates reach the program: it counts wire frames.
    Exact,
    /// Aggregates reach the program.
    Aggregates(Aggregates),
    /// A veth port whose peer could not be read (another namespace the agent cannot enter).
    PeerUnknown(String),
}

/// The interface with index `index` in the calling thread's namespace, if it is the veth peer of
/// the interface with index `port_index` (veth pairs name each other), with its active features.
fn peer_here(index: u32, port_index: u32) -> Option<(String, Vec<Feature>)> {
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: if_indextoname writes at most IFNAMSIZ bytes into the buffer given.
    if unsafe { libc::if_indextoname(index, name.as_mut_ptr()) }.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
    let e = Ethtool::open(&name).ok()?;
    (e.veth_peer().ok()?? == port_index).then_some(())?;
    Some((name, e.active().ok()?))
}

/// Network namespaces other than ours: the named ones (`ip netns`) and those of processes
/// (containers), each once, named ones by their name.
fn other_namespaces() -> Vec<(String, PathBuf)> {
    let key = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ours = key(Path::new("/proc/self/ns/net"));
    let mut seen = BTreeSet::new();
    seen.extend(ours);
    let mut out = Vec::new();
    let named = fs::read_dir("/run/netns").into_iter().flatten().flatten().map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        (name, e.path())
    });
    let procs = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .map(|e| (format!("of process {}", e.file_name().to_string_lossy()), e.path().join("ns/net")));
    for (name, path) in named.chain(procs) {
        if let Some(k) = key(&path)
            && seen.insert(k)
        {
            out.push((name, path));
        }
    }
    out
}

/// Finds a veth peer in another namespace from a thread of its own (setns changes the calling
/// thread only); the first namespace holding it wins.
fn peer_elsewhere(index: u32, port_index: u32) -> Result<Option<(String, String, Vec<Feature>)>, String> {
    let spaces = other_namespaces();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut denied = None;
            for (name, path) in &spaces {
                let Ok(file) = fs::File::open(path) else { continue };
                // SAFETY: setns on a namespace file we opened, in this thread only; the thread
                // ends with the scope and nothing else runs on it.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    denied.get_or_insert_with(|| std::io::Error::last_os_error().to_string());
                    continue;
                }
                if let Some((peer, features)) = peer_here(index, port_index) {
                    return Ok(Some((name.clone(), peer, features)));
                }
            }
            denied.map_or(Ok(None), Err)
        })
        .join()
        .unwrap_or(Ok(None))
    })
}

/// Whether generic XDP on `port` would see aggregates.
pub fn check_xdp_skb(port: &str) -> std::io::Result<Check> {
    let e = Ethtool::open(port)?;
    if let Some(a) = port_aggregates(port, &e.active()?) {
        return Ok(Check::Aggregates(a));
    }
    let Some(peer_index) = e.veth_peer()? else { return Ok(Check::Exact) };
    let port_index = super::netif::ifindex(port);
    let found = match peer_here(peer_index, port_index) {
        Some((peer, features)) => Some((None, peer, features)),
        None => match peer_elsewhere(peer_index, port_index) {
            Ok(found) => found.map(|(ns, peer, features)| (Some(ns), peer, features)),
            Err(why) => {
                return Ok(Check::PeerUnknown(format!(
                    "cannot enter other network namespaces to read its veth peer's offloads ({why})"
                )));
            }
        },
    };
    Ok(match found {
        Some((ns, peer, features)) => {
            // A process's namespace has no name `ip netns exec` knows.
            let named = ns.as_deref().filter(|n| !n.starts_with("of process "));
            match peer_aggregates(&peer, named, &features) {
                Some(mut a) if ns.is_some() && named.is_none() => {
                    a.what = format!("{} ({})", a.what, ns.unwrap_or_default());
                    Check::Aggregates(a)
                }
                Some(a) => Check::Aggregates(a),
                None => Check::Exact,
            }
        }
        None => Check::PeerUnknown(format!("its veth peer (index {peer_index}) is in no network namespace it can see")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, fixed: bool) -> Feature {
        Feature { name: name.to_owned(), fixed }
    }

    #[test]
    fn gro_on_the_port_aggregates_lro_only_when_fixed() {
        let a = port_aggregates("eth0", &[f("rx-gro", false), f("rx-lro", false), f("rx-checksum", true)]).unwrap();
        assert_eq!(a.what, "receive offload rx-gro is on");
        assert_eq!(a.fix, "ethtool -K eth0 gro off");
        assert_eq!(port_aggregates("eth0", &[f("rx-lro", false), f("rx-gro-hw", false)]), None);
        let a = port_aggregates("eth0", &[f("rx-gro", false), f("rx-lro", true)]).unwrap();
        assert_eq!(a.fix, "ethtool -K eth0 gro off lro off");
    }

    #[test]
    fn segmentation_on_a_veth_peer_aggregates() {
        let features =
            [f("tx-tcp-segmentation", false), f("tx-tcp6-segmentation", false), f("tx-udp-segmentation", false)];
        let a = peer_aggregates("eth0", Some("lab1"), &features).unwrap();
        assert!(a.what.contains("peer eth0 in network namespace lab1"), "{}", a.what);
        assert_eq!(a.fix, "ip netns exec lab1 ethtool -K eth0 tso off tx-udp-segmentation off");
        let not = [f("tx-checksum-ipv4", false), f("rx-gro", false), f("tx-generic-segmentation", false)];
        assert_eq!(peer_aggregates("eth0", None, &not), None);
    }

    #[test]
    fn loopback_is_not_a_veth_and_reads() {
        let e = Ethtool::open("lo").unwrap();
        assert_eq!(e.veth_peer().unwrap(), None);
        let active = e.active().unwrap();
        assert!(active.iter().any(|f| f.name == "loopback" && f.fixed), "{active:?}");
    }
}
