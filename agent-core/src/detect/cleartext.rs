//! `cleartext`: data that should be encrypted, sent in the clear.
//!
//! - Telnet: payload on TCP 23 or 2323, either side (a device that offers it or uses it).
//! - MQTT without TLS: a CONNECT or PUBLISH the kernel could read is unencrypted by definition;
//!   whether the CONNECT carries credentials is flagged, never their value.
//! - HTTP requests to an Internet host whose URI carries identifiers: query keys such as
//!   `serial`, `mac`, `imei`, `token` (the key is reported, never the value), or a MAC address.
//! - The first packets of a conversation to an Internet host that are mostly printable text
//!   (`flow` events of class "text", at least [`MIN_TEXT_BYTES`]): the talk found serial numbers
//!   and public addresses in cleartext XML over UDP.

use std::collections::BTreeSet;

use serde_json::json;

use super::{Context, Hit, Rule, excerpt};
use crate::{events::Event, proto::EventFields, scope::Scope};

pub const TELNET_PORTS: [u16; 2] = [23, 2323];
/// Text shorter than this says too little to call it data.
pub const MIN_TEXT_BYTES: u64 = 16;
/// Query keys that identify a device or a person, or authenticate one.
const IDENTIFIER_KEYS: [&str; 22] = [
    "serial",
    "sn",
    "serialno",
    "serial_number",
    "mac",
    "macaddr",
    "mac_address",
    "imei",
    "imsi",
    "iccid",
    "deviceid",
    "device_id",
    "did",
    "uuid",
    "token",
    "access_token",
    "password",
    "passwd",
    "pwd",
    "email",
    "ssid",
    "apikey",
];

#[derive(Debug, Default)]
pub struct Cleartext {}

/// Identifier keys in a URI's query, and "mac_in_uri" when a MAC address appears anywhere.
pub fn uri_identifiers(uri: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some((_, query)) = uri.split_once('?') {
        for pair in query.split('&') {
            let key = pair.split('=').next().unwrap_or("").to_ascii_lowercase();
            if IDENTIFIER_KEYS.contains(&key.as_str()) {
                out.insert(key);
            }
        }
    }
    if super::discovery::contains_mac(uri) {
        out.insert("mac_in_uri".to_owned());
    }
    out
}

impl Cleartext {
    pub fn on_event(&mut self, ev: &Event, cx: &Context<'_>, hits: &mut Vec<Hit>) {
        // The finding is about a device on the LAN: what comes from the Internet arrives from
        // the gateway's MAC, which offers no Telnet of its own (its LAN client's bytes raise it).
        if ev.src_ip.is_none_or(|ip| cx.scopes.of_ip(ip) != Scope::Lan) {
            return;
        }
        let scope = ev.dst_ip.map(|ip| cx.scopes.of_ip(ip));
        let peer = match (ev.dst_ip, ev.dst_port) {
            (Some(ip), Some(port)) => format!("{ip}:{port}"),
            _ => "-".to_owned(),
        };
        let telnet = |p: Option<u16>| p.is_some_and(|p| TELNET_PORTS.contains(&p));
        let (protocol, summary, details) = match &ev.fields {
            EventFields::Flow(f)
                if f.transport == "tcp" && f.payload_bytes > 0 && (telnet(ev.dst_port) || telnet(ev.src_port)) =>
            {
                let role = if telnet(ev.src_port) { "offers" } else { "uses" };
                ("telnet", format!("{role} Telnet with {peer}"), json!({"role": role}))
            }
            EventFields::Mqtt(m) if matches!(m.packet_type, "CONNECT" | "PUBLISH") => {
                let creds = m.has_credentials == Some(true);
                let what = if creds { "with a user name or password" } else { "" };
                (
                    "mqtt",
                    format!("MQTT {} without TLS to {peer} {what}", m.packet_type).trim_end().to_owned(),
                    json!({
                        "packet_type": m.packet_type,
                        "credentials": creds,
                        "client_id": m.client_id,
                        "topic": m.topic,
                    }),
                )
            }
            EventFields::Http(h) if h.method.is_some() && scope == Some(Scope::Internet) => {
                let keys = uri_identifiers(h.uri.as_deref().unwrap_or(""));
                if keys.is_empty() {
                    return;
                }
                let path = h.uri.as_deref().unwrap_or("").split('?').next().unwrap_or("");
                (
                    "http",
                    format!(
                        "HTTP request to {peer} carries identifiers: {}",
                        keys.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    json!({"host": h.host, "path": crate::labels::sanitize(path, 256), "identifiers": keys}),
                )
            }
            EventFields::Flow(f)
                if f.payload_class == "text" && f.payload_bytes >= MIN_TEXT_BYTES && scope == Some(Scope::Internet) =>
            {
                let format = f.format.unwrap_or("text");
                (
                    if f.transport == "tcp" { "tcp" } else { "udp" },
                    format!("sends {format} in cleartext over {} to {peer}", f.transport.to_uppercase()),
                    json!({"format": format, "payload_bytes": f.payload_bytes, "printable_ratio": f.printable_ratio}),
                )
            }
            _ => return,
        };
        let mut details = details;
        details["protocol"] = json!(protocol);
        details["peer"] = json!(peer);
        details["peer_scope"] = json!(scope.map(Scope::as_str));
        hits.push(Hit {
            rule: Rule::Cleartext,
            mac: ev.src_mac,
            ip: ev.src_ip,
            ts: ev.ts,
            summary,
            details,
            evidence: vec![(ev.id, excerpt(ev))],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{super::testing::*, *};
    use crate::proto::{flow, http::Method, mqtt::MqttEvent};

    fn text(bytes: &[u8]) -> EventFields {
        EventFields::Flow(flow::classify(bytes, false))
    }

    #[test]
    fn xml_with_a_serial_to_the_internet_is_cleartext_but_not_to_the_lan_nor_binary() {
        let xml = b"<?xml version=\"1.0\"?><dev><sn>A1B2C3D4</sn><wan>203.0.113.7</wan></dev>";
        let mut t = Bench::default();
        t.event(1.0, HUB, LAN_HUB, 40000, CAM, LAN_CAM, 6000, text(xml));
        t.event(
            1.0,
            HUB,
            LAN_HUB,
            40001,
            GW,
            INET,
            6000,
            EventFields::Flow(flow::classify(&[0, 1, 2, 0xff, 0x80, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9], false)),
        );
        assert!(t.findings().is_empty());
        t.event(2.0, HUB, LAN_HUB, 40000, GW, INET, 6000, text(xml));
        let f = t.only(Rule::Cleartext);
        assert_eq!((f.details["protocol"].as_str(), f.details["format"].as_str()), (Some("udp"), Some("xml")));
        assert_eq!(f.details["peer"], "203.0.113.10:6000");
    }

    #[test]
    fn mqtt_without_tls_flags_credentials_never_their_value() {
        let mut t = Bench::default();
        let connect = MqttEvent {
            packet_type: "CONNECT",
            client_id: Some("cam-1".into()),
            has_credentials: Some(true),
            ..Default::default()
        };
        t.event(1.0, CAM, LAN_CAM, 40000, GW, INET, 1883, EventFields::Mqtt(connect));
        let f = t.only(Rule::Cleartext);
        assert_eq!((f.details["protocol"].as_str(), f.details["credentials"].as_bool()), (Some("mqtt"), Some(true)));
        assert!(f.summary.contains("user name or password"), "{}", f.summary);
        assert!(!serde_json::to_string(&f).unwrap().contains("secret"));
    }

    #[test]
    fn telnet_either_side_and_identifiers_in_uris() {
        let mut t = Bench::default();
        t.event(
            1.0,
            HUB,
            LAN_HUB,
            23,
            CAM,
            LAN_CAM,
            40000,
            EventFields::Flow(flow::classify(&[0xff, 0xfd, 0x18], true)),
        );
        assert_eq!(t.only(Rule::Cleartext).details["role"], "offers");
        t.event(
            2.0,
            CAM,
            LAN_CAM,
            40000,
            GW,
            INET,
            80,
            http_request(Method::Get, "/report?sn=A1&mac=80:9f:9b:45:a3:28&x=1", "c.example", None),
        );
        t.event(
            3.0,
            CAM,
            LAN_CAM,
            40001,
            GW,
            INET,
            80,
            http_request(Method::Get, "/index.html?page=2", "c.example", None),
        );
        assert_eq!(t.findings().iter().filter(|f| f.mac == HUB).count(), 1);
        let cam: Vec<_> = t.findings().into_iter().filter(|f| f.mac == CAM).collect();
        assert_eq!(cam.len(), 1);
        assert_eq!(cam[0].details["identifiers"], json!(["mac", "mac_in_uri", "sn"]));
        // A Telnet server on the Internet: its bytes come through the gateway, which offers none.
        t.event(4.0, GW, INET, 23, CAM, LAN_CAM, 40002, EventFields::Flow(flow::classify(b"login: ", true)));
        assert!(t.findings().iter().all(|f| f.mac != GW), "{:?}", t.findings());
        assert!(!cam[0].details.to_string().contains("A1"), "values are never reported");
    }
}
