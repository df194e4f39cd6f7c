//! Running the loaded programs under BPF_PROG_TEST_RUN: the way tests, replay and the benchmark
//! feed frames to the very program that runs live.

use agent_common::{REPLAY_BATCH_FRAMES, ReplayBatch, ReplayMeta};
use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};

use crate::kernel::load::{REPLAY_PROGRAM, TC_PROGRAM, XDP_PROGRAM};

/// The kernel's `struct __sk_buff` (uapi/linux/bpf.h) up to `hwtstamp`. BPF_PROG_TEST_RUN
/// accepts only a few fields non-zero: mark, priority, ifindexes, cb, tstamp, wire_len, gso_segs,
/// gso_size, hwtstamp.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SkBuffCtx {
    pub len: u32,
    pub pkt_type: u32,
    pub mark: u32,
    pub queue_mapping: u32,
    pub protocol: u32,
    pub vlan_present: u32,
    pub vlan_tci: u32,
    pub vlan_proto: u32,
    pub priority: u32,
    pub ingress_ifindex: u32,
    pub ifindex: u32,
    pub tc_index: u32,
    pub cb: [u32; 5],
    pub hash: u32,
    pub tc_classid: u32,
    pub data: u32,
    pub data_end: u32,
    pub napi_id: u32,
    pub family: u32,
    pub remote_ip4: u32,
    pub local_ip4: u32,
    pub remote_ip6: [u32; 4],
    pub local_ip6: [u32; 4],
    pub remote_port: u32,
    pub local_port: u32,
    pub data_meta: u32,
    pub flow_keys: u64,
    pub tstamp: u64,
    pub wire_len: u32,
    pub gso_segs: u32,
    pub sk: u64,
    pub gso_size: u32,
    pub tstamp_type: u8,
    pub _pad: [u8; 3],
    pub hwtstamp: u64,
}

const _: () = assert!(std::mem::offset_of!(SkBuffCtx, tstamp) == 152);
const _: () = assert!(std::mem::offset_of!(SkBuffCtx, wire_len) == 160);
const _: () = assert!(std::mem::offset_of!(SkBuffCtx, gso_segs) == 164);
const _: () = assert!(std::mem::size_of::<SkBuffCtx>() == 192);

impl SkBuffCtx {
    /// The context as BPF_PROG_TEST_RUN takes it.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: SkBuffCtx is repr(C) plain data; viewing it as bytes is sound.
        unsafe { std::slice::from_raw_parts((&raw const *self).cast::<u8>(), size_of::<SkBuffCtx>()) }
    }
}

/// Largest frame prefix BPF_PROG_TEST_RUN takes for TC and XDP (about a page minus head- and tailroom;
/// 3,000 bytes measured to pass on 4 KiB pages). Longer frames go in as a prefix with their
/// length in `wire_len` or the replay batch's metadata (replay mode).
pub const MAX_TEST_RUN_DATA: usize = 3000;

/// One buffer for the TC program.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcInput<'a> {
    pub data: &'a [u8],
    /// Original length of the frame (replay mode only; 0 = the data's length).
    pub wire_len: u32,
    /// Wire frames this buffer stands for (GSO); 0 = not said.
    pub gso_segs: u32,
    /// GSO segment size (0 = not GSO): with `gso_segs` 0, as tap and virtio-net buffers come.
    pub gso_size: u32,
    /// Capture time in ns since the epoch (replay mode only).
    pub tstamp_ns: u64,
}

/// Runs the TC program once on `input`: one BPF_PROG_TEST_RUN system call; returns its return
/// code.
pub fn run_tc(ebpf: &Ebpf, input: &TcInput<'_>) -> anyhow::Result<i32> {
    let prog: &SchedClassifier = ebpf
        .program(TC_PROGRAM)
        .context("TC program missing")?
        .try_into()
        .context("TC program has an unexpected type")?;
    let ctx = SkBuffCtx {
        wire_len: input.wire_len.max(input.data.len() as u32),
        gso_segs: input.gso_segs,
        gso_size: input.gso_size,
        tstamp: input.tstamp_ns,
        ..SkBuffCtx::default()
    };
    let result = prog
        .test_run(TestRunOptions { data_in: Some(input.data), ctx_in: Some(ctx.bytes()), ..TestRunOptions::default() })
        .with_context(|| format!("BPF_PROG_TEST_RUN of the TC program on {} bytes", input.data.len()))?;
    Ok(result.return_value as i32)
}

/// The loaded XDP program.
pub fn xdp_program(ebpf: &Ebpf) -> anyhow::Result<&Xdp> {
    ebpf.program(XDP_PROGRAM).context("XDP program missing")?.try_into().context("XDP program has an unexpected type")
}

/// Runs the XDP program `repeat` times on `data`; returns its return code and the mean time.
pub fn run_xdp(ebpf: &Ebpf, data: &[u8], repeat: u32) -> anyhow::Result<(u32, std::time::Duration)> {
    let prog = xdp_program(ebpf)?;
    let result = prog
        .test_run(TestRunOptions { data_in: Some(data), repeat, ..TestRunOptions::default() })
        .with_context(|| format!("BPF_PROG_TEST_RUN of the XDP program on {} bytes", data.len()))?;
    Ok((result.return_value, result.duration))
}

/// Largest frame prefix replay hands in: one frame with its batch's header within a test run's
/// data. Every header the program reads, and the most a sample copies, lie well within it.
pub const MAX_REPLAY_FRAME: usize = MAX_TEST_RUN_DATA - size_of::<ReplayBatch>() - size_of::<ReplayMeta>();

/// Bytes a test run of the replay program can take, asked of the kernel: the linear part of its
/// buffer, a page less head- and tailroom (3,520 bytes on x86-64 and arm64 with 4 KiB pages;
/// data beyond it goes to fragments, which the program cannot narrow to a frame). The entry
/// answers a batch of no frames with the length it can reach. [`MAX_TEST_RUN_DATA`] if the
/// kernel will not say.
pub fn replay_room(prog: &Xdp) -> usize {
    let mut probe = vec![0u8; 4096];
    probe[..size_of::<ReplayBatch>()].copy_from_slice(as_bytes(&ReplayBatch { frames: 0, _pad: 0 }));
    prog.test_run(TestRunOptions { data_in: Some(&probe), ..TestRunOptions::default() })
        .map_or(MAX_TEST_RUN_DATA, |r| (r.return_value as usize).clamp(MAX_TEST_RUN_DATA, probe.len()))
}

/// Frames laid out as one test run of the replay program takes them (agent-common's
/// [`ReplayBatch`]): as many as fit in `room` bytes ([`replay_room`]), up to
/// [`REPLAY_BATCH_FRAMES`].
#[derive(Debug)]
pub struct ReplayRun {
    room: usize,
    /// Each frame's metadata and where its data ends in `data`.
    frames: Vec<(ReplayMeta, usize)>,
    data: Vec<u8>,
}

impl ReplayRun {
    pub fn new(room: usize) -> Self {
        let room = room.max(MAX_TEST_RUN_DATA);
        Self { room, frames: Vec::with_capacity(REPLAY_BATCH_FRAMES), data: Vec::with_capacity(room) }
    }

    /// Whether a frame of `len` bytes fits in this run too.
    pub fn fits(&self, len: usize) -> bool {
        let len = len.min(MAX_REPLAY_FRAME);
        self.frames.is_empty()
            || (self.frames.len() < REPLAY_BATCH_FRAMES
                && self.input_len() + size_of::<ReplayMeta>() + len <= self.room)
    }

    /// Adds a frame: its data (at least an Ethernet header; cut to [`MAX_REPLAY_FRAME`] bytes),
    /// original length and capture time.
    pub fn push(&mut self, data: &[u8], wire_len: u32, tstamp_ns: u64) {
        let data = &data[..data.len().min(MAX_REPLAY_FRAME)];
        self.data.extend_from_slice(data);
        self.frames.push((ReplayMeta { wire_len, data_len: data.len() as u32, tstamp_ns }, self.data.len()));
    }

    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    fn input_len(&self) -> usize {
        size_of::<ReplayBatch>() + self.frames.len() * size_of::<ReplayMeta>() + self.data.len()
    }

    /// Appends the test run's input to `out` (the batch's header, then the frames last first,
    /// each followed by its metadata) and empties the run.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(as_bytes(&ReplayBatch { frames: self.frames.len() as u32, _pad: 0 }));
        for (i, (meta, end)) in self.frames.iter().enumerate().rev() {
            let start = if i == 0 { 0 } else { self.frames[i - 1].1 };
            out.extend_from_slice(&self.data[start..*end]);
            out.extend_from_slice(as_bytes(meta));
        }
        self.frames.clear();
        self.data.clear();
    }
}

/// A contract type as bytes.
fn as_bytes<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: Pod types are repr(C) plain data without padding bytes of unknown value.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// The loaded replay program.
pub fn replay_program(ebpf: &Ebpf) -> anyhow::Result<&Xdp> {
    ebpf.program(REPLAY_PROGRAM)
        .context("replay program missing (loaded with LoadOptions::batch)")?
        .try_into()
        .context("replay program has an unexpected type")
}

/// Runs the replay program on one test run's input (laid out by [`ReplayRun`]): one
/// BPF_PROG_TEST_RUN system call, and an error unless every frame in it ran.
pub fn run_replay(prog: &Xdp, input: &[u8]) -> anyhow::Result<()> {
    let frames = input.get(..4).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let result = prog
        .test_run(TestRunOptions { data_in: Some(input), ..TestRunOptions::default() })
        .with_context(|| format!("BPF_PROG_TEST_RUN of the replay program on {frames} frames"))?;
    anyhow::ensure!(
        result.return_value == frames,
        "the replay program ran {} of the {frames} frames of a test run: a bug, please report it",
        result.return_value
    );
    Ok(())
}
