//! Loading the eBPF object built by build.rs, with map sizes and globals set at load.

use std::path::{Path, PathBuf};

use agent_common::{
    CONVERSATIONS, DEVICE_STATS, GLOBAL_REPLAY, REPLAY_MODE, REPLAY_NEXT,
    sample::{
        self, GLOBAL_BURST, GLOBAL_CPU_RATE, GLOBAL_FIRST_PACKETS, GLOBAL_NEW_SOURCE_RATE, GLOBAL_RATE, GLOBAL_SNAPLEN,
        SAMPLE_MAX, SAMPLES,
    },
};
use aya::{
    Ebpf, EbpfLoader,
    maps::ProgramArray,
    programs::{ProgramError, SchedClassifier, Xdp},
};

/// Names of the entry points in agent-ebpf: live, and replay's (see agent-common's `ReplayBatch`).
pub const TC_PROGRAM: &str = "iotwatch_tc";
pub const XDP_PROGRAM: &str = "iotwatch_xdp";
pub const REPLAY_PROGRAM: &str = "iotwatch_replay";
pub const REPLAY_FRAME_PROGRAM: &str = "iotwatch_replay_frame";

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
    /// Samples per second per source and CPU (0 = no limit at all), and the burst.
    pub rate: u32,
    pub burst: u32,
    /// Samples per second per CPU from all sources, and from sources met less than a second
    /// ago (0 = no such cap).
    pub cpu_rate: u32,
    pub new_source_rate: u32,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            ring_bytes: sample::DEFAULT_RING_BYTES,
            snaplen: SAMPLE_MAX as u32,
            first_packets: sample::DEFAULT_FIRST_PACKETS,
            rate: sample::DEFAULT_RATE,
            burst: sample::DEFAULT_BURST,
            cpu_rate: sample::DEFAULT_CPU_RATE,
            new_source_rate: sample::DEFAULT_NEW_SOURCE_RATE,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    pub max_macs: u32,
    pub max_conversations: u32,
    /// BPF_PROG_TEST_RUN replay: the context carries wire length, segments and capture time.
    pub replay: bool,
    /// Which programs to load: only what will run, since what is not loaded cannot be refused
    /// by the verifier nor cost its time. Live, TC always (the bridge's egress needs it in every
    /// mode) and XDP for `--attach xdp*`; replay, replay's two programs only (see `cmd::replay`),
    /// which need `replay`.
    pub tc: bool,
    pub xdp: bool,
    pub batch: bool,
    pub sampling: SampleOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_macs: agent_common::DEFAULT_MAX_MACS,
            max_conversations: agent_common::DEFAULT_MAX_CONVERSATIONS,
            replay: false,
            tc: true,
            xdp: true,
            batch: false,
            sampling: SampleOptions::default(),
        }
    }
}

/// Entries the CONVERSATIONS map is created with for `--bpf.max-conversations`: the kernel's LRU
/// may start evicting while each CPU still holds a batch of free entries, so one batch per
/// possible CPU is added (see [`agent_common::lru_max_entries`]); the user gets at least what was
/// asked for before the first eviction.
pub fn conversation_map_entries(wanted: u32) -> u32 {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u32);
    agent_common::lru_max_entries(wanted, cpus)
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u32 } else { 4096 }
}

/// Why the programs could not be loaded; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this iotwatch was built with AYA_BUILD_SKIP=1 and carries no eBPF programs: rebuild without it")]
    NotEmbedded,
    /// A load option out of range; the message names the flag.
    #[error("{0}")]
    Option(String),
    #[error("loading the eBPF object failed (needs root or CAP_BPF + CAP_NET_ADMIN, and a kernel with BPF enabled)")]
    Object(#[source] aya::EbpfError),
    #[error("program {0} missing from the eBPF object")]
    Missing(String),
    #[error("program {name} has an unexpected type")]
    WrongType { name: String, source: ProgramError },
    #[error(
        "loading program {program} was not permitted ({source}): run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    )]
    NotPermitted { program: &'static str, source: std::io::Error },
    /// The kernel's verifier refused a program: a bug of ours for that kernel.
    #[error(
        "the verifier of Linux {kernel} refused program {program} ({reason}): this is a bug in iotwatch for this kernel; \
         report it with the verifier's log, {kept}"
    )]
    Refused { program: &'static str, kernel: String, reason: String, kept: String },
    #[error("loading program {program} failed")]
    Program { program: &'static str, source: ProgramError },
}

/// Loads (but does not attach) both programs.
pub fn load(opts: &LoadOptions) -> Result<Ebpf, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NotEmbedded);
    }
    if opts.max_macs == 0 || opts.max_conversations == 0 {
        return Err(LoadError::Option("map sizes must be at least 1 (--bpf.max-macs, --bpf.max-conversations)".into()));
    }
    let s = &opts.sampling;
    if !s.ring_bytes.is_power_of_two() || !s.ring_bytes.is_multiple_of(page_size()) {
        return Err(LoadError::Option(format!(
            "--bpf.ring-bytes must be a power of two and a multiple of the page size ({}), e.g. 4194304",
            page_size()
        )));
    }
    if s.snaplen == 0 || s.snaplen > SAMPLE_MAX as u32 {
        return Err(LoadError::Option(format!("--sample.snaplen must be between 1 and {SAMPLE_MAX}")));
    }
    raise_memlock_limit();
    let replay = if opts.replay { REPLAY_MODE } else { 0 };
    let mut ebpf = EbpfLoader::new()
        // No CO-RE relocations to resolve: the kernel's BTF is never needed, and Raspberry Pi
        // OS kernels have none (raspberrypi/linux issue 6622).
        .btf(None)
        .map_max_entries(DEVICE_STATS, opts.max_macs)
        .map_max_entries(CONVERSATIONS, conversation_map_entries(opts.max_conversations))
        .map_max_entries(SAMPLES, s.ring_bytes)
        .override_global(GLOBAL_REPLAY, &replay, true)
        .override_global(GLOBAL_SNAPLEN, &s.snaplen, true)
        .override_global(GLOBAL_FIRST_PACKETS, &s.first_packets, true)
        .override_global(GLOBAL_RATE, &s.rate, true)
        .override_global(GLOBAL_BURST, &s.burst, true)
        .override_global(GLOBAL_CPU_RATE, &s.cpu_rate, true)
        .override_global(GLOBAL_NEW_SOURCE_RATE, &s.new_source_rate, true)
        .load(OBJECT)
        .map_err(LoadError::Object)?;
    if opts.batch && !opts.replay {
        return Err(LoadError::Option("the replay program is loaded in replay mode only".into()));
    }
    let mut work = Vec::new();
    if opts.tc {
        let tc: &mut SchedClassifier = program(&mut ebpf, TC_PROGRAM)?;
        verified(TC_PROGRAM, tc.load())?;
        work.push((TC_PROGRAM, tc.info().ok().and_then(|i| i.verified_instruction_count())));
    }
    if opts.xdp {
        let xdp: &mut Xdp = program(&mut ebpf, XDP_PROGRAM)?;
        verified(XDP_PROGRAM, xdp.load())?;
        work.push((XDP_PROGRAM, xdp.info().ok().and_then(|i| i.verified_instruction_count())));
    }
    if opts.batch {
        for name in [REPLAY_FRAME_PROGRAM, REPLAY_PROGRAM] {
            let replay: &mut Xdp = program(&mut ebpf, name)?;
            verified(name, replay.load())?;
            work.push((name, replay.info().ok().and_then(|i| i.verified_instruction_count())));
        }
        chain_replay(&mut ebpf)?;
    }
    // How far each program is from the verifier's limit of 1,000,000 instructions. Replay's
    // output is its report: its log stays quiet unless asked.
    for (program, work) in work {
        if opts.replay {
            tracing::debug!(program, verified_instructions = work, "loaded");
        } else {
            tracing::info!(program, verified_instructions = work, "loaded");
        }
    }
    Ok(ebpf)
}

/// Puts replay's frame program into the program array through which it is called for a batch's
/// next frame, by the entry and by itself. The kernel empties the array when the process closes
/// it, so the cycle (program, array, program) ends with the process.
fn chain_replay(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let fd = program::<Xdp>(ebpf, REPLAY_FRAME_PROGRAM)?
        .fd()
        .map_err(|source| LoadError::Program { program: REPLAY_FRAME_PROGRAM, source })?
        .try_clone()
        .map_err(|e| LoadError::Option(format!("duplicating the replay program's descriptor: {e}")))?;
    let map = ebpf.map_mut(REPLAY_NEXT).ok_or_else(|| LoadError::Missing(REPLAY_NEXT.to_owned()))?;
    let mut next = ProgramArray::try_from(map).map_err(|e| LoadError::Option(format!("map {REPLAY_NEXT}: {e}")))?;
    next.set(0, &fd, 0).map_err(|e| LoadError::Option(format!("map {REPLAY_NEXT}: {e}")))
}

/// Turns a program's load result into one line a user can act on. A refusal keeps the
/// verifier's log in a file, named in the message, instead of dumping it on the terminal.
fn verified(program: &'static str, loaded: Result<(), ProgramError>) -> Result<(), LoadError> {
    match loaded {
        Ok(()) => Ok(()),
        Err(ProgramError::LoadError { io_error, verifier_log }) => {
            Err(refused(program, io_error, &verifier_log.to_string()))
        }
        Err(source) => Err(LoadError::Program { program, source }),
    }
}

/// A program the kernel would not load: missing privilege when there is no verifier log, else
/// the verifier's refusal.
fn refused(program: &'static str, io_error: std::io::Error, log: &str) -> LoadError {
    if log.trim().is_empty() && matches!(io_error.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
        return LoadError::NotPermitted { program, source: io_error };
    }
    let reason = verifier_gist(log).map_or_else(|| io_error.to_string(), str::to_owned);
    LoadError::Refused { program, kernel: kernel_release(), reason, kept: keep_log(program, log) }
}

/// Writes the verifier's log where the service keeps state (else the temporary directory);
/// says where, or why nowhere. A file left by another user is not overwritten: the log goes
/// to one named after this process.
fn keep_log(program: &str, log: &str) -> String {
    let dir = std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let first = dir.join(format!("iotwatch-verifier-{program}.log"));
    let second = dir.join(format!("iotwatch-verifier-{program}-{}.log", std::process::id()));
    let mut why = String::new();
    for file in [first, second] {
        match std::fs::write(&file, log) {
            Ok(()) => return format!("kept in {}", file.display()),
            Err(e) => why = format!("{}: {e}", file.display()),
        }
    }
    format!("which could not be kept ({why}); run with --log.level debug to see it")
}

/// The verifier's reason: the last line of its log before the closing statistics.
fn verifier_gist(log: &str) -> Option<&str> {
    const STATS: [&str; 4] = ["verification time", "stack depth", "processed ", "max_states_per_insn"];
    log.lines().map(str::trim).rfind(|l| !l.is_empty() && !STATS.iter().any(|s| l.starts_with(s)))
}

fn kernel_release() -> String {
    std::fs::read_to_string(Path::new("/proc/sys/kernel/osrelease"))
        .map_or_else(|_| "(unknown)".to_owned(), |r| r.trim().to_owned())
}

/// A loaded program by name and type.
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or_else(|| LoadError::Missing(name.to_owned()))?;
    p.try_into().map_err(|source| LoadError::WrongType { name: name.to_owned(), source })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of the log 6.1 printed when it refused the TC program (issue 8).
    const LOG_61: &str = "; if peek[i] != prefix[i] {
1208: (79) r0 = *(u64 *)(r10 -208)    ; R0_w=scalar() R10=fp0
1210: (55) if r0 != 0x4d goto pc+23   ; R0_w=77
1211: (bf) r7 = r4
R4 !read_ok
verification time 306921 usec
stack depth 456+0
processed 18796 insns (limit 1000000) max_states_per_insn 11 total_states 834 peak_states 472 mark_read 47
";

    #[test]
    fn a_refusal_is_one_line_with_the_reason_and_the_log_file() {
        assert_eq!(verifier_gist(LOG_61), Some("R4 !read_ok"));
        assert_eq!(verifier_gist(""), None);
        let kept = keep_log("iotwatch_test_program", LOG_61);
        let file = kept.strip_prefix("kept in ").expect("the log was kept");
        assert_eq!(std::fs::read_to_string(file).expect("the kept log"), LOG_61);
        std::fs::remove_file(file).expect("remove the test's log");
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        let err = refused(TC_PROGRAM, e, LOG_61);
        let line = err.to_string();
        assert!(matches!(err, LoadError::Refused { .. }), "{err:?}");
        assert!(!line.contains('\n'), "{line}");
        for part in ["Linux ", "iotwatch_tc", "R4 !read_ok", "report it", "kept in ", "iotwatch-verifier-iotwatch_tc"] {
            assert!(line.contains(part), "{part} missing from: {line}");
        }
        if let LoadError::Refused { kept, .. } = err {
            let _ = std::fs::remove_file(kept.trim_start_matches("kept in "));
        }
        // Without a log, EACCES is missing privilege, not a refusal.
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        let err = refused(XDP_PROGRAM, e, "");
        assert!(matches!(err, LoadError::NotPermitted { .. }) && err.to_string().contains("CAP_BPF"), "{err}");
    }
}
