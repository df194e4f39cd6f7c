//! A flood of spoofed frames, for the flood test and the memory benchmark: `macs` locally
//! administered source MACs and one new conversation per frame, written in batches with
//! sendmmsg(2) on an AF_PACKET socket opened inside a lab namespace, so that the frames enter
//! the bridge through that device's port as a device's own would. Bounded in count and time.
//!
//! Addresses are the test ranges of design.md: IPv4 from the LAN (192.168.77.100-199) to the
//! benchmarking range 198.18.0.0/15, IPv6 from 2001:db8:77::/64 to 2001:db8:1::/64 (the
//! documentation prefix, for more distinct addresses than any IPv4 test range holds).

use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::cmd;

/// Frames per sendmmsg(2) call.
const BATCH: usize = 256;
/// UDP payload of every frame: binary, so no protocol parser and no cleartext rule claims it,
/// and an IPv4 frame is the 60 bytes of a minimal Ethernet frame.
const PAYLOAD: [u8; 18] = [0xa5; 18];
/// First destination port: clear of every port the kernel samples by (53, 123, 1883, 1900...).
const DST_PORT_BASE: u16 = 20_000;
/// Distinct addresses of 198.18.0.0/15.
const V4_DESTINATIONS: u32 = 1 << 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// What to send: frame `j` (0-based) opens conversation `j`, from spoofed device `j % macs`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub macs: u32,
    pub conversations: u32,
    pub family: Family,
    /// Where every frame goes (a lab device that drops what it gets): the bridge forwards to
    /// one port, not to all.
    pub dst_mac: [u8; 6],
    /// Distinct destination ports (20000 up).
    pub dst_ports: u16,
}

impl Plan {
    pub fn check(&self) -> Result<()> {
        ensure!(self.macs > 0 && self.macs < 1 << 24, "1 to 2^24-1 spoofed MACs");
        ensure!((1..=10_000).contains(&self.dst_ports), "1 to 10,000 destination ports");
        if self.family == Family::V4 {
            ensure!(
                self.conversations <= V4_DESTINATIONS,
                "at most {V4_DESTINATIONS} IPv4 conversations (198.18.0.0/15): use IPv6 for more"
            );
        }
        Ok(())
    }

    /// Distinct IP addresses the plan puts on the wire (sources and destinations).
    pub fn distinct_ips(&self) -> u64 {
        let sources = match self.family {
            Family::V4 => self.macs.min(100),
            Family::V6 => self.macs.min(self.conversations),
        };
        u64::from(sources) + u64::from(self.conversations)
    }
}

/// Spoofed device `k`: `06:77:00:kk:kk:kk`, unicast and locally administered (bit 1 of the
/// first octet), apart from the lab's `02:77:...` devices.
pub fn spoofed_mac(k: u32) -> [u8; 6] {
    let b = k.to_be_bytes();
    [0x06, 0x77, 0, b[1], b[2], b[3]]
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Frame `j` of the plan, written over `f`. UDP checksums are left 0: nothing checks them on
/// the way to the sink, which drops the frames anyway.
pub fn frame(plan: &Plan, j: u32, f: &mut Vec<u8>) {
    let k = j % plan.macs;
    let sport = 49_152 + (j % 16_384) as u16;
    let dport = DST_PORT_BASE + (j % u32::from(plan.dst_ports)) as u16;
    f.clear();
    f.extend_from_slice(&plan.dst_mac);
    f.extend_from_slice(&spoofed_mac(k));
    let udp_len = (8 + PAYLOAD.len()) as u16;
    match plan.family {
        Family::V4 => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let start = f.len();
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&(20 + udp_len).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
            f.extend_from_slice(&[192, 168, 77, 100 + (k % 100) as u8]);
            f.extend_from_slice(&(0xc612_0000 | (j % V4_DESTINATIONS)).to_be_bytes());
            let sum = checksum(&f[start..]);
            f[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
        }
        Family::V6 => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&udp_len.to_be_bytes());
            f.extend_from_slice(&[17, 64]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0]);
            f.extend_from_slice(&k.to_be_bytes());
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0x01, 0, 0, 0, 0, 0, 0]);
            f.extend_from_slice(&j.to_be_bytes());
        }
    }
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&PAYLOAD);
}

/// A static entry in the bridge's forwarding table: frames to `mac` leave by `port` only, also
/// when the device behind it never sent a frame the bridge could learn from (a silent sink).
pub fn pin_to_port(port: &str, mac: &str) -> Result<()> {
    cmd::output(&mut cmd::command("bridge", &["fdb", "replace", mac, "dev", port, "master", "static"])).map(drop)
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn mac_bytes(mac: &str) -> Result<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next().context("a MAC has 6 octets")?, 16)
            .with_context(|| format!("bad MAC {mac:?}"))?;
    }
    ensure!(parts.next().is_none(), "a MAC has 6 octets: {mac:?}");
    Ok(out)
}

/// What the kernel accepted to send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub frames: u64,
    /// Wire bytes (each frame from its Ethernet header, no FCS).
    pub bytes: u64,
    /// False when the deadline stopped the flood before the plan's end.
    pub complete: bool,
    pub elapsed: Duration,
}

/// An AF_PACKET socket bound to `ifname` in network namespace `ns` (`ip netns` name). The
/// namespace is entered by a thread of its own, which the socket outlives: a socket stays in the
/// namespace it was made in.
pub fn packet_socket(ns: &str, ifname: &str) -> Result<OwnedFd> {
    let path = format!("/run/netns/{ns}");
    let ifname = CString::new(ifname).context("interface name with a NUL")?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<OwnedFd> {
            let nsf = File::open(&path).with_context(|| format!("cannot open {path}: no such namespace?"))?;
            // SAFETY: setns on an open namespace file; it changes this thread only.
            if unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns({path}): {}", std::io::Error::last_os_error());
            }
            // SAFETY: plain socket(2); protocol 0 receives nothing, the socket only sends.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                bail!("AF_PACKET socket in {ns}: {} (needs root)", std::io::Error::last_os_error());
            }
            // SAFETY: a descriptor just returned by socket(2), owned from here on.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
            ensure!(index != 0, "no interface {ifname:?} in {ns}");
            // SAFETY: a zeroed sockaddr_ll is valid; family and index are set below.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            // SAFETY: a valid address of its own size.
            let r = unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            ensure!(r == 0, "bind to {ifname:?} in {ns}: {}", std::io::Error::last_os_error());
            Ok(sock)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread entering {ns} panicked"))?
    })
}

/// Sends the plan on `sock` until done or `deadline` has passed; counts what was accepted.
pub fn send(sock: &OwnedFd, plan: &Plan, deadline: Duration) -> Result<Sent> {
    plan.check()?;
    let start = Instant::now();
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(128)).collect();
    let mut sent = Sent::default();
    let mut j = 0u32;
    while j < plan.conversations {
        if start.elapsed() > deadline {
            sent.elapsed = start.elapsed();
            return Ok(sent);
        }
        let n = (plan.conversations - j).min(BATCH as u32) as usize;
        for (i, b) in bufs.iter_mut().take(n).enumerate() {
            frame(plan, j + i as u32, b);
        }
        let mut done = 0;
        while done < n {
            let accepted = send_batch(sock, &mut bufs[done..n])?;
            for b in &bufs[done..done + accepted] {
                sent.frames += 1;
                sent.bytes += b.len() as u64;
            }
            done += accepted;
        }
        j += n as u32;
    }
    sent.complete = true;
    sent.elapsed = start.elapsed();
    Ok(sent)
}

/// One sendmmsg(2) call; returns how many frames the kernel took (at least one, or an error).
fn send_batch(sock: &OwnedFd, bufs: &mut [Vec<u8>]) -> Result<usize> {
    let mut iov: Vec<libc::iovec> =
        bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: a zeroed msghdr is valid (no name, no control data).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    loop {
        // SAFETY: `msgs` points at `iov`, which points at `bufs`; all outlive the call.
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if r > 0 {
            return Ok(r as usize);
        }
        let e = std::io::Error::last_os_error();
        // A full socket buffer: the frames are not lost, the call is tried again.
        if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOBUFS | libc::EAGAIN)) {
            bail!("sendmmsg: {e}");
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(family: Family) -> Plan {
        Plan { macs: 3, conversations: 10, family, dst_mac: [2, 0x77, 0, 0, 0, 0x0e], dst_ports: 4 }
    }

    #[test]
    fn ipv4_frames_are_minimal_and_well_formed() {
        let p = plan(Family::V4);
        let mut f = Vec::new();
        frame(&p, 4, &mut f);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..6], &p.dst_mac);
        assert_eq!(&f[6..12], &[0x06, 0x77, 0, 0, 0, 1], "device 4 % 3");
        assert_eq!(&f[12..14], &[8, 0]);
        assert_eq!(checksum(&f[14..34]), 0, "a valid IPv4 header sums to 0");
        assert_eq!(&f[26..30], &[192, 168, 77, 101]);
        assert_eq!(&f[30..34], &[198, 18, 0, 4]);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 20_000, "port 4 % 4");
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 26);
    }

    #[test]
    fn ipv6_frames_have_one_destination_per_conversation() {
        let p = plan(Family::V6);
        let mut f = Vec::new();
        frame(&p, 0x0102_0304, &mut f);
        assert_eq!(f.len(), 14 + 40 + 8 + 18);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 26, "payload length");
        assert_eq!(&f[38..54], &[0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        let mut dsts = std::collections::BTreeSet::new();
        for j in 0..1000 {
            frame(&p, j, &mut f);
            dsts.insert(f[38..54].to_vec());
        }
        assert_eq!(dsts.len(), 1000);
    }

    #[test]
    fn macs_are_unicast_local_and_distinct() {
        let a = spoofed_mac(0xab_cdef);
        assert_eq!(a, [6, 0x77, 0, 0xab, 0xcd, 0xef]);
        assert_eq!(a[0] & 1, 0, "unicast");
        assert_eq!(a[0] & 2, 2, "locally administered");
        assert_ne!(spoofed_mac(1), spoofed_mac(2));
    }

    #[test]
    fn plans_are_checked() {
        let mut p = plan(Family::V4);
        assert!(p.check().is_ok());
        p.conversations = V4_DESTINATIONS + 1;
        assert!(p.check().is_err());
        p.family = Family::V6;
        assert!(p.check().is_ok());
        assert_eq!(p.distinct_ips(), 3 + u64::from(V4_DESTINATIONS) + 1);
        p.macs = 0;
        assert!(p.check().is_err());
    }
}
