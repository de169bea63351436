//! Shared by the criterion benches (`mod common;` in each).

use std::time::Duration;

use criterion::Criterion;

/// Short runs: the machine is shared; the figures are for comparison, not publication.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}
