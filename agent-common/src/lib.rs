//! The kernel/user contract of iotwatch.
//!
//! Everything the eBPF program and the agent must agree on lives here: map names, key and value
//! layouts, the statistics the program keeps about itself, and the globals set at load time.
//! Types are `#[repr(C)]` with explicit padding so that they are plain old data on both sides.
#![cfg_attr(not(any(test, feature = "user")), no_std)]

pub mod classify;
pub mod maps;
pub mod sample;
pub mod stats;
pub mod wire;

pub use maps::*;
pub use stats::Stat;
