//! A home network in network namespaces, for the lab and the privileged tests.
//!
//! ```text
//!  root ns ("the Pi"): bridge {p}br 192.168.77.2/24
//!     ├─ {p}pg ── {p}-gw: eth0 192.168.77.1 ── up0 198.18.0.1 ── {p}-in: eth0 198.18.0.2
//!     │                                                           lo: 203.0.113.10,
//!     │                                                               198.51.100.10, 192.0.2.10,
//!     │                                                               198.19.0.10
//!     ├─ {p}p1 ── {p}-d1: eth0 192.168.77.11, default via .1
//!     └─ {p}pN ── {p}-dN: eth0 192.168.77.(10+N)
//! ```
//! Nothing routes out of the machine: the root namespace only gains the connected
//! 192.168.77.0/24 on the bridge, and the "Internet" is one namespace behind the gateway.

use std::{net::Ipv4Addr, path::Path, process::Command};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    cmd,
    netns::{self, NetGuard},
};

pub const LAN_PREFIX: &str = "192.168.77.0/24";
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
pub const BRIDGE_MAC: &str = "02:77:00:00:00:02";
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
pub const GATEWAY_MAC: &str = "02:77:00:00:00:01";
pub const GATEWAY_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const INTERNET_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Simulated Internet hosts, on the internet namespace's `lo`: three in the documentation
/// ranges, and one in the benchmarking range 198.18.0.0/15 (beyond the uplink's 198.18.0.0/24),
/// which the scenario lab's peer databases give to another provider in another country
/// (`scenarios::LAB_NETWORKS`).
pub const INTERNET_HOSTS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(198, 51, 100, 10),
    Ipv4Addr::new(192, 0, 2, 10),
    Ipv4Addr::new(198, 19, 0, 10),
];
/// Device indexes run from 1; 10 + index must stay a valid host octet and two hex digits.
pub const MAX_DEVICE_INDEX: usize = 240;

#[derive(Debug, Clone)]
pub struct LabOptions {
    /// At most 5 characters (see `netns`): "iwlab" for the lab, "iwtN" for tests.
    pub prefix: String,
    pub devices: usize,
    /// false: IPv6 disabled everywhere in the lab, so no ND/MLD frames appear.
    pub ipv6: bool,
    /// true: permanent ARP entries everywhere, so no ARP frames appear.
    pub static_neighbors: bool,
}

#[derive(Debug, Clone)]
pub struct LabDevice {
    /// 1-based, stable across `add_device`/`remove_device`.
    pub index: usize,
    pub ns: String,
    /// Lowercase: the lab's `mac_of(index)` ([`device_mac`] unless created with other MACs).
    pub mac: String,
    pub ip: Ipv4Addr,
    /// The bridge port (root-namespace veth end).
    pub port: String,
}

#[derive(Debug, Clone)]
pub struct LabGateway {
    pub ns: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub port: String,
    pub uplink_ip: Ipv4Addr,
}

#[derive(Debug, Clone)]
pub struct LabInternet {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub hosts: Vec<Ipv4Addr>,
}

/// The lab; everything it created is removed when it is dropped (also on panic).
#[derive(Debug)]
pub struct HomeLab {
    pub bridge: String,
    pub bridge_ip: Ipv4Addr,
    pub bridge_mac: String,
    pub gateway: LabGateway,
    pub internet: LabInternet,
    pub devices: Vec<LabDevice>,
    options: LabOptions,
    /// Device index → MAC.
    mac_of: fn(usize) -> String,
    // Last field: dropped after everything else that may refer to the network.
    guard: NetGuard,
}

/// Device `index`'s MAC in a lab made by [`HomeLab::create`]: locally administered (no vendor),
/// `02:77:00:00:00:xx` with xx = 10 + index. The scenario lab gives its devices vendors' MACs
/// instead (`scenarios::device_mac`, through [`HomeLab::create_with_macs`]).
pub fn device_mac(index: usize) -> String {
    format!("02:77:00:00:00:{:02x}", 10 + index)
}

pub fn device_ip(index: usize) -> Ipv4Addr {
    // MAX_DEVICE_INDEX keeps this within a u8.
    Ipv4Addr::new(192, 168, 77, (10 + index) as u8)
}

fn ipv6_sysctls_exist() -> bool {
    Path::new("/proc/sys/net/ipv6").exists()
}

impl HomeLab {
    /// Sweeps leftovers of the prefix, then builds the topology in the module doc; device
    /// `index` has MAC [`device_mac`]`(index)`.
    pub fn create(options: LabOptions) -> Result<Self> {
        Self::create_with_macs(options, device_mac)
    }

    /// As [`HomeLab::create`], with device `index`'s MAC `mac_of(index)`, for the devices made
    /// now and those added later (the scenario lab: its devices' identities). The MACs must be
    /// unicast and distinct.
    pub fn create_with_macs(options: LabOptions, mac_of: fn(usize) -> String) -> Result<Self> {
        netns::check_prefix(&options.prefix)?;
        ensure!(options.devices <= MAX_DEVICE_INDEX, "at most {MAX_DEVICE_INDEX} lab devices");
        let p = options.prefix.clone();
        let mut guard = NetGuard::new(&p)?;
        let bridge = format!("{p}br");

        // The bridge, with IPv6 off before it is up when asked, so the host sends no ND/MLD.
        netns::ip(&["link", "add", &bridge, "type", "bridge"])
            .context("cannot create a bridge: is the bridge module available and are you root?")?;
        guard.own_link(&bridge);
        netns::ip(&["link", "set", &bridge, "address", BRIDGE_MAC])?;
        if !options.ipv6 && ipv6_sysctls_exist() {
            netns::sysctl(None, &format!("net.ipv6.conf.{bridge}.disable_ipv6"), "1")?;
        }
        netns::ip(&["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", &bridge])?;
        netns::ip(&["link", "set", &bridge, "up"])?;

        let inet = Self::new_ns(&mut guard, "in", options.ipv6)?;
        let gw = Self::new_ns(&mut guard, "gw", options.ipv6)?;
        netns::sysctl(Some(&gw), "net.ipv4.ip_forward", "1")?;

        // Gateway uplink to the "Internet".
        netns::ns_ip(&gw, &["link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &inet])?;
        netns::ns_ip(&gw, &["addr", "add", &format!("{GATEWAY_UPLINK_IP}/24"), "dev", "up0"])?;
        netns::ns_ip(&gw, &["link", "set", "up0", "up"])?;
        netns::ns_ip(&inet, &["addr", "add", &format!("{INTERNET_IP}/24"), "dev", "eth0"])?;
        netns::ns_ip(&inet, &["link", "set", "eth0", "up"])?;
        for host in INTERNET_HOSTS {
            netns::ns_ip(&inet, &["addr", "add", &format!("{host}/32"), "dev", "lo"])?;
        }
        netns::ns_ip(&inet, &["route", "add", LAN_PREFIX, "via", &GATEWAY_UPLINK_IP.to_string()])?;
        // A default route inside the gateway namespace only: it leads to the internet namespace.
        netns::ns_ip(&gw, &["route", "add", "default", "via", &INTERNET_IP.to_string()])?;

        // Gateway LAN side.
        let gw_port = format!("{p}pg");
        Self::add_port(&mut guard, &bridge, &gw_port, &gw, GATEWAY_MAC, options.ipv6)?;
        netns::ns_ip(&gw, &["addr", "add", &format!("{GATEWAY_IP}/24"), "dev", "eth0"])?;
        netns::ns_ip(&gw, &["link", "set", "eth0", "up"])?;

        let mut lab = Self {
            bridge,
            bridge_ip: BRIDGE_IP,
            bridge_mac: BRIDGE_MAC.to_owned(),
            gateway: LabGateway {
                ns: gw,
                mac: GATEWAY_MAC.to_owned(),
                ip: GATEWAY_IP,
                port: gw_port,
                uplink_ip: GATEWAY_UPLINK_IP,
            },
            internet: LabInternet { ns: inet, ip: INTERNET_IP, hosts: INTERNET_HOSTS.to_vec() },
            devices: Vec::new(),
            options: options.clone(),
            mac_of,
            guard,
        };
        if options.static_neighbors {
            lab.static_neighbors_for(None, GATEWAY_IP, GATEWAY_MAC)?;
        }
        for _ in 0..options.devices {
            lab.add_device()?;
        }
        Ok(lab)
    }

    pub fn options(&self) -> &LabOptions {
        &self.options
    }

    pub fn prefix(&self) -> &str {
        self.guard.prefix()
    }

    /// A namespace with IPv6 off (all and default, before any link exists) unless asked for.
    fn new_ns(guard: &mut NetGuard, suffix: &str, ipv6: bool) -> Result<String> {
        let ns = guard.add_netns(suffix)?;
        if !ipv6 && ipv6_sysctls_exist() {
            netns::sysctl(Some(&ns), "net.ipv6.conf.all.disable_ipv6", "1")?;
            netns::sysctl(Some(&ns), "net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        Ok(ns)
    }

    /// A veth from a bridge port in the root namespace to `eth0` in `ns`, enslaved and up.
    fn add_port(guard: &mut NetGuard, bridge: &str, port: &str, ns: &str, mac: &str, ipv6: bool) -> Result<()> {
        netns::ip(&["link", "add", port, "type", "veth", "peer", "name", "eth0", "address", mac, "netns", ns])?;
        guard.own_link(port);
        if !ipv6 && ipv6_sysctls_exist() {
            netns::sysctl(None, &format!("net.ipv6.conf.{port}.disable_ipv6"), "1")?;
        }
        netns::ip(&["link", "set", port, "master", bridge])?;
        netns::ip(&["link", "set", port, "up"])?;
        Ok(())
    }

    /// Every LAN host of the lab: (namespace or None for the root, ip, mac).
    pub fn lan_hosts(&self) -> Vec<(Option<String>, Ipv4Addr, String)> {
        let mut hosts = vec![
            (None, self.bridge_ip, self.bridge_mac.clone()),
            (Some(self.gateway.ns.clone()), self.gateway.ip, self.gateway.mac.clone()),
        ];
        hosts.extend(self.devices.iter().map(|d| (Some(d.ns.clone()), d.ip, d.mac.clone())));
        hosts
    }

    /// Permanent ARP entries: the new host learns all others, all others learn it.
    fn static_neighbors_for(&self, new_ns: Option<&str>, new_ip: Ipv4Addr, new_mac: &str) -> Result<()> {
        for (ns, ip, mac) in self.lan_hosts() {
            if ip == new_ip {
                continue;
            }
            self.neigh(new_ns, ip, &mac)?;
            self.neigh(ns.as_deref(), new_ip, new_mac)?;
        }
        Ok(())
    }

    fn neigh(&self, ns: Option<&str>, ip: Ipv4Addr, mac: &str) -> Result<()> {
        let ip = ip.to_string();
        match ns {
            None => netns::ip(&["neigh", "replace", &ip, "lladdr", mac, "dev", &self.bridge, "nud", "permanent"]),
            Some(ns) => netns::ns_ip(ns, &["neigh", "replace", &ip, "lladdr", mac, "dev", "eth0", "nud", "permanent"]),
        }
        .map(drop)
    }

    /// Adds device `{p}-d{i}` (i one more than the highest in use) as a new bridge port.
    pub fn add_device(&mut self) -> Result<&LabDevice> {
        let index = self.devices.iter().map(|d| d.index).max().unwrap_or(0) + 1;
        ensure!(index <= MAX_DEVICE_INDEX, "at most {MAX_DEVICE_INDEX} lab devices");
        let p = self.guard.prefix().to_owned();
        let ns = Self::new_ns(&mut self.guard, &format!("d{index}"), self.options.ipv6)?;
        let mac = (self.mac_of)(index);
        let dev = LabDevice { index, ns, mac, ip: device_ip(index), port: format!("{p}p{index}") };
        Self::add_port(&mut self.guard, &self.bridge, &dev.port, &dev.ns, &dev.mac, self.options.ipv6)?;
        netns::ns_ip(&dev.ns, &["addr", "add", &format!("{}/24", dev.ip), "dev", "eth0"])?;
        netns::ns_ip(&dev.ns, &["link", "set", "eth0", "up"])?;
        netns::ns_ip(&dev.ns, &["route", "add", "default", "via", &GATEWAY_IP.to_string()])?;
        if self.options.static_neighbors {
            self.static_neighbors_for(Some(&dev.ns), dev.ip, &dev.mac)?;
        }
        self.devices.push(dev);
        Ok(self.devices.last().expect("just pushed"))
    }

    /// Removes device `index` (its `LabDevice::index`): its port leaves the bridge.
    pub fn remove_device(&mut self, index: usize) -> Result<LabDevice> {
        let Some(pos) = self.devices.iter().position(|d| d.index == index) else {
            bail!("no lab device with index {index}");
        };
        let dev = self.devices.remove(pos);
        // The port first: it takes the namespace end with it synchronously.
        self.guard.remove_link(&dev.port)?;
        self.guard.remove_netns(&dev.ns)?;
        if self.options.static_neighbors {
            // Best effort: a stale permanent entry would not create frames anyway.
            let ip = dev.ip.to_string();
            let _ = netns::ip(&["neigh", "del", &ip, "dev", &self.bridge]);
            for (ns, _, _) in self.lan_hosts() {
                if let Some(ns) = ns {
                    let _ = netns::ns_ip(&ns, &["neigh", "del", &ip, "dev", "eth0"]);
                }
            }
        }
        Ok(dev)
    }

    pub fn device(&self, index: usize) -> Option<&LabDevice> {
        self.devices.iter().find(|d| d.index == index)
    }

    /// `ip netns exec NS ARGS...`, to run or spawn.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Command {
        netns::exec(ns, args)
    }

    /// Every veth end of the lab: (namespace or None for the root, interface).
    pub fn veths(&self) -> Vec<(Option<String>, String)> {
        let mut v = vec![
            (None, self.gateway.port.clone()),
            (Some(self.gateway.ns.clone()), "eth0".to_owned()),
            (Some(self.gateway.ns.clone()), "up0".to_owned()),
            (Some(self.internet.ns.clone()), "eth0".to_owned()),
        ];
        for d in &self.devices {
            v.push((None, d.port.clone()));
            v.push((Some(d.ns.clone()), "eth0".to_owned()));
        }
        v
    }

    /// Switches GRO and every segmentation offload (TSO, GSO, UDP and tunnel segmentation, GSO
    /// fraglist) on every veth end: with them off, one socket buffer is one wire frame (a veth
    /// hands its peer's GSO buffers over as they are). Features the driver keeps fixed, or that
    /// this kernel does not have, are skipped; any other failure is reported.
    pub fn set_offloads(&self, on: bool) -> Result<()> {
        self.set_features(on, &OFFLOADS)
    }

    /// Switches the segmentation offloads (all of [`HomeLab::set_offloads`] but GRO) on every
    /// veth end; on is what a new veth has (GRO is off on a new veth).
    pub fn set_segmentation(&self, on: bool) -> Result<()> {
        self.set_features(on, &OFFLOADS[..OFFLOADS.len() - 1])
    }

    fn set_features(&self, on: bool, features: &[(&str, &str)]) -> Result<()> {
        let state = if on { "on" } else { "off" };
        let mut failures = Vec::new();
        for (ns, ifname) in self.veths() {
            let run = |args: &[&str]| -> Result<String> {
                match &ns {
                    None => cmd::output(&mut cmd::command("ethtool", args)),
                    Some(ns) => netns::ns_run(ns, &[&["ethtool"], args].concat()),
                }
            };
            let where_ = format!("{}{ifname}", ns.as_ref().map(|n| format!("{n}:")).unwrap_or_default());
            let shown = run(&["-k", &ifname])?;
            let present: Vec<&str> =
                features.iter().filter(|(_, long)| feature_line(&shown, long).is_some()).map(|(s, _)| *s).collect();
            let mut args = vec!["-K", ifname.as_str()];
            for short in &present {
                args.extend([*short, state]);
            }
            // ethtool fails when some of them are fixed: what counts is the state read back.
            let tried = run(&args).err();
            let shown = run(&["-k", &ifname])?;
            for (_, long) in features {
                if let Some(line) = feature_line(&shown, long)
                    && !line.starts_with(state)
                    && !line.contains("[fixed]")
                {
                    let why = tried.as_ref().map(|e| format!(" ({e:#})")).unwrap_or_default();
                    failures.push(format!("{where_} {long} is {line}{why}"));
                }
            }
        }
        if !failures.is_empty() {
            bail!("could not switch offloads {state}: {}", failures.join("; "));
        }
        Ok(())
    }
}

/// The state after `name:` in `ethtool -k` output ("on", "off [fixed]", ...).
fn feature_line<'a>(shown: &'a str, name: &str) -> Option<&'a str> {
    shown.lines().find_map(|l| l.trim_start().strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

/// What [`HomeLab::set_offloads`] switches, as (`ethtool -K` name, `ethtool -k` name): every
/// segmentation offload (a veth hands its peer's GSO buffers over as they are), then GRO.
const OFFLOADS: [(&str, &str); 12] = [
    ("tso", "tcp-segmentation-offload"),
    ("gso", "generic-segmentation-offload"),
    ("tx-udp-segmentation", "tx-udp-segmentation"),
    ("tx-gso-list", "tx-gso-list"),
    ("tx-sctp-segmentation", "tx-sctp-segmentation"),
    ("tx-gre-segmentation", "tx-gre-segmentation"),
    ("tx-gre-csum-segmentation", "tx-gre-csum-segmentation"),
    ("tx-ipxip4-segmentation", "tx-ipxip4-segmentation"),
    ("tx-ipxip6-segmentation", "tx-ipxip6-segmentation"),
    ("tx-udp_tnl-segmentation", "tx-udp_tnl-segmentation"),
    ("tx-udp_tnl-csum-segmentation", "tx-udp_tnl-csum-segmentation"),
    ("gro", "generic-receive-offload"),
];
