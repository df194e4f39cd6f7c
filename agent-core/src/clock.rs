//! The program's clock and the epoch. The kernel program stamps samples and conversations with
//! its clock: `bpf_ktime_get_ns` (CLOCK_MONOTONIC) live, the capture's own times in replay.

/// How the program's timestamps map to the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Replay: timestamps are capture times, already ns since the epoch.
    Epoch,
    /// Live: monotonic ns, mapped through the wall clock's offset at the time of the mapping.
    Live,
}

impl Clock {
    pub fn seconds(self, program_ns: u64) -> f64 {
        let ns = match self {
            Clock::Epoch => i128::from(program_ns),
            Clock::Live => i128::from(program_ns) + i128::from(realtime_ns()) - i128::from(monotonic_ns()),
        };
        ns as f64 / 1e9
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The live program's clock now: bpf_ktime_get_ns is CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_time_maps_to_the_epoch() {
        assert_eq!(Clock::Epoch.seconds(1_620_000_000_500_000_000), 1_620_000_000.5);
        let now = Clock::Live.seconds(monotonic_ns());
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64();
        assert!((now - wall).abs() < 5.0, "live clock {now} against wall {wall}");
    }
}
