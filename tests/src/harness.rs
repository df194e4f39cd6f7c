//! The programs under BPF_PROG_TEST_RUN: load them with [`LoadOptions`], hand in TC and XDP
//! frames (every run asserts the verdict is "pass"), then read back what they counted (the maps,
//! through the agent's collector) and sampled (the ring, decoded, and the sample counters).

use agent_common::{
    sample::SampleHeader,
    wire::verdict::{TC_PASS, XDP_PASS},
};
use iotwatch::kernel::{
    collect::{Collector, Maps},
    load::{self, LoadOptions, SampleOptions},
    ring::Samples,
    test_run::{MAX_TEST_RUN_DATA, ReplayRun, TcInput, replay_program, replay_room, run_replay, run_tc, run_xdp},
};
use iotwatch_core::{
    events::decode,
    snapshot::{SampleCounts, Snapshot},
};

/// Pins the calling thread to `cpu`: BPF_PROG_TEST_RUN runs the program on the caller's CPU, and
/// per-CPU maps then keep one CPU's slot.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only read
    // and write that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0, "pin to CPU {cpu}");
    }
}

/// Loaded programs with their maps and sample ring taken.
pub struct Harness {
    ebpf: aya::Ebpf,
    collector: Collector,
    samples: Samples,
    /// Bytes a test run of replay's programs takes, as the kernel says (0: not loaded).
    room: usize,
}

impl Harness {
    pub fn load(options: &LoadOptions) -> Self {
        let mut ebpf = load::load(options).expect("load the programs");
        let collector = Collector::new(Maps::take(&mut ebpf).expect("maps"));
        let samples = Samples::take(&mut ebpf).expect("ring");
        let room = if options.batch { replay_room(replay_program(&ebpf).expect("replay program")) } else { 0 };
        Self { ebpf, collector, samples, room }
    }

    /// Default options, live or replay mode.
    pub fn new(replay: bool) -> Self {
        Self::load(&LoadOptions { replay, batch: replay, ..LoadOptions::default() })
    }

    /// Replay mode (the capture time in the context drives the rate limit) with these sampling
    /// options, on CPU 0: rate limits are per CPU, and a test thread moved to another CPU half
    /// way would meet fresh buckets there.
    pub fn sampling(sampling: SampleOptions) -> Self {
        pin_to_cpu(0);
        Self::load(&LoadOptions { replay: true, batch: true, sampling, ..LoadOptions::default() })
    }

    /// One frame through the TC program.
    pub fn tc(&mut self, frame: &[u8]) {
        self.tc_input(&TcInput { data: frame, ..TcInput::default() });
    }

    pub fn tc_input(&mut self, input: &TcInput<'_>) {
        assert_eq!(run_tc(&self.ebpf, input).expect("test run"), TC_PASS, "TC must always pass (TC_ACT_UNSPEC)");
    }

    /// A captured frame through the TC program (replay mode): as much of it as a test run takes,
    /// its whole length as the wire length, captured at `ts_s` seconds.
    pub fn send(&mut self, frame: &[u8], ts_s: u64) {
        self.tc_input(&TcInput {
            data: &frame[..frame.len().min(MAX_TEST_RUN_DATA)],
            wire_len: frame.len() as u32,
            tstamp_ns: ts_s * 1_000_000_000,
            ..TcInput::default()
        });
    }

    /// One frame through the XDP program.
    pub fn xdp(&mut self, frame: &[u8]) {
        assert_eq!(run_xdp(&self.ebpf, frame, 1).expect("test run").0, XDP_PASS, "XDP must always pass");
    }

    /// One frame through replay's program (a batch of one), with its wire length and capture
    /// time.
    pub fn xdp_replay(&mut self, frame: &[u8], wire_len: u32, tstamp_ns: u64) {
        self.replay_batch(&[(frame, wire_len, tstamp_ns)]).expect("test run");
    }

    /// Frames (data, wire length, capture time in ns) through replay's programs in one test run,
    /// as replay lays them out; the error if not all of them ran. Panics if they do not fit.
    pub fn replay_batch(&mut self, frames: &[(&[u8], u32, u64)]) -> anyhow::Result<()> {
        let mut run = ReplayRun::new(self.replay_room());
        for (data, wire_len, ts) in frames {
            assert!(run.fits(data.len()), "{} frames do not fit in one test run", frames.len());
            run.push(data, *wire_len, *ts);
        }
        let mut input = Vec::new();
        run.finish_into(&mut input);
        run_replay(replay_program(&self.ebpf)?, &input)
    }

    /// Bytes one test run of replay's programs takes, as the kernel says.
    pub fn replay_room(&self) -> usize {
        assert!(self.room > 0, "replay's programs are not loaded (LoadOptions::batch)");
        self.room
    }

    /// Everything counted since the last poll.
    pub fn poll(&mut self) -> Snapshot {
        self.collector.poll(None).expect("read maps")
    }

    /// The collector that reads the maps, to read them another way or change how it reads them.
    pub fn collector(&mut self) -> &mut Collector {
        &mut self.collector
    }

    /// Ages MACs out of DEVICE_STATS after their counters stood still this long (None: never).
    pub fn set_mac_idle(&mut self, idle_ns: Option<u64>) {
        self.collector.set_mac_idle(idle_ns);
    }

    /// A poll at `now_ns` (the clock MAC idleness is measured with) that ages out conversations
    /// last seen before `idle_before_ns`, and runs `between` after the maps were read and before
    /// idle entries are removed.
    pub fn poll_with(&mut self, now_ns: u64, idle_before_ns: Option<u64>, between: impl FnOnce(&mut Self)) -> Snapshot {
        let walk = self.collector.walk(now_ns, idle_before_ns).expect("read maps");
        between(self);
        self.collector.finish(walk).expect("age maps")
    }

    /// [`Harness::poll_with`] with nothing in between.
    pub fn poll_at(&mut self, now_ns: u64, idle_before_ns: Option<u64>) -> Snapshot {
        self.poll_with(now_ns, idle_before_ns, |_| {})
    }

    /// (header, captured bytes) of every record waiting in the ring.
    pub fn take_samples(&mut self) -> Vec<(SampleHeader, Vec<u8>)> {
        let mut out = Vec::new();
        self.samples.drain(usize::MAX, |r| {
            let (h, d) = decode(r).expect("a well-formed record");
            out.push((h, d.to_vec()));
        });
        out
    }

    /// Samples sent, suppressed and dropped, per kind.
    pub fn sample_counts(&self) -> SampleCounts {
        self.collector.sample_counts().expect("stats")
    }
}
