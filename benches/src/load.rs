//! The load tool: concurrent producers and consumers on Strata's client.
//!
//! - `produce`: `producers` tasks, each with its own connection, send batches of `batch_records`
//!   records round robin over the topic's partitions: one request in flight per task through
//!   Strata's `Producer` (retries, idempotence), or with `max_in_flight` > 1 up to that many
//!   pipelined requests per connection (as Kafka producers pipeline; no retries).
//! - `consume`: `consumers` tasks read the partitions (partition `p` goes to consumer
//!   `p % consumers`) from the log start to the end offsets seen when the run starts.
//! - `e2e`: both at once; the consumers start at the end of the log, and each record carries its
//!   creation time in microseconds in the first 8 bytes of its value (its Kafka timestamp is the
//!   same instant in ms), so the consumer measures the latency from creation to consumption.
//!
//! Every run is bounded: by `num_records`, by `duration`, or (consume) by the end offsets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use strata_cluster::client::{
    encode_plain_batch, Client, ClientConfig, ClientError, Compression, Connection, OffsetSpec,
    Pipeline, Producer, ProducerConfig, Record, ResponseError,
};

use crate::report::{
    latency_histogram, record_latency_us, LoadReport, PhaseReport, ProducerSettings,
};

/// Consecutive failed requests after which a task gives up and the run fails.
const CONSECUTIVE_ERRORS_MAX: u32 = 10;
/// Pause after a failed request before the next one.
const ERROR_BACKOFF_MS: u64 = 100;
/// Largest `--max-in-flight`.
const MAX_IN_FLIGHT_MAX: usize = 64;
/// How long e2e consumers may take to catch up once the producers are done.
const E2E_DRAIN_GRACE: Duration = Duration::from_secs(10);
/// A fetch of a consumer reading one partition waits up to this long for data (the broker
/// answers as soon as data is there).
const FETCH_WAIT_MS_ONE_PARTITION: i32 = 500;
/// A consumer reading several partitions in turn waits only this long on each, so an idle
/// partition does not hold back the others.
const FETCH_WAIT_MS_SEVERAL_PARTITIONS: i32 = 5;
/// Consume mode: fetches in a row below a partition's end offset that may return no record
/// before the run fails.
const EMPTY_FETCHES_MAX: u32 = 20;
/// Bytes of the e2e creation timestamp at the start of each value.
const E2E_TIMESTAMP_BYTES: usize = 8;
/// Distinct value start positions in the payload pool (values differ, so compression is not
/// trivially perfect).
const PAYLOAD_VARIANTS: usize = 251;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Produce only.
    Produce,
    /// Consume what is in the topic.
    Consume,
    /// Produce and consume at once, measuring end-to-end latency.
    E2e,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }

    fn produces(self) -> bool {
        matches!(self, Mode::Produce | Mode::E2e)
    }

    fn consumes(self) -> bool {
        matches!(self, Mode::Consume | Mode::E2e)
    }
}

/// Settings of one run (the flags of `strata bench`).
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// What to do.
    pub mode: Mode,
    /// `host:port[,host:port...]`.
    pub bootstrap: String,
    /// Topic; produce and e2e create it if missing.
    pub topic: String,
    /// Partitions of the topic when it is created.
    pub partitions: i32,
    /// Value bytes per record.
    pub record_size_bytes: usize,
    /// Stop after this many records (produced, or consumed in consume mode).
    pub num_records: Option<u64>,
    /// Stop producing (consuming, in consume mode) after this long.
    pub duration: Option<Duration>,
    /// Target records/s over all producers; `None` = as fast as possible.
    pub throughput_records_per_s: Option<f64>,
    /// -1 (all), 0 or 1.
    pub acks: i16,
    /// Idempotent producer (needs acks = -1).
    pub idempotent: bool,
    /// Codec of the produced batches.
    pub compression: Compression,
    /// Records per produced batch at most.
    pub batch_records: usize,
    /// With a target rate: how long a partial batch may wait for more records (Kafka's
    /// linger.ms). Without a target rate batches are always full.
    pub linger: Duration,
    /// Concurrent producer tasks, each with its own connection.
    pub producers: usize,
    /// Produce requests each producer keeps in flight on its connection (Kafka's
    /// `max.in.flight.requests.per.connection`); 1 = wait for each answer.
    pub max_in_flight: usize,
    /// Concurrent consumer tasks, each with its own connection.
    pub consumers: usize,
    /// `max_bytes` of each fetch.
    pub fetch_bytes_max: i32,
    /// Timeout of each request.
    pub request_timeout_ms: u64,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

impl LoadConfig {
    /// A configuration with the load tool's defaults for `mode` on `topic`.
    pub fn new(mode: Mode, bootstrap: &str, topic: &str) -> LoadConfig {
        LoadConfig {
            mode,
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            partitions: 1,
            record_size_bytes: 100,
            num_records: None,
            duration: None,
            throughput_records_per_s: None,
            acks: 1,
            idempotent: false,
            compression: Compression::None,
            batch_records: 1000,
            linger: Duration::ZERO,
            producers: 1,
            max_in_flight: 1,
            consumers: 1,
            fetch_bytes_max: 1024 * 1024,
            request_timeout_ms: 30_000,
            progress: false,
        }
    }

    /// Checks the settings for consistency.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.topic.is_empty() {
            bail!("the topic name must not be empty");
        }
        if self.partitions < 1 {
            bail!("--partitions must be at least 1");
        }
        if self.mode.produces() {
            if self.num_records.is_none() && self.duration.is_none() {
                bail!("give --num-records or --duration-secs: every run is bounded");
            }
            if self.batch_records == 0 {
                bail!("--batch-size must be at least 1");
            }
            if self.producers == 0 {
                bail!("--producers must be at least 1");
            }
            if !(1..=MAX_IN_FLIGHT_MAX).contains(&self.max_in_flight) {
                bail!("--max-in-flight must be between 1 and {MAX_IN_FLIGHT_MAX}");
            }
            if self.max_in_flight > 1 {
                if self.throughput_records_per_s.is_some() {
                    bail!("--max-in-flight above 1 is for unlimited-rate runs (no --throughput)");
                }
                if self.idempotent || self.acks == 0 {
                    bail!("--max-in-flight above 1 needs --acks 1 or all, without --idempotence");
                }
            }
        }
        if self.mode.consumes() && self.consumers == 0 {
            bail!("--consumers must be at least 1");
        }
        if self.mode == Mode::E2e && self.record_size_bytes < E2E_TIMESTAMP_BYTES {
            bail!("e2e needs --record-size of at least {E2E_TIMESTAMP_BYTES} (the creation time travels in the value)");
        }
        if let Some(rate) = self.throughput_records_per_s {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--throughput must be positive (or -1 for unlimited)");
            }
        }
        if self.num_records == Some(0) {
            bail!("--num-records must be at least 1");
        }
        if self.duration == Some(Duration::ZERO) {
            bail!("--duration-secs must be positive");
        }
        if !(-1..=1).contains(&self.acks) {
            bail!("acks must be -1 (all), 0 or 1");
        }
        if self.idempotent && self.acks != -1 {
            bail!("an idempotent producer needs acks=all");
        }
        if self.fetch_bytes_max < 1 {
            bail!("the fetch size must be positive");
        }
        Ok(())
    }
}

/// The name of a codec in reports.
fn compression_name(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// Microseconds since the Unix epoch.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Counters shared by all tasks of a run.
#[derive(Default)]
struct Counters {
    produced_records: AtomicU64,
    produced_bytes: AtomicU64,
    produce_errors: AtomicU64,
    consumed_records: AtomicU64,
    consumed_bytes: AtomicU64,
    consume_errors: AtomicU64,
    /// When the last record arrived, in µs since the run's start (0: none yet).
    consumed_last_us: AtomicU64,
}

/// Hands out the records still to produce (when the run is bounded by a count).
struct Budget {
    claimed: AtomicU64,
    total: Option<u64>,
}

impl Budget {
    /// Claims up to `wanted` records; 0 when the count is reached.
    fn claim(&self, wanted: u64) -> u64 {
        let Some(total) = self.total else {
            return wanted;
        };
        let before = self.claimed.fetch_add(wanted, Ordering::Relaxed);
        if before >= total {
            0
        } else {
            wanted.min(total - before)
        }
    }
}

/// The values of produced records: slices of one pool of random uppercase letters (as Kafka's
/// producer-perf-test makes them), so building a record copies nothing.
struct Payload {
    pool: Bytes,
    size_bytes: usize,
}

impl Payload {
    fn new(size_bytes: usize, seed: u64) -> Payload {
        let mut state = seed | 1;
        let pool: Vec<u8> = (0..size_bytes + PAYLOAD_VARIANTS)
            .map(|_| {
                // xorshift64
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b'A' + (state % 26) as u8
            })
            .collect();
        Payload {
            pool: Bytes::from(pool),
            size_bytes,
        }
    }

    /// The value of the `i`th record.
    fn value(&self, i: u64) -> Bytes {
        let start = (i % PAYLOAD_VARIANTS as u64) as usize;
        self.pool.slice(start..start + self.size_bytes)
    }

    /// The value of the `i`th record, starting with `created_us` (big endian).
    fn value_with_timestamp(&self, i: u64, created_us: u64) -> Bytes {
        assert!(
            self.size_bytes >= E2E_TIMESTAMP_BYTES,
            "validated by LoadConfig"
        );
        let tail = self.value(i).slice(E2E_TIMESTAMP_BYTES..);
        let mut value = BytesMut::with_capacity(self.size_bytes);
        value.put_u64(created_us);
        value.extend_from_slice(&tail);
        value.freeze()
    }
}

/// State shared by the tasks of one run.
struct Shared {
    config: LoadConfig,
    partitions: Vec<i32>,
    start: Instant,
    /// When producers (consumers, in consume mode) stop; `None` = only the count bounds the run.
    deadline: Option<Instant>,
    budget: Budget,
    counters: Counters,
    /// Set when every task must stop now.
    stop: AtomicBool,
    /// Consume mode: per partition, the end offset seen at the start, where consumers stop.
    end_offsets: Option<HashMap<i32, i64>>,
    /// e2e: set once every producer is done; consumers then stop when they have received as
    /// many records as were produced.
    producers_done: AtomicBool,
}

impl Shared {
    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// e2e: every produced record has been consumed.
    fn drained(&self) -> bool {
        self.producers_done.load(Ordering::Acquire)
            && self.counters.consumed_records.load(Ordering::Relaxed)
                >= self.counters.produced_records.load(Ordering::Relaxed)
    }
}

async fn connect(config: &LoadConfig, role: &str) -> anyhow::Result<Client> {
    let client_config = ClientConfig {
        request_timeout_ms: config.request_timeout_ms,
        client_id: format!("strata-bench-{role}"),
    };
    Client::connect(&config.bootstrap, client_config)
        .await
        .with_context(|| format!("cannot connect to {}", config.bootstrap))
}

/// Creates the topic if it is missing (produce, e2e) and returns its partitions.
async fn prepare_topic(client: &Client, config: &LoadConfig) -> anyhow::Result<Vec<i32>> {
    if config.mode.produces() {
        match client
            .create_topics(&config.topic, config.partitions, -1, &[])
            .await
        {
            Ok(()) => {}
            Err(e) if e.kafka_error() == Some(ResponseError::TopicAlreadyExists) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create topic {}", config.topic))
            }
        }
    }
    let count = client
        .partition_count(&config.topic, false)
        .await
        .with_context(|| format!("cannot read the partitions of {}", config.topic))?;
    if count < 1 {
        bail!("topic {} has no partitions", config.topic);
    }
    Ok((0..count).collect())
}

async fn list_all(
    client: &Client,
    topic: &str,
    partitions: &[i32],
    spec: OffsetSpec,
) -> anyhow::Result<HashMap<i32, i64>> {
    let mut offsets = HashMap::new();
    for &p in partitions {
        let offset = client
            .list_offsets(topic, p, spec)
            .await
            .with_context(|| format!("cannot list offsets of {topic}-{p}"))?;
        offsets.insert(p, offset);
    }
    Ok(offsets)
}

/// What a rate-limited producer does next.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pace {
    /// Send this many records now.
    Send(u64),
    /// Wait until this many seconds after the task's start, then decide again.
    SleepUntil(f64),
}

/// The pacing of a producer at `rate` records/s, `now_s` seconds after its start, having taken
/// `taken` records: record `k` is created at `k / rate`; the records created and not yet taken
/// are sent together, at most `batch` at a time; with a `linger`, a partial batch waits until it
/// is full or its first record has waited that long.
fn pace(now_s: f64, taken: u64, rate: f64, batch: u64, linger: Duration) -> Pace {
    assert!(rate > 0.0 && batch > 0, "validated by LoadConfig");
    let created = (now_s * rate) as u64 + 1;
    if created <= taken {
        // The next record is not created yet.
        return Pace::SleepUntil(taken as f64 / rate);
    }
    let pending = created - taken;
    if pending < batch && !linger.is_zero() {
        let first_created_s = taken as f64 / rate;
        let full_s = (taken + batch - 1) as f64 / rate;
        let send_s = full_s.min(first_created_s + linger.as_secs_f64());
        if send_s > now_s {
            return Pace::SleepUntil(send_s);
        }
    }
    Pace::Send(pending.min(batch))
}

/// One producer task: batches round robin over the partitions until the budget or the deadline
/// is exhausted. Returns the ack latency histogram (µs, one sample per record).
async fn produce_task(shared: Arc<Shared>, index: usize) -> anyhow::Result<Histogram<u64>> {
    let config = &shared.config;
    let client = connect(config, "producer").await?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: config.acks,
            idempotent: config.idempotent,
            compression: config.compression,
            request_timeout_ms: config.request_timeout_ms,
            ..ProducerConfig::default()
        },
    )
    .context("invalid producer settings")?;
    let payload = Payload::new(
        config.record_size_bytes,
        0x9E37_79B9_7F4A_7C15 ^ index as u64,
    );
    let rate_per_task = config
        .throughput_records_per_s
        .map(|rate| rate / config.producers as f64);
    let mut histogram = latency_histogram();
    // Records taken so far by this task (sent, or failed).
    let mut taken_records: u64 = 0;
    let mut next_partition = index % shared.partitions.len();
    let mut consecutive_errors = 0u32;
    let task_start = Instant::now();
    let task_start_us = now_us();
    loop {
        if shared.stop.load(Ordering::Relaxed) || shared.past_deadline() {
            break;
        }
        // With a target rate, record k of this task is created at task_start + k / rate. The
        // records created while the previous request was in flight go out together (up to
        // --batch-size), as a producer's accumulator would send them, and keep their creation
        // time: a slow broker shows as latency, not as a lower offered load.
        // With --linger-ms, a partial batch waits until it is full or its first record has
        // waited that long.
        let batch_records = config.batch_records as u64;
        let wanted = match rate_per_task {
            None => batch_records,
            Some(rate) => {
                let now_s = task_start.elapsed().as_secs_f64();
                match pace(now_s, taken_records, rate, batch_records, config.linger) {
                    Pace::Send(count) => count,
                    Pace::SleepUntil(at_s) => {
                        let at = task_start + Duration::from_secs_f64(at_s);
                        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                        continue;
                    }
                }
            }
        };
        let count = shared.budget.claim(wanted);
        if count == 0 {
            break;
        }
        let partition = shared.partitions[next_partition];
        next_partition = (next_partition + 1) % shared.partitions.len();
        let now = now_us();
        let created_us = |k: u64| match rate_per_task {
            Some(rate) => task_start_us + (k as f64 / rate * 1e6) as u64,
            None => now,
        };
        let records: Vec<Record> = (taken_records..taken_records + count)
            .map(|k| {
                let created = created_us(k);
                let value = if config.mode == Mode::E2e {
                    payload.value_with_timestamp(k, created)
                } else {
                    payload.value(k)
                };
                Record {
                    key: None,
                    value: Some(value),
                    headers: Vec::new(),
                    timestamp_ms: Some((created / 1000) as i64),
                }
            })
            .collect();
        let first = taken_records;
        taken_records += count;
        match producer.send_batch(&config.topic, partition, records).await {
            Ok(_) => {
                consecutive_errors = 0;
                let acked_us = now_us();
                if rate_per_task.is_some() {
                    for k in first..first + count {
                        record_latency_us(
                            &mut histogram,
                            acked_us.saturating_sub(created_us(k)),
                            1,
                        );
                    }
                } else {
                    record_latency_us(&mut histogram, acked_us.saturating_sub(now), count);
                }
                count_produced(&shared, count);
            }
            Err(e) => {
                count_failed(&shared, &mut consecutive_errors, 1, &e, index, partition)?;
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
            }
        }
    }
    Ok(histogram)
}

/// A produce request a pipelined producer has sent and not yet seen answered.
struct InFlight {
    addr: String,
    version: i16,
    partition: i32,
    records: u64,
    sent_us: u64,
}

/// One pipelined producer task (`max_in_flight` > 1, unlimited rate): keeps up to
/// `max_in_flight` produce requests outstanding on one connection per leader, as Kafka producers
/// do, and takes their answers in order. No retries: a failed request counts as an error (and
/// so does every request still outstanding on a connection that broke); the connection is
/// reopened. Returns the ack latency histogram.
async fn produce_task_pipelined(
    shared: Arc<Shared>,
    index: usize,
) -> anyhow::Result<Histogram<u64>> {
    let config = &shared.config;
    let client = connect(config, "producer").await?;
    let payload = Payload::new(
        config.record_size_bytes,
        0x9E37_79B9_7F4A_7C15 ^ index as u64,
    );
    let mut histogram = latency_histogram();
    let mut pipelines: HashMap<String, Pipeline> = HashMap::new();
    let mut in_flight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    let mut taken_records: u64 = 0;
    let mut next_partition = index % shared.partitions.len();
    let mut consecutive_errors = 0u32;
    // The broker may hold an acks=all request up to its timeout; the network gets ours on top.
    let answer_timeout_ms = config.request_timeout_ms.saturating_mul(2);
    let mut sending = true;
    loop {
        while sending && in_flight.len() < config.max_in_flight {
            if shared.stop.load(Ordering::Relaxed) || shared.past_deadline() {
                sending = false;
                break;
            }
            let count = shared.budget.claim(config.batch_records as u64);
            if count == 0 {
                sending = false;
                break;
            }
            let partition = shared.partitions[next_partition];
            next_partition = (next_partition + 1) % shared.partitions.len();
            let now = now_us();
            let records: Vec<Record> = (taken_records..taken_records + count)
                .map(|k| Record {
                    key: None,
                    value: Some(if config.mode == Mode::E2e {
                        payload.value_with_timestamp(k, now)
                    } else {
                        payload.value(k)
                    }),
                    headers: Vec::new(),
                    timestamp_ms: Some((now / 1000) as i64),
                })
                .collect();
            taken_records += count;
            let sent = async {
                let addr = client.leader_addr(&config.topic, partition, true).await?;
                if !pipelines.contains_key(&addr) {
                    let conn = Connection::connect(
                        &addr,
                        &client.config().client_id,
                        config.request_timeout_ms,
                    )
                    .await?;
                    pipelines.insert(addr.clone(), conn.into_pipeline());
                }
                let pipeline = pipelines.get_mut(&addr).expect("inserted above");
                let version = pipeline.connection().version_for::<ProduceRequest>()?;
                let request = ProduceRequest::default()
                    .with_acks(config.acks)
                    .with_timeout_ms(i32::try_from(config.request_timeout_ms).unwrap_or(i32::MAX))
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(config.topic.clone())))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(encode_plain_batch(
                                &records,
                                config.compression,
                            )?))])]);
                pipeline.send(&request, version).await?;
                Ok::<_, ClientError>((addr, version))
            };
            match sent.await {
                Ok((addr, version)) => in_flight.push_back(InFlight {
                    addr,
                    version,
                    partition,
                    records: count,
                    sent_us: now,
                }),
                Err(e) => {
                    // Whatever was outstanding on a broken connection is lost with it.
                    let lost = 1 + in_flight.len() as u64;
                    in_flight.clear();
                    count_failed(&shared, &mut consecutive_errors, lost, &e, index, partition)?;
                    pipelines.clear();
                    client.invalidate_topic(&config.topic);
                    tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
                }
            }
        }
        let Some(oldest) = in_flight.pop_front() else {
            break;
        };
        let answer = match pipelines.get_mut(&oldest.addr) {
            Some(pipeline) => {
                pipeline
                    .recv::<ProduceRequest>(oldest.version, answer_timeout_ms)
                    .await
            }
            None => Err(ClientError::Disconnected {
                addr: oldest.addr.clone(),
            }),
        };
        let error = match answer {
            Ok(response) => {
                let code = response
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == oldest.partition)
                    .map_or(-1, |p| p.error_code);
                if code == 0 {
                    None
                } else {
                    Some(ClientError::from_code(
                        code,
                        format!("produce to {}-{}", config.topic, oldest.partition),
                        None,
                    ))
                }
            }
            Err(e) => {
                pipelines.remove(&oldest.addr);
                Some(e)
            }
        };
        match error {
            None => {
                consecutive_errors = 0;
                record_latency_us(
                    &mut histogram,
                    now_us().saturating_sub(oldest.sent_us),
                    oldest.records,
                );
                count_produced(&shared, oldest.records);
            }
            Some(e) => {
                let mut lost = 1;
                if !pipelines.contains_key(&oldest.addr) {
                    // The connection broke: what it still had outstanding is lost too.
                    let before = in_flight.len();
                    in_flight.retain(|f| f.addr != oldest.addr);
                    lost += (before - in_flight.len()) as u64;
                    client.invalidate_topic(&config.topic);
                }
                count_failed(
                    &shared,
                    &mut consecutive_errors,
                    lost,
                    &e,
                    index,
                    oldest.partition,
                )?;
            }
        }
    }
    Ok(histogram)
}

/// Counts `records` acknowledged records of one producer task.
fn count_produced(shared: &Shared, records: u64) {
    let counters = &shared.counters;
    counters
        .produced_records
        .fetch_add(records, Ordering::Relaxed);
    counters.produced_bytes.fetch_add(
        records * shared.config.record_size_bytes as u64,
        Ordering::Relaxed,
    );
}

/// Counts `requests` failed produce requests (the last to `partition` failed with `error`);
/// fails the task once too many failed in a row.
fn count_failed(
    shared: &Shared,
    consecutive_errors: &mut u32,
    requests: u64,
    error: &ClientError,
    index: usize,
    partition: i32,
) -> anyhow::Result<()> {
    shared
        .counters
        .produce_errors
        .fetch_add(requests, Ordering::Relaxed);
    *consecutive_errors += 1;
    if *consecutive_errors >= CONSECUTIVE_ERRORS_MAX {
        bail!(
            "producer {index}: {} requests in a row failed, last to {}-{partition}: {error}",
            *consecutive_errors,
            shared.config.topic
        );
    }
    Ok(())
}

/// Where a consumer is in one partition.
struct Cursor {
    partition: i32,
    offset: i64,
    /// Fetches in a row that returned no record.
    empty_fetches: u32,
}

/// Histograms of one consumer task (µs).
struct ConsumeHistograms {
    fetch: Histogram<u64>,
    end_to_end: Histogram<u64>,
}

/// The e2e latency of a record, from the creation time in its value.
fn end_to_end_us(value: Option<&Bytes>, timestamp_ms: i64, now_us: u64) -> u64 {
    let created_us = match value {
        Some(v) if v.len() >= E2E_TIMESTAMP_BYTES => {
            let mut raw = [0u8; E2E_TIMESTAMP_BYTES];
            raw.copy_from_slice(&v[..E2E_TIMESTAMP_BYTES]);
            u64::from_be_bytes(raw)
        }
        // Not one of ours (or truncated): fall back to the record timestamp.
        _ => u64::try_from(timestamp_ms)
            .unwrap_or(0)
            .saturating_mul(1000),
    };
    now_us.saturating_sub(created_us)
}

/// One consumer task: reads its partitions from their start offsets until the end offsets are
/// reached, the count or the deadline is reached, or the run is stopped.
async fn consume_task(
    shared: Arc<Shared>,
    index: usize,
    mut cursors: Vec<Cursor>,
) -> anyhow::Result<ConsumeHistograms> {
    let config = &shared.config;
    let client = connect(config, "consumer").await?;
    let wait_ms = if cursors.len() == 1 {
        FETCH_WAIT_MS_ONE_PARTITION
    } else {
        FETCH_WAIT_MS_SEVERAL_PARTITIONS
    };
    let mut histograms = ConsumeHistograms {
        fetch: latency_histogram(),
        end_to_end: latency_histogram(),
    };
    let mut next = 0usize;
    let mut consecutive_errors = 0u32;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if config.mode == Mode::Consume {
            if shared.past_deadline() {
                break;
            }
            if let Some(limit) = config.num_records {
                if shared.counters.consumed_records.load(Ordering::Relaxed) >= limit {
                    break;
                }
            }
        }
        if config.mode == Mode::E2e && shared.drained() {
            break;
        }
        // Skip partitions already read to their end offsets.
        let pending: Vec<usize> = (0..cursors.len())
            .filter(|&i| match &shared.end_offsets {
                Some(ends) => {
                    cursors[i].offset < ends.get(&cursors[i].partition).copied().unwrap_or(0)
                }
                None => true,
            })
            .collect();
        if pending.is_empty() {
            break;
        }
        let slot = pending[next % pending.len()];
        next = next.wrapping_add(1);
        let cursor = &mut cursors[slot];
        let fetched_at = Instant::now();
        let result = client
            .fetch(
                &config.topic,
                cursor.partition,
                cursor.offset,
                wait_ms,
                config.fetch_bytes_max,
            )
            .await;
        let arrived_us = now_us();
        let fetch_us = u64::try_from(fetched_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(result) => {
                consecutive_errors = 0;
                record_latency_us(&mut histograms.fetch, fetch_us, 1);
                let Some(last) = result.records.last() else {
                    cursor.empty_fetches += 1;
                    // Below its end offset a partition always has records to return; if it keeps
                    // returning none (e.g. only control batches), stop rather than spin.
                    if config.mode == Mode::Consume && cursor.empty_fetches >= EMPTY_FETCHES_MAX {
                        bail!(
                            "consumer {index}: {} fetches of {}-{} at offset {} returned no record before the end offset",
                            cursor.empty_fetches, config.topic, cursor.partition, cursor.offset
                        );
                    }
                    continue;
                };
                cursor.empty_fetches = 0;
                let next_offset = last.offset + 1;
                let mut bytes = 0u64;
                for record in &result.records {
                    bytes += record.value.as_ref().map_or(0, |v| v.len() as u64);
                    if config.mode == Mode::E2e {
                        let latency =
                            end_to_end_us(record.value.as_ref(), record.timestamp_ms, arrived_us);
                        record_latency_us(&mut histograms.end_to_end, latency, 1);
                    }
                }
                assert!(
                    next_offset > cursor.offset,
                    "fetch returned records below the requested offset"
                );
                cursor.offset = next_offset;
                shared
                    .counters
                    .consumed_records
                    .fetch_add(result.records.len() as u64, Ordering::Relaxed);
                shared
                    .counters
                    .consumed_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
                let since_start_us =
                    u64::try_from(shared.start.elapsed().as_micros()).unwrap_or(u64::MAX);
                shared
                    .counters
                    .consumed_last_us
                    .fetch_max(since_start_us, Ordering::Relaxed);
            }
            Err(e) => {
                shared
                    .counters
                    .consume_errors
                    .fetch_add(1, Ordering::Relaxed);
                consecutive_errors += 1;
                if consecutive_errors >= CONSECUTIVE_ERRORS_MAX {
                    return Err(e).with_context(|| {
                        format!(
                            "consumer {index}: {consecutive_errors} fetches in a row failed, last of {}-{} at {}",
                            config.topic, cursor.partition, cursor.offset
                        )
                    });
                }
                if let ClientError::OffsetOutOfRange { .. } = e {
                    // Retention moved the log start past us: continue from the new start.
                    if let Ok(start) = client
                        .list_offsets(&config.topic, cursor.partition, OffsetSpec::Earliest)
                        .await
                    {
                        cursor.offset = cursor.offset.max(start);
                    }
                }
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
            }
        }
    }
    Ok(histograms)
}

/// Prints a progress line to stderr every second until aborted.
async fn progress_task(shared: Arc<Shared>) {
    let mut last = (0u64, 0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        let c = &shared.counters;
        let now = (
            c.produced_records.load(Ordering::Relaxed),
            c.produced_bytes.load(Ordering::Relaxed),
            c.consumed_records.load(Ordering::Relaxed),
            c.consumed_bytes.load(Ordering::Relaxed),
        );
        let mut line = format!("[{:>4.0} s]", shared.start.elapsed().as_secs_f64());
        if shared.config.mode.produces() {
            line.push_str(&format!(
                " produced {} records, {:.0} records/s, {:.2} MB/s;",
                now.0,
                (now.0 - last.0) as f64,
                (now.1 - last.1) as f64 / crate::report::BYTES_PER_MB
            ));
        }
        if shared.config.mode.consumes() {
            line.push_str(&format!(
                " consumed {} records, {:.0} records/s, {:.2} MB/s;",
                now.2,
                (now.2 - last.2) as f64,
                (now.3 - last.3) as f64 / crate::report::BYTES_PER_MB
            ));
        }
        line.pop();
        eprintln!("{line}");
        last = now;
    }
}

fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) -> anyhow::Result<()> {
    into.add(from)
        .map_err(|e| anyhow::anyhow!("cannot merge latency histograms: {e:?}"))
}

/// Runs the load described by `config` and reports what it measured.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    config.validate()?;
    let admin = connect(&config, "admin").await?;
    let partitions = prepare_topic(&admin, &config).await?;
    // Consumers start at the log start (consume) or the current end (e2e).
    let start_offsets = match config.mode {
        Mode::Produce => HashMap::new(),
        Mode::Consume => list_all(&admin, &config.topic, &partitions, OffsetSpec::Earliest).await?,
        Mode::E2e => list_all(&admin, &config.topic, &partitions, OffsetSpec::Latest).await?,
    };
    let end_offsets = match config.mode {
        Mode::Consume => {
            Some(list_all(&admin, &config.topic, &partitions, OffsetSpec::Latest).await?)
        }
        _ => None,
    };
    let consumers = config.consumers.min(partitions.len());
    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: config.duration.map(|d| start + d),
        budget: Budget {
            claimed: AtomicU64::new(0),
            total: if config.mode.produces() {
                config.num_records
            } else {
                None
            },
        },
        partitions: partitions.clone(),
        start,
        counters: Counters::default(),
        stop: AtomicBool::new(false),
        end_offsets,
        producers_done: AtomicBool::new(false),
        config,
    });
    let progress = shared
        .config
        .progress
        .then(|| tokio::spawn(progress_task(shared.clone())));

    let mut consumer_handles = Vec::new();
    if shared.config.mode.consumes() {
        for index in 0..consumers {
            let cursors: Vec<Cursor> = partitions
                .iter()
                .filter(|&&p| p as usize % consumers == index)
                .map(|&p| Cursor {
                    partition: p,
                    offset: start_offsets.get(&p).copied().unwrap_or(0),
                    empty_fetches: 0,
                })
                .collect();
            consumer_handles.push(tokio::spawn(consume_task(shared.clone(), index, cursors)));
        }
    }
    let mut producer_handles = Vec::new();
    if shared.config.mode.produces() {
        for index in 0..shared.config.producers {
            if shared.config.max_in_flight > 1 {
                producer_handles.push(tokio::spawn(produce_task_pipelined(shared.clone(), index)));
            } else {
                producer_handles.push(tokio::spawn(produce_task(shared.clone(), index)));
            }
        }
    }

    let outcome = collect(&shared, producer_handles, consumer_handles).await;
    if let Some(progress) = progress {
        progress.abort();
    }
    let (produce_latency, produce_elapsed, consume) = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            shared.stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    let config = &shared.config;
    let c = &shared.counters;
    let produce = config.mode.produces().then(|| {
        PhaseReport::new(
            c.produced_records.load(Ordering::Relaxed),
            c.produced_bytes.load(Ordering::Relaxed),
            c.produce_errors.load(Ordering::Relaxed),
            produce_elapsed,
            &produce_latency,
        )
    });
    let (consume, end_to_end) = match consume {
        Some((fetch, end_to_end, elapsed)) => (
            Some(PhaseReport::new(
                c.consumed_records.load(Ordering::Relaxed),
                c.consumed_bytes.load(Ordering::Relaxed),
                c.consume_errors.load(Ordering::Relaxed),
                elapsed,
                &fetch,
            )),
            (config.mode == Mode::E2e)
                .then(|| crate::report::LatencySummary::from_histogram_us(&end_to_end)),
        ),
        None => (None, None),
    };
    Ok(LoadReport {
        mode: config.mode.name().to_string(),
        topic: config.topic.clone(),
        partitions: i32::try_from(partitions.len()).unwrap_or(i32::MAX),
        producer_settings: config.mode.produces().then(|| ProducerSettings {
            record_size_bytes: config.record_size_bytes,
            acks: config.acks,
            compression: compression_name(config.compression).to_string(),
            batch_records: config.batch_records,
            throughput_records_per_s: config.throughput_records_per_s,
            linger_ms: u64::try_from(config.linger.as_millis()).unwrap_or(u64::MAX),
            max_in_flight: config.max_in_flight,
        }),
        producers: if config.mode.produces() {
            config.producers
        } else {
            0
        },
        consumers: if config.mode.consumes() { consumers } else { 0 },
        produce,
        consume,
        end_to_end_latency_ms: end_to_end,
    })
}

/// The consumers' merged histograms (fetch, end to end) and the consume phase's duration.
type ConsumeOutcome = Option<(Histogram<u64>, Histogram<u64>, Duration)>;

/// Waits for the producers, then (e2e) tells the consumers where the end is, then waits for
/// the consumers. Returns the merged produce histogram, the produce phase's duration and the
/// consume outcome.
async fn collect(
    shared: &Arc<Shared>,
    producers: Vec<tokio::task::JoinHandle<anyhow::Result<Histogram<u64>>>>,
    consumers: Vec<tokio::task::JoinHandle<anyhow::Result<ConsumeHistograms>>>,
) -> anyhow::Result<(Histogram<u64>, Duration, ConsumeOutcome)> {
    let mut produce_latency = latency_histogram();
    let produces = !producers.is_empty();
    for handle in producers {
        let histogram = handle.await.context("a producer task panicked")??;
        merge(&mut produce_latency, &histogram)?;
    }
    let produce_elapsed = shared.start.elapsed();
    if consumers.is_empty() {
        return Ok((produce_latency, produce_elapsed, None));
    }
    if produces {
        // e2e: the consumers are done once they have received what the producers wrote.
        shared.producers_done.store(true, Ordering::Release);
        let stopper = {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(E2E_DRAIN_GRACE).await;
                shared.stop.store(true, Ordering::Relaxed);
            })
        };
        let merged = join_consumers(consumers).await;
        stopper.abort();
        let (fetch, end_to_end) = merged?;
        return Ok((
            produce_latency,
            produce_elapsed,
            Some((fetch, end_to_end, consume_elapsed(shared))),
        ));
    }
    let (fetch, end_to_end) = join_consumers(consumers).await?;
    Ok((
        produce_latency,
        produce_elapsed,
        Some((fetch, end_to_end, consume_elapsed(shared))),
    ))
}

/// The consume phase's duration: up to the last record's arrival (the final empty polls that
/// find nothing more are not part of it), or the whole run if nothing arrived.
fn consume_elapsed(shared: &Shared) -> Duration {
    match shared.counters.consumed_last_us.load(Ordering::Relaxed) {
        0 => shared.start.elapsed(),
        us => Duration::from_micros(us),
    }
}

async fn join_consumers(
    consumers: Vec<tokio::task::JoinHandle<anyhow::Result<ConsumeHistograms>>>,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut fetch = latency_histogram();
    let mut end_to_end = latency_histogram();
    for handle in consumers {
        let histograms = handle.await.context("a consumer task panicked")??;
        merge(&mut fetch, &histograms.fetch)?;
        merge(&mut end_to_end, &histograms.end_to_end)?;
    }
    Ok((fetch, end_to_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_hands_out_exactly_the_total() {
        let budget = Budget {
            claimed: AtomicU64::new(0),
            total: Some(25),
        };
        assert_eq!(budget.claim(10), 10);
        assert_eq!(budget.claim(10), 10);
        assert_eq!(budget.claim(10), 5);
        assert_eq!(budget.claim(10), 0);
        let unbounded = Budget {
            claimed: AtomicU64::new(0),
            total: None,
        };
        assert_eq!(unbounded.claim(7), 7);
    }

    #[test]
    fn pacing_follows_the_creation_schedule_batch_size_and_linger() {
        let no_linger = Duration::ZERO;
        // 1000 records/s: record k is created at k ms.
        assert_eq!(pace(0.0, 0, 1000.0, 10, no_linger), Pace::Send(1));
        assert_eq!(
            pace(0.0005, 1, 1000.0, 10, no_linger),
            Pace::SleepUntil(0.001)
        );
        assert_eq!(pace(0.0035, 1, 1000.0, 10, no_linger), Pace::Send(3));
        // Far behind: a full batch, the rest next time.
        assert_eq!(pace(1.0, 0, 1000.0, 10, no_linger), Pace::Send(10));
        // Linger 5 ms: record 1 (created at 1 ms) waits until 6 ms unless the batch fills.
        let linger = Duration::from_millis(5);
        assert_eq!(pace(0.0015, 1, 1000.0, 10, linger), Pace::SleepUntil(0.006));
        assert_eq!(pace(0.006, 1, 1000.0, 10, linger), Pace::Send(6));
        assert_eq!(pace(0.0015, 1, 1000.0, 3, linger), Pace::SleepUntil(0.003));
        assert_eq!(pace(0.003, 1, 1000.0, 3, linger), Pace::Send(3));
    }

    #[test]
    fn payload_values_have_the_record_size_and_carry_the_timestamp() {
        let payload = Payload::new(100, 42);
        for i in 0..300 {
            let v = payload.value(i);
            assert_eq!(v.len(), 100);
            assert!(v.iter().all(|b| b.is_ascii_uppercase()));
        }
        assert_ne!(payload.value(0), payload.value(1));
        let v = payload.value_with_timestamp(3, 1_700_000_000_123_456);
        assert_eq!(v.len(), 100);
        assert_eq!(
            end_to_end_us(Some(&v), 0, 1_700_000_000_125_456),
            2000,
            "latency from the value's microsecond timestamp"
        );
        // A foreign record falls back to its ms timestamp.
        assert_eq!(
            end_to_end_us(Some(&Bytes::from_static(b"x")), 1_000, 1_500_000),
            500_000
        );
        // A clock that went backwards gives 0, not an underflow.
        assert_eq!(end_to_end_us(None, 2_000, 1_000_000), 0);
    }

    #[test]
    fn validation_rejects_unbounded_and_inconsistent_runs() {
        let base = LoadConfig::new(Mode::Produce, "127.0.0.1:9092", "t");
        assert!(base.validate().is_err(), "no count and no duration");
        let bounded = LoadConfig {
            num_records: Some(10),
            ..base.clone()
        };
        bounded.validate().expect("bounded produce is valid");
        let consume = LoadConfig::new(Mode::Consume, "127.0.0.1:9092", "t");
        consume
            .validate()
            .expect("consume is bounded by the end offsets");
        for bad in [
            LoadConfig {
                acks: 1,
                idempotent: true,
                ..bounded.clone()
            },
            LoadConfig {
                batch_records: 0,
                ..bounded.clone()
            },
            LoadConfig {
                throughput_records_per_s: Some(0.0),
                ..bounded.clone()
            },
            LoadConfig {
                mode: Mode::E2e,
                record_size_bytes: 4,
                ..bounded.clone()
            },
            LoadConfig {
                num_records: Some(0),
                ..bounded.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
