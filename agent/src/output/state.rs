//! What the agent remembers across restarts, in the state directory, one versioned JSON file per
//! fact: `known-devices.json` (the baseline of `new_device`, with first-seen times),
//! `identities.json` (every device name with its source and last-seen time) and
//! `destinations.json` (the countries and providers each device talks to, for `new_destination`).
//!
//! Each file is written whole to a temporary file and renamed over the old one (a crash leaves
//! the old file or the new one, never half of one). A file that cannot be used (corrupt, another
//! schema, larger than [`MAX_FILE_BYTES`]) is set aside as `NAME.bad` with a warning, and the
//! agent starts without that memory, as on a first start. The files are bounded because what
//! they hold is (MAX_KNOWN devices, identity::MAX_DEVICES with a few names each).

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iotwatch_core::{
    detect::{Detectors, destinations, presence::parse_known},
    identity::{self, Identities},
};

const KNOWN: &str = "known-devices.json";
const IDENTITIES: &str = "identities.json";
const DESTINATIONS: &str = "destinations.json";
/// Larger files are not read: no state file of ours grows this large.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Names (last-seen times) and destinations change all the time: saved at most this often, and
/// at exit (a Pi's SD card wears with every write).
const SAVE_EVERY: Duration = Duration::from_secs(300);

/// One state file: read once, saved atomically, its first failure to save a warning.
struct StateFile {
    path: PathBuf,
    what: &'static str,
    warned: bool,
}

impl StateFile {
    /// Opens `dir/name` and parses it; `None` (with a log line saying why) when there is
    /// nothing usable.
    fn open<T>(
        dir: &Path,
        name: &str,
        what: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> (Self, Option<T>) {
        let path = dir.join(name);
        let file = Self { path: path.clone(), what, warned: false };
        let text = match fs::metadata(&path) {
            Ok(m) if m.len() > MAX_FILE_BYTES => Err(format!("{} bytes, more than {MAX_FILE_BYTES}", m.len())),
            Ok(_) => fs::read_to_string(&path).map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!("no {} yet: starting with no {what}", path.display());
                return (file, None);
            }
            Err(e) => {
                tracing::warn!("cannot read {}: {e}; starting with no {what}", path.display());
                return (file, None);
            }
        };
        match text.and_then(|t| parse(&t)) {
            Ok(value) => (file, Some(value)),
            Err(e) => {
                let bad = dir.join(format!("{name}.bad"));
                tracing::warn!(
                    "{} is unusable ({e}); set aside as {}, starting with no {what}",
                    path.display(),
                    bad.display()
                );
                let _ = fs::rename(&path, &bad);
                (file, None)
            }
        }
    }

    fn save(&mut self, value: &impl serde::Serialize) {
        let tmp = self.path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(value)
            .map_err(std::io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            if !self.warned {
                tracing::warn!(
                    "cannot save the {} to {}: {e} (they will be forgotten at a restart)",
                    self.what,
                    self.path.display()
                );
                self.warned = true;
            } else {
                tracing::debug!("cannot save the {}: {e}", self.what);
            }
        }
    }
}

/// The agent's state files.
pub struct State {
    known: StateFile,
    identities: StateFile,
    destinations: StateFile,
    saved: Option<Instant>,
}

impl State {
    /// Loads what `dir` remembers into the detectors and `identities`.
    pub fn open(dir: &Path, detectors: &mut Detectors, identities: &mut Identities) -> Self {
        let (known, remembered) = StateFile::open(dir, KNOWN, "known devices", parse_known);
        if let Some(devices) = remembered {
            tracing::info!(devices = devices.len(), "known devices read from {}", known.path.display());
            detectors.presence.remember(devices);
        }
        let (dest, remembered) = StateFile::open(dir, DESTINATIONS, "known destinations", destinations::parse_file);
        if let Some(file) = remembered {
            tracing::info!(devices = file.devices.len(), "destinations read from {}", dest.path.display());
            detectors.destinations.remember(file);
        }
        let (ids, remembered) = StateFile::open(dir, IDENTITIES, "device names", identity::parse_file);
        if let Some(file) = remembered {
            tracing::info!(devices = file.devices.len(), "device names read from {}", ids.path.display());
            identities.remember(file);
        }
        Self { known, identities: ids, destinations: dest, saved: None }
    }

    /// Saves what changed: the known devices at once, names and destinations at most every
    /// five minutes; all of it when `now` (at exit).
    pub fn save(&mut self, detectors: &mut Detectors, identities: &mut Identities, now: bool) {
        if detectors.presence.take_changed() || now {
            self.known.save(&detectors.presence.to_file());
        }
        if !(now || self.saved.is_none_or(|t| t.elapsed() >= SAVE_EVERY)) {
            return;
        }
        if identities.take_changed() || now {
            self.identities.save(&identities.to_file());
        }
        if detectors.destinations.take_changed() || now {
            self.destinations.save(&detectors.destinations.to_file());
        }
        self.saved = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use iotwatch_core::mac::Mac;

    use super::*;

    #[test]
    fn state_survives_a_restart_and_a_corrupt_file_is_set_aside() {
        let dir = std::env::temp_dir().join(format!("iotwatch-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (mut p, mut ids) = (Detectors::default(), Identities::default());
        let mut state = State::open(&dir, &mut p, &mut ids);
        p.presence.remember([(Mac([2, 0, 0, 0, 0, 1]), 5.0)]);
        let file = identity::parse_file(
            r#"{"schema":"iotwatch.identities/v1","devices":[{"mac":"d8:f1:5b:aa:bb:cc","names":[{"name":"HS105","source":"dhcp_hostname","last_seen":7.0}]}]}"#,
        )
        .unwrap();
        ids.remember(file);
        state.save(&mut p, &mut ids, true);
        let (mut again, mut ids_again) = (Detectors::default(), Identities::default());
        State::open(&dir, &mut again, &mut ids_again);
        assert!(dir.join(DESTINATIONS).exists());
        assert_eq!(again.presence.known().get(&Mac([2, 0, 0, 0, 0, 1])), Some(&5.0));
        assert_eq!(ids_again.display(Mac([0xd8, 0xf1, 0x5b, 0xaa, 0xbb, 0xcc]), None).name, "HS105");
        fs::write(dir.join(KNOWN), b"{not json").unwrap();
        fs::write(dir.join(IDENTITIES), br#"{"schema":"something/v9","devices":[]}"#).unwrap();
        let (mut fresh, mut ids_fresh) = (Detectors::default(), Identities::default());
        State::open(&dir, &mut fresh, &mut ids_fresh);
        assert!(fresh.presence.known().is_empty() && ids_fresh.is_empty());
        assert!(dir.join("known-devices.json.bad").exists() && dir.join("identities.json.bad").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
