//! A bench for detector tests: typed events and deltas in, findings out. Addresses as in the
//! design: LAN 192.168.77.0/24, the Internet in the documentation ranges.

use std::net::{IpAddr, Ipv4Addr};

use agent_common::{ConvKey, sample::SampleKind};

use super::{Config, Context, Detectors, Finding, Rule};
use crate::{
    clock::Clock,
    events::Event,
    identity::Identities,
    ledger::{Delta, v4_key},
    mac::Mac,
    oui::Oui,
    peerdb::PeerDb,
    proto::{
        EventFields,
        http::{HttpEvent, Method},
        ssdp::{SsdpEvent, SsdpMethod},
    },
    scope::ScopeClassifier,
};

pub const CAM: Mac = Mac([0x80, 0x9f, 0x9b, 0x45, 0xa3, 0x28]);
pub const HUB: Mac = Mac([0x02, 0x77, 0, 0, 0, 0x44]);
pub const GW: Mac = Mac([0x02, 0x77, 0, 0, 0, 0x01]);
pub const SSDP_GROUP_MAC: Mac = Mac([1, 0, 0x5e, 0x7f, 0xff, 0xfa]);
pub const MDNS_GROUP_MAC: Mac = Mac([1, 0, 0x5e, 0, 0, 0xfb]);
pub const LAN_CAM: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 77, 11));
pub const LAN_HUB: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 77, 44));
pub const LAN_GW: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 77, 1));
pub const INET: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
pub const SSDP_GROUP: IpAddr = IpAddr::V4(Ipv4Addr::new(239, 255, 255, 250));
pub const MDNS_GROUP: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251));

pub struct Bench {
    pub det: Detectors,
    scopes: ScopeClassifier,
    oui: Oui,
    pub identities: Identities,
    peers: PeerDb,
    next_id: u64,
}

impl Default for Bench {
    fn default() -> Self {
        Self::with(Config::default())
    }
}

pub fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn octets(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => panic!("the bench speaks IPv4"),
    }
}

/// A conversation delta (IPv4; `proto` 6 TCP, 17 UDP, 1 ICMP), seen from `first_s` to `last_s`.
#[allow(clippy::too_many_arguments)]
pub fn delta(
    src: Mac,
    src_ip: IpAddr,
    sport: u16,
    dst: Mac,
    dst_ip: IpAddr,
    dport: u16,
    proto: u8,
    (packets, bytes): (u64, u64),
    (first_s, last_s): (f64, f64),
) -> Delta {
    let key: ConvKey = v4_key(src.0, dst.0, octets(src_ip), octets(dst_ip), proto, sport, dport);
    Delta { key, packets, bytes, first_seen_ns: (first_s * 1e9) as u64, last_seen_ns: (last_s * 1e9) as u64 }
}

impl Bench {
    pub fn with(config: Config) -> Self {
        Self {
            det: Detectors::new(config),
            scopes: ScopeClassifier::new(vec!["192.168.77.0/24".parse().unwrap()]),
            oui: Oui::parse("80-9F-9B   (hex)\t\tSichuan AI-Link Technology Co., Ltd.\n"),
            identities: Identities::default(),
            peers: PeerDb::empty(),
            next_id: 0,
        }
    }

    /// A bench whose peer databases are the CSVs given (ASN rows, country rows).
    pub fn with_peers(asn_csv: &str, country_csv: &str) -> Self {
        Self { peers: PeerDb::from_csv_texts(asn_csv, country_csv), ..Self::default() }
    }

    /// Feeds one event (ids count from 1) and returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &mut self,
        ts: f64,
        src_mac: Mac,
        src_ip: IpAddr,
        src_port: u16,
        dst_mac: Mac,
        dst_ip: IpAddr,
        dst_port: u16,
        fields: EventFields,
    ) -> u64 {
        self.next_id += 1;
        let ev = Event {
            id: self.next_id,
            ts,
            kind: fields.kind(),
            src_mac,
            src_ip: Some(src_ip),
            src_port: Some(src_port),
            dst_mac,
            dst_ip: Some(dst_ip),
            dst_port: Some(dst_port),
            fields,
        };
        let cx = Context { scopes: &self.scopes, oui: &self.oui, identities: &self.identities, peers: &self.peers };
        self.det.on_event(&ev, &cx);
        let _: SampleKind = ev.kind;
        self.next_id
    }

    /// One poll at wall time `now` (the replay clock: program ns are epoch ns).
    pub fn poll(&mut self, deltas: &[Delta], macs: &[(Mac, u64)], now: f64) {
        let cx = Context { scopes: &self.scopes, oui: &self.oui, identities: &self.identities, peers: &self.peers };
        self.det.on_poll(deltas, macs, now, Clock::Epoch, &cx);
    }

    pub fn findings(&self) -> Vec<Finding> {
        self.det.findings.list().cloned().collect()
    }

    /// The one finding of `rule` (panics unless there is exactly one).
    pub fn only(&self, rule: Rule) -> Finding {
        let all: Vec<Finding> = self.findings().into_iter().filter(|f| f.rule == rule).collect();
        assert_eq!(all.len(), 1, "findings of {rule}: {all:#?}");
        all.into_iter().next().unwrap()
    }
}

pub fn msearch() -> EventFields {
    EventFields::Ssdp(SsdpEvent {
        method: SsdpMethod::MSearch,
        st: Some("upnp:rootdevice".into()),
        nt: None,
        nts: None,
        usn: None,
        location: None,
        server: None,
        user_agent: None,
        mx: Some(1),
        status: None,
        truncated: false,
    })
}

pub fn ssdp_response() -> EventFields {
    EventFields::Ssdp(SsdpEvent {
        method: SsdpMethod::Response,
        st: Some("upnp:rootdevice".into()),
        nt: None,
        nts: None,
        usn: Some("uuid:1::upnp:rootdevice".into()),
        location: Some("http://192.168.77.44:8815/rootdesc.xml".into()),
        server: None,
        user_agent: None,
        mx: None,
        status: Some(200),
        truncated: false,
    })
}

pub fn http_get(uri: &str) -> EventFields {
    EventFields::Http(HttpEvent { method: Some(Method::Get), uri: Some(uri.into()), ..Default::default() })
}

pub fn http_request(method: Method, uri: &str, host: &str, range: Option<&str>) -> EventFields {
    EventFields::Http(HttpEvent {
        method: Some(method),
        uri: Some(uri.into()),
        host: Some(host.into()),
        range: range.map(Into::into),
        ..Default::default()
    })
}

pub fn http_response(status: u16, content_type: &str, length: u64, range: Option<&str>) -> EventFields {
    EventFields::Http(HttpEvent {
        status: Some(status),
        content_type: Some(content_type.into()),
        content_length: Some(length),
        content_range: range.map(Into::into),
        ..Default::default()
    })
}
