//! The SAMPLES ring buffer and the sampling statistics, from userspace.

use std::os::fd::{AsFd as _, OwnedFd};

use agent_common::sample::{KINDS, SAMPLE_STATS, SAMPLES, outcome};
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use iotwatch_core::snapshot::SampleCounts;

pub struct Samples {
    ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
}

impl Samples {
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let ring = ebpf.take_map(SAMPLES).context("map SAMPLES missing")?.try_into().context(SAMPLES)?;
        let stats =
            ebpf.take_map(SAMPLE_STATS).context("map SAMPLE_STATS missing")?.try_into().context(SAMPLE_STATS)?;
        Ok(Self { ring, stats })
    }

    /// A duplicate of the ring's descriptor, to wait on with epoll (tokio's AsyncFd).
    pub fn ready_fd(&self) -> anyhow::Result<OwnedFd> {
        self.ring.as_fd().try_clone_to_owned().context("duplicating the ring buffer's descriptor")
    }

    /// Hands every record waiting in the ring to `f`, oldest first.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            f(&item);
            n += 1;
        }
        n
    }

    pub fn counts(&self) -> anyhow::Result<SampleCounts> {
        let mut out = [[0u64; outcome::OUTCOMES]; KINDS];
        for (k, row) in out.iter_mut().enumerate() {
            for (o, cell) in row.iter_mut().enumerate() {
                let values =
                    self.stats.get(&((k * outcome::OUTCOMES + o) as u32), 0).context("reading SAMPLE_STATS")?;
                *cell = values.iter().sum();
            }
        }
        Ok(out)
    }
}
