//! The lab's finding scenarios: every behaviour the detectors report (issue 12), each on a lab
//! device of its own so that findings are attributed per MAC, and a negative twin for each that
//! must raise nothing, with real daemons as the peers (minidlna, avahi-daemon, chrony, nginx,
//! mosquitto, dnsmasq) and xtask/lab/scenarios.py for the rest.
//!
//! [`SCENARIOS`] is the table: device index (position + 1) → scenario → the finding it must
//! raise, or the rules it must not, and the device's [`Identity`]: the real device it plays,
//! its MAC under that maker's IEEE OUI (one phone's randomised), and what it says of itself
//! on the LAN, as real devices do: a DHCP exchange once when it starts (hostname, vendor class,
//! parameter request list), and for some mDNS (one announces, others answer a browse). [`Scenarios`] starts the servers once, then runs each
//! client on a schedule from the main thread's [`Scenarios::tick`] (no threads: children are
//! spawned and reaped), adds the late device, and reports how every client fared.
//! [`traffic_check`] is the independent oracle that a scenario's traffic did happen, from the
//! agent's event log and report (its protocol events and peers, which exist without the
//! detectors); [`verdicts`] compares the report's findings with the table.
//!
//! Bounds: every client runs under `timeout(1)` or has its own deadline, long-running ones end
//! after the lab's duration, servers are children of the lab that are stopped on drop (and
//! killed with their namespace otherwise), and all traffic stays between lab namespaces: the
//! "Internet" is the lab's internet namespace (documentation addresses, 25 more of them on its
//! `lo` for the NTP fan-out, and one benchmarking address), and the scan's /24 has no route
//! beyond it. [`LAB_NETWORKS`] is what the lab's peer databases say of those addresses.
//!
//! Files: this one is the table; [`play`] runs the servers and clients; [`judge`] reads what the
//! agent saw and compares it with the table; [`whole`] puts lab, agent, Prometheus and
//! scenarios together (and captures the lab's traffic).

mod judge;
mod play;
mod whole;

use std::{net::Ipv4Addr, time::Duration};

pub use judge::*;
pub use play::*;
pub use whole::*;

use crate::dhcp::DhcpIdentity;

/// What a scenario's device must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A finding with this rule, for this device.
    Finding(&'static str),
    /// No finding with any of these rules for this device (a negative twin, or a peer).
    Quiet(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub name: &'static str,
    pub expect: Expect,
    /// One line: what the device does.
    pub what: &'static str,
    /// Who the device is, and how it says so on the LAN.
    pub identity: Identity,
}

/// A scenario device's identity, as a real one of its kind has it: a MAC under its maker's IEEE
/// OUI (the agent reports the vendor), a DHCP exchange with its hostname, vendor class and
/// parameter request list (run once when it starts, by busybox udhcpc against dnsmasq on the
/// gateway: [`crate::dhcp`]), and for some an mDNS host name and service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The real device it plays.
    pub model: &'static str,
    /// Lowercase: the maker's OUI, then `77:00` and 10 + the device's index in hex (the last
    /// octet of its address, 192.168.77.(10 + index)). A phone's is locally administered (the
    /// 0x02 bit of the first octet): a randomised MAC, as Android and iOS use one per network.
    pub mac: &'static str,
    /// The OUI's organisation as /usr/share/ieee-data/oui.txt spells it, which is what the
    /// agent reports as `vendor`; "" for a randomised MAC, which has none.
    pub vendor: &'static str,
    pub dhcp: DhcpIdentity,
    pub mdns: Option<Mdns>,
}

/// What a device says of itself on mDNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mdns {
    /// Its host name, without `.local`.
    pub host: &'static str,
    /// true: avahi-daemon announces its records unasked when it starts, as RFC 6762 says (what
    /// `unsolicited_mdns` reports); false: xtask/lab/scenarios.py's responder answers queries
    /// for them and never speaks unasked (the home hub browses for its service).
    pub announces: bool,
    pub service: Option<Service>,
}

/// A DNS-SD service instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// `_googlecast._tcp` (without `.local`).
    pub kind: &'static str,
    pub instance: &'static str,
    pub port: u16,
    pub txt: &'static [&'static str],
}

/// Option 55 of the DHCP clients the devices run (udhcpc sends them in ascending order).
mod params {
    /// busybox udhcpc's own default: the embedded Linux of cameras, plugs, NAS and hubs.
    pub const BUSYBOX: &[u8] = &[1, 3, 6, 12, 15, 28, 42];
    /// The lwIP of Espressif's SDKs (ESP8266, ESP32 firmware).
    pub const ESP: &[u8] = &[1, 3, 6, 15, 28, 31, 33, 43, 44, 46, 47, 121];
    /// dhcpcd, the client of Raspberry Pi OS and of many Linux devices.
    pub const DHCPCD: &[u8] = &[1, 3, 6, 12, 15, 26, 28, 33, 42, 51, 54, 58, 59, 119, 121];
    /// Android's DHCP client.
    pub const ANDROID: &[u8] = &[1, 3, 6, 15, 26, 28, 43, 51, 58, 59, 114];
    /// Windows 10 and 11.
    pub const WINDOWS: &[u8] = &[1, 3, 6, 15, 31, 33, 43, 44, 46, 47, 119, 121, 249, 252];
}

const fn id(
    model: &'static str,
    mac: &'static str,
    vendor: &'static str,
    hostname: &'static str,
    vendor_class: &'static str,
    params: &'static [u8],
) -> Identity {
    Identity { model, mac, vendor, dhcp: DhcpIdentity { hostname, vendor_class, params }, mdns: None }
}

impl Identity {
    const fn mdns(self, host: &'static str, announces: bool, service: Option<Service>) -> Self {
        Self { mdns: Some(Mdns { host, announces, service }), ..self }
    }

    /// Whether the MAC is locally administered (randomised): no vendor.
    pub fn randomised(&self) -> bool {
        u8::from_str_radix(&self.mac[..2], 16).is_ok_and(|b| b & 0x02 != 0)
    }
}

/// The stable rule names of the detectors (issue 12).
/// `large_upload` is not among them: no lab scenario raises it (a device would have to send more
/// than `--detect.upload-bytes`, 512 MiB by default, to one host).
pub const RULES: [&str; 11] = [
    "lateral_movement",
    "unsolicited_mdns",
    "ntp_fanout",
    "firmware_over_http",
    "cleartext",
    "gateway_ping",
    "cloud_initiated",
    "new_device",
    "scan",
    "dns_unreachable",
    "new_destination",
];

const fn finding(name: &'static str, rule: &'static str, what: &'static str, identity: Identity) -> Scenario {
    Scenario { name, expect: Expect::Finding(rule), what, identity }
}

const fn quiet(name: &'static str, rules: &'static [&'static str], what: &'static str, identity: Identity) -> Scenario {
    Scenario { name, expect: Expect::Quiet(rules), what, identity }
}

/// Device index `i` plays `SCENARIOS[i - 1]`, with its identity (MAC, vendor, DHCP, mDNS).
/// The last one joins after the agent started.
pub const SCENARIOS: [Scenario; 24] = {
    use params::*;
    [
        finding(
            "lateral-movement",
            "lateral_movement",
            "SSDP M-SEARCH, then fetches the answering UPnP device's description over HTTP (port 8200)",
            // The talk's camera, which fetched another LAN host's UPnP description.
            id(
                "EZVIZ C6N camera",
                "64:f2:fb:77:00:0b",
                "Hangzhou Ezviz Software Co.,Ltd.",
                "C6N-E91847362",
                "udhcp 1.22.1",
                BUSYBOX,
            ),
        ),
        quiet(
            "upnp-device",
            &["lateral_movement"],
            "minidlna: answers M-SEARCHes, serves its description on 8200",
            id(
                "Synology DS218j NAS (DLNA media server)",
                "00:11:32:77:00:0c",
                "Synology Incorporated",
                "DiskStation",
                "udhcp 1.16.1",
                BUSYBOX,
            )
            .mdns(
                "DiskStation",
                false,
                Some(Service {
                    kind: "_http._tcp",
                    instance: "DiskStation",
                    port: 5000,
                    txt: &["vendor=Synology", "model=DS218j", "version_major=7"],
                }),
            ),
        ),
        quiet(
            "discovery-only",
            &["lateral_movement"],
            "SSDP M-SEARCH, reads the answers, fetches nothing",
            // A casting app looking for media servers, on a phone with a randomised MAC.
            id(
                "Android phone (Pixel 7), randomised MAC",
                "5e:a1:93:77:00:0d",
                "",
                "Pixel-7",
                "android-dhcp-13",
                ANDROID,
            ),
        ),
        finding(
            "mdns-announcer",
            "unsolicited_mdns",
            "avahi-daemon announcing its host and a service with md=, sn=, mac=, fw= TXT keys",
            id("Axis M3045-V camera", "b8:a4:4f:77:00:0e", "Axis Communications AB", "axis-b8a44f77000e", "", BUSYBOX)
                .mdns(
                    "axis-b8a44f77000e",
                    true,
                    Some(Service {
                        kind: "_axis-video._tcp",
                        instance: "AXIS M3045-V - B8A44F77000E",
                        port: 80,
                        txt: &["md=AXIS M3045-V", "sn=IWLAB0001234", "mac=b8:a4:4f:77:00:0e", "fw=10.12.182"],
                    }),
                ),
        ),
        quiet(
            "mdns-responder",
            &["unsolicited_mdns"],
            "answers mDNS queries for iwlab-sensor.local, never announces",
            id("ESPHome sensor (ESP32)", "24:0a:c4:77:00:0f", "Espressif Inc.", "iwlab-sensor", "", ESP).mdns(
                "iwlab-sensor",
                false,
                None,
            ),
        ),
        quiet(
            "mdns-querier",
            &["unsolicited_mdns", "lateral_movement"],
            "asks for iwlab-sensor.local over mDNS every 10 s, browses for the LAN's services every 30 s",
            id(
                "Home Assistant on a Raspberry Pi 4",
                "dc:a6:32:77:00:10",
                "Raspberry Pi Trading Ltd",
                "homeassistant",
                "dhcpcd-9.4.1:Linux-6.1.21-v8+:aarch64:BCM2835",
                DHCPCD,
            ),
        ),
        finding(
            "ntp-fanout",
            "ntp_fanout",
            "chronyd -Q against 25 NTP servers (198.51.100.100-124)",
            // The talk's TP-Link plugs synchronised with about 90 NTP servers.
            id(
                "TP-Link Kasa HS105 plug",
                "50:c7:bf:77:00:11",
                "TP-LINK TECHNOLOGIES CO.,LTD.",
                "HS105",
                "udhcp 1.19.4",
                BUSYBOX,
            ),
        ),
        quiet(
            "ntp-single",
            &["ntp_fanout"],
            "chronyd -Q against one NTP server",
            id("Nest Learning Thermostat", "18:b4:30:77:00:12", "Nest Labs Inc.", "Nest-Thermostat", "", BUSYBOX),
        ),
        finding(
            "firmware-http",
            "firmware_over_http",
            "downloads a 2 MiB firmware.bin over plain HTTP in 4 Range requests on 4 connections",
            // The talk's Xiaomi lamp fetched its firmware over plain HTTP.
            id(
                "Xiaomi Mi LED Desk Lamp 1S",
                "04:cf:8c:77:00:13",
                "XIAOMI Electronics,CO.,LTD",
                "yeelink-light-lamp4_miio277350139",
                "",
                ESP,
            ),
        ),
        quiet(
            "firmware-https",
            &["firmware_over_http", "cleartext"],
            "downloads the same firmware.bin over HTTPS",
            id("Sonos One speaker", "54:2a:1b:77:00:14", "Sonos, Inc.", "SonosZP", "udhcp 1.24.1", BUSYBOX).mdns(
                "Sonos-542A1B770014",
                false,
                Some(Service {
                    kind: "_sonos._tcp",
                    instance: "Living Room",
                    port: 1443,
                    txt: &["vers=3", "protovers=1.24.1"],
                }),
            ),
        ),
        quiet(
            "image-http",
            &["firmware_over_http"],
            "downloads a 2 MiB image/jpeg over plain HTTP",
            // A smart display showing photos.
            id("Google Nest Hub", "3c:8d:20:77:00:15", "Google, Inc.", "Google-Nest-Hub", "", DHCPCD).mdns(
                "Google-Nest-Hub",
                false,
                Some(Service {
                    kind: "_googlecast._tcp",
                    instance: "Google-Nest-Hub-3c8d20770015",
                    port: 8009,
                    txt: &["md=Google Nest Hub", "fn=Kitchen display", "ve=05"],
                }),
            ),
        ),
        finding(
            "mqtt-cleartext",
            "cleartext",
            "MQTT CONNECT with user name and password to port 1883, no TLS",
            id("Tasmota smart plug (ESP8266)", "a4:cf:12:77:00:16", "Espressif Inc.", "tasmota-770016-0022", "", ESP),
        ),
        quiet(
            "mqtt-tls",
            &["cleartext"],
            "the same MQTT CONNECT over TLS (port 8883)",
            id("Nuki Smart Lock 3.0 Pro", "54:d2:72:77:00:17", "Nuki Home Solutions GmbH", "Nuki-Smart-Lock", "", ESP),
        ),
        finding(
            "udp-xml",
            "cleartext",
            "cleartext XML with serial number, MAC and public IP over UDP every 5 s",
            id(
                "Hikvision DS-2CD2143G0-I camera",
                "44:47:cc:77:00:18",
                "Hangzhou Hikvision Digital Technology Co.,Ltd.",
                "DS-2CD2143G0-I",
                "udhcp 1.20.2",
                BUSYBOX,
            ),
        ),
        finding(
            "telnet",
            "cleartext",
            "a Telnet login (user name, password) to an Internet host",
            id(
                "Dahua XVR5104HS video recorder",
                "08:ed:ed:77:00:19",
                "Zhejiang Dahua Technology Co., Ltd.",
                "XVR5104HS",
                "udhcp 1.20.2",
                BUSYBOX,
            ),
        ),
        finding(
            "gateway-ping",
            "gateway_ping",
            "pings the gateway (192.168.77.1) every second",
            id("AVM FRITZ!Repeater 1200", "bc:05:43:77:00:1a", "AVM GmbH", "fritz.repeater", "", BUSYBOX),
        ),
        quiet(
            "internet-ping",
            &["gateway_ping"],
            "pings an Internet host every second",
            id(
                "Windows 11 laptop (Intel Wi-Fi)",
                "ac:ed:5c:77:00:1b",
                "Intel Corporate",
                "DESKTOP-7Q2M4KD",
                "MSFT 5.0",
                WINDOWS,
            ),
        ),
        finding(
            "cloud-initiated",
            "cloud_initiated",
            "an Internet host opens TCP to its port 9000 and exchanges bytes",
            // The talk's plugs and lamp were switched from the cloud.
            id(
                "Xiaomi Mi Smart Plug",
                "78:11:dc:77:00:1c",
                "XIAOMI Electronics,CO.,LTD",
                "chuangmi-plug-m1_miio28461735",
                "",
                ESP,
            ),
        ),
        quiet(
            "three-hosts",
            &["scan", "cloud_initiated"],
            "HTTP to three Internet hosts every 10 s",
            id(
                "Philips Hue bridge",
                "00:17:88:77:00:1d",
                "Philips Lighting BV",
                "Philips-hue",
                "udhcp 1.23.2",
                BUSYBOX,
            ),
        ),
        finding(
            "telnet-scan",
            "scan",
            "one connection attempt to port 23 on each of 203.0.113.1-254",
            // A cheap camera turned into a Mirai-style scanner.
            id("Tuya-based Wi-Fi IP camera", "1c:90:ff:77:00:1e", "Tuya Smart Inc.", "IPCAM", "udhcp 1.20.2", BUSYBOX),
        ),
        finding(
            "dns-refused",
            "dns_unreachable",
            "asks the gateway for DNS every 10 s; nothing listens there, it answers ICMP port unreachable",
            id(
                "Amazon Echo Dot",
                "68:db:f5:77:00:1f",
                "Amazon Technologies Inc.",
                "amazon-6b1e0f3a2",
                "android-dhcp-7.1.2",
                ANDROID,
            ),
        ),
        finding(
            "new-destination",
            "new_destination",
            "HTTPS to its cloud (203.0.113.10, Amazon, US) from the start, and past the baseline also to 198.19.0.10 (Alibaba, CN)",
            // A camera of a US brand, built by a Chinese maker, on Amazon's cloud until it starts
            // sending to a host in China.
            id("Wyze Cam v3", "2c:aa:8e:77:00:20", "Wyze Labs Inc", "WYZE_CAKP2JFUS", "udhcp 1.22.1", BUSYBOX),
        ),
        quiet(
            "same-cloud",
            &["new_destination"],
            "HTTPS to its cloud (203.0.113.10) from the start, and past the baseline also to 192.0.2.10 (a new host of the same provider and country)",
            // Its cloud is on AWS: another endpoint there is no new destination.
            id(
                "iRobot Roomba i7 vacuum",
                "50:14:79:77:00:21",
                "iRobot Corporation",
                "iRobot-3145C40B80A21571",
                "udhcp 1.27.2",
                BUSYBOX,
            ),
        ),
        finding(
            "new-device",
            "new_device",
            "joins the bridge 40 s after the agent started (past the 30 s in which a first start learns its devices), then fetches a status",
            id("LIFX A19 bulb", "d0:73:d5:77:00:22", "LIFI LABS MANAGEMENT PTY LTD", "LIFX-A19", "", ESP),
        ),
    ]
};

/// Index of the device that joins late (the last of the table).
pub const LATE_DEVICE: usize = SCENARIOS.len();
/// Devices present when the agent starts.
pub const EARLY_DEVICES: usize = SCENARIOS.len() - 1;
/// When the late device joins, after the scenarios started.
pub const LATE_JOIN: Duration = Duration::from_secs(40);
/// The lab's `--detect.destination-baseline`: a device's first 20 s on the Internet are its
/// baseline of `new_destination` (the agent's default is an hour).
pub const DESTINATION_BASELINE: Duration = Duration::from_secs(20);
/// When the new-destination and same-cloud devices start talking to their later host: 28 s past
/// their first conversation with the Internet (at 2 s), 8 s past the baseline.
pub const LATER_HOST_AT: Duration = Duration::from_secs(30);

/// One range of the lab's "Internet" as the lab's peer databases give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabNetwork {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub asn: u32,
    pub org: &'static str,
    pub country: &'static str,
    /// What the agent's table of providers makes of the ASN (not written to the databases).
    pub provider: &'static str,
}

const AMAZON: (u32, &str, &str, &str) = (16509, "Amazon.com, Inc.", "US", "Amazon");
const ALIBABA: (u32, &str, &str, &str) = (45102, "Alibaba (US) Technology Co. Ltd.", "CN", "Alibaba");

const fn net(
    first: Ipv4Addr,
    last: Ipv4Addr,
    (asn, org, country, provider): (u32, &'static str, &'static str, &'static str),
) -> LabNetwork {
    LabNetwork { first, last, asn, org, country, provider }
}

/// The lab's peer databases (`--enrich.asn-db`, `--enrich.country-db`; the real ones know nothing
/// of these ranges): the three documentation ranges, where every scenario but one talks, are one
/// provider's in one country, so that no scenario meets a new destination by chance; the
/// benchmarking range of 198.19.0.10 is another provider's in another country.
pub const LAB_NETWORKS: [LabNetwork; 4] = [
    net(Ipv4Addr::new(203, 0, 113, 0), Ipv4Addr::new(203, 0, 113, 255), AMAZON),
    net(Ipv4Addr::new(198, 51, 100, 0), Ipv4Addr::new(198, 51, 100, 255), AMAZON),
    net(Ipv4Addr::new(192, 0, 2, 0), Ipv4Addr::new(192, 0, 2, 255), AMAZON),
    net(Ipv4Addr::new(198, 19, 0, 0), Ipv4Addr::new(198, 19, 255, 255), ALIBABA),
];

/// The lab's network an address is in.
pub fn lab_network(ip: Ipv4Addr) -> Option<&'static LabNetwork> {
    LAB_NETWORKS.iter().find(|n| n.first <= ip && ip <= n.last)
}

/// The NTP servers of the fan-out: 198.51.100.100 and the next ones, on the internet's `lo`.
pub const FANOUT_SERVERS: u8 = 25;
/// Size of firmware.bin and photo.jpg.
pub const DOWNLOAD_BYTES: usize = 2 * 1024 * 1024;
/// How long the first round of every scenario takes (the late device's first fetch is the
/// last, at 41 s): a run shorter than this has not shown everything.
pub const FIRST_ROUND: Duration = Duration::from_secs(45);

const MDNS_NAME: &str = "iwlab-sensor.local";
const MQTT_USER: &str = "iwlab";
const MQTT_PASSWORD: &str = "iwlab-mqtt-pw";
const ST_MEDIA_SERVER: &str = "urn:schemas-upnp-org:device:MediaServer:1";

/// The scenario of device `index` (1-based).
pub fn scenario(index: usize) -> Option<&'static Scenario> {
    index.checked_sub(1).and_then(|i| SCENARIOS.get(i))
}

/// The identity of device `index` (1-based).
pub fn identity(index: usize) -> Option<&'static Identity> {
    scenario(index).map(|s| &s.identity)
}

/// Device `index`'s MAC in the scenario lab: its identity's, and the plain lab's
/// (`lab::device_mac`) past the table.
pub fn device_mac(index: usize) -> String {
    identity(index).map_or_else(|| crate::lab::device_mac(index), |id| id.mac.to_owned())
}

/// The devices that answer on mDNS and never announce, with what they answer for.
pub fn answering_mdns() -> Vec<(usize, Mdns)> {
    let answering = |(i, s): (usize, &Scenario)| s.identity.mdns.filter(|m| !m.announces).map(|m| (i + 1, m));
    SCENARIOS.iter().enumerate().filter_map(answering).collect()
}

/// Index of the scenario with this name.
pub fn index_of(name: &str) -> Option<usize> {
    SCENARIOS.iter().position(|s| s.name == name).map(|i| i + 1)
}

fn idx(name: &str) -> usize {
    index_of(name).unwrap_or_else(|| panic!("no scenario {name}"))
}

/// The alert of a rule in deploy/prometheus: `lateral_movement` → `IotwatchLateralMovement`.
pub fn alert_name(rule: &str) -> String {
    let mut s = String::from("Iotwatch");
    for part in rule.split('_') {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            s.extend(first.to_uppercase());
            s.push_str(c.as_str());
        }
    }
    s
}

fn internet_host(i: usize) -> Ipv4Addr {
    crate::lab::INTERNET_HOSTS[i]
}

fn fanout_server(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 100 + i)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    #[test]
    fn table_is_consistent() {
        let names: BTreeSet<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SCENARIOS.len(), "scenario names are unique");
        for s in &SCENARIOS {
            let rules: Vec<&str> = match s.expect {
                Expect::Finding(r) => vec![r],
                Expect::Quiet(r) => r.to_vec(),
            };
            for r in rules {
                assert!(RULES.contains(&r), "{}: unknown rule {r}", s.name);
            }
        }
        // Every rule has a positive scenario.
        for r in RULES {
            assert!(SCENARIOS.iter().any(|s| s.expect == Expect::Finding(r)), "no scenario raises {r}");
        }
        assert_eq!(scenario(LATE_DEVICE).map(|s| s.name), Some("new-device"));
        // The hub browses for the answering devices' service types: were one of them the
        // announcer's too, a browse within seconds of its announcements would answer them.
        let announced = identity(idx("mdns-announcer")).and_then(|i| i.mdns).and_then(|m| m.service).map(|s| s.kind);
        let browsed: BTreeSet<&str> = answering_mdns().iter().filter_map(|(_, m)| m.service.map(|s| s.kind)).collect();
        assert!(announced.is_some_and(|k| !browsed.contains(k)), "{announced:?} is browsed for");
        // new_destination: the later hosts first come well past the baseline of a device whose
        // first Internet conversation is at 2 s, and within the first round.
        assert!(LATER_HOST_AT >= Duration::from_secs(2 + 5) + DESTINATION_BASELINE);
        assert!(LATER_HOST_AT < FIRST_ROUND);
        assert_eq!(device_of(&device_mac(7)), Some(7));
        assert_eq!(device_of(&device_mac(7).to_uppercase()), Some(7));
        assert_eq!(device_of("02:77:00:00:00:02"), None);
        assert_eq!(device_mac(SCENARIOS.len() + 1), format!("02:77:00:00:00:{:02x}", 10 + SCENARIOS.len() + 1));
    }

    /// The organisation of every MA-L prefix in an IEEE `oui.txt`.
    fn oui_orgs(text: &str) -> std::collections::BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.split_once("(hex)"))
            .map(|(prefix, org)| (prefix.trim().replace('-', ":").to_lowercase(), org.trim().to_owned()))
            .collect()
    }

    #[test]
    fn identities_are_those_of_real_devices() {
        let mut macs = BTreeSet::new();
        let mut hostnames = BTreeSet::new();
        for (i, s) in SCENARIOS.iter().enumerate() {
            let id = &s.identity;
            let octets: Vec<u8> = id.mac.split(':').filter_map(|o| u8::from_str_radix(o, 16).ok()).collect();
            assert_eq!((octets.len(), id.mac.to_lowercase()), (6, id.mac.to_owned()), "{}: {}", s.name, id.mac);
            assert_eq!(octets[0] & 1, 0, "{}: a unicast MAC", s.name);
            assert_eq!(&octets[3..], &[0x77, 0, (10 + i + 1) as u8], "{}: OUI:77:00:(10 + index)", s.name);
            assert_eq!(id.randomised(), id.vendor.is_empty(), "{}: a vendor exactly when not randomised", s.name);
            assert!(macs.insert(id.mac) && hostnames.insert(id.dhcp.hostname), "{}: MAC and hostname unique", s.name);
            assert!(id.dhcp.params.windows(2).all(|w| w[0] < w[1]), "{}: option 55 ascending", s.name);
            let announces = id.mdns.is_some_and(|m| m.announces);
            assert_eq!(
                announces,
                s.expect == Expect::Finding("unsolicited_mdns"),
                "{}: an unasked announcement is what unsolicited_mdns reports",
                s.name
            );
        }
        assert_eq!(SCENARIOS.iter().filter(|s| s.identity.randomised()).count(), 1, "one randomised phone");
        let responder = identity(idx("mdns-responder")).and_then(|i| i.mdns).map(|m| format!("{}.local", m.host));
        assert_eq!(responder.as_deref(), Some(MDNS_NAME));

        // Every OUI is registered to the vendor the table names (cargo xtask setup installs
        // ieee-data; without it there is nothing to compare with).
        let path = "/usr/share/ieee-data/oui.txt";
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("SKIP the OUI check: cannot read {path}");
            return;
        };
        let orgs = oui_orgs(&text);
        for s in SCENARIOS.iter().filter(|s| !s.identity.randomised()) {
            let id = &s.identity;
            assert_eq!(orgs.get(&id.mac[..8]).map(String::as_str), Some(id.vendor), "{}: {}", s.name, id.mac);
        }
    }

    #[test]
    fn the_lab_internet_in_its_peer_databases() {
        // Every Internet host is in a lab network; all but the benchmarking one are one
        // provider's in one country, the scan's and the NTP fan-out's ranges too.
        let of = |ip: Ipv4Addr| lab_network(ip).map(|n| (n.provider, n.country));
        let amazon = Some(("Amazon", "US"));
        for ip in
            [internet_host(0), internet_host(1), internet_host(2), Ipv4Addr::new(203, 0, 113, 1), fanout_server(24)]
        {
            assert_eq!(of(ip), amazon, "{ip}");
        }
        assert_eq!(of(internet_host(3)), Some(("Alibaba", "CN")));
        assert_eq!(of(crate::lab::INTERNET_IP), None, "the uplink is nobody's");

        let dir = crate::tmp::TempDir::new("iotwatch-labdb-test").unwrap();
        let flags = lab_flags(dir.path()).unwrap();
        assert_eq!(
            flags.iter().step_by(2).collect::<Vec<_>>(),
            ["--enrich.asn-db", "--enrich.country-db", "--detect.destination-baseline"]
        );
        let asn = std::fs::read_to_string(dir.join("asn.csv")).unwrap();
        assert!(
            asn.starts_with("start,end,asn,organisation\n203.0.113.0,203.0.113.255,16509,\"Amazon.com, Inc.\"\n"),
            "{asn}"
        );
        let country = std::fs::read_to_string(dir.join("country.csv")).unwrap();
        assert!(country.ends_with("198.19.0.0,198.19.255.255,CN\n"), "{country}");

        let peer = |ip: &str, n: &LabNetwork| serde_json::json!({"ip": ip, "scope": "internet", "asn": n.asn, "org": n.org, "country": n.country, "provider": n.provider});
        let (amazon, alibaba) = (&LAB_NETWORKS[0], &LAB_NETWORKS[3]);
        let uplink = serde_json::json!({"ip": "198.18.0.2", "scope": "internet"});
        let lan = serde_json::json!({"ip": "192.168.77.1", "scope": "lan"});
        let report = |peers: Vec<Value>| serde_json::json!({"devices": [{"mac": "m", "peers": peers}]});
        let good = vec![peer("203.0.113.10", amazon), peer("198.19.0.10", alibaba), uplink.clone(), lan];
        assert!(peer_db_check(&report(good)).is_ok());
        let unknown = serde_json::json!({"ip": "203.0.113.10", "scope": "internet", "asn": null});
        assert!(peer_db_check(&report(vec![unknown, peer("198.19.0.10", alibaba)])).is_err(), "no ASN");
        assert!(peer_db_check(&report(vec![peer("203.0.113.10", amazon), uplink])).is_err(), "no Alibaba peer");
    }

    #[test]
    fn alert_names() {
        assert_eq!(alert_name("lateral_movement"), "IotwatchLateralMovement");
        assert_eq!(alert_name("firmware_over_http"), "IotwatchFirmwareOverHttp");
        assert_eq!(alert_name("scan"), "IotwatchScan");
    }

    #[test]
    fn traffic_checks_read_events_and_peers() {
        let mac = device_mac(idx("ntp-fanout"));
        let events: Vec<Value> = (0..21)
            .map(|i| serde_json::json!({"kind": "ntp", "src_mac": mac, "dst_ip": format!("198.51.100.{}", 100 + i), "mode": 3}))
            .collect();
        let report = serde_json::json!({"devices": []});
        assert!(traffic_check(idx("ntp-fanout"), &report, &events).is_ok());
        assert!(traffic_check(idx("ntp-single"), &report, &events).is_err());
        let mac = device_mac(idx("gateway-ping"));
        let report = serde_json::json!({"devices": [{"mac": mac, "peers": [{"ip": "192.168.77.1", "packets": 40}]}]});
        assert!(traffic_check(idx("gateway-ping"), &report, &[]).is_ok());

        // The new destination first reached past the baseline, with a ClientHello to it.
        let mac = device_mac(idx("new-destination"));
        let (cloud, new) = (internet_host(0).to_string(), internet_host(3).to_string());
        let hello = [serde_json::json!({"kind": "tls", "src_mac": mac, "dst_ip": new, "dst_port": 443})];
        let report = |new_from: f64| {
            serde_json::json!({"devices": [{"mac": mac, "peers": [
                {"ip": cloud, "scope": "internet", "bytes": 5000, "first_ts": 1000.0},
                {"ip": new, "scope": "internet", "bytes": 5000, "first_ts": new_from},
            ]}]})
        };
        assert!(traffic_check(idx("new-destination"), &report(1028.0), &hello).is_ok());
        assert!(traffic_check(idx("new-destination"), &report(1010.0), &hello).is_err(), "within the baseline");
        assert!(traffic_check(idx("new-destination"), &report(1028.0), &[]).is_err(), "no ClientHello");
        assert!(traffic_check(idx("same-cloud"), &report(1028.0), &hello).is_err(), "another device");
    }

    #[test]
    fn verdicts_compare_findings_with_the_table() {
        let report = serde_json::json!({"devices": [], "findings": [
            {"id": "1", "rule": "ntp_fanout", "mac": device_mac(idx("ntp-fanout")), "summary": "25 servers"},
            {"id": "2", "rule": "ntp_fanout", "mac": device_mac(idx("ntp-single")), "summary": "1 server"},
        ]});
        let v = verdicts(&report, &[]);
        assert!(v[idx("ntp-fanout") - 1].findings_ok);
        assert!(!v[idx("ntp-single") - 1].findings_ok, "a negative twin raised its rule");
        let f = report_findings(&report);
        assert!(describe(&f[1]).contains("FALSE ALARM"), "{}", describe(&f[1]));
        let mut w = FindingWatch::default();
        assert_eq!(w.new_findings(&f).len(), 2);
        assert_eq!(w.new_findings(&f).len(), 0);
    }

    #[test]
    fn files() {
        let j = jpeg_like(4096);
        assert_eq!((j.len(), &j[..3], &j[j.len() - 2..]), (4096, &[0xFF, 0xD8, 0xFF][..], &[0xFF, 0xD9][..]));
        let r = pseudo_random(65536, 1);
        let printable = r.iter().filter(|b| b.is_ascii_graphic()).count();
        assert!(printable < 65536 / 2, "binary, not text: {printable}");
    }
}
