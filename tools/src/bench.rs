//! `strata bench produce|consume|e2e`: the load tool (its engine is `strata_benches::load`).

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use strata_benches::{LoadConfig, Mode};

use crate::produce::{Acks, CompressionArg};

/// The modes of `strata bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce records as fast as possible (or at --throughput): records/s, MB/s, ack latency.
    Produce(BenchArgs),
    /// Read a topic from its start to the end offsets seen at start: records/s, MB/s.
    Consume(BenchArgs),
    /// Produce and consume at once: throughput and latency from record creation to consumption.
    E2e(BenchArgs),
}

/// Flags of `strata bench` (the names of Kafka's perf tools where they have one).
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Topic (produce and e2e create it with --partitions if missing).
    #[arg(long, default_value = "strata-bench")]
    topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Stop after this many records (produce, e2e: produced; consume: consumed).
    #[arg(long)]
    num_records: Option<u64>,
    /// Stop after this many seconds (produce, e2e: producing; consume: consuming).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Target records/s over all producers; -1 = unlimited.
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
    throughput: f64,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value = "1")]
    acks: Acks,
    /// Use the idempotent producer (only with --acks all).
    #[arg(long)]
    idempotence: bool,
    /// Compression codec of the record batches.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    /// Records per produce request (one batch).
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// With --throughput: how long a partial batch waits for more records (Kafka's linger.ms).
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Produce requests each producer keeps in flight on its connection (Kafka's
    /// max.in.flight.requests.per.connection). 1 waits for each answer and retries failures;
    /// above 1 pipelines (unlimited rate, acks 1 or all, no idempotence, no retries).
    #[arg(long, default_value_t = 1)]
    max_in_flight: usize,
    /// Concurrent consumers, each with its own connection (at most one per partition).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Bytes asked for by each fetch.
    #[arg(long, default_value_t = 1024 * 1024)]
    fetch_bytes: i32,
    /// Print the summary as one JSON object (on stdout).
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    connect: crate::ConnectArgs,
}

impl BenchArgs {
    /// The load tool's settings for `mode`.
    fn load_config(&self, mode: Mode) -> anyhow::Result<LoadConfig> {
        let throughput_records_per_s = if self.throughput == -1.0 {
            None
        } else if self.throughput.is_finite() && self.throughput > 0.0 {
            Some(self.throughput)
        } else {
            bail!("--throughput must be positive, or -1 for unlimited");
        };
        let duration = match self.duration_secs {
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 1e9 => {
                Some(Duration::from_secs_f64(secs))
            }
            Some(_) => bail!("--duration-secs must be a positive number of seconds"),
            None => None,
        };
        let acks: i16 = match self.acks {
            Acks::All => -1,
            Acks::One => 1,
            Acks::Zero => 0,
        };
        if self.idempotence && acks != -1 {
            bail!("--idempotence needs --acks all");
        }
        let config = LoadConfig {
            partitions: self.partitions,
            record_size_bytes: self.record_size,
            num_records: self.num_records,
            duration,
            throughput_records_per_s,
            acks,
            idempotent: self.idempotence,
            compression: self.compression.into(),
            batch_records: self.batch_size,
            linger: Duration::from_millis(self.linger_ms),
            producers: self.producers,
            max_in_flight: self.max_in_flight,
            consumers: self.consumers,
            fetch_bytes_max: self.fetch_bytes,
            request_timeout_ms: self.connect.request_timeout_ms,
            progress: !self.quiet,
            ..LoadConfig::new(mode, &self.connect.bootstrap_server, &self.topic)
        };
        config.validate()?;
        Ok(config)
    }
}

/// Runs `strata bench`: progress on stderr, the summary (text or JSON) on stdout.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    let (mode, args) = match command {
        BenchCommand::Produce(args) => (Mode::Produce, args),
        BenchCommand::Consume(args) => (Mode::Consume, args),
        BenchCommand::E2e(args) => (Mode::E2e, args),
    };
    let config = args.load_config(mode)?;
    let report = strata_benches::run(config).await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: BenchCommand,
    }

    fn config_of(args: &[&str]) -> anyhow::Result<LoadConfig> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        match cli.command {
            BenchCommand::Produce(a) => a.load_config(Mode::Produce),
            BenchCommand::Consume(a) => a.load_config(Mode::Consume),
            BenchCommand::E2e(a) => a.load_config(Mode::E2e),
        }
    }

    #[test]
    fn flags_map_to_the_load_config() {
        let config = config_of(&[
            "produce",
            "--topic",
            "t",
            "--partitions",
            "4",
            "--record-size",
            "1024",
            "--num-records",
            "10",
            "--throughput",
            "500",
            "--acks",
            "all",
            "--idempotence",
            "--compression",
            "lz4",
            "--batch-size",
            "50",
            "--producers",
            "3",
            "--linger-ms",
            "5",
        ])
        .expect("valid flags");
        assert_eq!(config.mode, Mode::Produce);
        assert_eq!(config.topic, "t");
        assert_eq!(config.partitions, 4);
        assert_eq!(config.record_size_bytes, 1024);
        assert_eq!(config.num_records, Some(10));
        assert_eq!(config.throughput_records_per_s, Some(500.0));
        assert_eq!(config.acks, -1);
        assert!(config.idempotent);
        assert_eq!(config.batch_records, 50);
        assert_eq!(config.producers, 3);
        assert_eq!(config.linger, Duration::from_millis(5));
        let unlimited = config_of(&["e2e", "--duration-secs", "1.5", "--throughput", "-1"])
            .expect("valid flags");
        assert_eq!(unlimited.throughput_records_per_s, None);
        assert_eq!(unlimited.duration, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn bad_flags_are_rejected() {
        for args in [
            &["produce"][..], // unbounded
            &["produce", "--num-records", "1", "--throughput", "0"],
            &[
                "produce",
                "--num-records",
                "1",
                "--acks",
                "1",
                "--idempotence",
            ],
            &["produce", "--duration-secs", "-2"],
            &["e2e", "--num-records", "1", "--record-size", "4"],
        ] {
            assert!(config_of(args).is_err(), "{args:?}");
        }
    }
}
