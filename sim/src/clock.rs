//! `SimClock`: a per-node [`Clock`] with seeded skew, drift, jumps and strobing, on top of
//! madsim's one global simulated time.
//!
//! madsim has a single clock for every node. Real nodes disagree, and their wall clocks jump
//! (NTP steps, operators) and oscillate (a bad time source flapping between two servers). A
//! `SimClock` models one node's view:
//!
//! - `monotonic()` = simulated time since the clock was created, scaled by the node's drift
//!   (`1 + drift_ppm / 10^6`). It never goes back, whatever happens to the wall clock.
//! - `now_ms()` = simulated wall time + `skew_ms` + drift + the sum of all jumps so far + the
//!   strobe offset: while strobing is on, the wall clock alternates between `+amplitude_ms` and
//!   `-amplitude_ms` every `period_ms` of simulated time, so it goes back and forth.
//!
//! Skew and drift are drawn from the seed when the node is created; jumps and strobing are
//! applied by the nemesis. Clones share the same state, so the nemesis holds a clone of the
//! clock the broker reads.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_storage::Clock;

use crate::rng::SimRng;

/// Wall-clock oscillation: the offset flips sign every `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strobe {
    /// Size of the offset in each half period.
    pub amplitude_ms: i64,
    /// Length of each half period in simulated milliseconds (> 0).
    pub period_ms: u64,
}

#[derive(Debug)]
struct ClockState {
    skew_ms: i64,
    drift_ppm: i64,
    jumps_ms: i64,
    strobe: Option<Strobe>,
    /// The last monotonic value handed out, so that it never goes back.
    monotonic_last: Duration,
}

/// A node's clock (see the [module docs](self)). Clones share the same state.
#[derive(Debug, Clone)]
pub struct SimClock {
    origin: Instant,
    state: Arc<Mutex<ClockState>>,
}

impl SimClock {
    /// A clock with the given skew and drift, created now (in simulated time).
    pub fn new(skew_ms: i64, drift_ppm: i64) -> SimClock {
        assert!(drift_ppm > -1_000_000, "a clock must move forward");
        SimClock {
            origin: Instant::now(),
            state: Arc::new(Mutex::new(ClockState {
                skew_ms,
                drift_ppm,
                jumps_ms: 0,
                strobe: None,
                monotonic_last: Duration::ZERO,
            })),
        }
    }

    /// A clock with seeded skew (up to `skew_ms_max` either way) and drift (up to 200 ppm either
    /// way, what cheap oscillators do).
    pub fn seeded(rng: &mut SimRng, skew_ms_max: i64) -> SimClock {
        let skew_ms = if skew_ms_max > 0 {
            rng.range_i64(-skew_ms_max..skew_ms_max + 1)
        } else {
            0
        };
        SimClock::new(skew_ms, rng.range_i64(-200..201))
    }

    fn lock(&self) -> MutexGuard<'_, ClockState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Steps the wall clock by `by_ms` (either way); the monotonic clock is unaffected.
    pub fn jump(&self, by_ms: i64) {
        let mut state = self.lock();
        state.jumps_ms = state.jumps_ms.saturating_add(by_ms);
    }

    /// Starts (`Some`) or stops (`None`) strobing.
    pub fn set_strobe(&self, strobe: Option<Strobe>) {
        if let Some(s) = strobe {
            assert!(s.period_ms > 0, "a strobe needs a positive period");
        }
        self.lock().strobe = strobe;
    }

    /// The wall clock's current offset from simulated wall time, in ms.
    pub fn offset_ms(&self) -> i64 {
        let elapsed = self.origin.elapsed();
        let state = self.lock();
        offset_ms(&state, elapsed)
    }
}

fn offset_ms(state: &ClockState, elapsed: Duration) -> i64 {
    let elapsed_ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
    let drift = elapsed_ms.saturating_mul(state.drift_ppm) / 1_000_000;
    let strobe = match state.strobe {
        Some(s) => {
            let half_periods = elapsed.as_millis() / u128::from(s.period_ms);
            if half_periods.is_multiple_of(2) {
                s.amplitude_ms
            } else {
                -s.amplitude_ms
            }
        }
        None => 0,
    };
    state
        .skew_ms
        .saturating_add(drift)
        .saturating_add(state.jumps_ms)
        .saturating_add(strobe)
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        let real_ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        real_ms.saturating_add(self.offset_ms())
    }

    fn monotonic(&self) -> Duration {
        let elapsed = self.origin.elapsed();
        let mut state = self.lock();
        let nanos = elapsed.as_nanos() as i128;
        let scaled = nanos + nanos * i128::from(state.drift_ppm) / 1_000_000;
        let scaled = Duration::from_nanos(u64::try_from(scaled.max(0)).unwrap_or(u64::MAX));
        let value = scaled.max(state.monotonic_last);
        state.monotonic_last = value;
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(skew_ms: i64, drift_ppm: i64, jumps_ms: i64, strobe: Option<Strobe>) -> ClockState {
        ClockState {
            skew_ms,
            drift_ppm,
            jumps_ms,
            strobe,
            monotonic_last: Duration::ZERO,
        }
    }

    #[test]
    fn offset_adds_skew_drift_jumps_and_strobe() {
        let s = state(100, 0, 0, None);
        assert_eq!(offset_ms(&s, Duration::from_secs(5)), 100);
        // 100 ppm over 1000 s is 100 ms.
        let s = state(0, 100, 0, None);
        assert_eq!(offset_ms(&s, Duration::from_secs(1000)), 100);
        let s = state(0, -100, 0, None);
        assert_eq!(offset_ms(&s, Duration::from_secs(1000)), -100);
        let s = state(10, 0, -5_000, None);
        assert_eq!(offset_ms(&s, Duration::ZERO), -4_990);
        let strobe = Some(Strobe {
            amplitude_ms: 300,
            period_ms: 1_000,
        });
        let s = state(0, 0, 0, strobe);
        assert_eq!(offset_ms(&s, Duration::from_millis(500)), 300);
        assert_eq!(offset_ms(&s, Duration::from_millis(1_500)), -300);
        assert_eq!(offset_ms(&s, Duration::from_millis(2_500)), 300);
    }
}
