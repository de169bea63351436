//! The harness's own seeded randomness: splitmix64 streams derived from the madsim seed.
//!
//! madsim's global RNG also drives scheduling and the network; the harness draws its fault
//! decisions from separate streams ([`derive_seed`](crate::trace::derive_seed)) so that a fault
//! schedule depends only on the seed and the scenario, not on how many packets were sent before.

use std::ops::Range;

use strata_storage::disk::SplitMix64;

/// A seeded generator with the helpers the harness needs.
#[derive(Debug, Clone)]
pub struct SimRng(SplitMix64);

impl SimRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(SplitMix64::new(seed))
    }

    /// The next raw 64-bit draw.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `range` (which must not be empty).
    pub fn range(&mut self, range: Range<u64>) -> u64 {
        assert!(range.start < range.end, "empty range {range:?}");
        range.start + self.next_u64() % (range.end - range.start)
    }

    /// A signed number in `range` (which must not be empty).
    pub fn range_i64(&mut self, range: Range<i64>) -> i64 {
        assert!(range.start < range.end, "empty range {range:?}");
        let width = range.end.abs_diff(range.start);
        range.start.wrapping_add((self.next_u64() % width) as i64)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// An index into a slice of `len` elements (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        self.range(0..len as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_in_bounds_and_repeat_per_seed() {
        let mut a = SimRng::new(3);
        let mut b = SimRng::new(3);
        for _ in 0..1000 {
            let x = a.range(5..9);
            assert!((5..9).contains(&x));
            assert_eq!(x, b.range(5..9));
            let y = a.range_i64(-3..2);
            assert!((-3..2).contains(&y));
            b.range_i64(-3..2);
            let u = a.unit();
            assert!((0.0..1.0).contains(&u));
            b.unit();
        }
        assert!(!a.chance(0.0));
        assert!(a.chance(1.0));
    }
}
