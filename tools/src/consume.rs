//! `strata consume`: print records, one value per line.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use strata_cluster::client::{Client, ClientError, ConsumedRecord, OffsetSpec};

use crate::ConnectArgs;

/// Bytes asked for in one fetch.
const FETCH_BYTES_MAX: i32 = 1024 * 1024;
/// Longest a fetch waits on the broker for new data.
const FETCH_WAIT_MS_MAX: i32 = 500;

/// Flags of `strata consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Read only this partition (default: all partitions).
    #[arg(long)]
    partition: Option<i32>,
    /// Start at the log start instead of the end.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long)]
    offset: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Stop when no record arrived for this long (default: wait forever).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print the key before the value (tab-separated; `-` for a null key).
    #[arg(long)]
    print_key: bool,
    /// Print the headers before the value (`k=v,k2=v2`, tab-separated).
    #[arg(long)]
    print_headers: bool,
    /// Print `partition/offset` first (tab-separated).
    #[arg(long)]
    print_offset: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Output options of one record line.
#[derive(Debug, Clone, Copy)]
struct Format {
    key: bool,
    headers: bool,
    offset: bool,
}

fn write_bytes_or_dash(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => out.extend_from_slice(b),
        None => out.push(b'-'),
    }
}

/// Formats one record as a line (with its newline).
fn format_record(partition: i32, record: &ConsumedRecord, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    if format.offset {
        out.extend_from_slice(format!("{partition}/{}\t", record.offset).as_bytes());
    }
    if format.headers {
        for (i, (k, v)) in record.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            write_bytes_or_dash(&mut out, v.as_deref());
        }
        out.push(b'\t');
    }
    if format.key {
        write_bytes_or_dash(&mut out, record.key.as_deref());
        out.push(b'\t');
    }
    write_bytes_or_dash(&mut out, record.value.as_deref());
    out.push(b'\n');
    out
}

/// Where one partition's reading is.
struct Cursor {
    partition: i32,
    offset: i64,
}

async fn start_offset(
    client: &Client,
    topic: &str,
    partition: i32,
    args: &ConsumeArgs,
) -> anyhow::Result<i64> {
    if let Some(offset) = args.offset {
        if offset < 0 {
            bail!("--offset must be >= 0");
        }
        return Ok(offset);
    }
    let spec = if args.from_beginning {
        OffsetSpec::Earliest
    } else {
        OffsetSpec::Latest
    };
    client
        .list_offsets(topic, partition, spec)
        .await
        .with_context(|| format!("cannot list offsets of {topic}-{partition}"))
}

/// Runs `strata consume`.
pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    let topic = args.topic.clone();
    let partitions: Vec<i32> = match args.partition {
        Some(p) => vec![p],
        None => {
            let metadata = client
                .topic_metadata(&topic, false)
                .await
                .with_context(|| format!("cannot read metadata of {topic}"))?;
            metadata.partitions.iter().map(|p| p.partition).collect()
        }
    };
    let mut cursors = Vec::new();
    for &partition in &partitions {
        cursors.push(Cursor {
            partition,
            offset: start_offset(&client, &topic, partition, &args).await?,
        });
    }
    let format = Format {
        key: args.print_key,
        headers: args.print_headers,
        offset: args.print_offset,
    };
    let fetch_wait_ms = if cursors.len() > 1 {
        FETCH_WAIT_MS_MAX / 5
    } else {
        FETCH_WAIT_MS_MAX
    };
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let mut printed: u64 = 0;
    let mut last_record_at = Instant::now();
    let stdout = std::io::stdout();
    loop {
        if args.count.is_some_and(|count| printed >= count) {
            return Ok(());
        }
        if idle_timeout.is_some_and(|t| last_record_at.elapsed() >= t) {
            return Ok(());
        }
        let wait_ms = match idle_timeout {
            Some(t) => {
                let left = t.saturating_sub(last_record_at.elapsed()).as_millis();
                fetch_wait_ms.min(i32::try_from(left).unwrap_or(i32::MAX))
            }
            None => fetch_wait_ms,
        };
        for cursor in &mut cursors {
            let result = match client
                .fetch(
                    &topic,
                    cursor.partition,
                    cursor.offset,
                    wait_ms,
                    FETCH_BYTES_MAX,
                )
                .await
            {
                Ok(result) => result,
                Err(ClientError::OffsetOutOfRange { .. }) => {
                    let start = client
                        .list_offsets(&topic, cursor.partition, OffsetSpec::Earliest)
                        .await?;
                    let end = client
                        .list_offsets(&topic, cursor.partition, OffsetSpec::Latest)
                        .await?;
                    let reset = if cursor.offset < start { start } else { end };
                    eprintln!(
                        "strata: offset {} of {topic}-{} is out of range [{start}, {end}]; continuing at {reset}",
                        cursor.offset, cursor.partition
                    );
                    cursor.offset = reset;
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot fetch {topic}-{} at {}",
                            cursor.partition, cursor.offset
                        )
                    })
                }
            };
            let mut out = Vec::new();
            if result.records.is_empty() {
                // Batches compaction left without records still move the position.
                cursor.offset = cursor.offset.max(result.next_offset);
            }
            for record in &result.records {
                if args.count.is_some_and(|count| printed >= count) {
                    break;
                }
                out.extend_from_slice(&format_record(cursor.partition, record, format));
                cursor.offset = record.offset + 1;
                printed += 1;
                last_record_at = Instant::now();
            }
            if !out.is_empty() {
                let mut lock = stdout.lock();
                if let Err(e) = lock.write_all(&out).and_then(|()| lock.flush()) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e).context("cannot write to stdout");
                }
            }
            if args.count.is_some_and(|count| printed >= count) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn formats_nulls_keys_headers_offsets() {
        let record = ConsumedRecord {
            offset: 7,
            timestamp_ms: 0,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![
                ("a".to_string(), Some(Bytes::from_static(b"1"))),
                ("b".to_string(), None),
            ],
        };
        let all = Format {
            key: true,
            headers: true,
            offset: true,
        };
        assert_eq!(format_record(2, &record, all), b"2/7\ta=1,b=-\t-\tv\n");
        let plain = Format {
            key: false,
            headers: false,
            offset: false,
        };
        let tombstone = ConsumedRecord {
            value: None,
            ..record
        };
        assert_eq!(format_record(0, &tombstone, plain), b"-\n");
    }
}
