//! Running the loaded programs under BPF_PROG_TEST_RUN: the way tests, replay and the benchmark
//! feed frames to the very program that runs live.

use agent_common::ReplayMeta;
use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};

use crate::kernel::load::{TC_PROGRAM, XDP_PROGRAM};

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
/// length in `wire_len` or the XDP metadata (replay mode).
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

/// The kernel's `struct xdp_md`, as BPF_PROG_TEST_RUN takes it: `data` is the length of the
/// metadata in front of the frame, `data_end` the length of everything passed in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct XdpMdCtx {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Appends one frame to `inputs` as a replay test run takes it: a [`ReplayMeta`] (the XDP
/// metadata), then the frame's data. Replay lays a batch of frames out this way, so that the
/// test runs neither allocate nor copy.
pub fn push_replay_input(inputs: &mut Vec<u8>, data: &[u8], wire_len: u32, tstamp_ns: u64) {
    let meta = ReplayMeta { wire_len, _pad: 0, tstamp_ns };
    // SAFETY: ReplayMeta is repr(C) plain data without padding.
    inputs.extend_from_slice(unsafe {
        std::slice::from_raw_parts((&raw const meta).cast::<u8>(), size_of::<ReplayMeta>())
    });
    inputs.extend_from_slice(data);
}

/// Runs the XDP program once in replay mode: one BPF_PROG_TEST_RUN system call on `input`, one
/// frame laid out by [`push_replay_input`].
pub fn run_xdp_replay_input(prog: &Xdp, input: &[u8]) -> anyhow::Result<u32> {
    let ctx = XdpMdCtx { data: size_of::<ReplayMeta>() as u32, data_end: input.len() as u32, ..XdpMdCtx::default() };
    // SAFETY: XdpMdCtx is repr(C) plain data.
    let ctx_bytes = unsafe { std::slice::from_raw_parts((&raw const ctx).cast::<u8>(), size_of::<XdpMdCtx>()) };
    let result = prog
        .test_run(TestRunOptions { data_in: Some(input), ctx_in: Some(ctx_bytes), ..TestRunOptions::default() })
        .with_context(|| {
            format!("BPF_PROG_TEST_RUN of the XDP program on {} bytes", input.len() - size_of::<ReplayMeta>())
        })?;
    Ok(result.return_value)
}

/// Runs the XDP program once in replay mode with a [`ReplayMeta`] as XDP metadata.
pub fn run_xdp_replay(ebpf: &Ebpf, data: &[u8], wire_len: u32, tstamp_ns: u64) -> anyhow::Result<u32> {
    let mut input = Vec::with_capacity(size_of::<ReplayMeta>() + data.len());
    push_replay_input(&mut input, data, wire_len, tstamp_ns);
    run_xdp_replay_input(xdp_program(ebpf)?, &input)
}
