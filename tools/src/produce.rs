//! `strata produce`: one record per stdin line.

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use strata_cluster::client::{Compression, Producer, ProducerConfig, Record};

use crate::{parse_key_value, ConnectArgs};

/// Records sent in one batch at most (lines already waiting on stdin are batched together).
const BATCH_RECORDS_MAX: usize = 500;
/// Bytes of keys and values in one batch at most (below the broker's 1 MiB message.max.bytes).
const BATCH_BYTES_MAX: usize = 512 * 1024;

/// `--acks` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Acks {
    /// Wait until the records are fsynced (-1).
    All,
    /// Wait for the leader's append (1).
    #[value(name = "1")]
    One,
    /// Do not wait for any answer (0).
    #[value(name = "0")]
    Zero,
}

/// `--compression` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Compression {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Flags of `strata produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
    /// Partition for every record (default: murmur2 of the key, round robin without key).
    #[arg(long)]
    partition: Option<i32>,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value = "all")]
    acks: Acks,
    /// Compression codec of the record batches.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    /// Disable the idempotent producer (it is on by default with --acks all).
    #[arg(long)]
    no_idempotence: bool,
    /// Split each line at the first SEP: the part before is the key, the rest the value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Header added to every record (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// Print partition/offset of every record to stderr.
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Turns one input line into a record.
fn line_to_record(
    line: &str,
    key_separator: Option<&str>,
    headers: &[(String, Option<Bytes>)],
) -> anyhow::Result<Record> {
    let (key, value) = match key_separator {
        Some(sep) => match line.split_once(sep) {
            Some((k, v)) => (Some(Bytes::copy_from_slice(k.as_bytes())), v),
            None => bail!("line {line:?} has no key separator {sep:?}"),
        },
        None => (None, line),
    };
    Ok(Record {
        key,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: headers.to_vec(),
        timestamp_ms: None,
    })
}

/// Spawns a thread reading stdin lines (without the line ending) into a channel.
fn spawn_stdin_reader() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4 * BATCH_RECORDS_MAX);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.map(|mut l| {
                if l.ends_with('\r') {
                    l.pop();
                }
                l
            });
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// Runs `strata produce`.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    if let Some(sep) = &args.key_separator {
        if sep.is_empty() {
            bail!("--key-separator must not be empty");
        }
    }
    let acks: i16 = match args.acks {
        Acks::All => -1,
        Acks::One => 1,
        Acks::Zero => 0,
    };
    let client = args.connect.connect().await?;
    let config = ProducerConfig {
        acks,
        idempotent: acks == -1 && !args.no_idempotence,
        compression: args.compression.into(),
        request_timeout_ms: args.connect.request_timeout_ms,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config)?;
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(Bytes::copy_from_slice(v.as_bytes()))))
        .collect();
    let mut lines = spawn_stdin_reader();
    let mut line_number: u64 = 0;
    while let Some(first) = lines.recv().await {
        // Take the lines already waiting, up to a batch.
        let mut batch = vec![first];
        let mut bytes = 0usize;
        while batch.len() < BATCH_RECORDS_MAX && bytes < BATCH_BYTES_MAX {
            match lines.try_recv() {
                Ok(line) => {
                    if let Ok(l) = &line {
                        bytes += l.len();
                    }
                    batch.push(line);
                }
                Err(_) => break,
            }
        }
        // Group by partition, keeping line order within each partition.
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for line in batch {
            line_number += 1;
            let line = line.context("cannot read stdin")?;
            let record = line_to_record(&line, args.key_separator.as_deref(), &headers)
                .with_context(|| format!("line {line_number}"))?;
            let partition = match args.partition {
                Some(p) => p,
                None => producer
                    .choose_partition(&args.topic, record.key.as_deref())
                    .await
                    .with_context(|| format!("cannot pick a partition of {}", args.topic))?,
            };
            by_partition.entry(partition).or_default().push(record);
        }
        for (partition, records) in by_partition {
            let count = records.len();
            let base = producer
                .send_batch(&args.topic, partition, records)
                .await
                .with_context(|| format!("cannot produce to {}-{partition}", args.topic))?;
            if args.verbose {
                for i in 0..count as i64 {
                    let offset = if base < 0 { base } else { base + i };
                    eprintln!("{partition}/{offset}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_separator_splits_at_the_first_occurrence() {
        let r = line_to_record("k:v:w", Some(":"), &[]).expect("record");
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v:w"[..]));
        let r = line_to_record("plain", None, &[]).expect("record");
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"plain"[..]));
        assert!(line_to_record("nosep", Some(":"), &[]).is_err());
    }
}
