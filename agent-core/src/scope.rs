//! Scope of a peer: where the other end of a device's traffic is.
//!
//! `lan` is an address inside the bridge's own subnets or a `--lan.prefix`; private ranges are
//! not assumed to be LAN (a device may talk to a private address behind the gateway).

use std::{fmt, net::IpAddr, str::FromStr};

use crate::mac::Mac;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Lan,
    Internet,
    Multicast,
    Broadcast,
    LinkLocal,
}

impl Scope {
    pub const ALL: [Scope; 5] = [Scope::Lan, Scope::Internet, Scope::Multicast, Scope::Broadcast, Scope::LinkLocal];
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Lan => "lan",
            Scope::Internet => "internet",
            Scope::Multicast => "multicast",
            Scope::Broadcast => "broadcast",
            Scope::LinkLocal => "link_local",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::serialize_as_text!(Scope);

/// An IP prefix such as `192.168.77.0/24` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) =
            s.split_once('/').ok_or_else(|| format!("{s:?}: expected ADDRESS/LENGTH, e.g. 192.168.1.0/24"))?;
        let addr: IpAddr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let len: u8 = len.parse().map_err(|e| format!("{s:?}: bad prefix length: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("{s:?}: prefix length above {max}"));
        }
        Ok(Prefix { addr, len })
    }
}

impl Prefix {
    fn bits(ip: IpAddr) -> (u128, u8) {
        match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    fn mask(&self, width: u8) -> u128 {
        let full = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
        match self.len {
            0 => 0,
            l if l >= width => full,
            l => full & !(full >> l),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, wa) = Self::bits(self.addr);
        let (b, wb) = Self::bits(ip);
        wa == wb && (a & self.mask(wa)) == (b & self.mask(wa))
    }

    /// The IPv4 directed broadcast address of the prefix (none for /31, /32 and IPv6).
    pub fn broadcast(&self) -> Option<IpAddr> {
        match self.addr {
            IpAddr::V4(a) if self.len < 31 => {
                let host = u32::MAX >> self.len;
                Some(IpAddr::V4((u32::from(a) | host).into()))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ScopeClassifier {
    lan: Vec<Prefix>,
}

impl ScopeClassifier {
    pub fn new(lan: Vec<Prefix>) -> Self {
        Self { lan }
    }

    pub fn lan_prefixes(&self) -> &[Prefix] {
        &self.lan
    }

    pub fn of_ip(&self, ip: IpAddr) -> Scope {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_multicast() {
            return Scope::Multicast;
        }
        match ip {
            IpAddr::V4(a) if a.is_broadcast() => return Scope::Broadcast,
            IpAddr::V4(a) if a.is_link_local() || a.is_unspecified() => return Scope::LinkLocal,
            IpAddr::V6(a) if a.is_unicast_link_local() || a.is_unspecified() => return Scope::LinkLocal,
            _ => {}
        }
        if self.lan.iter().any(|p| p.broadcast() == Some(ip)) {
            return Scope::Broadcast;
        }
        if self.lan.iter().any(|p| p.contains(ip)) {
            return Scope::Lan;
        }
        Scope::Internet
    }

    /// Scope of a non-IP frame, from its destination MAC.
    pub fn of_mac(dst: Mac) -> Scope {
        if dst.is_broadcast() {
            Scope::Broadcast
        } else if dst.is_group() {
            Scope::Multicast
        } else {
            Scope::Lan
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier() -> ScopeClassifier {
        ScopeClassifier::new(vec!["192.168.77.0/24".parse().unwrap(), "fd77::/64".parse().unwrap()])
    }

    #[test]
    fn classifies_every_scope() {
        let c = classifier();
        let s = |ip: &str| c.of_ip(ip.parse().unwrap());
        assert_eq!(s("192.168.77.10"), Scope::Lan);
        assert_eq!(s("192.168.77.255"), Scope::Broadcast);
        assert_eq!(s("255.255.255.255"), Scope::Broadcast);
        assert_eq!(s("239.255.255.250"), Scope::Multicast);
        assert_eq!(s("224.0.0.251"), Scope::Multicast);
        assert_eq!(s("ff02::fb"), Scope::Multicast);
        assert_eq!(s("169.254.1.1"), Scope::LinkLocal);
        assert_eq!(s("fe80::1"), Scope::LinkLocal);
        assert_eq!(s("0.0.0.0"), Scope::LinkLocal);
        assert_eq!(s("fd77::10"), Scope::Lan);
        // Private but not ours: behind the gateway, so Internet as far as the LAN knows.
        assert_eq!(s("10.1.2.3"), Scope::Internet);
        assert_eq!(s("192.168.78.1"), Scope::Internet);
        assert_eq!(s("203.0.113.10"), Scope::Internet);
        assert_eq!(s("2001:db8::1"), Scope::Internet);
        assert_eq!(s("::ffff:192.168.77.3"), Scope::Lan);
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p: Prefix = "10.0.0.0/8".parse().unwrap();
        assert!(p.contains("10.255.0.1".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        assert!(!p.contains("::a00:1".parse().unwrap()));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let host: Prefix = "192.0.2.1/32".parse().unwrap();
        assert!(host.contains("192.0.2.1".parse().unwrap()));
        assert!(!host.contains("192.0.2.2".parse().unwrap()));
        assert_eq!(host.broadcast(), None);
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("10.0.0.0".parse::<Prefix>().is_err());
        let v6: Prefix = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
    }

    #[test]
    fn non_ip_scope_from_destination_mac() {
        assert_eq!(ScopeClassifier::of_mac(Mac([0xff; 6])), Scope::Broadcast);
        assert_eq!(ScopeClassifier::of_mac(Mac([0x33, 0x33, 0, 0, 0, 1])), Scope::Multicast);
        assert_eq!(ScopeClassifier::of_mac(Mac([0x02, 0, 0, 0, 0, 1])), Scope::Lan);
    }
}
