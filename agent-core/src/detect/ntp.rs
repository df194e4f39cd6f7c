//! `ntp_fanout`: a device asks more distinct NTP servers than `ntp_servers` within the window.
//! The talk saw 80 to 90 per device, where one pool name or a handful of servers would do.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use serde_json::json;

use super::{Config, Hit, MAX_DEVICES, Rule, excerpt, make_room};
use crate::{events::Event, mac::Mac, proto::EventFields};

/// Servers remembered per device (a device asking more is far past any threshold anyway).
const MAX_SERVERS: usize = 1024;
/// Servers listed in a finding.
const MAX_LISTED: usize = 128;

#[derive(Debug, Default)]
pub struct NtpFanout {
    /// Per device: each server asked and when it was last asked.
    asked: HashMap<Mac, BTreeMap<IpAddr, f64>>,
}

impl NtpFanout {
    /// Distinct servers `mac` asked within the window ending at its latest request.
    pub fn servers(&self, mac: Mac) -> usize {
        self.asked.get(&mac).map_or(0, BTreeMap::len)
    }

    /// Devices and their distinct servers in the window (for the gauge).
    pub fn all(&self) -> impl Iterator<Item = (Mac, usize)> + '_ {
        self.asked.iter().map(|(m, s)| (*m, s.len()))
    }

    pub fn shift_times(&mut self, delta: f64) {
        self.asked.values_mut().flat_map(BTreeMap::values_mut).for_each(|ts| *ts += delta);
    }

    pub fn on_event(&mut self, ev: &Event, cfg: &Config, hits: &mut Vec<Hit>) {
        let (EventFields::Ntp(n), Some(server)) = (&ev.fields, ev.dst_ip) else { return };
        if !n.is_client() || server.is_multicast() {
            return;
        }
        make_room(&mut self.asked, MAX_DEVICES, |s| s.values().copied().fold(f64::MIN, f64::max));
        let servers = self.asked.entry(ev.src_mac).or_default();
        servers.retain(|_, ts| ev.ts - *ts <= cfg.window_s);
        if servers.len() < MAX_SERVERS || servers.contains_key(&server) {
            servers.insert(server, ev.ts);
        }
        if servers.len() <= cfg.ntp_servers {
            return;
        }
        hits.push(Hit {
            rule: Rule::NtpFanout,
            mac: ev.src_mac,
            ip: ev.src_ip,
            ts: ev.ts,
            summary: format!(
                "asked {} distinct NTP servers within {:.0} s (threshold {})",
                servers.len(),
                cfg.window_s,
                cfg.ntp_servers
            ),
            details: json!({
                "servers": servers.len(),
                "threshold": cfg.ntp_servers,
                "window_seconds": cfg.window_s,
                "addresses": servers.keys().take(MAX_LISTED).collect::<Vec<_>>(),
            }),
            evidence: vec![(ev.id, excerpt(ev))],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{super::testing::*, *};
    use crate::proto::ntp::{Mode, NtpEvent};

    fn client() -> EventFields {
        EventFields::Ntp(NtpEvent { version: 4, mode: Mode::Client, stratum: None, ref_id: None, truncated: false })
    }

    #[test]
    fn more_servers_than_the_threshold_is_a_fanout_listing_them() {
        let mut t = Bench::default();
        for i in 0..10 {
            t.event(f64::from(i), CAM, LAN_CAM, 40000, GW, ip(198, 51, 100, 100 + i as u8), 123, client());
            // The same server again is not another one.
            t.event(f64::from(i) + 0.5, CAM, LAN_CAM, 40000, GW, ip(198, 51, 100, 100), 123, client());
        }
        assert!(t.findings().is_empty());
        t.event(11.0, CAM, LAN_CAM, 40000, GW, ip(198, 51, 100, 120), 123, client());
        let f = t.only(Rule::NtpFanout);
        assert_eq!(f.details["servers"], 11);
        assert_eq!(f.details["addresses"].as_array().unwrap().len(), 11);
        assert_eq!(t.det.ntp.servers(CAM), 11);
    }

    #[test]
    fn servers_outside_the_window_do_not_count_nor_do_answers() {
        let mut t = Bench::default();
        for i in 0..11u8 {
            // One new server every 400 s: never more than 10 within an hour.
            t.event(f64::from(i) * 400.0, CAM, LAN_CAM, 40000, GW, ip(198, 51, 100, 100 + i), 123, client());
        }
        let server = EventFields::Ntp(NtpEvent {
            version: 4,
            mode: Mode::Server,
            stratum: Some(2),
            ref_id: None,
            truncated: false,
        });
        for i in 0..20u8 {
            t.event(5000.0, GW, ip(198, 51, 100, 100 + i), 123, CAM, LAN_CAM, 40000, server.clone());
        }
        assert!(t.findings().is_empty(), "{:?}", t.findings());
        assert_eq!(t.det.ntp.servers(CAM), 10);
    }
}
