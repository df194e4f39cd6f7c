//! The kernel/user contract of iotwatch.
//!
//! Everything the eBPF program and the agent must agree on lives here: map names, key and value
//! layouts, the statistics the program keeps about itself, and the globals set at load time.
//! Types are `#[repr(C)]` with explicit padding so that they are plain old data on both sides.
#![cfg_attr(not(any(test, feature = "user")), no_std)]

/// `aya::Pod` for the contract's map keys and values, so userspace can read them from maps.
#[cfg(feature = "user")]
macro_rules! pod {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: every contract type is #[repr(C)] with integer fields and explicit padding
        // only (its size is asserted beside it), so any bit pattern is a valid value.
        unsafe impl aya::Pod for $t {}
    )*};
}
#[cfg(feature = "user")]
pub(crate) use pod;

pub mod classify;
pub mod maps;
pub mod sample;
pub mod stats;
pub mod wire;

pub use maps::*;
pub use stats::{ProgramStats, Stat};
