//! Loading the eBPF object built by build.rs, with map sizes and globals set at load.

use agent_common::{
    CONVERSATIONS, DEVICE_STATS, GLOBAL_REPLAY, REPLAY_MODE,
    sample::{self, GLOBAL_BURST, GLOBAL_FIRST_PACKETS, GLOBAL_RATE, GLOBAL_SNAPLEN, SAMPLE_MAX, SAMPLES},
};
use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, Xdp},
};

/// Names of the two entry points in agent-ebpf.
pub const TC_PROGRAM: &str = "iotwatch_tc";
pub const XDP_PROGRAM: &str = "iotwatch_xdp";

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/iotwatch"));

/// How the program samples headers (agent-common's `sample`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleOptions {
    /// Size of the SAMPLES ring in bytes: a power of two and a multiple of the page size.
    pub ring_bytes: u32,
    /// Bytes of each sampled frame kept (at most SAMPLE_MAX).
    pub snaplen: u32,
    /// Flow samples per conversation (its first packets with payload).
    pub first_packets: u32,
    /// Samples per second per source and CPU (0 = unlimited), and the burst.
    pub rate: u32,
    pub burst: u32,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            ring_bytes: sample::DEFAULT_RING_BYTES,
            snaplen: SAMPLE_MAX as u32,
            first_packets: sample::DEFAULT_FIRST_PACKETS,
            rate: sample::DEFAULT_RATE,
            burst: sample::DEFAULT_BURST,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    pub max_macs: u32,
    pub max_conversations: u32,
    /// BPF_PROG_TEST_RUN replay: the context carries wire length, segments and capture time.
    pub replay: bool,
    pub sampling: SampleOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_macs: agent_common::DEFAULT_MAX_MACS,
            max_conversations: agent_common::DEFAULT_MAX_CONVERSATIONS,
            replay: false,
            sampling: SampleOptions::default(),
        }
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u32 } else { 4096 }
}

/// Loads (but does not attach) both programs.
pub fn load(opts: &LoadOptions) -> anyhow::Result<Ebpf> {
    if OBJECT.is_empty() {
        bail!("this iotwatch was built with AYA_BUILD_SKIP=1 and carries no eBPF programs: rebuild without it");
    }
    if opts.max_macs == 0 || opts.max_conversations == 0 {
        bail!("map sizes must be at least 1 (--bpf.max-macs, --bpf.max-conversations)");
    }
    let s = &opts.sampling;
    if !s.ring_bytes.is_power_of_two() || !s.ring_bytes.is_multiple_of(page_size()) {
        bail!("--bpf.ring-bytes must be a power of two and a multiple of the page size ({}), e.g. 4194304", page_size());
    }
    if s.snaplen == 0 || s.snaplen > SAMPLE_MAX as u32 {
        bail!("--sample.snaplen must be between 1 and {SAMPLE_MAX}");
    }
    raise_memlock_limit();
    let replay = if opts.replay { REPLAY_MODE } else { 0 };
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(DEVICE_STATS, opts.max_macs)
        .map_max_entries(CONVERSATIONS, opts.max_conversations)
        .map_max_entries(SAMPLES, s.ring_bytes)
        .override_global(GLOBAL_REPLAY, &replay, true)
        .override_global(GLOBAL_SNAPLEN, &s.snaplen, true)
        .override_global(GLOBAL_FIRST_PACKETS, &s.first_packets, true)
        .override_global(GLOBAL_RATE, &s.rate, true)
        .override_global(GLOBAL_BURST, &s.burst, true)
        .load(OBJECT)
        .context("loading the eBPF object failed (needs root or CAP_BPF + CAP_NET_ADMIN, and a kernel with BPF enabled)")?;
    let tc: &mut SchedClassifier = program(&mut ebpf, TC_PROGRAM)?;
    tc.load().context("the kernel's verifier refused the TC program")?;
    let xdp: &mut Xdp = program(&mut ebpf, XDP_PROGRAM)?;
    xdp.load().context("the kernel's verifier refused the XDP program")?;
    Ok(ebpf)
}

/// A loaded program by name and type.
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf.program_mut(name).with_context(|| format!("program {name} missing from the eBPF object"))?;
    p.try_into().with_context(|| format!("program {name} has an unexpected type"))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
fn raise_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer to a stack value.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; only matters on kernels before 5.11");
    }
}
