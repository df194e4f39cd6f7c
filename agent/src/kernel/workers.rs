//! Replay's test-run workers: one thread per CPU, each pinned to its CPU, running frames through
//! replay's program with BPF_PROG_TEST_RUN (one system call per batch of up to 32 frames).
//!
//! Why the result is the same as with one worker: the program keeps its state in per-CPU maps,
//! and the state that depends on the order of frames belongs to one source MAC: its sample rate
//! limit (keyed by the source MAC) and its conversations' flow-sample quotas (the conversation
//! key holds the source MAC). Frames are therefore partitioned by Ethernet source: all frames
//! of one source run on one CPU, in capture order. What several sources share (a destination's
//! receive counters, the statistics) are sums, the same in any order.
//!
//! Samples of all workers land in the one ring, interleaved. Each worker notes which records
//! its frames made: it reads the ring's producer position (mapped memory, no system call) before
//! and after a test run, and a record between the two that carries the source MAC of the frame
//! its batch index names is that frame's (no other worker runs that source). The replay hands
//! records on in frame order once every worker has passed a barrier ([`Pool::mark`],
//! [`Pool::collect`]), while the workers go on with the frames after it.

use std::{
    mem::offset_of,
    sync::{
        Arc,
        mpsc::{Receiver, Sender, SyncSender, channel, sync_channel},
    },
    thread::JoinHandle,
};

use agent_common::{ConvKey, sample::SampleHeader};
use anyhow::Context as _;
use aya::{Ebpf, programs::Xdp};

use crate::kernel::{
    ring::{Record, RingView},
    test_run::{ReplayRun, replay_program, replay_room, run_replay},
};

/// Frames handed to a worker at once, and the bytes of their test runs' inputs that make a
/// batch go sooner: a batch's buffers are sized for that once and then reused, never grown.
const BATCH: usize = 256;
const BATCH_BYTES: usize = 256 * 1024;

/// Where a record's source MAC and batch index lie in its header.
const SRC_MAC_AT: usize = offset_of!(SampleHeader, key) + offset_of!(ConvKey, src_mac);
const BATCH_INDEX_AT: usize = offset_of!(SampleHeader, batch_index);

/// One frame to run: at most a test run's worth of data, its wire length and capture time.
pub struct Frame<'a> {
    /// Position in the replay (frames of every file, in order).
    pub seq: u64,
    /// Byte offset in its file, for messages.
    pub offset: u64,
    pub ts_ns: u64,
    pub wire_len: u32,
    /// At least an Ethernet header.
    pub data: &'a [u8],
}

/// A frame of a batch: its position in the replay, byte offset in its file and source MAC.
type Ran = (u64, u64, [u8; 6]);

/// Frames for one worker, as the inputs of its test runs laid end to end in one buffer: a worker
/// allocates and copies nothing per frame.
struct Batch {
    inputs: Vec<u8>,
    /// Each test run: where its input ends in `inputs`, and its frames in `frames`.
    runs: Vec<(usize, usize)>,
    frames: Vec<Ran>,
    /// The test run being filled.
    open: ReplayRun,
}

impl Batch {
    fn new(room: usize) -> Self {
        Self {
            // A run is closed into `inputs` while they hold less than BATCH_BYTES.
            inputs: Vec::with_capacity(BATCH_BYTES + room),
            runs: Vec::with_capacity(BATCH),
            frames: Vec::with_capacity(BATCH),
            open: ReplayRun::new(room),
        }
    }

    fn full(&self) -> bool {
        self.frames.len() >= BATCH || self.inputs.len() >= BATCH_BYTES
    }

    fn clear(&mut self) {
        self.inputs.clear();
        self.runs.clear();
        self.frames.clear();
    }

    fn push(&mut self, f: &Frame<'_>) {
        if !self.open.fits(f.data.len()) {
            self.close();
        }
        let mut src = [0; 6];
        src.copy_from_slice(&f.data[6..12]);
        self.open.push(f.data, f.wire_len, f.ts_ns);
        self.frames.push((f.seq, f.offset, src));
    }

    /// Ends the test run being filled.
    fn close(&mut self) {
        if self.open.frames() > 0 {
            self.open.finish_into(&mut self.inputs);
            self.runs.push((self.inputs.len(), self.frames.len()));
        }
    }

    /// Each test run's input and frames.
    fn iter(&self) -> impl Iterator<Item = (&[u8], &[Ran])> {
        let starts = std::iter::once((0, 0)).chain(self.runs.iter().copied());
        self.runs.iter().zip(starts).map(|(&(end, frames_end), (start, frames_start))| {
            (&self.inputs[start..end], &self.frames[frames_start..frames_end])
        })
    }
}

enum Msg {
    Frames(Batch),
    Barrier,
}

/// A worker's report at a barrier: (frame, ring position) of the records its frames made since
/// the last one, the first error, and the ring's producer position when it reached the barrier
/// (every record it makes after lies beyond).
struct Ack {
    sampled: Vec<(u64, u64)>,
    error: Option<anyhow::Error>,
    producer: u64,
}

/// The records of the frames before a barrier, and up to where the ring holds only such records.
pub struct Claims {
    /// (frame, ring position), in frame order.
    pub sampled: Vec<(u64, u64)>,
    /// Every record before this position was made by a frame before the barrier (workers may be
    /// running later frames meanwhile: their records lie beyond).
    pub before_barrier: u64,
}

pub struct Pool {
    senders: Vec<SyncSender<Msg>>,
    /// One per worker: acks of different barriers must not mix.
    acks: Vec<Receiver<Ack>>,
    handles: Vec<JoinHandle<()>>,
    batches: Vec<Batch>,
    /// Batches the workers ran, given back to be filled again: their buffers keep their size.
    spare: Receiver<Batch>,
    /// Bytes of a test run's input ([`replay_room`]).
    room: usize,
    assigner: Assigner,
    /// Barriers sent and not collected yet.
    outstanding: usize,
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size is the set's.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) } != 0 {
        return vec![0];
    }
    // SAFETY: CPU_ISSET reads the set within its size.
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect();
    if cpus.is_empty() { vec![0] } else { cpus }
}

fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: as in allowed_cpus; CPU_SET writes within the set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE (it came from allowed_cpus).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Which worker runs which source: a source goes, when its first frame comes, to the worker
/// with the fewest frames so far, and stays there. A source that sends most of the frames (the
/// router, which is the source of everything downloaded) then has a worker to itself and the
/// others share the rest; any fixed assignment gives the same result.
#[derive(Debug)]
pub struct Assigner {
    of: std::collections::HashMap<[u8; 6], usize>,
    frames: Vec<u64>,
}

impl Assigner {
    pub fn new(workers: usize) -> Self {
        Self { of: std::collections::HashMap::new(), frames: vec![0; workers.max(1)] }
    }

    /// The worker of one more frame from `src`.
    pub fn worker(&mut self, src: [u8; 6]) -> usize {
        let frames = &self.frames;
        let w = *self.of.entry(src).or_insert_with(|| (0..frames.len()).min_by_key(|&w| (frames[w], w)).unwrap_or(0));
        self.frames[w] += 1;
        w
    }
}

impl Pool {
    /// Starts one worker on each of `cpus`.
    pub fn start(ebpf: Arc<Ebpf>, view: Arc<RingView>, cpus: &[usize]) -> anyhow::Result<Self> {
        let mut senders = Vec::new();
        let mut acks = Vec::new();
        let mut handles = Vec::new();
        let (spare_tx, spare) = channel();
        for &cpu in cpus {
            let (tx, rx) = sync_channel(16);
            let (ack_tx, ack_rx) = channel();
            let (ebpf, view, spare) = (Arc::clone(&ebpf), Arc::clone(&view), spare_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("replay-cpu{cpu}"))
                .spawn(move || work(cpu, &ebpf, &view, &rx, &ack_tx, &spare))
                .context("starting a replay worker")?;
            handles.push(thread);
            senders.push(tx);
            acks.push(ack_rx);
        }
        let room = replay_room(replay_program(&ebpf)?);
        tracing::debug!(bytes = room, "replay test runs");
        let batches = cpus.iter().map(|_| Batch::new(room)).collect();
        Ok(Self { senders, acks, handles, batches, spare, room, assigner: Assigner::new(cpus.len()), outstanding: 0 })
    }

    /// Hands a frame to the worker of its source.
    pub fn push(&mut self, frame: &Frame<'_>) -> anyhow::Result<()> {
        let mut src = [0; 6];
        src.copy_from_slice(&frame.data[6..12]);
        let w = self.assigner.worker(src);
        self.batches[w].push(frame);
        if self.batches[w].full() {
            self.send(w)?;
        }
        Ok(())
    }

    /// Sends a barrier after every frame pushed so far, without waiting for it.
    pub fn mark(&mut self) -> anyhow::Result<()> {
        for w in 0..self.senders.len() {
            if !self.batches[w].frames.is_empty() {
                self.send(w)?;
            }
            self.senders[w].send(Msg::Barrier).context("a replay worker stopped")?;
        }
        self.outstanding += 1;
        Ok(())
    }

    /// Sends worker `w` its batch.
    fn send(&mut self, w: usize) -> anyhow::Result<()> {
        self.batches[w].close();
        let next = self.spare.try_recv().unwrap_or_else(|_| Batch::new(self.room));
        let batch = std::mem::replace(&mut self.batches[w], next);
        self.senders[w].send(Msg::Frames(batch)).context("a replay worker stopped")
    }

    /// Barriers sent and not collected yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Waits until every worker has passed the oldest barrier not collected yet; returns the
    /// records of the frames before it (after the previous one).
    pub fn collect(&mut self) -> anyhow::Result<Claims> {
        anyhow::ensure!(self.outstanding > 0, "no barrier to wait for");
        self.outstanding -= 1;
        let mut sampled = Vec::new();
        let mut error = None;
        let mut before_barrier = u64::MAX;
        for acks in &self.acks {
            let ack = acks.recv().context("a replay worker stopped")?;
            sampled.extend(ack.sampled);
            error = error.or(ack.error);
            before_barrier = before_barrier.min(ack.producer);
        }
        if let Some(e) = error {
            return Err(e);
        }
        sampled.sort_unstable();
        Ok(Claims { sampled, before_barrier })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.senders.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn work(cpu: usize, ebpf: &Ebpf, view: &RingView, rx: &Receiver<Msg>, acks: &Sender<Ack>, spare: &Sender<Batch>) {
    let pinned = pin(cpu).map_err(|e| {
        anyhow::anyhow!("cannot pin a replay worker to CPU {cpu} ({e}): without it the result could depend on timing")
    });
    let (prog, mut error) = match pinned.and_then(|()| replay_program(ebpf)) {
        Ok(prog) => (Some(prog), None),
        Err(e) => (None, Some(e)),
    };
    let mut sampled = Vec::new();
    for msg in rx {
        match msg {
            Msg::Frames(mut batch) => {
                let (Some(prog), None) = (prog, &error) else {
                    continue;
                };
                for (input, frames) in batch.iter() {
                    if let Err(e) = run(prog, view, input, frames, &mut sampled) {
                        let offset = frames.first().map_or(0, |f| f.1);
                        error = Some(e.context(format!("a test run of frames from byte {offset}")));
                        break;
                    }
                }
                batch.clear();
                // The pool may be gone already (the replay stopped): the batch is dropped then.
                let _ = spare.send(batch);
            }
            Msg::Barrier => {
                let ack =
                    Ack { sampled: std::mem::take(&mut sampled), error: error.take(), producer: view.producer_pos() };
                if acks.send(ack).is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs one test run's `input` and notes the ring records its `frames` made.
fn run(prog: &Xdp, view: &RingView, input: &[u8], frames: &[Ran], sampled: &mut Vec<(u64, u64)>) -> anyhow::Result<()> {
    let before = view.producer_pos();
    run_replay(prog, input)?;
    let after = view.producer_pos();
    let mut pos = before;
    while pos != after {
        pos = match view.record(pos) {
            // Another worker's record, still being written (ours are submitted by now).
            Record::Busy => view.next_after(pos),
            Record::Discarded { next } => next,
            Record::Ready { data, next } => {
                let index =
                    data.get(BATCH_INDEX_AT..BATCH_INDEX_AT + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if let Some(&(seq, _, src)) = index.and_then(|i| frames.get(i as usize))
                    && data.get(SRC_MAC_AT..SRC_MAC_AT + 6) == Some(&src[..])
                {
                    sampled.push((seq, pos));
                }
                next
            }
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_stays_on_its_worker_and_a_big_one_gets_a_worker_to_itself() {
        let router = [0x02, 0x77, 0, 0, 0, 1];
        let devices: Vec<[u8; 6]> = (0..20u8).map(|i| [0x80, 0x9f, 0x9b, 0x10, i, 1]).collect();
        let mut a = Assigner::new(2);
        let mut seen = std::collections::HashMap::new();
        // The router sends three frames in four; the devices take turns with the rest.
        for i in 0..4000usize {
            let src = if i % 4 == 3 { devices[i / 4 % devices.len()] } else { router };
            let w = a.worker(src);
            assert_eq!(*seen.entry(src).or_insert(w), w, "a source moved to another worker");
        }
        let router_worker = seen[&router];
        assert!(devices.iter().all(|d| seen[d] != router_worker), "{seen:?}");
        assert_eq!(a.frames.iter().sum::<u64>(), 4000);
        // One worker: everything on it.
        let mut one = Assigner::new(1);
        assert!(devices.iter().all(|d| one.worker(*d) == 0));
        assert!(!allowed_cpus().is_empty());
    }
}
