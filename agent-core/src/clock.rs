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

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC (civil-from-days, no time crate needed).
pub fn utc(ts: f64) -> String {
    let secs = ts.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
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
