//! Who each device is: every name it gave itself or was given, with the source that said it and
//! when it was last said; a display name chosen by one documented order ([`Source::PREFERENCE`]);
//! and whether its MAC is randomised. Pure: events in, identities out.
//!
//! A name is attributed only to the device whose frame carried it: a DHCP message that names
//! another client (a relay, a spoofer) renames nobody, and a UPnP description counts only when a
//! LAN address served it (from the Internet, the frame's source MAC is the gateway's). All of
//! it is attacker-controlled text: sanitised, length-capped, bounded per source and per device.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use crate::{
    bounded::{TableSize, entry_bytes},
    events::Event,
    labels::sanitize,
    mac::Mac,
    proto::{
        EventFields,
        dhcp::{DhcpEvent, MessageType},
        dns::{DnsEvent, RecordData},
        ssdp::SsdpMethod,
    },
    scope::{Scope, ScopeClassifier},
};

const MAX_NAME_CHARS: usize = 253;
/// Names kept per device and source (the most recently seen).
const MAX_PER_SOURCE: usize = 3;
/// Devices with identities, and the bytes of all their names: past either, the one seen least
/// recently makes room.
pub const MAX_DEVICES: usize = 8192;
pub const MAX_BYTES: usize = 4 << 20;

/// Where a name came from. Declared in order of preference for the display name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `<friendlyName>` of the UPnP description the device served: often set by its user.
    UpnpFriendlyName,
    /// DHCPv4 option 12.
    DhcpHostname,
    /// The owner of an mDNS A/AAAA record for the device's own address.
    MdnsHost,
    /// DHCPv6 option 39.
    Dhcpv6Fqdn,
    /// The instance of a service the device announced on mDNS (`Living Room` of
    /// `Living Room._googlecast._tcp.local`).
    MdnsService,
    /// `<manufacturer> <modelName> <modelNumber>` of its UPnP description.
    UpnpModel,
    // The rest describe software, not the device: kept as evidence, never displayed.
    /// DHCPv4 option 60 (or v6 option 16).
    DhcpVendorClass,
    /// DHCP parameter request list (option 55): a fingerprint of the DHCP client.
    DhcpFingerprint,
    /// SERVER of its SSDP announcements and answers.
    SsdpServer,
    /// The UUID of its SSDP USN.
    SsdpUsn,
    /// User-Agent of HTTP requests it sent.
    HttpUserAgent,
}

impl Source {
    /// The sources that may name a device, best first; then the OUI vendor, then the MAC.
    pub const PREFERENCE: [Source; 6] = [
        Source::UpnpFriendlyName,
        Source::DhcpHostname,
        Source::MdnsHost,
        Source::Dhcpv6Fqdn,
        Source::MdnsService,
        Source::UpnpModel,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Source::UpnpFriendlyName => "upnp_friendly_name",
            Source::DhcpHostname => "dhcp_hostname",
            Source::MdnsHost => "mdns_host",
            Source::Dhcpv6Fqdn => "dhcpv6_fqdn",
            Source::MdnsService => "mdns_service",
            Source::UpnpModel => "upnp_model",
            Source::DhcpVendorClass => "dhcp_vendor_class",
            Source::DhcpFingerprint => "dhcp_fingerprint",
            Source::SsdpServer => "ssdp_server",
            Source::SsdpUsn => "ssdp_usn",
            Source::HttpUserAgent => "http_user_agent",
        }
    }

    fn names_device(self) -> bool {
        Self::PREFERENCE.contains(&self)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One name of a device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Name {
    pub name: String,
    pub source: Source,
    /// Seconds since the epoch (capture time in replay).
    pub last_seen: f64,
    /// `last_seen` as the state file had it, and this run's: only the latter moves when the
    /// wall clock jumps.
    #[serde(skip)]
    remembered: Option<f64>,
    #[serde(skip)]
    seen: Option<f64>,
}

/// Names are equal by what they say, not by where their time came from.
impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.source, self.last_seen) == (&other.name, other.source, other.last_seen)
    }
}

impl Name {
    fn shift_times(&mut self, delta: f64) {
        if let Some(seen) = &mut self.seen {
            *seen += delta;
            self.last_seen = self.remembered.map_or(*seen, |r| r.max(*seen));
        }
    }
}

/// The display name's source when no name source said anything.
pub const FROM_VENDOR: &str = "oui_vendor";
pub const FROM_MAC: &str = "mac";

#[derive(Clone, Debug, Default)]
struct Identity {
    names: Vec<Name>,
    /// The newest of the names' last-seen times, kept so that making room under a flood of new
    /// MACs is one pass over the devices, not over every name.
    last_seen: f64,
    /// The newest remembered from the state file, and this run's (which moves with the clock).
    remembered: f64,
    seen: Option<f64>,
}

impl Identity {
    fn bytes(&self) -> usize {
        entry_bytes::<Mac, Identity>() + self.names.iter().map(|n| size_of::<Name>() + n.name.len()).sum::<usize>()
    }
}

#[derive(Debug, Default)]
pub struct Identities {
    devices: HashMap<Mac, Identity>,
    /// Devices forgotten to make room for others.
    pub evicted: u64,
    bytes: usize,
    /// Something changed since [`Identities::take_changed`] (so the state file needs saving).
    changed: bool,
}

/// The display name of a device and the source that won.
#[derive(Clone, Debug, PartialEq)]
pub struct Display {
    pub name: String,
    pub source: &'static str,
}

impl Identities {
    /// Learns from one event (the detectors' clock is the event's time).
    pub fn learn(&mut self, ev: &Event, scopes: &ScopeClassifier) {
        let src = ev.src_mac;
        if src.is_group() {
            return;
        }
        let from_lan = ev.src_ip.is_some_and(|ip| matches!(scopes.of_ip(ip), Scope::Lan | Scope::LinkLocal));
        let mut found: Vec<(Source, String)> = Vec::new();
        match &ev.fields {
            EventFields::Dhcp(d) => dhcp_names(src, d, &mut found),
            EventFields::Mdns(m) if m.response => mdns_names(ev.src_ip, m, &mut found),
            EventFields::Ssdp(s) if matches!(s.method, SsdpMethod::Notify | SsdpMethod::Response) => {
                found.extend(s.server.clone().map(|v| (Source::SsdpServer, v)));
                found.extend(
                    s.usn.as_deref().map(|usn| (Source::SsdpUsn, usn.split("::").next().unwrap_or(usn).to_owned())),
                );
            }
            // From the Internet, the frame's source MAC is the gateway's: what a remote client or
            // server says names nobody on the LAN.
            EventFields::Http(_) if !from_lan => {}
            EventFields::Http(h) if h.method.is_some() => {
                found.extend(h.user_agent.clone().map(|v| (Source::HttpUserAgent, v)));
            }
            EventFields::Http(h) => {
                if let Some(u) = &h.upnp {
                    found.extend(u.friendly_name.clone().map(|v| (Source::UpnpFriendlyName, v)));
                    let model: Vec<&str> = [&u.manufacturer, &u.model_name, &u.model_number]
                        .into_iter()
                        .filter_map(|v| v.as_deref())
                        .collect();
                    if !model.is_empty() {
                        found.push((Source::UpnpModel, model.join(" ")));
                    }
                }
            }
            _ => {}
        }
        if found.is_empty() {
            return;
        }
        if !self.devices.contains_key(&src) && self.devices.len() >= MAX_DEVICES {
            self.evict_stalest();
        }
        self.update(src, |id| {
            id.last_seen = id.last_seen.max(ev.ts);
            id.seen = Some(id.seen.map_or(ev.ts, |s| s.max(ev.ts)));
            for (source, name) in found {
                add(id, source, &name, ev.ts, true);
            }
        });
        while self.bytes > MAX_BYTES && self.devices.len() > 1 {
            self.evict_stalest();
        }
        self.changed = true;
    }

    /// Changes a device's identity (made if new), keeping the count of bytes.
    fn update(&mut self, mac: Mac, f: impl FnOnce(&mut Identity)) {
        let before = self.devices.get(&mac).map_or(0, Identity::bytes);
        let id = self.devices.entry(mac).or_default();
        f(id);
        self.bytes = self.bytes + id.bytes() - before;
    }

    pub fn table(&self) -> TableSize {
        TableSize {
            table: "identities",
            entries: self.devices.len(),
            bytes: self.bytes,
            max_entries: MAX_DEVICES,
            evicted: self.evicted,
        }
    }

    /// The wall clock jumped by `delta` seconds: this run's last-seen times move with it (and
    /// are saved); those remembered from the state file stay.
    pub fn shift_times(&mut self, delta: f64) {
        for id in self.devices.values_mut() {
            if let Some(seen) = &mut id.seen {
                *seen += delta;
                id.last_seen = id.remembered.max(*seen);
                id.names.iter_mut().for_each(|n| n.shift_times(delta));
                self.changed = true;
            }
        }
    }

    /// Whether anything changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn evict_stalest(&mut self) {
        if let Some(mac) = self.devices.iter().min_by(|a, b| a.1.last_seen.total_cmp(&b.1.last_seen)).map(|(m, _)| *m) {
            if let Some(id) = self.devices.remove(&mac) {
                self.bytes -= id.bytes();
            }
            self.evicted += 1;
        }
    }

    /// Every name of a device, in order of preference, then most recent first.
    pub fn names(&self, mac: Mac) -> Vec<Name> {
        let mut names = self.devices.get(&mac).map(|id| id.names.clone()).unwrap_or_default();
        names.sort_by(|a, b| a.source.cmp(&b.source).then(b.last_seen.total_cmp(&a.last_seen)));
        names
    }

    /// The name to show for a device: its best name by [`Source::PREFERENCE`] (the most recent
    /// of that source), else its vendor with the MAC's last three bytes, else its MAC.
    pub fn display(&self, mac: Mac, vendor: Option<&str>) -> Display {
        if let Some(n) = self.names(mac).into_iter().find(|n| n.source.names_device()) {
            return Display { name: n.name, source: n.source.as_str() };
        }
        let m = mac.0;
        match vendor {
            Some(v) => Display { name: format!("{v} {:02x}:{:02x}:{:02x}", m[3], m[4], m[5]), source: FROM_VENDOR },
            None => Display { name: mac.to_string(), source: FROM_MAC },
        }
    }

    /// For each randomised MAC, the other randomised MACs that gave the same DHCP hostname or
    /// mDNS host name: one device behind several MACs (a phone that rotates its MAC).
    pub fn same_device(&self) -> BTreeMap<Mac, Vec<Mac>> {
        let mut by_name: BTreeMap<String, Vec<Mac>> = BTreeMap::new();
        for (mac, id) in &self.devices {
            if !mac.is_local() {
                continue;
            }
            for n in id.names.iter().filter(|n| matches!(n.source, Source::DhcpHostname | Source::MdnsHost)) {
                let host = n.name.to_lowercase();
                let host = host.strip_suffix(".local").unwrap_or(&host);
                let macs = by_name.entry(host.to_owned()).or_default();
                if !macs.contains(mac) {
                    macs.push(*mac);
                }
            }
        }
        let mut out: BTreeMap<Mac, Vec<Mac>> = BTreeMap::new();
        for macs in by_name.values().filter(|m| m.len() > 1) {
            for mac in macs {
                let others = out.entry(*mac).or_default();
                others.extend(macs.iter().filter(|m| *m != mac));
                others.sort();
                others.dedup();
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// What the state file keeps (schema [`SCHEMA`]).
    pub fn to_file(&self) -> IdentityFile {
        let mut devices: Vec<DeviceNames> =
            self.devices.keys().map(|mac| DeviceNames { mac: mac.to_string(), names: self.names(*mac) }).collect();
        devices.sort_by(|a, b| a.mac.cmp(&b.mac));
        IdentityFile { schema: SCHEMA.to_owned(), devices }
    }

    /// Names remembered from before a restart (marks a change: the file is rewritten in its
    /// own bounds and form at the next save).
    pub fn remember(&mut self, file: IdentityFile) {
        self.changed = true;
        for d in file.devices.into_iter().take(MAX_DEVICES) {
            let Ok(mac) = d.mac.parse::<Mac>() else { continue };
            if mac.is_group() || (!self.devices.contains_key(&mac) && self.devices.len() >= MAX_DEVICES) {
                continue;
            }
            self.update(mac, |id| {
                for n in d.names {
                    if n.last_seen.is_finite() {
                        id.last_seen = id.last_seen.max(n.last_seen);
                        id.remembered = id.remembered.max(n.last_seen);
                        add(id, n.source, &n.name, n.last_seen, false);
                    }
                }
            });
        }
        while self.bytes > MAX_BYTES && self.devices.len() > 1 {
            self.evict_stalest();
        }
    }
}

pub const SCHEMA: &str = "iotwatch.identities/v1";

#[derive(Debug, Serialize, Deserialize)]
pub struct IdentityFile {
    pub schema: String,
    pub devices: Vec<DeviceNames>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceNames {
    pub mac: String,
    pub names: Vec<Name>,
}

/// The identities of a state file, or why it cannot be used.
pub fn parse_file(text: &str) -> Result<IdentityFile, String> {
    let file: IdentityFile = serde_json::from_str(text).map_err(|e| format!("not an identities file: {e}"))?;
    if file.schema != SCHEMA {
        return Err(format!("schema {:?}, expected {SCHEMA:?}", file.schema));
    }
    Ok(file)
}

/// Adds or refreshes a name (seen in this run, or remembered); a source's oldest name makes
/// room for a new one.
fn add(id: &mut Identity, source: Source, name: &str, ts: f64, this_run: bool) {
    let name = sanitize(name.trim().trim_end_matches('.'), MAX_NAME_CHARS);
    if name.is_empty() {
        return;
    }
    let newest = |t: Option<f64>| Some(t.map_or(ts, |t| t.max(ts)));
    if let Some(n) = id.names.iter_mut().find(|n| n.source == source && n.name == name) {
        n.last_seen = n.last_seen.max(ts);
        if this_run {
            n.seen = newest(n.seen);
        } else {
            n.remembered = newest(n.remembered);
        }
        return;
    }
    let same: Vec<usize> = (0..id.names.len()).filter(|i| id.names[*i].source == source).collect();
    if same.len() >= MAX_PER_SOURCE
        && let Some(oldest) = same.into_iter().min_by(|a, b| id.names[*a].last_seen.total_cmp(&id.names[*b].last_seen))
    {
        id.names.swap_remove(oldest);
    }
    let (remembered, seen) = if this_run { (None, Some(ts)) } else { (Some(ts), None) };
    id.names.push(Name { name, source, last_seen: ts, remembered, seen });
}

/// A client's own DHCP message: its hostname (v4 option 12, v6 option 39), vendor class and
/// parameter request list. Server messages and messages about another client are skipped.
fn dhcp_names(src: Mac, d: &DhcpEvent, found: &mut Vec<(Source, String)>) {
    let from_client = match d.message_type {
        // DISCOVER, REQUEST, DECLINE, RELEASE, INFORM
        Some(MessageType::V4(t)) => matches!(t, 1 | 3 | 4 | 7 | 8),
        // SOLICIT, REQUEST, CONFIRM, RENEW, REBIND, RELEASE, DECLINE, INFORMATION-REQUEST
        Some(MessageType::V6(t)) => matches!(t, 1 | 3 | 4 | 5 | 6 | 8 | 9 | 11),
        None => false,
    };
    if !from_client || d.client_mac.is_some_and(|c| c != src) {
        return;
    }
    let host_source = if d.ip_version == 6 { Source::Dhcpv6Fqdn } else { Source::DhcpHostname };
    found.extend(d.hostname.clone().map(|h| (host_source, h)));
    found.extend(d.vendor_class.clone().map(|v| (Source::DhcpVendorClass, v)));
    found.extend(d.param_list.as_ref().filter(|p| !p.0.is_empty()).map(|p| (Source::DhcpFingerprint, p.to_string())));
}

/// An mDNS response's host names for the sender's own address, and the instances of the
/// services it announces (PTR targets and SRV owners under a `_service._proto` type).
fn mdns_names(own: Option<IpAddr>, m: &DnsEvent, found: &mut Vec<(Source, String)>) {
    for r in &m.records {
        match &r.data {
            RecordData::Addr(addr) if own == Some(*addr) => found.push((Source::MdnsHost, r.name.clone())),
            RecordData::Name(target) if r.name.starts_with('_') => {
                found.extend(service_instance(target).map(|i| (Source::MdnsService, i)));
            }
            RecordData::Srv { .. } => found.extend(service_instance(&r.name).map(|i| (Source::MdnsService, i))),
            _ => {}
        }
    }
}

/// `Living Room` of `Living Room._googlecast._tcp.local`; none for a service type itself.
fn service_instance(name: &str) -> Option<String> {
    let (instance, rest) = name.split_once("._")?;
    (!instance.is_empty() && !instance.starts_with('_') && (rest.contains("._tcp") || rest.contains("._udp")))
        .then(|| instance.to_owned())
}

#[cfg(test)]
mod tests {
    use agent_common::sample::SampleKind;

    use super::*;
    use crate::proto::{
        dhcp::ParamList,
        dns::{DnsRecord, RecordType},
        http::{HttpEvent, Method},
        ssdp::SsdpEvent,
        upnp::UpnpDevice,
    };

    const CAM: Mac = Mac([0xd8, 0xf1, 0x5b, 0xaa, 0xbb, 0xcc]);
    const PHONE_A: Mac = Mac([0x12, 0x34, 0x56, 0, 0, 1]);
    const PHONE_B: Mac = Mac([0x3e, 0x99, 0x01, 0, 0, 2]);

    fn scopes() -> ScopeClassifier {
        ScopeClassifier::new(vec!["192.168.77.0/24".parse().unwrap()])
    }

    fn event(src: Mac, src_ip: &str, ts: f64, fields: EventFields) -> Event {
        Event {
            id: 1,
            ts,
            kind: SampleKind::Flow,
            src_mac: src,
            src_ip: src_ip.parse().ok(),
            src_port: None,
            dst_mac: Mac([0xff; 6]),
            dst_ip: None,
            dst_port: None,
            fields,
        }
    }

    fn dhcp(client: Mac, t: u8, host: &str) -> EventFields {
        EventFields::Dhcp(DhcpEvent {
            ip_version: 4,
            message_type: Some(MessageType::V4(t)),
            client_mac: Some(client),
            hostname: Some(host.to_owned()),
            vendor_class: Some("udhcp 1.36.1".into()),
            param_list: Some(ParamList(vec![1, 3, 6, 12, 15, 28, 42])),
            ..Default::default()
        })
    }

    fn description(friendly: &str) -> EventFields {
        EventFields::Http(HttpEvent {
            status: Some(200),
            upnp: Some(UpnpDevice {
                friendly_name: Some(friendly.into()),
                manufacturer: Some("Acme".into()),
                model_name: Some("Cam".into()),
                model_number: Some("2".into()),
            }),
            ..Default::default()
        })
    }

    fn mdns(own: &str, records: Vec<(&str, RecordData)>) -> EventFields {
        EventFields::Mdns(DnsEvent {
            response: true,
            records: records
                .into_iter()
                .map(|(name, data)| DnsRecord {
                    name: name.into(),
                    rtype: RecordType::A,
                    data,
                    ttl: 120,
                    cache_flush: false,
                })
                .chain(std::iter::once(DnsRecord {
                    name: "cam-1.local".into(),
                    rtype: RecordType::A,
                    data: RecordData::Addr(own.parse().unwrap()),
                    ttl: 120,
                    cache_flush: true,
                }))
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn the_display_name_follows_the_documented_order() {
        let (mut ids, s) = (Identities::default(), scopes());
        assert_eq!(
            ids.display(CAM, Some("Acme Ltd")),
            Display { name: "Acme Ltd aa:bb:cc".into(), source: FROM_VENDOR }
        );
        assert_eq!(ids.display(CAM, None).source, FROM_MAC);
        // Software names never name a device.
        let ua = EventFields::Http(HttpEvent {
            method: Some(Method::Get),
            user_agent: Some("curl/8".into()),
            ..Default::default()
        });
        ids.learn(&event(CAM, "192.168.77.5", 1.0, ua), &s);
        assert_eq!(ids.display(CAM, None).source, FROM_MAC);
        let inst = RecordData::Name("Front Door._hap._tcp.local".into());
        ids.learn(&event(CAM, "192.168.77.5", 2.0, mdns("192.168.77.5", vec![("_hap._tcp.local", inst)])), &s);
        assert_eq!(ids.display(CAM, None), Display { name: "cam-1.local".into(), source: "mdns_host" });
        ids.learn(&event(CAM, "0.0.0.0", 3.0, dhcp(CAM, 1, "HS105")), &s);
        assert_eq!(ids.display(CAM, None).name, "HS105");
        ids.learn(&event(CAM, "192.168.77.5", 4.0, description("Porch camera")), &s);
        assert_eq!(ids.display(CAM, None), Display { name: "Porch camera".into(), source: "upnp_friendly_name" });
        let sources: Vec<_> = ids.names(CAM).iter().map(|n| (n.source.as_str(), n.name.clone())).collect();
        assert_eq!(
            sources,
            [
                ("upnp_friendly_name", "Porch camera".to_owned()),
                ("dhcp_hostname", "HS105".into()),
                ("mdns_host", "cam-1.local".into()),
                ("mdns_service", "Front Door".into()),
                ("upnp_model", "Acme Cam 2".into()),
                ("dhcp_vendor_class", "udhcp 1.36.1".into()),
                ("dhcp_fingerprint", "1,3,6,12,15,28,42".into()),
                ("http_user_agent", "curl/8".into()),
            ]
        );
    }

    #[test]
    fn names_stick_only_to_the_device_that_said_them() {
        let (mut ids, s) = (Identities::default(), scopes());
        // A DHCP request that names another client, a server's answer, a description from the
        // Internet (its frame comes from the gateway's MAC), an mDNS host record for another
        // address, a request from the Internet: none of them names anyone.
        ids.learn(&event(PHONE_A, "0.0.0.0", 1.0, dhcp(CAM, 3, "evil")), &s);
        ids.learn(&event(PHONE_A, "192.168.77.1", 1.0, dhcp(PHONE_A, 5, "from-server")), &s);
        ids.learn(&event(PHONE_A, "203.0.113.7", 1.0, description("cloud")), &s);
        ids.learn(&event(PHONE_A, "192.168.77.9", 1.0, mdns("192.168.77.10", vec![])), &s);
        let ua = EventFields::Http(HttpEvent {
            method: Some(Method::Get),
            user_agent: Some("bot/1".into()),
            ..Default::default()
        });
        ids.learn(&event(PHONE_A, "198.51.100.3", 1.0, ua), &s);
        assert!(ids.is_empty(), "{:?}", ids.names(PHONE_A));
    }

    #[test]
    fn randomised_macs_with_one_hostname_are_one_device() {
        let (mut ids, s) = (Identities::default(), scopes());
        ids.learn(&event(PHONE_A, "0.0.0.0", 1.0, dhcp(PHONE_A, 1, "Annas-Phone")), &s);
        let own = RecordData::Addr("192.168.77.9".parse().unwrap());
        ids.learn(&event(PHONE_B, "192.168.77.9", 9.0, mdns("192.168.77.99", vec![("annas-phone.local", own)])), &s);
        // A vendor MAC with the same name is another device (two phones of one model).
        ids.learn(&event(CAM, "0.0.0.0", 9.0, dhcp(CAM, 1, "Annas-Phone")), &s);
        let same = ids.same_device();
        assert_eq!(same.get(&PHONE_A), Some(&vec![PHONE_B]));
        assert_eq!(same.get(&PHONE_B), Some(&vec![PHONE_A]));
        assert_eq!(same.get(&CAM), None);
        assert!(PHONE_A.is_local() && PHONE_B.is_local() && !CAM.is_local());
    }

    #[test]
    fn names_are_bounded_per_source_and_devices_in_number() {
        let (mut ids, s) = (Identities::default(), scopes());
        for i in 0..10 {
            let ua = EventFields::Http(HttpEvent {
                method: Some(Method::Get),
                user_agent: Some(format!("agent/{i}\u{1b}[31m")),
                ..Default::default()
            });
            ids.learn(&event(CAM, "192.168.77.5", f64::from(i), ua), &s);
        }
        let names = ids.names(CAM);
        assert_eq!(names.len(), MAX_PER_SOURCE, "the most recent user agents");
        assert_eq!(names[0].name, "agent/9?[31m", "control characters replaced");
        for i in 0..=MAX_DEVICES as u32 {
            let b = i.to_be_bytes();
            let mac = Mac([0x00, 0x11, b[0], b[1], b[2], b[3]]);
            ids.learn(&event(mac, "0.0.0.0", 100.0 + f64::from(i), dhcp(mac, 1, "x")), &s);
        }
        assert_eq!((ids.len(), ids.evicted), (MAX_DEVICES, 2), "the stalest (CAM, then the first) made room");
        assert!(ids.names(CAM).is_empty());
    }

    #[test]
    fn long_names_are_bounded_in_bytes_the_stalest_going_first() {
        let (mut ids, s) = (Identities::default(), scopes());
        let long = "h".repeat(400);
        for i in 0..MAX_DEVICES as u32 {
            let b = i.to_be_bytes();
            let mac = Mac([0x00, 0x11, b[0], b[1], b[2], b[3]]);
            ids.learn(&event(mac, "0.0.0.0", f64::from(i), dhcp(mac, 1, &format!("{i}{long}"))), &s);
            let ua = HttpEvent { method: Some(Method::Get), user_agent: Some(long.clone()), ..Default::default() };
            ids.learn(&event(mac, "192.168.77.9", f64::from(i), EventFields::Http(ua)), &s);
        }
        // Each name is cut at 253 characters: two for each of 8,192 devices are more than MAX_BYTES.
        let text: usize = ids.devices.values().flat_map(|id| id.names.iter().map(|n| n.name.len())).sum();
        assert!(text < MAX_BYTES && ids.table().bytes <= MAX_BYTES, "{text} {:?}", ids.table());
        assert!(ids.len() < MAX_DEVICES && ids.evicted > 0, "{:?}", ids.table());
        let newest = Mac([0x00, 0x11, 0, 0, 0x1f, 0xff]);
        let first = Mac([0x00, 0x11, 0, 0, 0, 0]);
        assert!(!ids.names(newest).is_empty() && ids.names(first).is_empty());
    }

    #[test]
    fn ssdp_and_the_state_file_round_trip() {
        let (mut ids, s) = (Identities::default(), scopes());
        let notify = EventFields::Ssdp(SsdpEvent {
            method: SsdpMethod::Notify,
            st: None,
            nt: Some("upnp:rootdevice".into()),
            nts: Some("ssdp:alive".into()),
            usn: Some("uuid:4d696e69-444c-164e-9d41-b827eb96c6c2::upnp:rootdevice".into()),
            location: None,
            server: Some("Linux/5.4 UPnP/1.0 MiniDLNA/1.3.0".into()),
            user_agent: None,
            mx: None,
            status: None,
            truncated: false,
        });
        ids.learn(&event(CAM, "192.168.77.5", 5.0, notify), &s);
        let text = serde_json::to_string(&ids.to_file()).unwrap();
        let mut back = Identities::default();
        back.remember(parse_file(&text).unwrap());
        assert_eq!(back.names(CAM), ids.names(CAM));
        assert_eq!(back.names(CAM)[1].name, "uuid:4d696e69-444c-164e-9d41-b827eb96c6c2");
        assert!(
            parse_file("{\"schema\":\"iotwatch.known-devices/v1\",\"devices\":[]}").unwrap_err().contains("schema")
        );
        assert!(parse_file("{").is_err());
    }
}
