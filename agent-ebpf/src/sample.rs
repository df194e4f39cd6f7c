//! Sampling: a bounded prefix of the frames that matter (see agent-common's `sample`) goes to
//! the `SAMPLES` ring buffer, rate-limited so that neither one chatty device nor a flood of
//! spoofed ones can starve the ring. Every frame chosen is counted as sent, dropped (ring full),
//! suppressed (its source's rate) or capped (the CPU's rate).

use agent_common::{
    DeviceCounters,
    sample::{
        DEFAULT_BURST, DEFAULT_CPU_RATE, DEFAULT_FIRST_PACKETS, DEFAULT_NEW_SOURCE_RATE, DEFAULT_RATE, NEW_SOURCE_NS,
        NEW_SOURCE_TOKENS, PEEK, Peek, SAMPLE_MAX, Sample, SampleHeader, SampleKind, classify_icmp, classify_tcp,
        classify_udp, outcome, udp_by_port,
    },
    wire::ip_proto,
};
use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;

use crate::{
    account::{Conversation, Meta},
    maps::{CONVERSATIONS, CpuState, SAMPLES, Stats},
    packet::Packet,
    parse::Frame,
};

/// Bytes of the frame copied into a record (at most SAMPLE_MAX); set at load.
#[unsafe(no_mangle)]
static SAMPLE_SNAPLEN: u32 = SAMPLE_MAX as u32;
/// Flow samples per conversation: its first packets with payload; set at load.
#[unsafe(no_mangle)]
static SAMPLE_FIRST_PACKETS: u32 = DEFAULT_FIRST_PACKETS;
/// Samples per second per source and CPU (0 = no limit at all), and the burst; set at load.
#[unsafe(no_mangle)]
static SAMPLE_RATE: u32 = DEFAULT_RATE;
#[unsafe(no_mangle)]
static SAMPLE_BURST: u32 = DEFAULT_BURST;
/// Samples per second per CPU from all sources, and from new sources (0 = no such cap).
#[unsafe(no_mangle)]
static SAMPLE_CPU_RATE: u32 = DEFAULT_CPU_RATE;
#[unsafe(no_mangle)]
static SAMPLE_NEW_SOURCE_RATE: u32 = DEFAULT_NEW_SOURCE_RATE;

#[inline(always)]
fn global(g: &u32) -> u64 {
    // SAFETY: read-only globals set at load; volatile so the compiler keeps the read.
    u64::from(unsafe { core::ptr::read_volatile(g) })
}

/// Where a TCP segment ends in sequence space: its sequence number plus its payload length by the
/// IP header (the sequence number alone when that length is 0, as TSO leaves it).
#[inline(always)]
fn tcp_end(f: &Frame) -> u32 {
    f.tcp_seq.wrapping_add(f.ip_end.saturating_sub(f.payload_off) as u32)
}

#[inline(always)]
fn classify<P: Packet>(p: &P, f: &Frame, has_payload: bool) -> Option<SampleKind> {
    if !has_payload {
        return None;
    }
    if f.key.proto == ip_proto::UDP
        && let Some(kind) = udp_by_port(f.key.src_port, f.key.dst_port)
    {
        // The ports decide: no need to read the payload.
        return Some(kind);
    }
    // By value, never a reference to the copy: see `Peek` for what 6.1's verifier needs here.
    let peek = match p.load::<[u8; PEEK]>(f.payload_off) {
        Some(b) => Peek::new(b),
        None => Peek::EMPTY,
    };
    match f.key.proto {
        ip_proto::UDP => classify_udp(f.key.src_port, f.key.dst_port, peek),
        ip_proto::TCP => classify_tcp(f.key.src_port, f.key.dst_port, peek),
        proto => classify_icmp(proto, peek),
    }
}

/// Whether a sample from this source may go now; the outcome to count if not. A source pays
/// from its own bucket (kept with its counters; a new one starts with a few samples, not a
/// burst), a source met less than a second ago also from the CPU's budget for new sources (a
/// source the MAC table had no room for counts as new), and every sample from the CPU's
/// budget. Clock: the program's (capture time in replay).
#[inline(always)]
fn admit(cpu: &mut CpuState, source: Option<*mut DeviceCounters>, now_ns: u64) -> Result<(), usize> {
    let rate = global(&SAMPLE_RATE);
    if rate == 0 {
        return Ok(());
    }
    let (cpu_rate, new_rate) = (global(&SAMPLE_CPU_RATE), global(&SAMPLE_NEW_SOURCE_RATE));
    // SAFETY: this CPU's slot of the source's counters (see account.rs).
    let mut source = source.map(|s| unsafe { &mut *s });
    let is_new = match &source {
        Some(s) => now_ns.saturating_sub(s.first_seen_ns) < NEW_SOURCE_NS,
        None => true,
    };
    if let Some(s) = source.as_mut() {
        s.sample_bucket.refill(now_ns, rate, global(&SAMPLE_BURST).max(1), NEW_SOURCE_TOKENS);
        if !s.sample_bucket.has_one() {
            return Err(outcome::SUPPRESSED);
        }
    }
    if is_new && new_rate > 0 {
        cpu.new_sources.refill(now_ns, new_rate, new_rate, new_rate);
        if !cpu.new_sources.has_one() {
            return Err(outcome::SUPPRESSED);
        }
    }
    if cpu_rate > 0 {
        cpu.budget.refill(now_ns, cpu_rate, cpu_rate, cpu_rate);
        if !cpu.budget.has_one() {
            return Err(outcome::CAPPED);
        }
        cpu.budget.spend();
    }
    if is_new && new_rate > 0 {
        cpu.new_sources.spend();
    }
    if let Some(s) = source {
        s.sample_bucket.spend();
    }
    Ok(())
}

#[inline(always)]
pub fn maybe_sample<P: Packet>(
    p: &P,
    cpu: &mut CpuState,
    st: &mut Stats,
    m: &Meta,
    source: Option<*mut DeviceCounters>,
    conversation: Conversation,
) {
    let f = &cpu.frame;
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
            let (taken, last_end) = match conversation {
                // SAFETY: per-CPU value, see account.rs.
                Conversation::Counted(c) => unsafe { ((*c).flow_samples, (*c).flow_end) },
                Conversation::Created => (0, 0),
                Conversation::Missing => return,
            };
            if !has_payload
                || u64::from(taken) >= global(&SAMPLE_FIRST_PACKETS)
                || (f.key.proto != ip_proto::TCP && f.key.proto != ip_proto::UDP)
            {
                return;
            }
            // A repeat of the segment sampled last (a retransmission, each frame of a capture
            // twice) brings no new first packet: the quota is kept for the next segment.
            if taken > 0 && f.key.proto == ip_proto::TCP && tcp_end(f) == last_end {
                return;
            }
            SampleKind::Flow
        }
    };
    let base = kind as usize * outcome::OUTCOMES;
    if let Err(o) = admit(cpu, source, m.now_ns) {
        st.samples[base + o] += 1;
        return;
    }
    let snaplen = global(&SAMPLE_SNAPLEN);
    let cap = if m.data_len < snaplen { m.data_len } else { snaplen } as usize;
    let s = &mut cpu.sample;
    // One helper call copies the prefix (a length the verifier can bound, no byte loop).
    // SAFETY: `data` and the room behind it in CpuState hold COPY_ROOM bytes.
    let copied = if unsafe { p.copy_prefix(cap, s.data.as_mut_ptr()) } { cap } else { 0 };
    s.header = SampleHeader {
        ts_ns: m.precise_ns(),
        ifindex: m.ifindex,
        wire_len: m.len as u32,
        cap_len: copied as u32,
        payload_off: cpu.frame.payload_off as u16,
        kind: kind as u8,
        direction: m.direction,
        key: cpu.frame.key,
        batch_index: m.batch_index,
    };
    // The record is as long as what was copied: a DNS query takes 160 bytes of the ring (and
    // the ring's own 8-byte header). The check cannot fail; it gives the verifier the bound.
    let size = size_of::<SampleHeader>() + copied;
    if size > size_of::<Sample>() {
        st.samples[base + outcome::DROPPED] += 1;
        return;
    }
    // SAFETY: `s` is this CPU's sample, at least `size` bytes long (checked above).
    let record = unsafe { core::slice::from_raw_parts((s as *const Sample).cast::<u8>(), size) };
    // Replay reads the ring right after each frame: waking a reader would only cost time.
    let flags = if m.replay { u64::from(BPF_RB_NO_WAKEUP) } else { 0 };
    if SAMPLES.output::<[u8]>(record, flags).is_err() {
        st.samples[base + outcome::DROPPED] += 1;
        return;
    }
    if kind == SampleKind::Flow {
        let c = match conversation {
            Conversation::Counted(c) => Some(c),
            Conversation::Created => CONVERSATIONS.get_ptr_mut(cpu.frame.key),
            Conversation::Missing => None,
        };
        if let Some(c) = c {
            // SAFETY: per-CPU value, see account.rs.
            unsafe {
                (*c).flow_samples += 1;
                (*c).flow_end = tcp_end(&cpu.frame);
            }
        }
    }
    st.samples[base + outcome::SENT] += 1;
}
