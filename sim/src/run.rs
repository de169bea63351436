//! Scenarios and the runner: one seed = one madsim runtime, one scenario, one checked history.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use jepsen_like::checker::{check, CheckReport};
use jepsen_like::history::History;
use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
use strata_cluster::FlushPolicy;

use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use strata_storage::tier::manifest::{Manifest, MANIFEST_FILE_NAME};
use strata_storage::tier::remote::partition_dir;

use crate::clock::SimClock;
use crate::disk::{DiskFaults, DiskStats, FaultyDisk};
use crate::nemesis::{FaultKind, Nemesis, NemesisConfig};
use crate::node::SimCluster;
use crate::object_store::{ObjectStoreFaults, SimObjectStore};
use crate::rng::SimRng;
use crate::trace::{derive_seed, Trace};
use crate::workload::{
    client_ip, create_topic, final_read, spawn_workers, Recorder, WorkloadConfig,
};

/// A named combination of workload, faults and durations.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The name given to `sim/run --scenario`.
    pub name: &'static str,
    /// Brokers in the cluster.
    pub brokers: usize,
    /// The client workload.
    pub workload: WorkloadConfig,
    /// Disk faults of every broker's disk.
    pub disk_faults: DiskFaults,
    /// Largest seeded clock skew of a broker, either way, in ms.
    pub clock_skew_ms_max: i64,
    /// The nemesis schedule's shape.
    pub nemesis: NemesisConfig,
    /// How long the workload runs under the nemesis, in simulated seconds.
    pub fault_phase_s: u64,
    /// Quiet time after healing, before the final read, in simulated seconds.
    pub settle_s: u64,
    /// How long the final read may take at most, in simulated seconds.
    pub final_read_s: u64,
    /// The network at rest.
    pub net: madsim::net::Config,
    /// The brokers' flush policy (`Ack`, the default, except in the `no-fsync` detection
    /// scenario).
    pub flush: FlushPolicy,
    /// Tiered storage: the brokers open with a [`crate::object_store::FaultyObjectStore`] over
    /// the run's shared [`SimObjectStore`], with these base fault rates (the nemesis's
    /// object-store faults come on top). `None`: no remote tier.
    pub object_store: Option<ObjectStoreFaults>,
    /// The brokers' `tier_interval_ms` (how often the tier task offloads and trims).
    pub tier_interval_ms: u64,
    /// How long, in simulated seconds, the healed system may take for offload to catch up (every
    /// closed segment in the store) before the final read.
    pub offload_catch_up_s: u64,
}

/// The topic configs of a tiered workload: closed segments are offloaded, and the hot tier
/// keeps only the active segment (`local.retention.bytes=0`), so every read below the active
/// segment goes to the object store; small segments roll every second or two.
pub fn tiered_topic_configs() -> Vec<(String, String)> {
    [
        ("remote.storage.enable", "true"),
        ("segment.bytes", "4096"),
        ("local.retention.bytes", "0"),
        ("retention.ms", "-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The base faults of the object store in tiered scenarios: 1–30 ms per request, 1% of requests
/// slow (2 s more), 1% failing, 1% of writes losing their reply.
pub fn tiered_store_faults() -> ObjectStoreFaults {
    ObjectStoreFaults {
        latency_ms: 1..30,
        slow_rate: 0.01,
        slow_part_rate: 0.01,
        slow_ms: 2_000,
        error_rate: 0.01,
        part_error_rate: 0.01,
        lost_reply_rate: 0.01,
    }
}

/// Names of every scenario a correct broker passes.
pub const SCENARIOS: [&str; 6] = [
    "crash-restart",
    "partition",
    "clock",
    "mixed",
    "group-commit",
    "tiered",
];

/// Scenarios whose faults no single broker can survive: a correct harness must find anomalies
/// in them (they prove the workload and checker can fail). `lost-sync`: the disk acknowledges
/// 30% of the syncs of segment files (`*.log`) without making anything durable, and the broker
/// is killed repeatedly.
/// `no-fsync`: the broker runs with `FlushPolicy::Never` (acks=all answers without any fsync,
/// as a broker that acknowledges before fsync would) and is killed repeatedly.
pub const DETECTION_SCENARIOS: [&str; 2] = ["lost-sync", "no-fsync"];

/// Scenarios that explore a fault the broker does not fully handle yet; neither passing nor
/// failing is asserted. `bit-flip`: 0.1% of disk reads return one flipped bit (the stored bytes
/// stay intact), and the broker is killed repeatedly. A few percent of seeds fail today: a flip in
/// a served batch's `baseOffset` (outside Kafka's CRC) makes a fetch silently skip the batch
/// (`poll-skip`); a flip during recovery leaves a partition offline (`lost-write`, `unseen`);
/// a flip in a metadata file stops the broker from starting (`PANIC`).
pub const EXPLORATORY_SCENARIOS: [&str; 1] = ["bit-flip"];

impl Scenario {
    /// The scenario called `name`.
    pub fn named(name: &str) -> Option<Scenario> {
        let base = Scenario {
            name: "mixed",
            brokers: 1,
            workload: WorkloadConfig::default(),
            disk_faults: DiskFaults {
                torn_tail: true,
                ..DiskFaults::default()
            },
            clock_skew_ms_max: 2_000,
            nemesis: NemesisConfig {
                kinds: Vec::new(),
                concurrent_max: 1,
                quiet_ms: 1_000..5_000,
                window_ms: 500..6_000,
            },
            fault_phase_s: 60,
            settle_s: 5,
            final_read_s: 120,
            net: madsim::net::Config::default(),
            flush: FlushPolicy::Ack,
            object_store: None,
            tier_interval_ms: 200,
            offload_catch_up_s: 60,
        };
        let scenario = match name {
            "crash-restart" => Scenario {
                name: "crash-restart",
                nemesis: NemesisConfig {
                    kinds: vec![FaultKind::Kill, FaultKind::Pause, FaultKind::SyncEio],
                    concurrent_max: 1,
                    quiet_ms: 500..4_000,
                    window_ms: 200..4_000,
                },
                ..base
            },
            "partition" => Scenario {
                name: "partition",
                nemesis: NemesisConfig {
                    kinds: vec![
                        FaultKind::ClogBroker,
                        FaultKind::ClogClients,
                        FaultKind::Partition,
                        FaultKind::Latency,
                        FaultKind::Loss,
                    ],
                    concurrent_max: 2,
                    ..base.nemesis.clone()
                },
                ..base
            },
            "clock" => {
                let mut workload = WorkloadConfig::default();
                // Time-based segment rolls, so that clock jumps and strobing reach the log.
                workload
                    .topic_configs
                    .push(("segment.ms".to_string(), "2000".to_string()));
                Scenario {
                    name: "clock",
                    workload,
                    clock_skew_ms_max: 60_000,
                    nemesis: NemesisConfig {
                        kinds: vec![
                            FaultKind::ClockJump,
                            FaultKind::ClockStrobe,
                            FaultKind::Kill,
                        ],
                        concurrent_max: 2,
                        ..base.nemesis.clone()
                    },
                    ..base
                }
            }
            // Every fault kind, the object store's included, on a tiered topic.
            "mixed" => Scenario {
                name: "mixed",
                workload: WorkloadConfig {
                    topic_configs: tiered_topic_configs(),
                    ..WorkloadConfig::default()
                },
                object_store: Some(tiered_store_faults()),
                nemesis: NemesisConfig {
                    kinds: FaultKind::ALL
                        .iter()
                        .chain(FaultKind::OBJECT_STORE.iter())
                        .copied()
                        .collect(),
                    concurrent_max: 3,
                    ..base.nemesis.clone()
                },
                ..base
            },
            // Tiered storage: small segments offloaded every 200 ms, the hot tier trimmed to the
            // active segment; kills, pauses, disk sync failures, clock jumps, clogged client
            // links and partitions next to object-store outages, error bursts, latency and lost
            // replies. Consumers that seek to 0 and the final read read the remote tier.
            "tiered" => {
                let workload = WorkloadConfig {
                    topic_configs: tiered_topic_configs(),
                    ..WorkloadConfig::default()
                };
                let mut kinds = vec![
                    FaultKind::Kill,
                    FaultKind::Pause,
                    FaultKind::SyncEio,
                    FaultKind::ClogClients,
                    FaultKind::Partition,
                    FaultKind::ClockJump,
                ];
                kinds.extend(FaultKind::OBJECT_STORE);
                Scenario {
                    name: "tiered",
                    workload,
                    object_store: Some(tiered_store_faults()),
                    nemesis: NemesisConfig {
                        kinds,
                        concurrent_max: 3,
                        ..base.nemesis.clone()
                    },
                    ..base
                }
            }
            // Group commit: the flusher waits 20 ms after an append before it syncs, so the
            // log has an unsynced tail much of the time and kills tear it (with the default
            // policy the sync follows the append in the same simulated instant). acks=all
            // still answers only once durable.
            "group-commit" => Scenario {
                name: "group-commit",
                flush: FlushPolicy::IntervalMs(20),
                nemesis: NemesisConfig {
                    kinds: vec![FaultKind::Kill, FaultKind::Pause, FaultKind::SyncEio],
                    concurrent_max: 1,
                    quiet_ms: 500..3_000,
                    window_ms: 200..3_000,
                },
                ..base
            },
            "lost-sync" => Scenario {
                name: "lost-sync",
                disk_faults: DiskFaults {
                    torn_tail: true,
                    lost_sync_rate: 0.3,
                    lost_sync_path_suffix: ".log".to_string(),
                    ..DiskFaults::default()
                },
                nemesis: NemesisConfig {
                    kinds: vec![FaultKind::Kill],
                    concurrent_max: 1,
                    quiet_ms: 1_000..4_000,
                    window_ms: 200..2_000,
                },
                ..base
            },
            "bit-flip" => Scenario {
                name: "bit-flip",
                disk_faults: DiskFaults {
                    torn_tail: true,
                    read_bit_flip_rate: 0.001,
                    ..DiskFaults::default()
                },
                nemesis: NemesisConfig {
                    kinds: vec![FaultKind::Kill],
                    concurrent_max: 1,
                    quiet_ms: 1_000..4_000,
                    window_ms: 200..2_000,
                },
                ..base
            },
            "no-fsync" => Scenario {
                name: "no-fsync",
                flush: FlushPolicy::Never,
                nemesis: NemesisConfig {
                    kinds: vec![FaultKind::Kill],
                    concurrent_max: 1,
                    quiet_ms: 1_000..4_000,
                    window_ms: 200..2_000,
                },
                ..base
            },
            _ => return None,
        };
        Some(scenario)
    }
}

/// What a seed produced, as seen from inside the simulation.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// Simulated seconds from start to end.
    pub simulated_s: f64,
    /// Client operations invoked.
    pub operations: u64,
    /// Faults the nemesis injected.
    pub faults: u64,
    /// The trace hash (see [`crate::trace`]).
    pub trace_hash: u64,
    /// Network messages delivered (madsim's count).
    pub net_messages: u64,
    /// Disk operations.
    pub disk_ops: u64,
    /// What each broker's disk injected, by node id.
    pub disk_stats: Vec<DiskStats>,
    /// Whether the final read reached every partition's end.
    pub final_read_complete: bool,
    /// The history.
    pub history: History,
    /// The checker's report.
    pub report: CheckReport,
    /// The nemesis's log.
    pub nemesis_log: Vec<String>,
    /// Tiered scenarios: what the end-of-run check of the remote tier found.
    pub tier: Option<TierReport>,
    /// Tiered scenarios: what each broker's object store injected, by node id.
    pub object_store_stats: Vec<crate::object_store::ObjectStoreStats>,
}

/// The verdict of one seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The checker found nothing and the final read completed.
    Ok,
    /// The checker found anomalies, or the final read could not finish.
    Invalid(String),
    /// The simulation panicked (a broker that could not recover, a harness bug, a time limit).
    Panic(String),
}

impl Verdict {
    /// Whether this is [`Verdict::Ok`].
    pub fn is_ok(&self) -> bool {
        *self == Verdict::Ok
    }

    /// A short word for the table.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Invalid(_) => "INVALID",
            Verdict::Panic(_) => "PANIC",
        }
    }
}

/// One seed's result as the runner reports it.
#[derive(Debug, Clone)]
pub struct SeedResult {
    /// The seed.
    pub seed: u64,
    /// The scenario's name.
    pub scenario: String,
    /// Wall-clock seconds the seed took.
    pub wall_s: f64,
    /// Inside view; `None` if the simulation panicked.
    pub outcome: Option<SimOutcome>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Simulated time the runtime may use before it is declared hung.
const TIME_LIMIT_S: u64 = 3_600;

/// The simulation of one seed; runs inside a madsim runtime (the seed is the runtime's).
pub async fn simulate(scenario: Scenario) -> SimOutcome {
    let handle = Handle::current();
    let seed = handle.seed();
    let start = Instant::now();
    let trace = Trace::new();
    NetSim::current().update_config(|c| *c = scenario.net.clone());
    let mut rng = SimRng::new(derive_seed(seed, "clocks"));
    let disks_and_clocks: Vec<_> = (0..scenario.brokers)
        .map(|i| {
            let disk = FaultyDisk::new(
                scenario.disk_faults.clone(),
                derive_seed(seed, &format!("disk-{i}")),
                trace.clone(),
            );
            (disk, SimClock::seeded(&mut rng, scenario.clock_skew_ms_max))
        })
        .collect();
    let flush = scenario.flush;
    let tier_interval_ms = scenario.tier_interval_ms;
    let store = SimObjectStore::new();
    let nodes = disks_and_clocks
        .into_iter()
        .enumerate()
        .map(|(i, (disk, clock))| {
            let faulty = scenario.object_store.clone().map(|faults| {
                store.faulty(
                    faults,
                    derive_seed(seed, &format!("object-store-{i}")),
                    Some(trace.clone()),
                )
            });
            (disk, clock, faulty)
        })
        .collect();
    let cluster = SimCluster::start_with_stores(&handle, nodes, move |config| {
        config.flush = flush;
        config.tier_interval_ms = tier_interval_ms;
    });
    let bootstrap = cluster.bootstrap();
    let workload = scenario.workload.clone();

    // Set up the topic from a node of its own, before any fault.
    let setup = handle
        .create_node()
        .name("setup")
        .ip(client_ip(200))
        .build();
    let setup_deadline = Instant::now() + Duration::from_secs(60);
    let (b, w) = (bootstrap.clone(), workload.clone());
    if let Err(error) = setup
        .spawn(async move { create_topic(&b, &w, setup_deadline).await })
        .await
        .expect("setup task")
    {
        panic!("could not create the topic: {error}");
    }

    let recorder = Recorder::new(trace.clone(), workload.producers as u64);
    let stop_at = Instant::now() + Duration::from_secs(scenario.fault_phase_s);
    let workers = spawn_workers(&handle, &bootstrap, &workload, &recorder, seed, stop_at);
    let mut nemesis = Nemesis::new(
        cluster.clone(),
        workers.nodes.clone(),
        scenario.nemesis.clone(),
        scenario.net.clone(),
        derive_seed(seed, "nemesis"),
        trace.clone(),
    );
    nemesis.run(stop_at).await;
    for worker in workers.joins {
        worker.await.expect("worker task");
    }
    tokio::time::sleep(Duration::from_secs(scenario.settle_s)).await;

    // Tiered: offload must catch up in the healed system before the final read, which then
    // reads everything below the active segments from the object store.
    let tier = if scenario.object_store.is_some() {
        let deadline = Instant::now() + Duration::from_secs(scenario.offload_catch_up_s);
        let report = wait_for_offload(
            &cluster,
            &workload.topic,
            workload.partitions,
            &store,
            deadline,
        )
        .await;
        trace.event("tier", &[report.summary().as_bytes()]);
        Some(report)
    } else {
        None
    };

    let reader = handle
        .create_node()
        .name("final-reader")
        .ip(client_ip(201))
        .build();
    let deadline = Instant::now() + Duration::from_secs(scenario.final_read_s);
    let (b, w, r) = (bootstrap.clone(), workload.clone(), recorder.clone());
    let final_read_complete = reader
        .spawn(async move { final_read(b, w, r, deadline).await })
        .await
        .expect("final read task");

    let net_messages = NetSim::current().stat().msg_count;
    trace.number("net-messages", net_messages);
    let history = recorder.history();
    let report = check(&history);
    trace.event(
        "verdict",
        &[format!("{:?}", report.bad_anomaly_kinds).as_bytes()],
    );
    SimOutcome {
        simulated_s: start.elapsed().as_secs_f64(),
        operations: recorder.invocations(),
        faults: nemesis.faults,
        trace_hash: trace.hash(),
        net_messages,
        disk_ops: trace.disk_ops(),
        disk_stats: cluster.brokers.iter().map(|b| b.disk.stats()).collect(),
        final_read_complete,
        history,
        report,
        nemesis_log: nemesis.log,
        tier,
        object_store_stats: cluster
            .brokers
            .iter()
            .filter_map(|b| b.object_store.as_ref().map(|s| s.stats()))
            .collect(),
    }
}

/// One partition of a broker as the end-of-run tier check saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierPartition {
    /// Broker node id.
    pub node_id: i32,
    /// Partition.
    pub partition: i32,
    /// Files the manifest in the store names.
    pub remote_files: usize,
    /// The offset after the last one in the store (0 if none).
    pub remote_end_offset: i64,
    /// The broker's local log start offset.
    pub local_start_offset: i64,
    /// The broker's log end offset.
    pub log_end_offset: i64,
    /// Parquet objects in the partition's directory that the manifest does not name (an upload
    /// whose manifest write failed or whose broker died; the next offload overwrites them).
    pub orphans: usize,
}

/// What the end-of-run check of the remote tier found (tiered scenarios).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierReport {
    /// Simulated seconds the healed system took until every closed segment was in the store
    /// (`None`: not by the deadline).
    pub caught_up_after_s: Option<f64>,
    /// Every partition of every broker.
    pub partitions: Vec<TierPartition>,
    /// What is wrong; any problem fails the seed.
    pub problems: Vec<String>,
}

impl TierReport {
    /// One line for the trace.
    pub fn summary(&self) -> String {
        format!("{self:?}")
    }
}

impl std::fmt::Display for TierReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.caught_up_after_s {
            Some(s) => writeln!(f, "offload caught up {s:.1} s into the healed phase")?,
            None => writeln!(f, "offload did NOT catch up")?,
        }
        for p in &self.partitions {
            writeln!(
                f,
                "broker-{} partition {}: {} remote files up to offset {}, local from {}, log end {}, {} orphans",
                p.node_id,
                p.partition,
                p.remote_files,
                p.remote_end_offset,
                p.local_start_offset,
                p.log_end_offset,
                p.orphans
            )?;
        }
        for problem in &self.problems {
            writeln!(f, "PROBLEM: {problem}")?;
        }
        Ok(())
    }
}

/// Whether every broker's tier task has put every closed segment of `topic` in the store: the
/// remote tier is open, the last tick had no error, and each closed segment (with batches) ends
/// at or below the manifest's end. `Err` says what is still missing.
fn offload_caught_up(cluster: &SimCluster, topic: &str, partitions: i32) -> Result<(), String> {
    for sim_broker in &cluster.brokers {
        let Some(broker) = sim_broker.broker.get() else {
            return Err(format!("{} is not running", sim_broker.name));
        };
        let Some(t) = broker.topics().into_iter().find(|t| t.name() == topic) else {
            return Err(format!("{} does not have topic {topic}", sim_broker.name));
        };
        if t.partitions().len() != partitions as usize {
            return Err(format!(
                "{} has {} partitions of {topic}, not {partitions}",
                sim_broker.name,
                t.partitions().len()
            ));
        }
        for partition in t.partitions() {
            let at = format!("{} {topic}-{}", sim_broker.name, partition.index());
            let tier = partition.tier();
            let Some(remote) = tier.remote() else {
                return Err(format!("{at}: the remote tier is not open"));
            };
            let status = strata_cluster::tier::status(&broker, Some(topic));
            if let Some(error) = status
                .iter()
                .find(|s| s.partition == partition.index())
                .and_then(|s| s.last_error.clone())
            {
                return Err(format!("{at}: the last tier tick failed: {error}"));
            }
            let remote_end = remote.manifest().end_offset().unwrap_or(0);
            let closed = partition
                .with_log(|log| Ok(log.closed_segments()))
                .map_err(|e| format!("{at}: {e}"))?;
            if let Some(segment) = closed
                .iter()
                .find(|s| s.size_bytes > 0 && s.next_offset > remote_end)
            {
                return Err(format!(
                    "{at}: closed segment {}..{} is not in the store (remote end {remote_end})",
                    segment.base_offset, segment.next_offset
                ));
            }
        }
    }
    Ok(())
}

/// Reads partition `partition`'s manifest straight from the store (no faults) and checks it
/// against the store's objects and the broker: the files cover `0..end` without a gap or an
/// overlap, each one exists with the size the manifest says, and nothing below the broker's
/// local start offset is missing from the store.
async fn check_store_partition(
    store: &dyn ObjectStore,
    topic: &str,
    partition: i32,
    node_id: i32,
    local: Option<(i64, i64)>,
    problems: &mut Vec<String>,
) -> TierPartition {
    let (local_start_offset, log_end_offset) = local.unwrap_or((-1, -1));
    let mut seen = TierPartition {
        node_id,
        partition,
        remote_files: 0,
        remote_end_offset: 0,
        local_start_offset,
        log_end_offset,
        orphans: 0,
    };
    let at = format!("{topic}-{partition}");
    let dir = partition_dir(topic, partition);
    let manifest_path = dir.clone().join(MANIFEST_FILE_NAME);
    let manifest = match store.get(&manifest_path).await {
        Ok(result) => match result.bytes().await {
            Ok(bytes) => match Manifest::decode(&bytes, topic, partition) {
                Ok(manifest) => Some(manifest),
                Err(error) => {
                    problems.push(format!("{at}: bad manifest in the store: {error}"));
                    None
                }
            },
            Err(error) => {
                problems.push(format!("{at}: cannot read the manifest: {error}"));
                None
            }
        },
        Err(object_store::Error::NotFound { .. }) => None,
        Err(error) => {
            problems.push(format!("{at}: cannot read the manifest: {error}"));
            None
        }
    };
    let mut objects: Vec<(String, u64)> = Vec::new();
    let mut listing = store.list(Some(&dir));
    while let Some(item) = listing.next().await {
        match item {
            Ok(meta) => {
                if let Some(name) = meta.location.filename() {
                    objects.push((name.to_string(), meta.size));
                }
            }
            Err(error) => {
                problems.push(format!("{at}: cannot list the store: {error}"));
                break;
            }
        }
    }
    let files = manifest.map(|m| m.files).unwrap_or_default();
    seen.remote_files = files.len();
    let mut expected_base = 0;
    for file in &files {
        if file.base_offset != expected_base {
            problems.push(format!(
                "{at}: remote file {} starts at {}, expected {expected_base} (gap or overlap)",
                file.name, file.base_offset
            ));
        }
        if Manifest::parse_file_name(&file.name) != Some((file.base_offset, file.last_offset)) {
            problems.push(format!(
                "{at}: remote file {} does not name its offsets {}..={}",
                file.name, file.base_offset, file.last_offset
            ));
        }
        match objects.iter().find(|(name, _)| *name == file.name) {
            Some((_, size)) if *size == file.size_bytes => {}
            Some((_, size)) => problems.push(format!(
                "{at}: remote file {} has {size} bytes in the store, the manifest says {}",
                file.name, file.size_bytes
            )),
            None => problems.push(format!(
                "{at}: the manifest names {}, which is not in the store",
                file.name
            )),
        }
        expected_base = file.last_offset + 1;
    }
    seen.remote_end_offset = expected_base;
    seen.orphans = objects
        .iter()
        .filter(|(name, _)| {
            Manifest::parse_file_name(name).is_some() && !files.iter().any(|f| f.name == *name)
        })
        .count();
    if local_start_offset > seen.remote_end_offset {
        problems.push(format!(
            "{at}: broker-{node_id} holds offsets from {local_start_offset} locally but the store \
             only up to {}: offsets in between are nowhere",
            seen.remote_end_offset
        ));
    }
    seen
}

/// The end-of-run tier check: waits (until `deadline`) for offload to catch up in the healed
/// system, then checks the store ([`check_store`]).
pub async fn wait_for_offload(
    cluster: &SimCluster,
    topic: &str,
    partitions: i32,
    store: &SimObjectStore,
    deadline: Instant,
) -> TierReport {
    let started = Instant::now();
    let mut waited = None;
    let mut not_caught_up = None;
    loop {
        match offload_caught_up(cluster, topic, partitions) {
            Ok(()) => {
                waited = Some(started.elapsed().as_secs_f64());
                break;
            }
            Err(why) if Instant::now() >= deadline => {
                not_caught_up = Some(format!(
                    "offload did not catch up within {:.0} s: {why}",
                    started.elapsed().as_secs_f64()
                ));
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut report = check_store(cluster, topic, partitions, store).await;
    report.caught_up_after_s = waited;
    report.problems.splice(0..0, not_caught_up);
    report
}

/// Checks what the store holds for every partition of `topic`, read directly (`store` without
/// faults), against each running broker's local log: see [`TierReport`]; a problem if nothing
/// was offloaded at all. (`caught_up_after_s` is left `None`.)
pub async fn check_store(
    cluster: &SimCluster,
    topic: &str,
    partitions: i32,
    store: &SimObjectStore,
) -> TierReport {
    let mut report = TierReport::default();
    let direct = store.direct();
    for sim_broker in &cluster.brokers {
        let broker = sim_broker.broker.get();
        for partition in 0..partitions {
            let local = broker.as_ref().and_then(|b| {
                let t = b.topics().into_iter().find(|t| t.name() == topic)?;
                let p = t
                    .partitions()
                    .iter()
                    .find(|p| p.index() == partition)?
                    .clone();
                p.with_log(|log| Ok((log.log_start_offset(), log.log_end_offset())))
                    .ok()
            });
            let seen = check_store_partition(
                direct.as_ref(),
                topic,
                partition,
                sim_broker.node_id,
                local,
                &mut report.problems,
            )
            .await;
            report.partitions.push(seen);
        }
    }
    if report.partitions.iter().all(|p| p.remote_files == 0) {
        report
            .problems
            .push(format!("nothing of {topic} was offloaded"));
    }
    report
}

fn verdict_of(outcome: &SimOutcome) -> Verdict {
    if !outcome.report.valid {
        Verdict::Invalid(format!(
            "anomalies: {}",
            outcome.report.bad_anomaly_kinds.join(", ")
        ))
    } else if !outcome.final_read_complete {
        Verdict::Invalid("the final read did not reach the end of every partition".to_string())
    } else if let Some(problem) = outcome.tier.as_ref().and_then(|t| t.problems.first()) {
        Verdict::Invalid(format!("tier: {problem}"))
    } else {
        Verdict::Ok
    }
}

/// Runs the tier code path once per process, in a throwaway madsim runtime, before any seed.
///
/// arrow and parquet hash with `ahash`, whose process-wide random keys are drawn with
/// `getrandom` on first use; under madsim that draw comes from the running seed's RNG. Without
/// this warm-up the first seed of a process that reaches the tier code (encoding a segment,
/// reading it back) draws more from its RNG than the same seed run later in the process, and a
/// `replay` of a seed found by a `sweep` takes another schedule.
pub fn warm_up_process_globals() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let warmed = std::thread::Builder::new()
            .name("warm-up".to_string())
            .spawn(|| {
                let runtime = Runtime::with_seed_and_config(0, madsim::Config::default());
                runtime.block_on(tier_round_trip())
            })
            .expect("spawn the warm-up thread")
            .join();
        match warmed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("the tier warm-up failed: {error}"),
            Err(_) => panic!("the tier warm-up panicked"),
        }
    });
}

/// Encodes a two-record batch as a Parquet segment file, offloads it to an in-memory store and
/// reads it back: every library the broker's tier task and remote reads use.
async fn tier_round_trip() -> Result<(), String> {
    use strata_storage::batch::{Compression, TimestampType};
    use strata_storage::tier::parquet_file::{encode_segment, EncodeOptions};
    use strata_storage::tier::records::{encode_batch, BatchMeta, RecordRow};
    use strata_storage::tier::remote::{ReadCache, RemoteLog};

    let meta = BatchMeta {
        base_offset: 0,
        last_offset: 1,
        partition_leader_epoch: 0,
        compression: Compression::None,
        timestamp_type: TimestampType::CreateTime,
        producer_id: 1,
        producer_epoch: 0,
        base_sequence: 0,
    };
    let rows: Vec<RecordRow> = (0..2)
        .map(|offset| RecordRow {
            offset,
            timestamp_ms: 0,
            key: Some(bytes::Bytes::from_static(b"key")),
            value: (offset == 0).then(|| bytes::Bytes::from_static(b"value")),
            headers: vec![("header".to_string(), None)],
        })
        .collect();
    let batch = encode_batch(&meta, &rows).map_err(|e| e.to_string())?;
    let options = EncodeOptions {
        row_group_bytes_target: 1 << 20,
        topic: "warm-up".to_string(),
        partition: 0,
    };
    let file = encode_segment(&batch, &options).map_err(|e| e.to_string())?;
    let store = SimObjectStore::new().direct();
    let cache = std::sync::Arc::new(ReadCache::new(1 << 20));
    let remote = RemoteLog::open(store, cache, "warm-up", 0)
        .await
        .map_err(|e| e.to_string())?;
    remote.offload(file, 0).await.map_err(|e| e.to_string())?;
    let read = remote.read(0, 1 << 20).await.map_err(|e| e.to_string())?;
    if read.len() != batch.len() {
        return Err(format!(
            "read back {} bytes of a {}-byte batch",
            read.len(),
            batch.len()
        ));
    }
    Ok(())
}

/// Runs `scenario` with `seed` in a fresh madsim runtime on a thread of its own (one runtime
/// per thread keeps each run deterministic).
pub fn run_seed(seed: u64, scenario: &Scenario) -> SeedResult {
    warm_up_process_globals();
    let started = Instant::now();
    let name = scenario.name.to_string();
    let scenario = scenario.clone();
    let joined = std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || {
            let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
            runtime.set_time_limit(Duration::from_secs(TIME_LIMIT_S));
            runtime.block_on(simulate(scenario))
        })
        .expect("spawn the seed's thread")
        .join();
    let wall_s = started.elapsed().as_secs_f64();
    match joined {
        Ok(outcome) => SeedResult {
            seed,
            scenario: name,
            wall_s,
            verdict: verdict_of(&outcome),
            outcome: Some(outcome),
        },
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic without a message".to_string());
            SeedResult {
                seed,
                scenario: name,
                wall_s,
                outcome: None,
                verdict: Verdict::Panic(message),
            }
        }
    }
}

/// The header of the sweep table.
pub fn table_header() -> String {
    format!(
        "{:>20} {:<14} {:>8} {:>7} {:>6} {:>6} {:>16}  {}",
        "seed", "scenario", "sim_s", "wall_s", "ops", "faults", "trace_hash", "verdict"
    )
}

/// One row of the sweep table.
pub fn table_row(result: &SeedResult) -> String {
    let (sim_s, ops, faults, hash) = match &result.outcome {
        Some(o) => (
            format!("{:.1}", o.simulated_s),
            o.operations.to_string(),
            o.faults.to_string(),
            format!("{:016x}", o.trace_hash),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".repeat(16)),
    };
    let detail = match &result.verdict {
        Verdict::Ok => String::new(),
        Verdict::Invalid(why) | Verdict::Panic(why) => format!(" ({})", first_line(why)),
    };
    format!(
        "{:>20} {:<14} {:>8} {:>7.2} {:>6} {:>6} {:>16}  {}{}",
        result.seed,
        result.scenario,
        sim_s,
        result.wall_s,
        ops,
        faults,
        hash,
        result.verdict.word(),
        detail
    )
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The full replay report of one seed: nemesis log, history (JSON lines), checker report.
pub fn replay_report(result: &SeedResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", table_header());
    let _ = writeln!(out, "{}", table_row(result));
    match &result.outcome {
        None => {
            let _ = writeln!(out, "\nthe simulation panicked: {:?}", result.verdict);
        }
        Some(outcome) => {
            let _ = writeln!(out, "\n## nemesis ({} faults)", outcome.faults);
            for line in &outcome.nemesis_log {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out, "\n## history ({} entries)", outcome.history.len());
            let mut bytes = Vec::new();
            match outcome.history.write_jsonl(&mut bytes) {
                Ok(()) => out.push_str(&String::from_utf8_lossy(&bytes)),
                Err(error) => {
                    let _ = writeln!(out, "(cannot write the history: {error})");
                }
            }
            let _ = writeln!(
                out,
                "\n## stats\nnetwork messages: {}, disk operations: {}, final read complete: {}",
                outcome.net_messages, outcome.disk_ops, outcome.final_read_complete
            );
            for (node_id, stats) in outcome.disk_stats.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "disk of broker-{node_id}: {} crashes, {} bit flips, {} lost syncs, {} sync errors",
                    stats.crashes, stats.bit_flips, stats.lost_syncs, stats.sync_errors
                );
            }
            for (node_id, stats) in outcome.object_store_stats.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "object store of broker-{node_id}: {} requests, {} slow, {} failed, {} lost replies",
                    stats.requests, stats.slow, stats.errors, stats.lost_replies
                );
            }
            if let Some(tier) = &outcome.tier {
                let _ = writeln!(out, "\n## tier\n{tier}");
            }
            let _ = writeln!(out, "\n## checker\n{}", outcome.report);
            let _ = writeln!(out, "verdict: {:?}", result.verdict);
        }
    }
    out
}
