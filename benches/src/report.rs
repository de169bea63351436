//! What a load run measured, and its text and JSON renderings.
//!
//! Throughput is in records/s and MB/s with MB = 10^6 bytes (as `dd` prints it), over the value
//! bytes of the records (Kafka's perf tools count the same payload bytes). Latencies are recorded
//! in microseconds in an HDR histogram (3 significant digits) and reported in milliseconds.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Bytes in the MB of the MB/s figures.
pub const BYTES_PER_MB: f64 = 1_000_000.0;

/// The largest latency a histogram records, in microseconds (larger samples are clamped to it).
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits, 1 µs .. 1 h.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's preconditions (low >= 1,
    // high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds are valid")
}

/// Records `count` samples of `latency_us` (clamped to the histogram's range).
pub fn record_latency_us(histogram: &mut Histogram<u64>, latency_us: u64, count: u64) {
    let value = latency_us.clamp(1, LATENCY_US_MAX);
    // In range after the clamp, and the histogram auto-resizes off: cannot fail.
    histogram
        .record_n(value, count)
        .expect("a clamped value is inside the histogram's range");
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// How many samples the figures are drawn from.
    pub samples: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl LatencySummary {
    /// The percentiles of a histogram in microseconds (all zero when it is empty).
    pub fn from_histogram_us(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary {
                samples: 0,
                mean: 0.0,
                p50: 0.0,
                p95: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            samples: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }

    fn text(&self) -> String {
        if self.samples == 0 {
            return "no samples".to_string();
        }
        format!(
            "p50 {:.2}, p95 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2} (mean {:.2})",
            self.p50, self.p95, self.p99, self.p999, self.max, self.mean
        )
    }
}

/// The producing or the consuming side of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    /// Records acknowledged (produce) or received (consume).
    pub records: u64,
    /// Value bytes of those records.
    pub bytes: u64,
    /// Failed requests (their records are not counted above).
    pub errors: u64,
    /// Wall time of the phase, in seconds.
    pub elapsed_s: f64,
    /// `records / elapsed_s`.
    pub records_per_s: f64,
    /// `bytes / elapsed_s / 10^6`.
    pub mb_per_s: f64,
    /// Produce: per record, from its creation to its acknowledgement (with a target rate, the
    /// creation is the record's scheduled time, so waiting for the previous request counts).
    /// Consume: the duration of each fetch request, per request.
    pub latency_ms: LatencySummary,
}

impl PhaseReport {
    /// The figures of `records` records of `bytes` bytes over `elapsed`.
    pub fn new(
        records: u64,
        bytes: u64,
        errors: u64,
        elapsed: Duration,
        latency_us: &Histogram<u64>,
    ) -> PhaseReport {
        let elapsed_s = elapsed.as_secs_f64();
        let (records_per_s, mb_per_s) = if elapsed_s > 0.0 {
            (
                records as f64 / elapsed_s,
                bytes as f64 / elapsed_s / BYTES_PER_MB,
            )
        } else {
            (0.0, 0.0)
        };
        PhaseReport {
            records,
            bytes,
            errors,
            elapsed_s,
            records_per_s,
            mb_per_s,
            latency_ms: LatencySummary::from_histogram_us(latency_us),
        }
    }
}

/// The settings of the producing side of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProducerSettings {
    /// Value bytes per produced record.
    pub record_size_bytes: usize,
    /// Producer acks (-1 = all).
    pub acks: i16,
    /// Compression codec name.
    pub compression: String,
    /// Records per produced batch at most.
    pub batch_records: usize,
    /// Target records/s over all producers; `None` = unlimited.
    pub throughput_records_per_s: Option<f64>,
    /// With a target rate, how long a partial batch waits for more records.
    pub linger_ms: u64,
    /// Produce requests each producer keeps in flight on its connection.
    pub max_in_flight: usize,
}

/// Everything one run of the load tool measured, with the settings it ran with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// `produce`, `consume` or `e2e`.
    pub mode: String,
    /// The topic.
    pub topic: String,
    /// Partitions of the topic.
    pub partitions: i32,
    /// The producers' settings (produce and e2e; `None` for consume).
    #[serde(flatten)]
    pub producer_settings: Option<ProducerSettings>,
    /// Concurrent producer tasks (each with its own connection).
    pub producers: usize,
    /// Concurrent consumer tasks (each with its own connection).
    pub consumers: usize,
    /// The producing side (produce and e2e).
    pub produce: Option<PhaseReport>,
    /// The consuming side (consume and e2e).
    pub consume: Option<PhaseReport>,
    /// e2e only: from each record's creation timestamp (microseconds, carried in the first 8
    /// bytes of its value) to its arrival at the consumer.
    pub end_to_end_latency_ms: Option<LatencySummary>,
}

impl LoadReport {
    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        // Only strings, integers and finite floats: serialization cannot fail.
        serde_json::to_string(self).expect("a load report serializes to JSON")
    }

    /// The human-readable summary (several lines, each ending with a newline).
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{} on {} ({} partitions)",
            self.mode, self.topic, self.partitions
        );
        if let Some(p) = &self.producer_settings {
            let rate = match p.throughput_records_per_s {
                Some(rate) => format!("{rate:.0} records/s target, linger {} ms", p.linger_ms),
                None => "unlimited rate".to_string(),
            };
            out.push_str(&format!(
                ": {} B records, acks={}, compression={}, up to {} records/batch, {rate}, {} producers",
                p.record_size_bytes,
                if p.acks == -1 { "all".to_string() } else { p.acks.to_string() },
                p.compression,
                p.batch_records,
                self.producers,
            ));
            if p.max_in_flight > 1 {
                out.push_str(&format!(" ({} requests in flight each)", p.max_in_flight));
            }
            if self.consumers > 0 {
                out.push_str(&format!(", {} consumers", self.consumers));
            }
        } else {
            out.push_str(&format!(": {} consumers", self.consumers));
        }
        out.push('\n');
        let phases = [
            ("produce", &self.produce, "ack latency ms"),
            ("consume", &self.consume, "fetch latency ms"),
        ];
        for (name, phase, latency_name) in phases {
            if let Some(p) = phase {
                out.push_str(&format!(
                    "{name}: {} records in {:.2} s: {:.1} records/s, {:.2} MB/s, {} errors; {latency_name}: {}\n",
                    p.records,
                    p.elapsed_s,
                    p.records_per_s,
                    p.mb_per_s,
                    p.errors,
                    p.latency_ms.text()
                ));
            }
        }
        if let Some(latency) = &self.end_to_end_latency_ms {
            out.push_str(&format!("end-to-end latency ms: {}\n", latency.text()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram_in_ms() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            record_latency_us(&mut h, us * 10, 1);
        }
        let s = LatencySummary::from_histogram_us(&h);
        assert_eq!(s.samples, 1000);
        assert!((s.p50 - 5.0).abs() < 0.01, "p50 {}", s.p50);
        assert!((s.p99 - 9.9).abs() < 0.01, "p99 {}", s.p99);
        assert!((s.max - 10.0).abs() < 0.01, "max {}", s.max);
        assert!(s.p50 <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.max);
    }

    #[test]
    fn out_of_range_samples_are_clamped_not_lost() {
        let mut h = latency_histogram();
        record_latency_us(&mut h, 0, 2);
        record_latency_us(&mut h, u64::MAX, 1);
        assert_eq!(h.len(), 3);
        assert!(h.max() >= LATENCY_US_MAX - LATENCY_US_MAX / 1000);
    }

    #[test]
    fn empty_histogram_gives_zeros() {
        let s = LatencySummary::from_histogram_us(&latency_histogram());
        assert_eq!(s.samples, 0);
        assert_eq!(s.max, 0.0);
    }

    #[test]
    fn phase_rates_and_json_round_trip() {
        let mut h = latency_histogram();
        record_latency_us(&mut h, 2000, 10);
        let phase = PhaseReport::new(1000, 2_000_000, 1, Duration::from_secs(2), &h);
        assert_eq!(phase.records_per_s, 500.0);
        assert_eq!(phase.mb_per_s, 1.0);
        let report = LoadReport {
            mode: "produce".into(),
            topic: "t".into(),
            partitions: 1,
            producer_settings: Some(ProducerSettings {
                record_size_bytes: 2000,
                acks: -1,
                compression: "none".into(),
                batch_records: 10,
                throughput_records_per_s: None,
                linger_ms: 0,
                max_in_flight: 1,
            }),
            producers: 1,
            consumers: 0,
            produce: Some(phase),
            consume: None,
            end_to_end_latency_ms: None,
        };
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        assert_eq!(json["produce"]["records"], 1000);
        assert_eq!(json["acks"], -1, "producer settings are flattened");
        assert_eq!(json["produce"]["latency_ms"]["p50"], 2.0);
        assert!(json["consume"].is_null());
        let text = report.to_text();
        assert!(text.contains("500.0 records/s"), "{text}");
        assert!(text.contains("acks=all"), "{text}");
    }
}
