//! Names of remote peers learnt from traffic: the DNS answers devices received (the name asked
//! for, and the end of its CNAME chain) and the TLS SNI they sent. Devices' own names are in
//! the identity module. All of it is attacker-controlled text: sanitised, length-capped, and
//! bounded in number.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    bounded::{TableSize, entry_bytes, evict_idlest, excess},
    labels::sanitize,
    proto::{EventFields, dns::RecordData},
};

const MAX_NAME_CHARS: usize = 253;
const MAX_NAMES_EACH: usize = 8;
/// Remote addresses with names kept, in number and in the bytes of their names: past either,
/// the addresses named least recently make room.
pub const MAX_REMOTES: usize = 16_384;
pub const MAX_BYTES: usize = 2 << 20;

/// An address's names and when it was last named (an event id).
#[derive(Debug, Default)]
struct Remote {
    names: BTreeSet<String>,
    last_id: u64,
}

impl Remote {
    fn bytes(&self) -> usize {
        entry_bytes::<IpAddr, Remote>()
            + self.names.iter().map(|n| n.len() + entry_bytes::<String, ()>()).sum::<usize>()
    }
}

#[derive(Debug, Default)]
pub struct Names {
    remotes: BTreeMap<IpAddr, Remote>,
    bytes: usize,
    evicted: u64,
}

impl Names {
    pub fn remote(&self, ip: IpAddr) -> Vec<String> {
        self.remotes.get(&ip).map(|r| r.names.iter().cloned().collect()).unwrap_or_default()
    }

    fn add_remote(&mut self, ip: IpAddr, name: &str, id: u64) {
        let name = sanitize(name.trim_end_matches('.'), MAX_NAME_CHARS);
        if name.is_empty() {
            return;
        }
        let r = self.remotes.entry(ip).or_default();
        self.bytes -= if r.names.is_empty() { 0 } else { r.bytes() };
        if r.names.len() < MAX_NAMES_EACH {
            r.names.insert(name);
        }
        r.last_id = id;
        self.bytes += r.bytes();
        while self.remotes.len() > MAX_REMOTES || self.bytes > MAX_BYTES {
            let n = excess(self.remotes.len(), MAX_REMOTES).max(self.remotes.len().div_ceil(8));
            let bytes = &mut self.bytes;
            self.evicted +=
                evict_idlest(&mut self.remotes, n, |r| r.last_id, |_, _| false, |_, r| *bytes -= r.bytes()) as u64;
        }
    }

    pub fn table(&self) -> TableSize {
        TableSize {
            table: "remote_names",
            entries: self.remotes.len(),
            bytes: self.bytes,
            max_entries: MAX_REMOTES,
            evicted: self.evicted,
        }
    }

    /// Learns from one event (with the frame's addresses, if IP); `id` is the event's.
    pub fn learn(&mut self, ips: Option<(IpAddr, IpAddr)>, fields: &EventFields, id: u64) {
        match fields {
            EventFields::Dns(d) if d.response => {
                for r in &d.records {
                    if let RecordData::Addr(ip) = r.data {
                        // The name asked for (the start of a CNAME chain) says most.
                        self.add_remote(ip, d.qname.as_deref().unwrap_or(&r.name), id);
                        self.add_remote(ip, &r.name, id);
                    }
                }
            }
            EventFields::Tls(t) => {
                if let (Some(sni), Some((_, dst))) = (&t.sni, ips) {
                    self.add_remote(dst, sni, id);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tls::TlsEvent;

    #[test]
    fn names_are_bounded_in_bytes_the_least_recently_named_going_first() {
        let mut names = Names::default();
        let client: IpAddr = "192.168.77.10".parse().unwrap();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0xCB00_0000u32 + i));
        let n = MAX_REMOTES as u32;
        for i in 0..n {
            let sni = format!("{i}.{}", "n".repeat(300));
            names.learn(
                Some((client, ip(i))),
                &EventFields::Tls(TlsEvent { sni: Some(sni), ..Default::default() }),
                u64::from(i),
            );
        }
        // 16,384 names of 253 characters are more than MAX_BYTES.
        let text: usize = names.remotes.values().flat_map(|r| r.names.iter().map(String::len)).sum();
        let t = names.table();
        assert!(text < MAX_BYTES && t.bytes <= MAX_BYTES && t.entries < MAX_REMOTES, "{text} {t:?}");
        assert_eq!(t.evicted as usize + t.entries, n as usize);
        assert_eq!(names.remote(ip(n - 1)).len(), 1, "the latest is kept");
        assert!(names.remote(ip(0)).is_empty(), "the first went");
    }
}
