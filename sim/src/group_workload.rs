//! The consumer-group workload: committer processes that commit group offsets and read them
//! back, so the checker's `group-offset-regression` check runs under the nemesis.
//!
//! Each committer process (node `committer-<i>`) owns one consumer group at a time,
//! `group-<i>.<n>` (`n` from 0), and alternates two operations:
//!
//! - **`commit`**: a simple commit (generation -1, no members, as `Client::commit_group_offsets`
//!   sends it) of a random non-empty subset of the topic's partitions. Every commit of a
//!   partition carries a higher offset than any commit of that partition attempted before by
//!   this worker (offsets advance whatever the outcome), so the group's committed offsets only
//!   ever move forward, as a Kafka consumer's do. The offsets are positions a consumer could
//!   commit; the broker does not check them against the log (neither does Kafka).
//! - **`fetch-offsets`**: every committed offset of the group (OffsetFetch with all topics).
//!
//! Outcomes: a commit the coordinator acknowledged is `ok`; an error that says the commit
//! certainly did not happen (neither ambiguous nor retriable) is `fail`; anything else
//! (timeouts, lost connections, coordinator not available) is `info`, after which the worker
//! continues under a fresh process id **and with a new group** (`n + 1`). A fetch has no effect,
//! so any failed fetch is `fail`.
//!
//! Why a new group: a commit whose reply never came may still be in flight (a clogged link
//! delivers it seconds later, after the client gave up) and land after a later, higher commit.
//! Nothing fences a simple commit (generation -1), in Kafka either, so that late write would
//! legitimately move the committed offset back; the partition scenario produced exactly that
//! (a `commit` timed out, the next commits were acknowledged, then fetches returned the timed-out
//! commit's lower offsets). The worker therefore never commits to a group again once it has an
//! ambiguous commit. It does keep fetching the groups it left (half of its fetches go to one
//! of them, drawn at random among those with an acknowledged commit): a group's last commit
//! may still land, but it carries higher offsets than every commit before it, so it can only
//! move the offsets forward; a fetch below an acknowledged commit there is a lost commit. This
//! is what catches an acknowledged commit lost in a crash: the crash makes the commits after it
//! ambiguous, so the group is left behind. The final read ([`final_fetch`]) also fetches every
//! group once everything is healed.
//!
//! An acknowledged commit is durable (the coordinator appended it to `__consumer_offsets` and
//! waited for the fsync): no crash, torn tail or partition may make a later fetch return a
//! lower offset. The checker flags it as `group-offset-regression`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jepsen_like::history::{GroupOffsets, Key, OpKind, OpValue};
use strata_cluster::client::{Client, ClientConfig, ClientError, CommittedOffset};

use crate::rng::SimRng;
use crate::trace::derive_seed;
use crate::workload::{connect, Recorder, WorkloadConfig};

/// The consumer group committer `index` owns after `ambiguous` ambiguous (`info`) commits.
pub fn group_name(index: usize, ambiguous: u64) -> String {
    format!("group-{index}.{ambiguous}")
}

/// Largest step (exclusive) by which one commit advances a partition's offset.
const COMMIT_STEP_MAX: u64 = 20;

/// Probability that an operation is a commit (otherwise a fetch of the committed offsets).
const COMMIT_CHANCE: f64 = 0.6;

fn key(config: &WorkloadConfig, partition: i32) -> Key {
    Key::new(config.topic.clone(), partition)
}

fn group_offsets(group: &str, offsets: BTreeMap<Key, u64>) -> OpValue {
    OpValue::Commit(GroupOffsets {
        group: group.to_string(),
        offsets,
    })
}

fn fetched_offsets(group: &str, offsets: BTreeMap<Key, u64>) -> OpValue {
    OpValue::FetchOffsets(GroupOffsets {
        group: group.to_string(),
        offsets,
    })
}

/// The workload topic's offsets among `committed`.
fn offsets_of(config: &WorkloadConfig, committed: Vec<CommittedOffset>) -> BTreeMap<Key, u64> {
    let mut offsets = BTreeMap::new();
    for c in committed.into_iter().filter(|c| c.topic == config.topic) {
        // `committed_offsets` leaves out partitions without a commit (-1).
        if let Ok(offset) = u64::try_from(c.offset) {
            offsets.insert(key(config, c.partition), offset);
        }
    }
    offsets
}

/// Whether a failed commit certainly did not commit anything.
fn commit_definitely_failed(error: &ClientError) -> bool {
    !error.is_ambiguous() && !error.is_retriable()
}

/// One committer process: commits and fetches the offsets of its group until `stop_at`.
pub async fn run_committer(
    index: usize,
    bootstrap: String,
    config: WorkloadConfig,
    recorder: Recorder,
    seed: u64,
    stop_at: Instant,
) {
    let mut rng = SimRng::new(derive_seed(seed, &format!("committer-{index}")));
    let mut process = recorder.fresh_process();
    let name = format!("committer-{index}");
    let mut ambiguous: u64 = 0;
    let mut group = group_name(index, ambiguous);
    // Groups left behind (after an ambiguous commit) that have an acknowledged commit.
    let mut left_acked: Vec<String> = Vec::new();
    let mut group_acked = false;
    let client_config = ClientConfig {
        request_timeout_ms: config.request_timeout_ms,
        client_id: name,
    };
    let Ok(client) = connect(&bootstrap, client_config, stop_at).await else {
        return;
    };
    // The offset of the last commit attempted per partition (acknowledged or not).
    let mut attempted: BTreeMap<i32, u64> = BTreeMap::new();
    let op_timeout = Duration::from_millis(config.op_timeout_ms);
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(rng.range(config.think_ms.clone()))).await;
        if rng.chance(COMMIT_CHANCE) {
            let mut partitions: Vec<i32> =
                (0..config.partitions).filter(|_| rng.chance(0.5)).collect();
            if partitions.is_empty() {
                partitions.push(rng.range(0..config.partitions as u64) as i32);
            }
            let mut offsets = BTreeMap::new();
            let mut request = Vec::with_capacity(partitions.len());
            for p in partitions {
                let offset =
                    attempted.get(&p).copied().unwrap_or(0) + rng.range(1..COMMIT_STEP_MAX);
                attempted.insert(p, offset);
                offsets.insert(key(&config, p), offset);
                let offset_i64 = i64::try_from(offset).expect("offsets stay far below i64::MAX");
                request.push((config.topic.clone(), p, offset_i64));
            }
            recorder.invoke(process, group_offsets(&group, offsets.clone()));
            let outcome =
                tokio::time::timeout(op_timeout, client.commit_group_offsets(&group, &request))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ClientError::Cancelled("commit timed out".to_string()))
                    });
            match outcome {
                Ok(()) => {
                    group_acked = true;
                    recorder.complete(process, OpKind::Ok, group_offsets(&group, offsets), None)
                }
                Err(error) if commit_definitely_failed(&error) => recorder.complete(
                    process,
                    OpKind::Fail,
                    group_offsets(&group, offsets),
                    Some(error.to_string()),
                ),
                Err(error) => {
                    recorder.complete(
                        process,
                        OpKind::Info,
                        group_offsets(&group, offsets),
                        Some(error.to_string()),
                    );
                    process = recorder.fresh_process();
                    if group_acked {
                        left_acked.push(group.clone());
                    }
                    ambiguous += 1;
                    group = group_name(index, ambiguous);
                    group_acked = false;
                }
            }
        } else {
            // The current group, or one left behind.
            let fetched = if !left_acked.is_empty() && rng.chance(0.5) {
                left_acked[rng.index(left_acked.len())].clone()
            } else {
                group.clone()
            };
            let group = fetched;
            recorder.invoke(process, fetched_offsets(&group, BTreeMap::new()));
            let outcome = tokio::time::timeout(op_timeout, client.committed_offsets(&group))
                .await
                .unwrap_or_else(|_| Err(ClientError::Cancelled("fetch timed out".to_string())));
            match outcome {
                Ok(committed) => {
                    let offsets = offsets_of(&config, committed);
                    recorder.complete(process, OpKind::Ok, fetched_offsets(&group, offsets), None);
                }
                Err(error) => recorder.complete(
                    process,
                    OpKind::Fail,
                    fetched_offsets(&group, BTreeMap::new()),
                    Some(error.to_string()),
                ),
            }
        }
    }
}

/// The groups' part of the final read: with everything healed, lists the groups and fetches
/// the committed offsets of each one whose name a committer uses, as `fetch-offsets` operations
/// of `process` (retrying every 500 ms until `deadline`). Returns whether every group was read.
pub async fn final_fetch(
    client: &Client,
    config: &WorkloadConfig,
    recorder: &Recorder,
    process: u64,
    deadline: Instant,
) -> bool {
    let groups = loop {
        match client.list_groups().await {
            Ok(groups) => break groups,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(_) => return false,
        }
    };
    let op_timeout = Duration::from_millis(config.op_timeout_ms);
    for listing in groups.iter().filter(|g| g.group_id.starts_with("group-")) {
        let group = &listing.group_id;
        loop {
            if Instant::now() >= deadline {
                return false;
            }
            recorder.invoke(process, fetched_offsets(group, BTreeMap::new()));
            let outcome = tokio::time::timeout(op_timeout, client.committed_offsets(group))
                .await
                .unwrap_or_else(|_| Err(ClientError::Cancelled("fetch timed out".to_string())));
            match outcome {
                Ok(committed) => {
                    let offsets = offsets_of(config, committed);
                    recorder.complete(process, OpKind::Ok, fetched_offsets(group, offsets), None);
                    break;
                }
                Err(error) => {
                    recorder.complete(
                        process,
                        OpKind::Fail,
                        fetched_offsets(group, BTreeMap::new()),
                        Some(error.to_string()),
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    true
}
