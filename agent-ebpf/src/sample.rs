//! Sampling: a bounded prefix of the frames that matter (see agent-common's `sample`) goes to
//! the `SAMPLES` ring buffer, rate-limited per source so that one chatty or hostile device cannot
//! starve the ring. Every frame chosen is counted as sent, dropped (ring full) or suppressed.

use agent_common::{
    ConvCounters, MacKey,
    sample::{
        DEFAULT_BURST, DEFAULT_FIRST_PACKETS, DEFAULT_RATE, PEEK, Peek, SAMPLE_MAX, Sample, SampleHeader, SampleKind,
        TokenBucket, classify_tcp, classify_udp, outcome,
    },
    wire::ip_proto,
};
use aya_ebpf::bindings::{BPF_NOEXIST, BPF_RB_NO_WAKEUP};

use crate::{
    account::Meta,
    maps::{RATE_LIMIT, SAMPLES, bump_sample},
    packet::Packet,
    parse::Frame,
};

/// Bytes of the frame copied into a record (at most SAMPLE_MAX); set at load.
#[unsafe(no_mangle)]
static SAMPLE_SNAPLEN: u32 = SAMPLE_MAX as u32;
/// Flow samples per conversation: its first packets with payload; set at load.
#[unsafe(no_mangle)]
static SAMPLE_FIRST_PACKETS: u32 = DEFAULT_FIRST_PACKETS;
/// Samples per second per source and CPU (0 = unlimited), and the burst; set at load.
#[unsafe(no_mangle)]
static SAMPLE_RATE: u32 = DEFAULT_RATE;
#[unsafe(no_mangle)]
static SAMPLE_BURST: u32 = DEFAULT_BURST;

#[inline(always)]
fn global(g: &u32) -> u32 {
    // SAFETY: read-only globals set at load; volatile so the compiler keeps the read.
    unsafe { core::ptr::read_volatile(g) }
}

#[inline(always)]
fn classify<P: Packet>(p: &P, f: &Frame, has_payload: bool) -> Option<SampleKind> {
    if !has_payload {
        return None;
    }
    // By value, never a reference to the copy: see `Peek` for what 6.1's verifier needs here.
    let peek = match p.load::<[u8; PEEK]>(f.payload_off) {
        Some(b) => Peek::new(b),
        None => Peek::EMPTY,
    };
    match f.key.proto {
        ip_proto::UDP => classify_udp(f.key.src_port, f.key.dst_port, peek),
        ip_proto::TCP => classify_tcp(f.key.src_port, f.key.dst_port, peek),
        _ => None,
    }
}

/// Token bucket per source MAC, on the program clock (capture time in replay, so a replay
/// samples the same however fast it runs). Time going backwards refills nothing.
#[inline(always)]
fn rate_ok(mac: &[u8; 6], now_ns: u64) -> bool {
    let rate = u64::from(global(&SAMPLE_RATE));
    if rate == 0 {
        return true;
    }
    let full = u64::from(global(&SAMPLE_BURST)).max(1) * 1000;
    let key = MacKey::new(*mac);
    let Some(b) = RATE_LIMIT.get_ptr_mut(key) else {
        let fresh = TokenBucket { milli_tokens: full - 1000, last_ns: now_ns };
        let _ = RATE_LIMIT.insert(key, fresh, u64::from(BPF_NOEXIST));
        return true;
    };
    // SAFETY: per-CPU value; nothing else writes it while this program runs on this CPU.
    unsafe {
        // At most 1,000 s of refill at once keeps the product below u64::MAX.
        let elapsed = if now_ns > (*b).last_ns { (now_ns - (*b).last_ns).min(1_000_000_000_000) } else { 0 };
        (*b).last_ns = now_ns;
        let tokens = ((*b).milli_tokens + elapsed * rate / 1_000_000).min(full);
        if tokens >= 1000 {
            (*b).milli_tokens = tokens - 1000;
            true
        } else {
            (*b).milli_tokens = tokens;
            false
        }
    }
}

/// Copies the first `cap` bytes of the frame to `dst` with constant-size helper calls only (the
/// verifier refuses a run-time length): 64-byte chunks, then a last 64-byte chunk that ends at
/// `cap` and may overlap the one before, or single bytes for frames under 64 bytes.
///
/// # Safety
/// `dst` must be valid for SAMPLE_MAX bytes.
#[inline(always)]
unsafe fn copy_prefix<P: Packet>(p: &P, cap: usize, dst: *mut u8) -> usize {
    let cap = if cap > SAMPLE_MAX { SAMPLE_MAX } else { cap };
    let mut off = 0;
    for _ in 0..SAMPLE_MAX / 64 {
        if off + 64 > cap || off > SAMPLE_MAX - 64 {
            break;
        }
        // SAFETY: off + 64 <= SAMPLE_MAX.
        if !unsafe { p.copy::<64>(off, dst.add(off)) } {
            return off;
        }
        off += 64;
    }
    if off >= cap {
        return off;
    }
    if cap >= 64 {
        let start = cap - 64;
        if start > SAMPLE_MAX - 64 {
            return off;
        }
        // SAFETY: start + 64 <= SAMPLE_MAX.
        return if unsafe { p.copy::<64>(start, dst.add(start)) } { cap } else { off };
    }
    for _ in 0..64 {
        if off >= cap || off >= 64 {
            break;
        }
        // SAFETY: off < 64 <= SAMPLE_MAX.
        if !unsafe { p.copy::<1>(off, dst.add(off)) } {
            break;
        }
        off += 1;
    }
    off
}

#[inline(always)]
pub fn maybe_sample<P: Packet>(p: &P, f: &Frame, m: &Meta, conversation: Option<*mut ConvCounters>) {
    // Payload is what the IP header says is there (not Ethernet padding), within what the
    // program can read. Conditions, not a min() of the two ends: a value chosen on two paths
    // would keep the verifier from merging them.
    let has_payload =
        f.payload_off != 0 && m.data_len > f.payload_off as u64 && (f.ip_end == 0 || f.ip_end > f.payload_off);
    let kind = match classify(p, f, has_payload) {
        Some(k) => k,
        None => {
            // The first packets with payload of every conversation, for cleartext detection: a
            // quota per conversation, spent only by samples that reach the ring (below).
            let Some(c) = conversation else { return };
            // SAFETY: per-CPU value, see account.rs.
            if !has_payload || unsafe { (*c).flow_samples } >= u64::from(global(&SAMPLE_FIRST_PACKETS)) {
                return;
            }
            SampleKind::Flow
        }
    };
    let base = kind as usize * outcome::OUTCOMES;
    if !rate_ok(&f.key.src_mac, m.now_ns) {
        bump_sample(base + outcome::SUPPRESSED);
        return;
    }
    let Some(mut entry) = SAMPLES.reserve::<Sample>(0) else {
        bump_sample(base + outcome::DROPPED);
        return;
    };
    let s = entry.as_mut_ptr();
    let snaplen = global(&SAMPLE_SNAPLEN) as u64;
    let cap = if m.data_len < snaplen { m.data_len } else { snaplen } as usize;
    // SAFETY: `s` is a reserved, exclusively owned record of size_of::<Sample>() bytes.
    unsafe {
        let copied = copy_prefix(p, cap, (*s).data.as_mut_ptr());
        (*s).header = SampleHeader {
            ts_ns: m.now_ns,
            ifindex: m.ifindex,
            wire_len: m.len as u32,
            cap_len: copied as u32,
            payload_off: f.payload_off as u16,
            kind: kind as u8,
            direction: m.direction,
            key: f.key,
            _pad: [0; 4],
        };
    }
    // Replay reads the ring right after each frame: waking a reader would only cost time.
    entry.submit(if crate::replay_mode() { u64::from(BPF_RB_NO_WAKEUP) } else { 0 });
    if kind == SampleKind::Flow
        && let Some(c) = conversation
    {
        // SAFETY: per-CPU value, see account.rs.
        unsafe { (*c).flow_samples += 1 };
    }
    bump_sample(base + outcome::SENT);
}
