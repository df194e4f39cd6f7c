//! `dns_unreachable`: a device's DNS queries answered with ICMP port unreachable: the address it
//! asks has no DNS server (in the talk, a door sensor kept asking its gateway, which answered
//! each query with port unreachable: a misconfiguration, and queries that go nowhere).
//! The finding goes to the device the ICMP message was sent to, the one that asked.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use serde_json::json;

use super::{Hit, MAX_DEVICES, Rule, excerpt, make_room};
use crate::{events::Event, mac::Mac, proto::EventFields};

/// Servers listed per device.
const MAX_SERVERS: usize = 16;

#[derive(Debug, Default)]
struct Refused {
    last_ts: f64,
    servers: BTreeSet<IpAddr>,
    answered_by: BTreeSet<IpAddr>,
    refusals: u64,
}

#[derive(Debug, Default)]
pub struct Unreachable {
    refused: HashMap<Mac, Refused>,
}

impl Unreachable {
    pub fn shift_times(&mut self, delta: f64) {
        self.refused.values_mut().for_each(|r| r.last_ts += delta);
    }

    pub fn on_event(&mut self, ev: &Event, hits: &mut Vec<Hit>) {
        let EventFields::Icmp(icmp) = &ev.fields else { return };
        if !icmp.refuses_dns() || ev.dst_mac.is_group() {
            return;
        }
        make_room(&mut self.refused, MAX_DEVICES, |r| r.last_ts);
        let r = self.refused.entry(ev.dst_mac).or_default();
        r.last_ts = ev.ts;
        r.refusals += 1;
        if let Some(server) = icmp.original_dst_ip
            && r.servers.len() < MAX_SERVERS
        {
            r.servers.insert(server);
        }
        if let Some(from) = ev.src_ip
            && r.answered_by.len() < MAX_SERVERS
        {
            r.answered_by.insert(from);
        }
        let servers: Vec<String> = r.servers.iter().map(ToString::to_string).collect();
        hits.push(Hit {
            rule: Rule::DnsUnreachable,
            mac: ev.dst_mac,
            ip: icmp.original_src_ip.or(ev.dst_ip),
            ts: ev.ts,
            summary: format!(
                "asks DNS of {} where no DNS server listens (answered with ICMP port unreachable, {} time(s))",
                servers.join(", "),
                r.refusals
            ),
            details: json!({"servers": servers, "answered_by": r.answered_by, "refusals": r.refusals}),
            evidence: vec![(ev.id, excerpt(ev))],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{super::testing::*, *};
    use crate::proto::{fixtures, icmp};

    #[test]
    fn dns_refused_by_the_gateway_is_a_finding_for_the_device_that_asked() {
        let mut t = Bench::default();
        let refusal = EventFields::Icmp(icmp::parse(&fixtures::icmp_port_unreachable_dns()).unwrap());
        t.event(1.0, GW, LAN_GW, 0, CAM, LAN_CAM, 0, refusal.clone());
        t.event(6.0, GW, LAN_GW, 0, CAM, LAN_CAM, 0, refusal);
        let f = t.only(Rule::DnsUnreachable);
        assert_eq!((f.mac, f.count), (CAM, 2));
        assert_eq!(f.details["servers"], json!(["192.168.2.1"]));
        assert_eq!(f.details["refusals"], 2);
    }

    #[test]
    fn other_unreachables_are_not_dns_refusals() {
        let mut t = Bench::default();
        let mut quote = fixtures::icmp_port_unreachable_dns();
        quote[8 + 20 + 3] = 123; // NTP, not DNS
        t.event(1.0, GW, LAN_GW, 0, CAM, LAN_CAM, 0, EventFields::Icmp(icmp::parse(&quote).unwrap()));
        let mut host = fixtures::icmp_port_unreachable_dns();
        host[1] = 1; // host unreachable
        t.event(2.0, GW, LAN_GW, 0, CAM, LAN_CAM, 0, EventFields::Icmp(icmp::parse(&host).unwrap()));
        assert!(t.findings().is_empty());
    }
}
