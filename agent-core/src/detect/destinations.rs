//! `new_destination`: a device talks to a country, or a provider, it never talked to before (a
//! camera that only ever spoke to Amazon in the US starts sending to a host in another country,
//! or to another cloud). Judged from what devices send to Internet peers they contacted, through
//! the peer databases: a peer they know nothing of is no destination.
//!
//! What a device talks to during its first `destination_baseline_s` seconds (from its first
//! conversation with the Internet) is its baseline, and so is everything while the agent has no
//! memory of it: the destinations are remembered across restarts (`destinations.json`, with
//! `--state.dir`), so a restart neither forgets the baseline nor restarts the learning.
//! The provider is the database's provider, else the organisation holding the ASN.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use agent_common::wire::ip_proto;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Config, Context, Hit, MAX_DEVICES, Rule, counted, make_room};
use crate::{
    clock::Clock,
    ledger::{Delta, conv_ips},
    mac::Mac,
    scope::Scope,
};

/// Countries, and providers, remembered per device; past it, the device learns no more (and a
/// device that talks to this many is noisy enough without this rule).
const MAX_PLACES: usize = 64;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Known {
    /// When the device's first conversation with the Internet was seen (seconds since the epoch).
    since: f64,
    last: f64,
    countries: BTreeSet<String>,
    providers: BTreeSet<String>,
    /// `since` and `last` as the state file had them: not this run's to move when the wall
    /// clock jumps.
    #[serde(skip)]
    remembered: Option<(f64, f64)>,
    /// This run's first and last, which move with it.
    #[serde(skip)]
    run: Option<(f64, f64)>,
}

impl Known {
    /// `since` and `last` from what was remembered and what this run saw.
    fn settle(&mut self) {
        let both = self.remembered.into_iter().chain(self.run);
        (self.since, self.last) = both.fold((f64::MAX, f64::MIN), |(s, l), (f, t)| (s.min(f), l.max(t)));
    }
}

#[derive(Debug, Default)]
pub struct Destinations {
    devices: HashMap<Mac, Known>,
    changed: bool,
}

/// The LAN device and the Internet peer of what a device sent to a peer it contacted: from its
/// LAN address, and (TCP, UDP) from a port at or above the peer's, a client's ephemeral port
/// to a service port. What the Internet opens toward a device (scanners knock from every
/// country) is not where the device goes.
fn device_and_peer(d: &Delta, cx: &Context<'_>) -> Option<(Mac, IpAddr, IpAddr)> {
    let (src_ip, dst_ip) = conv_ips(&d.key)?;
    let src = Mac(d.key.src_mac);
    let opened = !matches!(d.key.proto, ip_proto::TCP | ip_proto::UDP) || d.key.src_port >= d.key.dst_port;
    (cx.scopes.of_ip(src_ip) == Scope::Lan && cx.scopes.of_ip(dst_ip) == Scope::Internet && !src.is_group() && opened)
        .then_some((src, src_ip, dst_ip))
}

impl Destinations {
    pub fn on_poll(&mut self, deltas: &[Delta], clock: Clock, cx: &Context<'_>, cfg: &Config, hits: &mut Vec<Hit>) {
        for d in deltas {
            let Some((mac, own_ip, peer)) = device_and_peer(d, cx) else { continue };
            let info = cx.peers.lookup(peer);
            let country = info.country.map(|c| c.as_str().to_owned());
            let provider = info.provider.map(str::to_owned).or_else(|| info.org.as_deref().map(str::to_owned));
            if country.is_none() && provider.is_none() {
                continue;
            }
            let ts = clock.seconds(d.first_seen_ns);
            if !self.devices.contains_key(&mac) {
                make_room(&mut self.devices, MAX_DEVICES, |k| k.last);
            }
            let known = self.devices.entry(mac).or_default();
            let last = clock.seconds(d.last_seen_ns);
            known.run = Some(known.run.map_or((ts, last), |(f, l)| (f.min(ts), l.max(last))));
            known.settle();
            let learning = ts < known.since + cfg.destination_baseline_s;
            let new_country = country.filter(|c| !known.countries.contains(c) && known.countries.len() < MAX_PLACES);
            let new_provider = provider.filter(|p| !known.providers.contains(p) && known.providers.len() < MAX_PLACES);
            if new_country.is_none() && new_provider.is_none() {
                continue;
            }
            self.changed = true;
            let (had_countries, had_providers): (Vec<String>, Vec<String>) =
                (known.countries.iter().cloned().collect(), known.providers.iter().cloned().collect());
            known.countries.extend(new_country.clone());
            known.providers.extend(new_provider.clone());
            if learning {
                continue;
            }
            let what: Vec<String> = [
                new_country.as_ref().map(|c| format!("country {c}")),
                new_provider.as_ref().map(|p| format!("provider {p}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            hits.push(Hit {
                rule: Rule::NewDestination,
                mac,
                ip: Some(own_ip),
                ts,
                summary: format!("talked to a new {} for the first time ({peer})", what.join(" and ")),
                details: json!({
                    "peer": peer,
                    "country": new_country,
                    "provider": new_provider,
                    "asn": info.asn,
                    "org": info.org.as_deref(),
                    "known_countries": had_countries,
                    "known_providers": had_providers,
                }),
                evidence: vec![counted(d, clock)],
            });
        }
    }

    /// The wall clock jumped by `delta` seconds: this run's times move with it (and are saved).
    pub fn shift_times(&mut self, delta: f64) {
        for k in self.devices.values_mut() {
            if let Some((first, last)) = k.run {
                k.run = Some((first + delta, last + delta));
                k.settle();
                self.changed = true;
            }
        }
    }

    /// Whether the remembered destinations changed since the last call (so they need saving).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The destinations as the state file keeps them (schema [`SCHEMA`]).
    pub fn to_file(&self) -> DestinationsFile {
        let mut devices: Vec<DeviceDestinations> =
            self.devices.iter().map(|(mac, k)| DeviceDestinations { mac: mac.to_string(), known: k.clone() }).collect();
        devices.sort_by(|a, b| a.mac.cmp(&b.mac));
        DestinationsFile { schema: SCHEMA.to_owned(), devices }
    }

    /// Destinations remembered from before a restart.
    pub fn remember(&mut self, file: DestinationsFile) {
        for d in file.devices.into_iter().take(MAX_DEVICES) {
            let Ok(mac) = d.mac.parse::<Mac>() else { continue };
            let mut k = d.known;
            if !(k.since.is_finite() && k.last.is_finite()) {
                continue;
            }
            k.remembered = Some((k.since, k.last));
            k.countries = k.countries.into_iter().take(MAX_PLACES).collect();
            k.providers = k.providers.into_iter().take(MAX_PLACES).collect();
            self.devices.insert(mac, k);
        }
    }
}

pub const SCHEMA: &str = "iotwatch.destinations/v1";

#[derive(Debug, Serialize, Deserialize)]
pub struct DestinationsFile {
    pub schema: String,
    pub devices: Vec<DeviceDestinations>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceDestinations {
    pub mac: String,
    #[serde(flatten)]
    known: Known,
}

/// The destinations of a state file, or why it cannot be used.
pub fn parse_file(text: &str) -> Result<DestinationsFile, String> {
    let file: DestinationsFile = serde_json::from_str(text).map_err(|e| format!("not a destinations file: {e}"))?;
    if file.schema != SCHEMA {
        return Err(format!("schema {:?}, expected {SCHEMA:?}", file.schema));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{Bench, CAM, GW, INET, LAN_CAM, delta, ip};

    const TCP: u8 = 6;

    /// INET (203.0.113.10) is Amazon's in the US; 198.51.100.7 Alibaba's in China; 192.0.2.9 a
    /// German host of no known provider; 198.18.7.5 a Russian one; 198.18.0.1 nobody's.
    fn t() -> Bench {
        let mut t = Bench::with_peers(
            "203.0.113.0,203.0.113.255,16509,\"Amazon.com, Inc.\"\n198.51.100.0,198.51.100.255,45102,Alibaba (US) Technology Co. Ltd.\n192.0.2.0,192.0.2.255,64500,Example Hosting GmbH\n198.18.7.0,198.18.7.255,64501,Scanner Net\n",
            "203.0.113.0,203.0.113.255,US\n198.51.100.0,198.51.100.255,CN\n192.0.2.0,192.0.2.255,DE\n198.18.7.0,198.18.7.255,RU\n",
        );
        t.det.config.destination_baseline_s = 60.0;
        t
    }

    fn to(t: &mut Bench, peer: std::net::IpAddr, at: f64) {
        t.poll(&[delta(CAM, LAN_CAM, 40000, GW, peer, 443, TCP, (3, 300), (at, at + 1.0))], &[], at + 1.0);
    }

    #[test]
    fn a_new_country_or_provider_after_the_baseline_is_a_finding() {
        let mut t = t();
        to(&mut t, INET, 0.0);
        to(&mut t, ip(198, 51, 100, 7), 30.0);
        assert!(t.findings().is_empty(), "both within the baseline");
        to(&mut t, INET, 100.0);
        to(&mut t, ip(198, 18, 0, 1), 110.0);
        assert!(t.findings().is_empty(), "known, and unknown to the databases");
        // Opened from the Internet (a scanner in Russia), and the device's answers: not where it goes.
        let (ru, at) = (ip(198, 18, 7, 5), 115.0);
        t.poll(&[delta(GW, ru, 40001, CAM, LAN_CAM, 23, TCP, (1, 60), (at, at))], &[], at);
        t.poll(&[delta(CAM, LAN_CAM, 23, GW, ru, 40001, TCP, (1, 60), (at, at))], &[], at);
        to(&mut t, ip(192, 0, 2, 9), 120.0);
        let f = t.only(Rule::NewDestination);
        assert_eq!(
            (f.details["country"].as_str(), f.details["provider"].as_str()),
            (Some("DE"), Some("Example Hosting GmbH"))
        );
        assert_eq!(f.details["known_countries"], json!(["CN", "US"]));
        assert_eq!(f.details["known_providers"], json!(["Alibaba", "Amazon"]));
        assert!(f.summary.contains("country DE and provider Example Hosting GmbH"), "{}", f.summary);
        assert!(f.excerpts[0].contains("-> 192.0.2.9:443 tcp"), "the conversation: {:?}", f.excerpts);
    }

    #[test]
    fn the_baseline_survives_a_restart() {
        let mut t = t();
        to(&mut t, INET, 0.0);
        let text = serde_json::to_string(&t.det.destinations.to_file()).unwrap();
        let mut again = self::t();
        again.det.destinations.remember(parse_file(&text).unwrap());
        to(&mut again, INET, 1000.0);
        to(&mut again, ip(198, 51, 100, 7), 1010.0);
        assert_eq!(again.only(Rule::NewDestination).details["country"], "CN", "the baseline is over, and US is known");
        assert!(parse_file(r#"{"schema":"iotwatch.identities/v1","devices":[]}"#).is_err());
    }
}
