//! The client workload: producers and consumers on their own simulated nodes, talking to the
//! brokers through Strata's client, every operation recorded in a Jepsen-style history.
//!
//! - **Producers** send unique values (`u64`, as decimal text) to the partitions of one topic,
//!   1–3 values per send, as one batch to one partition. Half of them (rounded up) are
//!   idempotent (acks=all, retries, the broker dedupes resends); the others are plain acks=all
//!   producers without retries (a resent batch could legitimately be written twice).
//! - **Consumers** are assigned a subset of the partitions, poll them (one fetch per assigned
//!   partition per `poll` operation) and now and then seek: a new `assign` operation followed by
//!   positions at offset 0, at the latest offset or where they were. In tiered scenarios
//!   (`local.retention.bytes=0`) a consumer at offset 0 reads every closed segment from the
//!   object store, one at the latest offset the active segment on the broker's disk.
//! - **Committers** ([`crate::group_workload`]) commit consumer-group offsets monotonically
//!   and read them back (`commit` / `fetch-offsets` operations).
//! - **The final read** (after the nemesis healed everything) polls every partition from offset
//!   0 up to its high watermark as one more process, then fetches every group's offsets.
//!
//! Outcomes: an acknowledged send is `ok` with its offsets; an error that says the write
//! certainly did not happen (neither ambiguous nor retriable) is `fail`; anything else (timeouts,
//! lost connections, retriable errors after the retries) is `info`, and the worker continues
//! under a fresh process id, as in Jepsen. Every operation is bounded by a timeout on top of the
//! client's own `request_timeout_ms`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jepsen_like::history::{History, HistoryBuilder, Key, OpKind, OpValue, PollReads, SendMop};
use madsim::runtime::Handle;
use strata_cluster::client::{
    Client, ClientConfig, ClientError, OffsetSpec, Producer, ProducerConfig, Record,
};

use crate::rng::SimRng;
use crate::trace::{derive_seed, Trace};

/// The workload's shape.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Topic written and read.
    pub topic: String,
    /// Its partition count.
    pub partitions: i32,
    /// Producer processes (the first half, rounded up, idempotent).
    pub producers: usize,
    /// Consumer processes.
    pub consumers: usize,
    /// Consumer-group committer processes (see [`crate::group_workload`]), one group each.
    pub committers: usize,
    /// Pause between two operations of one worker, in ms.
    pub think_ms: Range<u64>,
    /// The client's request timeout (also the producer's).
    pub request_timeout_ms: u64,
    /// Upper bound on any one operation, including the client's retries.
    pub op_timeout_ms: u64,
    /// Topic configs (Kafka names) given at creation.
    pub topic_configs: Vec<(String, String)>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            topic: "jepsen".to_string(),
            partitions: 3,
            producers: 4,
            consumers: 2,
            committers: 2,
            think_ms: 20..200,
            request_timeout_ms: 2_000,
            op_timeout_ms: 15_000,
            topic_configs: vec![
                ("segment.bytes".to_string(), "8192".to_string()),
                ("retention.ms".to_string(), "-1".to_string()),
            ],
        }
    }
}

/// Records the history of one run, shared by every worker. Every entry is also folded into the
/// run's trace hash, together with the count of network messages delivered so far, so the hash
/// pins down how deliveries interleave with client operations.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

struct RecorderInner {
    start: Instant,
    builder: Mutex<HistoryBuilder>,
    trace: Trace,
    process_next: AtomicU64,
}

impl Recorder {
    /// A recorder whose times count from now; fresh process ids start at `process_first`.
    pub fn new(trace: Trace, process_first: u64) -> Recorder {
        Recorder {
            inner: Arc::new(RecorderInner {
                start: Instant::now(),
                builder: Mutex::new(HistoryBuilder::new()),
                trace,
                process_next: AtomicU64::new(process_first),
            }),
        }
    }

    fn builder(&self) -> MutexGuard<'_, HistoryBuilder> {
        self.inner
            .builder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A process id never used before (for a worker whose last operation ended in `info`).
    pub fn fresh_process(&self) -> u64 {
        self.inner.process_next.fetch_add(1, Ordering::SeqCst)
    }

    /// Records an invocation.
    pub fn invoke(&self, process: u64, value: OpValue) {
        let now = self.now_ns();
        let mut builder = self.builder();
        // The workers never break the history rules; if one does, the harness has a bug.
        let op = builder
            .invoke_at(process, now, value)
            .unwrap_or_else(|e| panic!("workload recorded a malformed invocation: {e}"));
        let entry = format!("{op:?}");
        self.trace_entry(&entry);
    }

    /// Records the completion of `process`'s operation in flight.
    pub fn complete(&self, process: u64, kind: OpKind, value: OpValue, error: Option<String>) {
        let now = self.now_ns();
        let mut builder = self.builder();
        let op = builder
            .complete_at(process, kind, now, value)
            .unwrap_or_else(|e| panic!("workload recorded a malformed completion: {e}"));
        op.error = error;
        let entry = format!("{op:?}");
        self.trace_entry(&entry);
    }

    /// Folds a history entry into the trace with the count of network deliveries so far.
    fn trace_entry(&self, entry: &str) {
        let delivered = madsim::net::NetSim::current().stat().msg_count;
        self.inner
            .trace
            .event("op", &[entry.as_bytes(), &delivered.to_le_bytes()]);
    }

    /// Invocations so far.
    pub fn invocations(&self) -> u64 {
        self.builder()
            .ops()
            .iter()
            .filter(|op| op.kind == OpKind::Invoke)
            .count() as u64
    }

    /// The history so far.
    pub fn history(&self) -> History {
        self.builder().clone().build()
    }
}

/// The IP address of client node `index`.
pub fn client_ip(index: usize) -> IpAddr {
    let host = u8::try_from(index + 1).expect("at most 254 clients");
    IpAddr::from([10, 0, 1, host])
}

fn key(config: &WorkloadConfig, partition: i32) -> Key {
    Key::new(config.topic.clone(), partition)
}

fn client_config(config: &WorkloadConfig, name: &str) -> ClientConfig {
    ClientConfig {
        request_timeout_ms: config.request_timeout_ms,
        client_id: name.to_string(),
    }
}

/// Connects to `bootstrap`, retrying (every 500 ms) until `deadline`.
pub async fn connect(
    bootstrap: &str,
    config: ClientConfig,
    deadline: Instant,
) -> Result<Client, ClientError> {
    loop {
        let error = match tokio::time::timeout(
            Duration::from_millis(config.request_timeout_ms.saturating_mul(2)),
            Client::connect(bootstrap, config.clone()),
        )
        .await
        {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(error)) => error,
            Err(_) => ClientError::Cancelled(format!("connecting to {bootstrap} timed out")),
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Creates the workload's topic, retrying until `deadline`.
pub async fn create_topic(
    bootstrap: &str,
    config: &WorkloadConfig,
    deadline: Instant,
) -> Result<(), ClientError> {
    let client = connect(bootstrap, client_config(config, "setup"), deadline).await?;
    loop {
        match client
            .create_topics(&config.topic, config.partitions, 1, &config.topic_configs)
            .await
        {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Whether a failed send certainly did not write anything.
fn send_definitely_failed(error: &ClientError) -> bool {
    !error.is_ambiguous() && !error.is_retriable()
}

/// One producer process: sends until `stop_at`.
pub async fn run_producer(
    index: usize,
    idempotent: bool,
    bootstrap: String,
    config: WorkloadConfig,
    recorder: Recorder,
    seed: u64,
    stop_at: Instant,
) {
    let mut rng = SimRng::new(derive_seed(seed, &format!("producer-{index}")));
    let mut process = index as u64;
    let name = format!("producer-{index}");
    let Ok(client) = connect(&bootstrap, client_config(&config, &name), stop_at).await else {
        return;
    };
    let producer_config = ProducerConfig {
        acks: -1,
        idempotent,
        retries: if idempotent { 3 } else { 0 },
        retry_backoff_ms: 100,
        request_timeout_ms: config.request_timeout_ms,
        ..ProducerConfig::default()
    };
    let producer = match Producer::new(client, producer_config) {
        Ok(producer) => producer,
        Err(error) => panic!("invalid producer config: {error}"),
    };
    let mut value_next: u64 = (index as u64 + 1) * 1_000_000_000;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(rng.range(config.think_ms.clone()))).await;
        let partition = rng.range(0..config.partitions as u64) as i32;
        let count = rng.range(1..4);
        let values: Vec<u64> = (0..count).map(|i| value_next + i).collect();
        value_next += count;
        let k = key(&config, partition);
        let mops = |offsets: Option<i64>| -> Vec<SendMop> {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| SendMop {
                    key: k.clone(),
                    value: *v,
                    offset: offsets.map(|base| (base + i as i64) as u64),
                })
                .collect()
        };
        recorder.invoke(process, OpValue::Send(mops(None)));
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record::from_value(Bytes::from(v.to_string())))
            .collect();
        let outcome = tokio::time::timeout(
            Duration::from_millis(config.op_timeout_ms),
            producer.send_batch(&config.topic, partition, records),
        )
        .await;
        match outcome {
            Ok(Ok(base)) if base >= 0 => {
                recorder.complete(process, OpKind::Ok, OpValue::Send(mops(Some(base))), None)
            }
            // A duplicate of a batch the broker already had: written, offsets unknown.
            Ok(Ok(_)) => recorder.complete(process, OpKind::Ok, OpValue::Send(mops(None)), None),
            Ok(Err(error)) if send_definitely_failed(&error) => recorder.complete(
                process,
                OpKind::Fail,
                OpValue::Send(mops(None)),
                Some(error.to_string()),
            ),
            Ok(Err(error)) => {
                recorder.complete(
                    process,
                    OpKind::Info,
                    OpValue::Send(mops(None)),
                    Some(error.to_string()),
                );
                process = recorder.fresh_process();
            }
            Err(_) => {
                recorder.complete(
                    process,
                    OpKind::Info,
                    OpValue::Send(mops(None)),
                    Some("operation timed out".to_string()),
                );
                process = recorder.fresh_process();
            }
        }
    }
}

/// Parses a record value written by a producer; a value no producer could have written maps to
/// `u64::MAX` so that the checker sees it as never sent.
fn parse_value(value: Option<&Bytes>) -> u64 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// One consumer process: polls and seeks until `stop_at`.
pub async fn run_consumer(
    index: usize,
    bootstrap: String,
    config: WorkloadConfig,
    recorder: Recorder,
    seed: u64,
    stop_at: Instant,
) {
    let mut rng = SimRng::new(derive_seed(seed, &format!("consumer-{index}")));
    let process = recorder.fresh_process();
    let name = format!("consumer-{index}");
    let Ok(client) = connect(&bootstrap, client_config(&config, &name), stop_at).await else {
        return;
    };
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let mut need_assign = true;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(rng.range(config.think_ms.clone()))).await;
        if need_assign || rng.chance(0.1) {
            // Seek: a new assignment of some partitions, each positioned at 0, at the end, or
            // (if it was assigned already) where it was. A partition that moves is first
            // unassigned (an `assign` without it), then assigned again, so the history says the
            // consumer dropped its position there.
            let mut assigned: Vec<i32> =
                (0..config.partitions).filter(|_| rng.chance(0.6)).collect();
            if assigned.is_empty() {
                assigned.push(rng.range(0..config.partitions as u64) as i32);
            }
            let keys: Vec<Key> = assigned.iter().map(|p| key(&config, *p)).collect();
            let mut new_positions = BTreeMap::new();
            let mut kept = Vec::new();
            let mut error = None;
            for p in &assigned {
                let position = match (rng.range(0..3), positions.get(p)) {
                    (0, _) => Ok(0),
                    (1, _) => tokio::time::timeout(
                        Duration::from_millis(config.op_timeout_ms),
                        client.list_offsets(&config.topic, *p, OffsetSpec::Latest),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(ClientError::Cancelled("list offsets timed out".into()))
                    }),
                    (_, Some(offset)) if !need_assign => {
                        kept.push(key(&config, *p));
                        Ok(*offset)
                    }
                    (_, _) => Ok(0),
                };
                match position {
                    Ok(offset) => {
                        new_positions.insert(*p, offset);
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            match error {
                None => {
                    if kept.len() < keys.len() && !positions.is_empty() {
                        recorder.invoke(process, OpValue::Assign(kept.clone()));
                        recorder.complete(process, OpKind::Ok, OpValue::Assign(kept), None);
                    }
                    recorder.invoke(process, OpValue::Assign(keys.clone()));
                    recorder.complete(process, OpKind::Ok, OpValue::Assign(keys), None);
                    positions = new_positions;
                    need_assign = false;
                }
                Some(error) => {
                    // The offset lookup failed, so the consumer stays where it was; the
                    // attempted assignment is recorded as failed.
                    recorder.invoke(process, OpValue::Assign(keys.clone()));
                    recorder.complete(process, OpKind::Fail, OpValue::Assign(keys), Some(error));
                }
            }
            continue;
        }
        recorder.invoke(process, OpValue::Poll(PollReads::new()));
        let mut reads = PollReads::new();
        let mut advanced = positions.clone();
        let mut error = None;
        for (p, offset) in &positions {
            let fetched = tokio::time::timeout(
                Duration::from_millis(config.op_timeout_ms),
                client.fetch(&config.topic, *p, *offset, 50, 4096),
            )
            .await
            .unwrap_or_else(|_| Err(ClientError::Cancelled("fetch timed out".into())));
            match fetched {
                Ok(result) => {
                    let pairs = reads.entry(key(&config, *p)).or_default();
                    for record in result.records {
                        pairs.push((record.offset as u64, parse_value(record.value.as_ref())));
                        advanced.insert(*p, record.offset + 1);
                    }
                }
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        match error {
            None => {
                recorder.complete(process, OpKind::Ok, OpValue::Poll(reads), None);
                positions = advanced;
            }
            Some(error) => {
                // A failed poll consumed nothing: positions stay where they were.
                if error_needs_seek(&error) {
                    need_assign = true;
                }
                recorder.complete(
                    process,
                    OpKind::Fail,
                    OpValue::Poll(PollReads::new()),
                    Some(error),
                );
            }
        }
    }
}

fn error_needs_seek(error: &str) -> bool {
    error.contains("out of range") || error.contains("OffsetOutOfRange")
}

/// The final read: with the system healed, reads every partition from offset 0 up to the high
/// watermark it has when the read starts, as one more process (an `assign` of every partition,
/// then polls), then fetches the committed offsets of every consumer group
/// ([`crate::group_workload::final_fetch`]). Gives up at `deadline`; returns whether every
/// partition was read to its end and every group's offsets were fetched.
pub async fn final_read(
    bootstrap: String,
    config: WorkloadConfig,
    recorder: Recorder,
    deadline: Instant,
) -> bool {
    let process = recorder.fresh_process();
    let Ok(client) = connect(&bootstrap, client_config(&config, "final-reader"), deadline).await
    else {
        return false;
    };
    let keys: Vec<Key> = (0..config.partitions).map(|p| key(&config, p)).collect();
    recorder.invoke(process, OpValue::Assign(keys.clone()));
    recorder.complete(process, OpKind::Ok, OpValue::Assign(keys), None);
    let mut complete = true;
    for partition in 0..config.partitions {
        let mut offset = 0;
        let mut end = None;
        loop {
            if Instant::now() >= deadline {
                complete = false;
                break;
            }
            if end.is_none() {
                match client
                    .list_offsets(&config.topic, partition, OffsetSpec::Latest)
                    .await
                {
                    Ok(latest) => end = Some(latest),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            let Some(end_offset) = end else { continue };
            if offset >= end_offset {
                break;
            }
            recorder.invoke(process, OpValue::Poll(PollReads::new()));
            let fetched = tokio::time::timeout(
                Duration::from_millis(config.op_timeout_ms),
                client.fetch(&config.topic, partition, offset, 0, 64 * 1024),
            )
            .await
            .unwrap_or_else(|_| Err(ClientError::Cancelled("fetch timed out".into())));
            match fetched {
                Ok(result) => {
                    let mut reads = PollReads::new();
                    let pairs = reads.entry(key(&config, partition)).or_default();
                    for record in result.records {
                        pairs.push((record.offset as u64, parse_value(record.value.as_ref())));
                        offset = record.offset + 1;
                    }
                    recorder.complete(process, OpKind::Ok, OpValue::Poll(reads), None);
                }
                Err(error) => {
                    recorder.complete(
                        process,
                        OpKind::Fail,
                        OpValue::Poll(PollReads::new()),
                        Some(error.to_string()),
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    // Then every consumer group's committed offsets.
    complete &=
        crate::group_workload::final_fetch(&client, &config, &recorder, process, deadline).await;
    complete
}

/// The worker tasks and their nodes.
pub struct Workers {
    /// Join handles of the worker tasks.
    pub joins: Vec<madsim::task::JoinHandle<()>>,
    /// The client nodes, producers first.
    pub nodes: Vec<madsim::task::NodeId>,
}

/// Starts the producers (nodes `producer-<i>`), consumers (nodes `consumer-<i>`) and group
/// committers (nodes `committer-<i>`).
pub fn spawn_workers(
    handle: &Handle,
    bootstrap: &str,
    config: &WorkloadConfig,
    recorder: &Recorder,
    seed: u64,
    stop_at: Instant,
) -> Workers {
    let mut joins = Vec::new();
    let mut nodes = Vec::new();
    for index in 0..config.producers {
        let node = handle
            .create_node()
            .name(format!("producer-{index}"))
            .ip(client_ip(index))
            .build();
        nodes.push(node.id());
        let idempotent = index < config.producers.div_ceil(2);
        joins.push(node.spawn(run_producer(
            index,
            idempotent,
            bootstrap.to_string(),
            config.clone(),
            recorder.clone(),
            seed,
            stop_at,
        )));
    }
    for index in 0..config.consumers {
        let node = handle
            .create_node()
            .name(format!("consumer-{index}"))
            .ip(client_ip(config.producers + index))
            .build();
        nodes.push(node.id());
        joins.push(node.spawn(run_consumer(
            index,
            bootstrap.to_string(),
            config.clone(),
            recorder.clone(),
            seed,
            stop_at,
        )));
    }
    for index in 0..config.committers {
        let node = handle
            .create_node()
            .name(format!("committer-{index}"))
            .ip(client_ip(config.producers + config.consumers + index))
            .build();
        nodes.push(node.id());
        joins.push(node.spawn(crate::group_workload::run_committer(
            index,
            bootstrap.to_string(),
            config.clone(),
            recorder.clone(),
            seed,
            stop_at,
        )));
    }
    Workers { joins, nodes }
}
