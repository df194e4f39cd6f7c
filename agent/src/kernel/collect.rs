//! Reading the maps: per-CPU sums, conversation deltas since the last poll, and ageing.
//!
//! CONVERSATIONS is an LRU map. Entries should leave through the agent (aged out here after
//! their last counts were taken), not through eviction; the program counts its inserts, so
//! inserts - aged out - live entries = evicted, which is exported.
//!
//! DEVICE_STATS never evicts: MACs idle for `--bpf.mac-idle` leave it through the agent too,
//! and their counts stay in the [`MacBook`], so new devices find room and totals never fall.
//!
//! Both hash maps are read with BPF_MAP_LOOKUP_BATCH ([`BatchReader`]): whole hash buckets,
//! thousands of entries per system call, where get-next-key and a lookup cost two system calls
//! per entry (131,000 per poll at 65,536 conversations). Get-next-key stays as the fallback.
//!
//! Entries leave with BPF_MAP_LOOKUP_AND_DELETE_ELEM ([`map_ops`]): the values and the removal
//! are one step, so frames counted after the walk read an entry are not lost. One window stays:
//! a frame whose program run found the entry just before the removal and adds to it just after
//! adds to freed memory. It is nanoseconds wide, and only for entries idle for the whole
//! timeout.

use std::os::fd::AsFd as _;

use agent_common::{
    CONVERSATIONS, ConvCounters, ConvKey, DEVICE_STATS, DeviceCounters, MacKey, ProgramStats, STATS, Stat,
    sample::{KINDS, outcome},
};
use anyhow::Context as _;
use aya::{
    Ebpf, Pod,
    maps::{IterableMap as _, MapData, MapError, PerCpuArray, PerCpuHashMap},
};
use iotwatch_core::{
    clock,
    ledger::Delta,
    mac::Mac,
    macbook::{MacBook, sum_device},
    snapshot::{ConvTotals, Readings, SampleCounts, Snapshot, removed, sum_conv},
};

use crate::kernel::map_ops::{BatchReader, BatchWalk, lookup_and_delete_per_cpu};

/// How the collector walks the hash maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapRead {
    /// BPF_MAP_LOOKUP_BATCH: whole hash buckets, up to [`BATCH_ENTRIES`] entries per system call.
    Batch,
    /// get-next-key and a lookup per key: two system calls per entry. Only a fallback: every
    /// hash map type has had BPF_MAP_LOOKUP_BATCH since Linux 5.6 and the agent needs 5.18, but a
    /// kernel that refuses the command (EINVAL without it, ENOTSUPP for a map type without it)
    /// still gets its maps read rather than an agent that cannot count.
    Iterate,
}

/// Entries asked for per BPF_MAP_LOOKUP_BATCH call: 16 calls for a full conversation map of
/// 65,536, with buffers of 52 bytes per key and 40 per CPU per value (about 0.8 MB on a Pi 4).
pub const BATCH_ENTRIES: usize = 4096;

pub struct Maps {
    devices: PerCpuHashMap<MapData, MacKey, DeviceCounters>,
    conversations: PerCpuHashMap<MapData, ConvKey, ConvCounters>,
    stats: PerCpuArray<MapData, ProgramStats>,
}

/// One read of a map: every entry with its values summed over CPUs, and what a batched walk took.
#[derive(Debug)]
pub struct Reading<K, T> {
    pub entries: Vec<(K, T)>,
    /// None when the map was walked with get-next-key.
    pub walk: Option<BatchWalk>,
}

/// Every entry of a per-CPU hash map, its values summed by `sum`, read in batches; `Ok(None)`
/// when the kernel has no batch lookup for the map.
fn read_batch<K: Pod, V: Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    batch: &mut BatchReader,
    sum: impl Fn(&[V]) -> T,
) -> std::io::Result<Option<Reading<K, T>>> {
    let mut entries = Vec::new();
    let walk = batch.for_each_per_cpu(map.map().fd().as_fd(), |key, values: &[V]| entries.push((key, sum(values))))?;
    Ok(walk.map(|w| Reading { entries, walk: Some(w) }))
}

/// Hands `f` every entry of a per-CPU hash map, its values summed by `sum`, read with
/// get-next-key and a lookup per key.
fn for_each_iterating<K: Pod, V: Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    sum: impl Fn(&[V]) -> T,
    mut f: impl FnMut(K, T),
) -> Result<(), MapError> {
    for item in map.iter() {
        let (key, values) = item?;
        f(key, sum(&values));
    }
    Ok(())
}

fn read_iterating<K: Pod, V: Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    sum: impl Fn(&[V]) -> T,
) -> Result<Vec<(K, T)>, MapError> {
    let mut entries = Vec::new();
    for_each_iterating(map, sum, |key, t| entries.push((key, t)))?;
    Ok(entries)
}

/// Hands `f` every entry of a map, read the way `read` says, and switches `read` to
/// [`MapRead::Iterate`] for good when the kernel refuses batches. Entries come as they are read,
/// without a copy of the map.
fn for_each_entry<K: Pod, V: Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    name: &str,
    read: &mut MapRead,
    batch: &mut BatchReader,
    sum: impl Fn(&[V]) -> T,
    mut f: impl FnMut(K, T),
) -> anyhow::Result<()> {
    if *read == MapRead::Batch {
        let walked = batch
            .for_each_per_cpu(map.map().fd().as_fd(), |key, values: &[V]| f(key, sum(values)))
            .with_context(|| format!("reading {name}"))?;
        if walked.is_some() {
            return Ok(());
        }
        tracing::warn!("the kernel refused BPF_MAP_LOOKUP_BATCH on {name}; reading the maps an entry at a time");
        *read = MapRead::Iterate;
    }
    for_each_iterating(map, sum, f).with_context(|| format!("reading {name}"))
}

/// [`for_each_entry`] into a vector.
fn read_map<K: Pod, V: Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    name: &str,
    read: &mut MapRead,
    batch: &mut BatchReader,
    sum: impl Fn(&[V]) -> T,
) -> anyhow::Result<Vec<(K, T)>> {
    let mut entries = Vec::new();
    for_each_entry(map, name, read, batch, sum, |key, t| entries.push((key, t)))?;
    Ok(entries)
}

/// [`read_batch`] or [`read_iterating`], an error when the kernel refuses batches.
fn read_one_way<K: Pod, V: Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    read: MapRead,
    batch_entries: usize,
    sum: impl Fn(&[V]) -> T,
) -> anyhow::Result<Reading<K, T>> {
    match read {
        MapRead::Batch => read_batch(map, &mut BatchReader::new(batch_entries), sum)?
            .context("the kernel refused BPF_MAP_LOOKUP_BATCH"),
        MapRead::Iterate => Ok(Reading { entries: read_iterating(map, sum)?, walk: None }),
    }
}

impl Maps {
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let mut take =
            |name: &str| ebpf.take_map(name).with_context(|| format!("map {name} missing from the eBPF object"));
        Ok(Self {
            devices: take(DEVICE_STATS)?.try_into().context(DEVICE_STATS)?,
            conversations: take(CONVERSATIONS)?.try_into().context(CONVERSATIONS)?,
            stats: take(STATS)?.try_into().context(STATS)?,
        })
    }
}

/// One read of every map, before idle entries leave them ([`Collector::finish`]).
pub struct Walk {
    stats: Vec<u64>,
    samples: SampleCounts,
    deltas: Vec<Delta>,
    idle_conversations: Vec<ConvKey>,
    idle_macs: Vec<MacKey>,
}

pub struct Collector {
    maps: Maps,
    prev: Readings,
    /// Deltas of a walk that failed part way, for the next poll.
    unreported: Vec<Delta>,
    macs: MacBook,
    /// How long a MAC's counters must stand still before it leaves DEVICE_STATS (None: never).
    mac_idle_ns: Option<u64>,
    aged_out: u64,
    evictions: u64,
    read: MapRead,
    batch: BatchReader,
}

impl Collector {
    pub fn new(maps: Maps) -> Self {
        Self {
            maps,
            prev: Readings::default(),
            unreported: Vec::new(),
            macs: MacBook::default(),
            mac_idle_ns: None,
            aged_out: 0,
            evictions: 0,
            read: MapRead::Batch,
            batch: BatchReader::new(BATCH_ENTRIES),
        }
    }

    /// How the maps are walked: in batches (the default) or an entry at a time.
    pub fn set_read(&mut self, read: MapRead) {
        self.read = read;
    }

    /// How the maps are walked now ([`MapRead::Iterate`] after the kernel refused batches).
    pub fn read(&self) -> MapRead {
        self.read
    }

    /// Every conversation in the map, summed over CPUs, read one way without a fallback, with
    /// batches of `batch_entries` (grown if a bucket does not fit), and what the batched walk
    /// took. Nothing else changes: no deltas, no ageing. For comparing the two ways.
    pub fn read_conversations(
        &self,
        read: MapRead,
        batch_entries: usize,
    ) -> anyhow::Result<Reading<ConvKey, ConvTotals>> {
        read_one_way(&self.maps.conversations, read, batch_entries, sum_conv).context(CONVERSATIONS)
    }

    /// [`Collector::read_conversations`] for DEVICE_STATS.
    pub fn read_devices(&self, read: MapRead, batch_entries: usize) -> anyhow::Result<Reading<MacKey, DeviceCounters>> {
        read_one_way(&self.maps.devices, read, batch_entries, sum_device).context(DEVICE_STATS)
    }

    /// Ages MACs out of DEVICE_STATS once their counters stood still this long (None: never).
    /// MACs the agent's table keeps whatever its bound (see `MacBook::pin`).
    pub fn pin_macs(&mut self, macs: &[Mac]) {
        self.macs.pin(macs.iter().copied());
    }

    pub fn set_mac_idle(&mut self, idle_ns: Option<u64>) {
        self.mac_idle_ns = idle_ns;
    }

    /// Reads every map once. Conversations idle since before `idle_before_ns` (program clock) are
    /// removed with their last counts; so are MACs idle for the MAC timeout (monotonic clock).
    pub fn poll(&mut self, idle_before_ns: Option<u64>) -> anyhow::Result<Snapshot> {
        self.poll_at(clock::monotonic_ns(), idle_before_ns)
    }

    /// [`Collector::poll`] with the time MAC idleness is measured against.
    pub fn poll_at(&mut self, now_ns: u64, idle_before_ns: Option<u64>) -> anyhow::Result<Snapshot> {
        let walk = self.walk(now_ns, idle_before_ns)?;
        self.finish(walk)
    }

    /// Reads every map and decides what has been idle.
    pub fn walk(&mut self, now_ns: u64, idle_before_ns: Option<u64>) -> anyhow::Result<Walk> {
        // Statistics first: inserts counted after this read but seen in the walk below can only
        // make the eviction estimate low for one poll, never high (it is kept as a maximum).
        let per_cpu = self.maps.stats.get(&0, 0).context("reading STATS")?;
        let stats: Vec<u64> = (0..Stat::ALL.len()).map(|i| per_cpu.iter().map(|s| s.events[i]).sum()).collect();
        let samples = sample_sums(&per_cpu);

        // A walk with get-next-key may return a key twice (see `Readings::read`), a batched one
        // never does: deltas and idleness take care of it either way. The deltas of a walk
        // that fails part way are kept for the next poll: its readings were taken.
        let mut deltas = std::mem::take(&mut self.unreported);
        let prev = &mut self.prev;
        let walked = for_each_entry(
            &self.maps.conversations,
            CONVERSATIONS,
            &mut self.read,
            &mut self.batch,
            sum_conv,
            |key, seen| {
                deltas.extend(prev.read(key, &seen));
            },
        );
        if let Err(e) = walked {
            self.prev.abandon_walk();
            self.unreported = deltas;
            return Err(e);
        }
        let idle_conversations = self.prev.end_walk(idle_before_ns);

        let macs = match read_map(&self.maps.devices, DEVICE_STATS, &mut self.read, &mut self.batch, sum_device) {
            Ok(macs) => macs,
            // The conversations' readings were taken: their deltas wait for the next poll.
            Err(e) => {
                self.unreported = deltas;
                return Err(e);
            }
        };
        let idle_macs = self.macs.observe(now_ns, &macs, self.mac_idle_ns);
        Ok(Walk { stats, samples, deltas, idle_conversations, idle_macs })
    }

    /// Takes the idle entries out of the maps, with what they counted since the walk. A removal
    /// that fails leaves the entry (and its counts) in the map for the next poll; the deltas taken
    /// so far are never dropped for it.
    pub fn finish(&mut self, walk: Walk) -> anyhow::Result<Snapshot> {
        let Walk { stats, samples, mut deltas, idle_conversations, idle_macs } = walk;
        let fd = self.maps.conversations.map().fd().as_fd();
        for key in idle_conversations {
            match lookup_and_delete_per_cpu::<_, ConvCounters>(fd, &key) {
                Ok(Some(values)) => {
                    deltas.extend(removed(&mut self.prev, key, &sum_conv(&values)));
                    self.aged_out += 1;
                }
                // Evicted since the walk: its loss shows in the eviction count.
                Ok(None) => {
                    self.prev.remove(&key);
                }
                Err(e) => {
                    tracing::warn!("ageing {CONVERSATIONS} out: {e}; idle entries stay until the next poll");
                    break;
                }
            }
        }
        let conversation_entries = self.prev.len() as u64;

        let fd = self.maps.devices.map().fd().as_fd();
        for key in idle_macs {
            match lookup_and_delete_per_cpu::<_, DeviceCounters>(fd, &key) {
                Ok(last) => self.macs.retire(key, last.map(|v| sum_device(&v))),
                Err(e) => {
                    tracing::warn!("ageing {DEVICE_STATS} out: {e}; idle MACs stay until the next poll");
                    break;
                }
            }
        }

        let inserts = stats[Stat::ConvInserts as usize];
        let evicted = inserts.saturating_sub(self.aged_out + conversation_entries);
        self.evictions = self.evictions.max(evicted);
        Ok(Snapshot {
            macs: self.macs.totals(),
            mac_entries: self.macs.in_map(),
            macs_aged_out: self.macs.aged_out(),
            macs_departed: self.macs.departed(),
            mac_table: self.macs.table(),
            stats,
            samples,
            deltas,
            conversation_entries,
            evictions: self.evictions,
            aged_out: self.aged_out,
        })
    }

    /// What became of the samples the program chose, read now (a poll's snapshot has it too).
    pub fn sample_counts(&self) -> anyhow::Result<SampleCounts> {
        Ok(sample_sums(&self.maps.stats.get(&0, 0).context("reading STATS")?))
    }
}

/// The sample counters of every CPU's statistics, summed per kind and outcome.
fn sample_sums(per_cpu: &[ProgramStats]) -> SampleCounts {
    let mut out = [[0u64; outcome::OUTCOMES]; KINDS];
    for (k, row) in out.iter_mut().enumerate() {
        for (o, cell) in row.iter_mut().enumerate() {
            *cell = per_cpu.iter().map(|s| s.samples[k * outcome::OUTCOMES + o]).sum();
        }
    }
    out
}
