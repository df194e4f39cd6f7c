//! Reading the maps: per-CPU sums, conversation deltas since the last poll, and ageing.
//!
//! CONVERSATIONS is an LRU map. Entries should leave through the agent (aged out here after
//! their last counts were taken), not through eviction; the program counts its inserts, so
//! inserts - aged out - live entries = evicted, which is exported.

use std::collections::HashMap;

use agent_common::{
    CONVERSATIONS, ConvCounters, ConvKey, DEVICE_STATS, DeviceCounters, MacKey, ProgramStats, STATS, Stat,
    sample::{KINDS, outcome},
};
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap},
};
use iotwatch_core::{
    ledger::Totals,
    mac::Mac,
    snapshot::{SampleCounts, Snapshot, diff, sum_conv},
};

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

pub struct Collector {
    maps: Maps,
    prev: HashMap<ConvKey, Totals>,
    aged_out: u64,
    evictions: u64,
}

impl Collector {
    pub fn new(maps: Maps) -> Self {
        Self { maps, prev: HashMap::new(), aged_out: 0, evictions: 0 }
    }

    /// Reads every map once. Conversations idle since before `idle_before_ns` (program clock) are
    /// removed after their counts were taken.
    pub fn poll(&mut self, idle_before_ns: Option<u64>) -> anyhow::Result<Snapshot> {
        let mut current = Vec::new();
        let mut idle = Vec::new();
        for item in self.maps.conversations.iter() {
            let (key, values) = item.context("reading CONVERSATIONS")?;
            let seen = sum_conv(&values);
            if idle_before_ns.is_some_and(|t| seen.last_seen_ns < t) {
                idle.push(key);
            }
            current.push((key, seen));
        }
        let deltas = diff(&mut self.prev, &current);
        let mut conversation_entries = current.len() as u64;
        for key in idle {
            // Between the read above and this removal a frame may still have been counted: the
            // entry was idle for the whole ageing interval, so that window is tiny.
            if self.maps.conversations.remove(&key).is_ok() {
                self.prev.remove(&key);
                self.aged_out += 1;
                conversation_entries -= 1;
            }
        }

        let mut macs = Vec::new();
        for item in self.maps.devices.iter() {
            let (key, values) = item.context("reading DEVICE_STATS")?;
            let sum = values.iter().fold(DeviceCounters::default(), |mut s, v| {
                s.tx_packets += v.tx_packets;
                s.tx_bytes += v.tx_bytes;
                s.rx_packets += v.rx_packets;
                s.rx_bytes += v.rx_bytes;
                s
            });
            macs.push((Mac(key.mac), sum));
        }

        let per_cpu = self.maps.stats.get(&0, 0).context("reading STATS")?;
        let stats: Vec<u64> = (0..Stat::ALL.len()).map(|i| per_cpu.iter().map(|s| s.events[i]).sum()).collect();

        let inserts = stats[Stat::ConvInserts as usize];
        let evicted = inserts.saturating_sub(self.aged_out + conversation_entries);
        self.evictions = self.evictions.max(evicted);
        Ok(Snapshot {
            mac_entries: macs.len() as u64,
            macs,
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
