//! The event log: NDJSON, one event per line, to a file (`--events PATH`) or stdout (`-`).
//! A file is size-bounded: past `max_bytes` it is renamed to `PATH.1` (replacing the previous
//! one) and started anew, so at most twice `max_bytes` is on disk.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use iotwatch_core::{detect::Finding, events::Event};
use serde::Serialize;

enum Target {
    Stdout(io::Stdout),
    File { path: PathBuf, file: File },
}

pub struct EventLog {
    target: Target,
    written: u64,
    max_bytes: u64,
    /// Lines that could not be written (disk full, ...): counted, never fatal.
    pub errors: u64,
    pub rotations: u64,
}

impl EventLog {
    pub fn open(spec: &str, max_bytes: u64) -> anyhow::Result<Self> {
        let (target, written) = if spec == "-" {
            (Target::Stdout(io::stdout()), 0)
        } else {
            let path = PathBuf::from(spec);
            let file = OpenOptions::new().create(true).append(true).open(&path).with_context(|| {
                format!("cannot open the event log {} (check the directory exists and is writable)", path.display())
            })?;
            let written = file.metadata().map(|m| m.len()).unwrap_or(0);
            (Target::File { path, file }, written)
        };
        Ok(Self { target, written, max_bytes: max_bytes.max(1024), errors: 0, rotations: 0 })
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Target::File { path, file } = &mut self.target {
            let mut old = path.clone().into_os_string();
            old.push(".1");
            fs::rename(&*path, &old)?;
            *file = OpenOptions::new().create(true).append(true).open(&*path)?;
            self.written = 0;
            self.rotations += 1;
        }
        Ok(())
    }

    pub fn write(&mut self, ev: &Event) {
        self.write_line(ev);
    }

    /// A finding as a line of its own, `"kind": "finding"`, when it is first raised.
    pub fn write_finding(&mut self, f: &Finding) {
        #[derive(Serialize)]
        struct Line<'a> {
            kind: &'static str,
            #[serde(flatten)]
            finding: &'a Finding,
        }
        self.write_line(&Line { kind: "finding", finding: f });
    }

    fn write_line(&mut self, item: &impl Serialize) {
        let mut line = match serde_json::to_vec(item) {
            Ok(l) => l,
            Err(_) => {
                self.errors += 1;
                return;
            }
        };
        line.push(b'\n');
        let full = self.written > 0 && self.written + line.len() as u64 > self.max_bytes;
        if matches!(self.target, Target::File { .. })
            && full
            && let Err(e) = self.rotate()
        {
            tracing::warn!("rotating the event log: {e}");
            self.errors += 1;
        }
        let result = match &mut self.target {
            Target::Stdout(out) => out.lock().write_all(&line),
            Target::File { file, .. } => file.write_all(&line),
        };
        match result {
            Ok(()) => self.written += line.len() as u64,
            Err(_) => self.errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use iotwatch_core::proto::{EventFields, flow::FlowEvent};

    use super::*;

    fn event(i: u64) -> Event {
        Event {
            id: i,
            ts: i as f64,
            kind: iotwatch_core::proto::Kind::Flow,
            src_mac: iotwatch_core::mac::Mac([2, 0, 0, 0, 0, 1]),
            src_ip: None,
            src_port: None,
            dst_mac: iotwatch_core::mac::Mac([2, 0, 0, 0, 0, 2]),
            dst_ip: None,
            dst_port: None,
            fields: EventFields::Flow(FlowEvent {
                transport: "udp",
                payload_bytes: i,
                payload_class: "binary",
                format: None,
                printable_ratio: 0.0,
            }),
        }
    }

    #[test]
    fn lines_are_json_and_the_file_rotates_at_its_bound() {
        let dir = std::env::temp_dir().join(format!("iotwatch-eventlog-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.ndjson");
        let mut log = EventLog::open(path.to_str().unwrap(), 2048).unwrap();
        for i in 0..40 {
            log.write(&event(i));
        }
        let current = fs::read_to_string(&path).unwrap();
        let older = fs::read_to_string(dir.join("events.ndjson.1")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(log.rotations >= 1);
        assert!(current.len() <= 2048 && older.len() <= 2048);
        let lines: Vec<&str> = older.lines().chain(current.lines()).collect();
        for l in &lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["kind"], "flow");
        }
        // The newest events are all there, in order, up to the last written.
        let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(last["payload_bytes"], 39);
        assert_eq!(log.errors, 0);
    }
}
