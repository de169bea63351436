//! `strata group ...`: consumer-group administration (list, describe with lag, reset offsets).

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use strata_cluster::client::{Client, OffsetSpec};

use crate::ConnectArgs;

/// Group subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups: id, state, protocol type.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a group's members and assignments, and per partition the committed offset, the log
    /// end offset and the lag.
    Describe {
        /// Group id.
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Set a stopped group's committed offsets (the group must have no members).
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic to reset (repeatable); default: every topic the group has offsets for.
        #[arg(long = "topic")]
        topics: Vec<String>,
        #[command(flatten)]
        target: ResetTarget,
        /// Print the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Where `reset-offsets` moves the offsets (exactly one).
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// The log start offset of each partition.
    #[arg(long)]
    to_earliest: bool,
    /// The log end offset (high watermark) of each partition.
    #[arg(long)]
    to_latest: bool,
    /// The first offset at or after this time: `YYYY-MM-DDTHH:MM:SS[.mmm]Z` (UTC) or ms since
    /// the Unix epoch.
    #[arg(long, value_name = "TIME", value_parser = parse_datetime_ms)]
    to_datetime: Option<i64>,
    /// This offset on every partition (clamped to the partition's range).
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.mmm]Z` (UTC) or an integer (ms since the epoch).
pub fn parse_datetime_ms(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("expected YYYY-MM-DDTHH:MM:SS[.mmm]Z or epoch ms, got {s:?}");
    let rest = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = rest.split_once('T').ok_or_else(bad)?;
    let date: Vec<&str> = date.split('-').collect();
    let (time, millis) = match time.split_once('.') {
        Some((t, frac)) => {
            let digits: String = frac.chars().chain("000".chars()).take(3).collect();
            (t, digits.parse::<i64>().map_err(|_| bad())?)
        }
        None => (time, 0),
    };
    let time: Vec<&str> = time.split(':').collect();
    if date.len() != 3 || time.len() != 3 {
        return Err(bad());
    }
    let num = |v: &str| v.parse::<i64>().map_err(|_| bad());
    let (year, month, day) = (num(date[0])?, num(date[1])?, num(date[2])?);
    let (hour, minute, second) = (num(time[0])?, num(time[1])?, num(time[2])?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    Ok(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

/// Runs a group subcommand.
pub async fn run(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List { connect } => {
            let client = connect.connect().await?;
            let groups = client.list_groups().await.context("cannot list groups")?;
            println!("{:<40} {:<20} PROTOCOL-TYPE", "GROUP", "STATE");
            for g in groups {
                println!("{:<40} {:<20} {}", g.group_id, g.state, g.protocol_type);
            }
            Ok(())
        }
        GroupCommand::Describe { group, connect } => {
            let client = connect.connect().await?;
            describe(&client, &group).await
        }
        GroupCommand::ResetOffsets {
            group,
            topics,
            target,
            dry_run,
            connect,
        } => {
            let client = connect.connect().await?;
            reset_offsets(&client, &group, &topics, &target, dry_run).await
        }
    }
}

async fn describe(client: &Client, group: &str) -> anyhow::Result<()> {
    let description = client
        .describe_group(group)
        .await
        .with_context(|| format!("cannot describe group {group}"))?;
    let offsets = client
        .committed_offsets(group)
        .await
        .with_context(|| format!("cannot fetch the offsets of group {group}"))?;
    if description.state == "Dead" && offsets.is_empty() {
        anyhow::bail!("group {group} does not exist");
    }
    println!(
        "group {}: state {}, protocol type {:?}, protocol {:?}, {} member(s)",
        description.group_id,
        description.state,
        description.protocol_type,
        description.protocol,
        description.members.len()
    );
    // Who owns each partition, and every partition with an offset or an owner.
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for member in &description.members {
        let assigned: Vec<String> = member
            .assignment
            .iter()
            .map(|(topic, partitions)| format!("{topic}:{partitions:?}"))
            .collect();
        println!(
            "  member {} client {} host {}{}: {}",
            member.member_id,
            member.client_id,
            member.client_host,
            member
                .group_instance_id
                .as_ref()
                .map(|i| format!(" instance {i}"))
                .unwrap_or_default(),
            if assigned.is_empty() {
                "(no assignment)".to_string()
            } else {
                assigned.join(" ")
            }
        );
        for (topic, partitions) in &member.assignment {
            for p in partitions {
                owner.insert((topic.clone(), *p), member.member_id.clone());
            }
        }
    }
    let mut rows: BTreeMap<(String, i32), Option<i64>> =
        owner.keys().map(|k| (k.clone(), None)).collect();
    for committed in &offsets {
        rows.insert(
            (committed.topic.clone(), committed.partition),
            Some(committed.offset),
        );
    }
    println!(
        "{:<30} {:>9} {:>16} {:>16} {:>10}  MEMBER",
        "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
    );
    for ((topic, partition), committed) in rows {
        let end = client
            .list_offsets(&topic, partition, OffsetSpec::Latest)
            .await
            .ok();
        let lag = match (committed, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => "-".to_string(),
        };
        println!(
            "{:<30} {:>9} {:>16} {:>16} {:>10}  {}",
            topic,
            partition,
            committed.map_or("-".to_string(), |c| c.to_string()),
            end.map_or("-".to_string(), |e| e.to_string()),
            lag,
            owner
                .get(&(topic.clone(), partition))
                .map_or("-", String::as_str)
        );
    }
    Ok(())
}

async fn reset_offsets(
    client: &Client,
    group: &str,
    topics: &[String],
    target: &ResetTarget,
    dry_run: bool,
) -> anyhow::Result<()> {
    let description = client
        .describe_group(group)
        .await
        .with_context(|| format!("cannot describe group {group}"))?;
    if !description.members.is_empty() {
        anyhow::bail!(
            "group {group} has {} active member(s) (state {}): stop its consumers first",
            description.members.len(),
            description.state
        );
    }
    let partitions: Vec<(String, i32)> = if topics.is_empty() {
        let offsets = client
            .committed_offsets(group)
            .await
            .with_context(|| format!("cannot fetch the offsets of group {group}"))?;
        if offsets.is_empty() {
            anyhow::bail!("group {group} has no committed offsets: name the topics with --topic");
        }
        offsets
            .into_iter()
            .map(|o| (o.topic, o.partition))
            .collect()
    } else {
        let mut partitions = Vec::new();
        for topic in topics {
            let count = client
                .partition_count(topic, false)
                .await
                .with_context(|| format!("cannot find topic {topic}"))?;
            partitions.extend((0..count).map(|p| (topic.clone(), p)));
        }
        partitions
    };
    let mut plan = Vec::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        let earliest = client
            .list_offsets(&topic, partition, OffsetSpec::Earliest)
            .await
            .with_context(|| format!("cannot list offsets of {topic}-{partition}"))?;
        let latest = client
            .list_offsets(&topic, partition, OffsetSpec::Latest)
            .await
            .with_context(|| format!("cannot list offsets of {topic}-{partition}"))?;
        let offset = if target.to_earliest {
            earliest
        } else if target.to_latest {
            latest
        } else if let Some(ms) = target.to_datetime {
            let found = client
                .list_offsets(&topic, partition, OffsetSpec::Timestamp(ms))
                .await
                .with_context(|| format!("cannot list offsets of {topic}-{partition}"))?;
            // No record at or after the time: the end, as Kafka's tool does.
            if found < 0 {
                latest
            } else {
                found
            }
        } else if let Some(n) = target.to_offset {
            n.clamp(earliest, latest)
        } else {
            anyhow::bail!("choose one of --to-earliest, --to-latest, --to-datetime, --to-offset");
        };
        plan.push((topic, partition, offset));
    }
    println!("{:<30} {:>9} {:>16}", "TOPIC", "PARTITION", "NEW-OFFSET");
    for (topic, partition, offset) in &plan {
        println!("{topic:<30} {partition:>9} {offset:>16}");
    }
    if dry_run {
        println!("(dry run: nothing committed)");
        return Ok(());
    }
    client
        .commit_group_offsets(group, &plan)
        .await
        .with_context(|| format!("cannot commit the offsets of group {group}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_as_utc_milliseconds() {
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_datetime_ms("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_datetime_ms("2023-11-14T22:13:20Z"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_datetime_ms("2023-11-14T22:13:20.5Z"),
            Ok(1_700_000_000_500)
        );
        assert_eq!(
            parse_datetime_ms("2000-03-01T00:00:00Z"),
            Ok(951_868_800_000)
        );
        assert!(parse_datetime_ms("2023-13-01T00:00:00Z").is_err());
        assert!(parse_datetime_ms("2023-11-14 22:13:20").is_err());
        assert!(parse_datetime_ms("yesterday").is_err());
    }
}
