//! Reading the maps: per-CPU sums, conversation deltas since the last poll, and ageing.
//!
//! CONVERSATIONS is an LRU map. Entries should leave through the agent (aged out here after
//! their last counts were taken), not through eviction; the program counts its inserts, so
//! inserts - aged out - live entries = evicted, which is exported.
//!
//! DEVICE_STATS never evicts: MACs idle for `--bpf.mac-idle` leave it through the agent too,
//! and their counts stay in the [`MacBook`], so new devices find room and totals never fall.
//!
//! Entries leave with BPF_MAP_LOOKUP_AND_DELETE_ELEM ([`map_ops`]): the values and the removal
//! are one step, so frames counted after the walk read an entry are not lost. One window stays:
//! a frame whose program run found the entry just before the removal and adds to it just after
//! adds to freed memory. It is nanoseconds wide, and only for entries idle for the whole
//! timeout.

use std::{collections::HashMap, os::fd::AsFd as _};

use agent_common::{
    CONVERSATIONS, ConvCounters, ConvKey, DEVICE_STATS, DeviceCounters, MacKey, ProgramStats, STATS, Stat,
    sample::{KINDS, outcome},
};
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{IterableMap as _, MapData, PerCpuArray, PerCpuHashMap},
};
use iotwatch_core::{
    clock,
    ledger::{Delta, Totals},
    macbook::{MacBook, sum_device},
    snapshot::{SampleCounts, Snapshot, diff, idle_keys, removed, sum_conv},
};

use crate::kernel::map_ops::lookup_and_delete_per_cpu;

pub struct Maps {
    devices: PerCpuHashMap<MapData, MacKey, DeviceCounters>,
    conversations: PerCpuHashMap<MapData, ConvKey, ConvCounters>,
    stats: PerCpuArray<MapData, ProgramStats>,
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
    deltas: Vec<Delta>,
    idle_conversations: Vec<ConvKey>,
    idle_macs: Vec<MacKey>,
}

pub struct Collector {
    maps: Maps,
    prev: HashMap<ConvKey, Totals>,
    macs: MacBook,
    /// How long a MAC's counters must stand still before it leaves DEVICE_STATS (None: never).
    mac_idle_ns: Option<u64>,
    aged_out: u64,
    evictions: u64,
}

impl Collector {
    pub fn new(maps: Maps) -> Self {
        Self { maps, prev: HashMap::new(), macs: MacBook::default(), mac_idle_ns: None, aged_out: 0, evictions: 0 }
    }

    /// Ages MACs out of DEVICE_STATS once their counters stood still this long (None: never).
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

        // The walk may return a key twice (see `diff`): deltas and idleness take care of it.
        let mut current = Vec::new();
        for item in self.maps.conversations.iter() {
            let (key, values) = item.context("reading CONVERSATIONS")?;
            current.push((key, sum_conv(&values)));
        }
        let deltas = diff(&mut self.prev, &current);
        let idle_conversations = idle_before_ns.map_or_else(Vec::new, |t| idle_keys(&current, t));

        let mut macs = Vec::new();
        for item in self.maps.devices.iter() {
            let (key, values) = item.context("reading DEVICE_STATS")?;
            macs.push((key, sum_device(&values)));
        }
        let idle_macs = self.macs.observe(now_ns, &macs, self.mac_idle_ns);
        Ok(Walk { stats, deltas, idle_conversations, idle_macs })
    }

    /// Takes the idle entries out of the maps, with what they counted since the walk. A removal
    /// that fails leaves the entry (and its counts) in the map for the next poll; the deltas taken
    /// so far are never dropped for it.
    pub fn finish(&mut self, walk: Walk) -> anyhow::Result<Snapshot> {
        let Walk { stats, mut deltas, idle_conversations, idle_macs } = walk;
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
            stats,
            deltas,
            conversation_entries,
            evictions: self.evictions,
            aged_out: self.aged_out,
        })
    }

    /// What became of the samples the program chose, per kind and outcome.
    pub fn sample_counts(&self) -> anyhow::Result<SampleCounts> {
        let per_cpu = self.maps.stats.get(&0, 0).context("reading STATS")?;
        let mut out = [[0u64; outcome::OUTCOMES]; KINDS];
        for (k, row) in out.iter_mut().enumerate() {
            for (o, cell) in row.iter_mut().enumerate() {
                *cell = per_cpu.iter().map(|s| s.samples[k * outcome::OUTCOMES + o]).sum();
            }
        }
        Ok(out)
    }
}
