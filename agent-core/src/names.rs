//! Names of remote peers learnt from traffic: the DNS answers devices received (the name asked
//! for, and the end of its CNAME chain) and the TLS SNI they sent. Devices' own names are in
//! the identity module. All of it is attacker-controlled text: sanitised, length-capped, and
//! bounded in number.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    labels::sanitize,
    proto::{EventFields, dns::RecordData},
};

const MAX_NAME_CHARS: usize = 253;
const MAX_NAMES_EACH: usize = 8;
/// Remote addresses with names kept; later ones are counted, not kept.
pub const MAX_REMOTES: usize = 16_384;

#[derive(Debug, Default)]
pub struct Names {
    remotes: BTreeMap<IpAddr, BTreeSet<String>>,
    pub remotes_dropped: u64,
}

fn add(set: &mut BTreeSet<String>, name: &str) {
    let name = sanitize(name.trim_end_matches('.'), MAX_NAME_CHARS);
    if !name.is_empty() && set.len() < MAX_NAMES_EACH {
        set.insert(name);
    }
}

impl Names {
    pub fn remote(&self, ip: IpAddr) -> Vec<String> {
        self.remotes.get(&ip).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    fn add_remote(&mut self, ip: IpAddr, name: &str) {
        if !self.remotes.contains_key(&ip) && self.remotes.len() >= MAX_REMOTES {
            self.remotes_dropped += 1;
            return;
        }
        add(self.remotes.entry(ip).or_default(), name);
    }

    /// Learns from one event (with the frame's addresses, if IP).
    pub fn learn(&mut self, ips: Option<(IpAddr, IpAddr)>, fields: &EventFields) {
        match fields {
            EventFields::Dns(d) if d.response => {
                for r in &d.records {
                    if let RecordData::Addr(ip) = r.data {
                        // The name asked for (the start of a CNAME chain) says most.
                        self.add_remote(ip, d.qname.as_deref().unwrap_or(&r.name));
                        self.add_remote(ip, &r.name);
                    }
                }
            }
            EventFields::Tls(t) => {
                if let (Some(sni), Some((_, dst))) = (&t.sni, ips) {
                    self.add_remote(dst, sni);
                }
            }
            _ => {}
        }
    }
}
