//! The program's clock and the epoch. The kernel program stamps samples and conversations with
//! its clock: `bpf_ktime_get_ns` (CLOCK_MONOTONIC) live, the capture's own times in replay.

/// How the program's timestamps map to the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Replay: timestamps are capture times, already ns since the epoch.
    Epoch,
    /// Live: monotonic ns, mapped through the wall clock's offsets as the pipeline last read
    /// them ([`Clock::follow`]).
    Live(Offsets),
}

/// The live wall clock against the program's: realtime - boottime moves only when the wall
/// clock is stepped (NTP, `date -s`); boottime - monotonic grows while the machine sleeps
/// (bpf_ktime_get_ns stops then), which moves no time already stamped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub wall_boot_ns: i64,
    pub boot_mono_ns: i64,
}

impl Offsets {
    pub fn read() -> Self {
        let (wall, boot, mono) = (realtime_ns(), clock_ns(libc::CLOCK_BOOTTIME), monotonic_ns());
        Self { wall_boot_ns: wall as i64 - boot as i64, boot_mono_ns: boot as i64 - mono as i64 }
    }
}

/// Smaller steps are not jumps: NTP slews errors below 128 ms, and rewriting every stored time
/// for less than this is not worth it (times stay within it of the wall clock).
pub const JUMP_S: f64 = 1.0;

/// The wall clock's jumps seen so far (live).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Jumps {
    pub count: u64,
    /// The latest jump's size in seconds (negative: backwards).
    pub last_s: f64,
}

impl Clock {
    /// The live clock with the wall clock's offsets now.
    pub fn live() -> Self {
        Clock::Live(Offsets::read())
    }

    pub fn seconds(self, program_ns: u64) -> f64 {
        let ns = match self {
            Clock::Epoch => i128::from(program_ns),
            Clock::Live(o) => i128::from(program_ns) + i128::from(o.wall_boot_ns) + i128::from(o.boot_mono_ns),
        };
        ns as f64 / 1e9
    }

    /// Takes the wall clock's offsets read `now`: the stamping follows sleep at once, and a
    /// step larger than [`JUMP_S`]; smaller steps add up until they make one. Returns the
    /// jump in seconds, by which every time stamped before it must move to stay true.
    pub fn follow(&mut self, now: Offsets) -> Option<f64> {
        let Clock::Live(o) = self else { return None };
        o.boot_mono_ns = now.boot_mono_ns;
        let step = (now.wall_boot_ns - o.wall_boot_ns) as f64 / 1e9;
        if step.abs() <= JUMP_S {
            return None;
        }
        o.wall_boot_ns = now.wall_boot_ns;
        Some(step)
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
        let now = Clock::live().seconds(monotonic_ns());
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64();
        assert!((now - wall).abs() < 5.0, "live clock {now} against wall {wall}");
    }

    #[test]
    fn a_step_is_a_jump_sleep_and_small_steps_are_not() {
        let base = Offsets { wall_boot_ns: 100_000_000_000, boot_mono_ns: 0 };
        let mut clock = Clock::Live(base);
        let at = |c: Clock| c.seconds(5_000_000_000);
        // Asleep for an hour: a time stamped now is an hour later, nothing stamped moves.
        assert_eq!(clock.follow(Offsets { boot_mono_ns: 3_600_000_000_000, ..base }), None);
        assert_eq!(at(clock), 100.0 + 5.0 + 3600.0);
        // Half a second, twice: the second makes a jump of one.
        let half = Offsets { wall_boot_ns: base.wall_boot_ns + 500_000_000, ..base };
        assert_eq!(clock.follow(half), None);
        assert_eq!(at(clock), 105.0, "no sleep any more, the half second not yet taken");
        assert_eq!(clock.follow(Offsets { wall_boot_ns: half.wall_boot_ns + 700_000_000, ..base }), Some(1.2));
        assert_eq!(at(clock), 106.2);
        // NTP steps the clock two days back.
        let back = Offsets { wall_boot_ns: base.wall_boot_ns - 172_800_000_000_000, ..base };
        assert_eq!(clock.follow(back), Some(-172_801.2));
        assert_eq!(Clock::Epoch.follow(back), None, "replay's clock is the capture's");
    }
}
