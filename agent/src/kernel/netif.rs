//! Interfaces: bridges, their ports (from sysfs) and their addresses (getifaddrs).

use std::{
    ffi::CStr,
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use iotwatch_core::scope::Prefix;

pub fn is_bridge(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).join("bridge").is_dir()
}

pub fn bridges() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_bridge(n))
        .collect();
    out.sort();
    out
}

/// The interface's index, which a device deleted and created again under the same name does
/// not keep (0 when there is no such interface).
pub fn ifindex(name: &str) -> u32 {
    std::ffi::CString::new(name)
        .ok()
        // SAFETY: if_nametoindex reads a valid NUL-terminated string.
        .map_or(0, |c| unsafe { libc::if_nametoindex(c.as_ptr()) })
}

/// A netlink socket subscribed to link changes (interfaces created, deleted, joining or leaving
/// a bridge), non-blocking: readable whenever one happened.
pub fn link_changes() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and nothing else owns it.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_nl is valid; only the family and groups are set.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = libc::RTMGRP_LINK as u32;
    // SAFETY: addr is a valid sockaddr_nl of the size given.
    let ret = unsafe { libc::bind(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_nl>() as u32) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// Reads and discards every pending message of a [`link_changes`] socket: what changed is read
/// back from sysfs, which is the truth, not from the messages.
pub fn drain(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd as _;
    let mut buf = [0u8; 8192];
    // SAFETY: recv into a local buffer of the length given; non-blocking, so it ends.
    while unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } > 0 {}
}

/// The bridge's ports, sorted.
pub fn bridge_ports(bridge: &str) -> io::Result<Vec<String>> {
    let mut ports = Vec::new();
    for entry in fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))? {
        if let Ok(name) = entry?.file_name().into_string() {
            ports.push(name);
        }
    }
    ports.sort();
    Ok(ports)
}

fn prefix_len(mask: IpAddr) -> u8 {
    match mask {
        IpAddr::V4(m) => u32::from(m).count_ones() as u8,
        IpAddr::V6(m) => u128::from(m).count_ones() as u8,
    }
}

/// # Safety
/// `sa` must be null or point to a valid sockaddr.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a valid sockaddr; the family says which struct it is.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// The subnets configured on an interface (link-local IPv6 excluded: that is its own scope).
pub fn interface_prefixes(name: &str) -> io::Result<Vec<Prefix>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() == name.as_bytes() {
            // SAFETY: both pointers come from getifaddrs.
            if let (Some(addr), Some(mask)) = unsafe { (sockaddr_ip(ifa.ifa_addr), sockaddr_ip(ifa.ifa_netmask)) } {
                let link_local = matches!(addr, IpAddr::V6(a) if a.is_unicast_link_local());
                if !link_local {
                    out.push(Prefix { addr, len: prefix_len(mask) });
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees the list returned by getifaddrs exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_its_prefix() {
        let p = interface_prefixes("lo").unwrap();
        assert!(p.iter().any(|p| p.len == 8 && p.contains("127.0.0.1".parse().unwrap())), "{p:?}");
        assert!(!is_bridge("lo"));
    }

    #[test]
    fn mask_lengths() {
        assert_eq!(prefix_len("255.255.255.0".parse().unwrap()), 24);
        assert_eq!(prefix_len("ffff:ffff:ffff:ffff::".parse().unwrap()), 64);
    }
}
