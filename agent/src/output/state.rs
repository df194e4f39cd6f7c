//! What the agent remembers across restarts: the known devices (for `new_device`), in
//! `known-devices.json` in the state directory, written whole to a temporary file and renamed
//! over the old one (a crash leaves the old file or the new one, never half of one). A file
//! that cannot be read is set aside as `known-devices.json.bad` with a warning: the agent then
//! starts with no memory, as on a first start.

use std::{
    fs,
    path::{Path, PathBuf},
};

use iotwatch_core::detect::presence::{Presence, parse_known};

const FILE: &str = "known-devices.json";

pub struct KnownDevices {
    path: PathBuf,
    /// Only the first failure to save is a warning; the rest are debug lines.
    warned: bool,
}

impl KnownDevices {
    /// Loads the known devices of `dir` into `presence`.
    pub fn open(dir: &Path, presence: &mut Presence) -> Self {
        let path = dir.join(FILE);
        match fs::read_to_string(&path) {
            Ok(text) => match parse_known(&text) {
                Ok(known) => {
                    tracing::info!(devices = known.len(), "known devices read from {}", path.display());
                    presence.remember(known);
                }
                Err(e) => {
                    let bad = dir.join(format!("{FILE}.bad"));
                    tracing::warn!(
                        "{} is unusable ({e}); set aside as {}, starting with no known devices",
                        path.display(),
                        bad.display()
                    );
                    let _ = fs::rename(&path, &bad);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(
                    "no {} yet: the devices of the first poll are the baseline of new_device",
                    path.display()
                );
            }
            Err(e) => tracing::warn!("cannot read {}: {e}; starting with no known devices", path.display()),
        }
        Self { path, warned: false }
    }

    pub fn save(&mut self, presence: &Presence) {
        let tmp = self.path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(&presence.to_file())
            .map_err(std::io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            if !self.warned {
                tracing::warn!(
                    "cannot save the known devices to {}: {e} (new devices will be new again after a restart)",
                    self.path.display()
                );
                self.warned = true;
            } else {
                tracing::debug!("cannot save the known devices: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use iotwatch_core::mac::Mac;

    use super::*;

    #[test]
    fn known_devices_survive_a_restart_and_a_corrupt_file_is_set_aside() {
        let dir = std::env::temp_dir().join(format!("iotwatch-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut p = Presence::default();
        let mut k = KnownDevices::open(&dir, &mut p);
        p.remember([(Mac([2, 0, 0, 0, 0, 1]), 5.0)]);
        k.save(&p);
        let mut again = Presence::default();
        KnownDevices::open(&dir, &mut again);
        assert_eq!(again.known().get(&Mac([2, 0, 0, 0, 0, 1])), Some(&5.0));
        fs::write(dir.join(FILE), b"{not json").unwrap();
        let mut fresh = Presence::default();
        KnownDevices::open(&dir, &mut fresh);
        assert!(fresh.known().is_empty());
        assert!(dir.join("known-devices.json.bad").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
