//! Everything that talks to the kernel: loading and attaching the programs, reading their maps
//! and sample ring, running them on frames with BPF_PROG_TEST_RUN, and the bridge's interfaces.

pub mod attach;
pub mod bench;
pub mod collect;
pub mod load;
pub mod map_ops;
pub mod netif;
pub mod offloads;
pub mod ring;
pub mod test_run;
pub mod workers;
