//! The independent reference: tcpdump on the bridge ports, a minimal pcap reader, and the
//! per-MAC counts of what it captured.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One captured frame: its first bytes and its length on the wire.
#[derive(Clone, Debug)]
pub struct Frame {
    pub data: Vec<u8>,
    pub orig_len: u32,
}

impl Frame {
    pub fn dst(&self) -> [u8; 6] {
        self.data[0..6].try_into().expect("captures keep the Ethernet header")
    }
    pub fn src(&self) -> [u8; 6] {
        self.data[6..12].try_into().expect("captures keep the Ethernet header")
    }
}

/// Frames of a classic pcap file (what tcpdump -w writes), either byte order.
pub fn read_pcap(path: &Path) -> Vec<Frame> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(bytes.len() >= 24, "{} is not a pcap file", path.display());
    let le = match &bytes[0..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => panic!("{}: not a pcap file (magic {m:02x?})", path.display()),
    };
    let u32_at = |o: usize| {
        let b: [u8; 4] = bytes[o..o + 4].try_into().expect("in range");
        if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
    };
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= bytes.len() {
        let (incl, orig) = (u32_at(off + 8) as usize, u32_at(off + 12));
        let data = bytes[off + 16..(off + 16 + incl).min(bytes.len())].to_vec();
        frames.push(Frame { data, orig_len: orig });
        off += 16 + incl;
    }
    frames
}

/// `tcpdump -i IFACE -Q DIRECTION -w FILE`, stopped (and flushed) by `finish`.
pub struct Tcpdump {
    child: Option<Child>,
    pub file: PathBuf,
}

impl Tcpdump {
    /// Starts and waits until tcpdump says it is listening.
    pub fn start(iface: &str, direction: &str, file: PathBuf) -> Self {
        let mut child = Command::new("tcpdump")
            // Immediate mode: without it frames wait in a TPACKET_V3 block that SIGINT may discard.
            .args(["-i", iface, "-Q", direction, "-n", "-U", "--immediate-mode", "-s", "256", "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump (cargo xtask setup installs it)");
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => {}
                _ => panic!("tcpdump on {iface} did not start"),
            }
            assert!(Instant::now() < deadline, "tcpdump on {iface} did not start in time");
        }
        // Keep draining stderr so tcpdump never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Self { child: Some(child), file }
    }

    pub fn finish(mut self) -> Vec<Frame> {
        self.stop();
        read_pcap(&self.file)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill with a pid we own.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_file(&self.file);
    }
}

pub fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn mac_bytes(text: &str) -> [u8; 6] {
    let v: Vec<u8> = text.split(':').map(|h| u8::from_str_radix(h, 16).expect("hex")).collect();
    v.try_into().expect("six bytes")
}

/// Per-MAC packets and bytes, each way.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Counts {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// Per-MAC counts from captured frames (tx: source, rx: destination).
pub fn reference(frames: &[Frame]) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for f in frames {
        let tx = out.entry(mac_text(f.src())).or_default();
        tx.tx_packets += 1;
        tx.tx_bytes += u64::from(f.orig_len);
        let rx = out.entry(mac_text(f.dst())).or_default();
        rx.rx_packets += 1;
        rx.rx_bytes += u64::from(f.orig_len);
    }
    out
}
