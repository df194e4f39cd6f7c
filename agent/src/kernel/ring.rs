//! The SAMPLES ring buffer, from userspace (what became of each sample is counted in STATS, read
//! by the collector).

use std::os::fd::{AsFd as _, OwnedFd};

use agent_common::sample::SAMPLES;
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};

pub struct Samples {
    ring: RingBuf<MapData>,
}

impl Samples {
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let ring = ebpf.take_map(SAMPLES).context("map SAMPLES missing")?.try_into().context(SAMPLES)?;
        Ok(Self { ring })
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
}
