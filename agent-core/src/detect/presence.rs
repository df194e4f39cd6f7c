//! Devices coming and going.
//!
//! `new_device`: a unicast MAC that sent a frame and was never seen before. What "before" means
//! is remembered across restarts (the agent keeps the known MACs in its state directory). With
//! no memory at all (a first start, a replay), the MACs seen in the first `startup_grace_s` are
//! the baseline: a box just plugged in does not call every device on the network new. Not the
//! first poll alone: live it comes right after the programs attach, and saw only the devices
//! that happened to send in that instant (in the lab, 2 to 7 of 20).
//!
//! Offline and back online are Prometheus rules over each device's last-seen time, which this
//! module keeps: the time of the poll at which the device's sent-frame count last grew.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::{Context, Hit, Rule};
use crate::mac::Mac;

/// MACs remembered; past it new ones still raise a finding but are not remembered.
pub const MAX_KNOWN: usize = 65_536;

#[derive(Debug, Default)]
pub struct Presence {
    /// Every MAC known, with when it was first seen (seconds since the epoch).
    known: HashMap<Mac, f64>,
    /// The known MACs read from the state file: their times are not this run's to move when
    /// the wall clock jumps.
    remembered: HashSet<Mac>,
    /// Whether the known set is the baseline (loaded, or learnt for the grace period).
    baselined: bool,
    /// With no memory, the end of the learning period (set at the first poll).
    learning_until: Option<f64>,
    /// Sent frames at the last poll, and when they last grew.
    last: HashMap<Mac, (u64, f64)>,
    /// The known set changed since [`Presence::take_changed`].
    changed: bool,
    /// New MACs that did not fit in `known`.
    pub not_remembered: u64,
}

impl Presence {
    /// MACs remembered from before (the state file): the baseline is then what was known.
    pub fn remember(&mut self, known: impl IntoIterator<Item = (Mac, f64)>) {
        for (mac, ts) in known.into_iter().take(MAX_KNOWN) {
            self.known.insert(mac, ts);
            self.remembered.insert(mac);
        }
        self.baselined = true;
    }

    /// The wall clock jumped by `delta` seconds: this run's times move with it (and are saved).
    pub fn shift_times(&mut self, delta: f64) {
        for (mac, ts) in &mut self.known {
            if !self.remembered.contains(mac) {
                *ts += delta;
                self.changed = true;
            }
        }
        self.learning_until = self.learning_until.map(|t| t + delta);
        self.last.values_mut().for_each(|l| l.1 += delta);
    }

    pub fn known(&self) -> &HashMap<Mac, f64> {
        &self.known
    }

    /// Whether the known set changed since the last call (so it needs saving).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Each device's last-seen time (seconds since the epoch).
    pub fn last_seen(&self) -> impl Iterator<Item = (Mac, f64)> + '_ {
        self.last.iter().map(|(m, (_, ts))| (*m, *ts))
    }

    /// `macs`: every MAC's sent-frame count at this poll; `grace`: how long a first start learns.
    pub fn on_poll(&mut self, macs: &[(Mac, u64)], now: f64, grace: f64, cx: &Context<'_>, hits: &mut Vec<Hit>) {
        if !self.baselined {
            let until = *self.learning_until.get_or_insert(now + grace);
            // Learnt until the period ends; the poll that ends it still learns.
            self.baselined = now > until;
        }
        let learning = !self.baselined;
        for &(mac, tx) in macs {
            if mac.is_group() || tx == 0 {
                continue;
            }
            // Bounded like the known set: past it, later MACs get no last-seen time.
            if self.last.len() < MAX_KNOWN || self.last.contains_key(&mac) {
                let last = self.last.entry(mac).or_insert((0, now));
                if tx > last.0 {
                    *last = (tx, now);
                }
            }
            if self.known.contains_key(&mac) {
                continue;
            }
            if self.known.len() < MAX_KNOWN {
                self.known.insert(mac, now);
                self.changed = true;
            } else {
                self.not_remembered += 1;
            }
            if learning {
                continue;
            }
            let vendor = if mac.is_local() { None } else { cx.oui.vendor(mac).map(str::to_owned) };
            let names: Vec<String> = cx.identities.names(mac).into_iter().map(|n| n.name).collect();
            let display = cx.identities.display(mac, vendor.as_deref());
            let who = match display.source {
                crate::identity::FROM_MAC if mac.is_local() => "a randomised MAC".to_owned(),
                crate::identity::FROM_MAC => "an unknown vendor".to_owned(),
                _ => display.name,
            };
            hits.push(Hit {
                rule: Rule::NewDevice,
                mac,
                ip: None,
                ts: now,
                summary: format!("new device on the network: {mac} ({who})"),
                details: json!({"vendor": vendor, "names": names, "randomised": mac.is_local()}),
                evidence: vec![(
                    super::COUNTED,
                    // No wall time in the text: a clock jump moves the finding's times, not text.
                    format!("{mac}: first {tx} frame(s) sent"),
                )],
            });
        }
    }
}

/// The known MACs as the state file keeps them (schema `iotwatch.known-devices/v1`).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct KnownFile {
    pub schema: String,
    pub devices: Vec<KnownDevice>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct KnownDevice {
    pub mac: String,
    pub first_seen: f64,
}

pub const KNOWN_SCHEMA: &str = "iotwatch.known-devices/v1";

impl Presence {
    pub fn to_file(&self) -> KnownFile {
        let mut devices: Vec<KnownDevice> =
            self.known.iter().map(|(m, ts)| KnownDevice { mac: m.to_string(), first_seen: *ts }).collect();
        devices.sort_by(|a, b| a.mac.cmp(&b.mac));
        KnownFile { schema: KNOWN_SCHEMA.to_owned(), devices }
    }
}

/// The MACs of a state file, or why it cannot be used.
pub fn parse_known(text: &str) -> Result<Vec<(Mac, f64)>, String> {
    let file: KnownFile = serde_json::from_str(text).map_err(|e| format!("not a known-devices file: {e}"))?;
    if file.schema != KNOWN_SCHEMA {
        return Err(format!("schema {:?}, expected {KNOWN_SCHEMA:?}", file.schema));
    }
    file.devices.iter().map(|d| Ok((d.mac.parse::<Mac>()?, d.first_seen))).collect()
}

#[cfg(test)]
mod tests {
    use super::{super::testing::*, *};

    #[test]
    fn devices_seen_while_learning_are_the_baseline_then_a_new_mac_is_a_new_device() {
        let mut t = Bench::default();
        t.poll(&[], &[(HUB, 10), (SSDP_GROUP_MAC, 0)], 100.0);
        // Still learning (a first start learns for --detect.startup-grace, 30 s): not new.
        t.poll(&[], &[(HUB, 11), (GW, 3)], 120.0);
        assert!(t.findings().is_empty());
        t.poll(&[], &[(HUB, 12), (GW, 3), (CAM, 1)], 135.0);
        let f = t.only(Rule::NewDevice);
        assert_eq!((f.mac, f.ts), (CAM, 135.0));
        assert_eq!(f.details["vendor"], "Sichuan AI-Link Technology Co., Ltd.");
        assert!(t.det.presence.take_changed());
        assert!(!t.det.presence.take_changed());
        let seen: HashMap<Mac, f64> = t.det.presence.last_seen().collect();
        assert_eq!((seen[&HUB], seen[&CAM], seen[&GW]), (135.0, 135.0, 120.0));
        t.poll(&[], &[(HUB, 12), (CAM, 1)], 140.0);
        assert_eq!(t.det.presence.last_seen().find(|(m, _)| *m == HUB).unwrap().1, 135.0, "no new frame, no new time");
    }

    #[test]
    fn remembered_macs_are_not_new_after_a_restart_and_there_is_no_learning_then() {
        let mut t = Bench::default();
        t.det.presence.remember([(HUB, 1.0)]);
        t.poll(&[], &[(HUB, 10), (CAM, 1)], 100.0);
        let f = t.only(Rule::NewDevice);
        assert_eq!(f.mac, CAM);
        assert_eq!(t.det.presence.known().len(), 2);
        let text = serde_json::to_string(&t.det.presence.to_file()).unwrap();
        let back = parse_known(&text).unwrap();
        assert_eq!(back.len(), 2);
        assert!(parse_known("{\"schema\":\"other/v9\",\"devices\":[]}").unwrap_err().contains("schema"));
        assert!(parse_known("garbage").is_err());
    }
}
