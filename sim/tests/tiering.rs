//! Goal: tiered storage holds up under the simulator. Seeds of the `tiered` scenario (kills,
//! disk sync failures, clock jumps and client clogs next to object-store outages, error bursts,
//! latency and lost replies) lose no acknowledged write, offload catches up once healed, the hot
//! tier was really trimmed (so the final read from offset 0 went through the object store), and
//! a seed replays to the same trace hash. The end-of-run tier check itself is shown to fail on a
//! store that lost a file or holds a damaged manifest.
//!
//! Run: `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-sim cargo test -p strata-sim --test tiering`.
#![cfg(madsim)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use madsim::runtime::{Handle, Runtime};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use strata_cluster::client::{Producer, ProducerConfig, Record};
use strata_sim::clock::SimClock;
use strata_sim::disk::{DiskFaults, FaultyDisk};
use strata_sim::object_store::{ObjectStoreFaults, SimObjectStore};
use strata_sim::run::{
    check_store, run_seed, simulate, tiered_topic_configs, wait_for_offload, Scenario,
};
use strata_sim::trace::Trace;
use strata_sim::workload::{client_ip, connect, create_topic, WorkloadConfig};
use strata_sim::SimCluster;

/// Seeds of `tiered` in this test (the sweep in `sweep.rs` runs more).
const SEEDS: std::ops::Range<u64> = 30_000..30_004;

#[test]
fn tiered_seeds_lose_nothing_and_read_back_through_the_object_store() {
    let scenario = Scenario::named("tiered").expect("scenario");
    let mut store_errors = 0;
    let mut store_requests = 0;
    for seed in SEEDS {
        let result = run_seed(seed, &scenario);
        let replay = format!("sim/run replay --seed {seed} --scenario tiered");
        assert!(result.verdict.is_ok(), "{replay}: {:?}", result.verdict);
        let outcome = result.outcome.as_ref().expect("outcome of a passing seed");
        assert!(outcome.final_read_complete, "{replay}");
        assert!(outcome.faults > 0, "{replay}: no fault injected");
        let tier = outcome
            .tier
            .as_ref()
            .expect("a tiered run has a tier report");
        assert!(tier.problems.is_empty(), "{replay}: {tier}");
        assert!(tier.caught_up_after_s.is_some(), "{replay}: {tier}");
        assert_eq!(tier.partitions.len(), 3, "{replay}: {tier}");
        for partition in &tier.partitions {
            // The hot tier was trimmed: offsets below the local start exist only in the
            // store, and the final read (from offset 0, checked by the checker) read them.
            assert!(partition.remote_files > 0, "{replay}: {tier}");
            assert!(partition.local_start_offset > 0, "{replay}: {tier}");
            assert!(
                partition.remote_end_offset >= partition.local_start_offset,
                "{replay}: {tier}"
            );
        }
        for stats in &outcome.object_store_stats {
            store_errors += stats.errors;
            store_requests += stats.requests;
        }
    }
    assert!(
        store_requests > 0,
        "the brokers never used the object store"
    );
    assert!(store_errors > 0, "no object-store request ever failed");
}

#[test]
fn a_tiered_seed_replays_to_the_same_trace_hash() {
    let scenario = Scenario::named("tiered").expect("scenario");
    let first = run_seed(31_000, &scenario);
    assert!(first.verdict.is_ok(), "{:?}", first.verdict);
    let second = run_seed(31_000, &scenario);
    let (a, b) = (
        first.outcome.as_ref().expect("outcome"),
        second.outcome.as_ref().expect("outcome"),
    );
    assert_eq!(
        a.trace_hash, b.trace_hash,
        "tiered seed 31000 is not deterministic"
    );
    assert_eq!(a.history, b.history);
    assert_eq!(a.tier, b.tier);
    assert_eq!(a.object_store_stats, b.object_store_stats);
    let other = run_seed(31_001, &scenario);
    assert_ne!(
        a.trace_hash,
        other.outcome.expect("outcome").trace_hash,
        "two seeds gave the same trace"
    );
}

#[test]
fn madsim_determinism_check_passes_on_the_tiered_scenario() {
    // Runs the seed twice and compares every draw from madsim's RNG; panics on divergence.
    let outcome = Runtime::check_determinism(43, madsim::Config::default(), || {
        simulate(Scenario::named("tiered").expect("scenario"))
    });
    assert!(outcome.report.valid, "{}", outcome.report);
    let tier = outcome.tier.expect("a tiered run has a tier report");
    assert!(tier.problems.is_empty(), "{tier}");
}

/// One broker tiering `workload.topic` to `store` without injected faults; `count` records
/// produced to each partition. Returns the cluster once offload caught up.
async fn tiered_broker_with_records(
    store: &SimObjectStore,
    workload: &WorkloadConfig,
    count: usize,
) -> SimCluster {
    let handle = Handle::current();
    let trace = Trace::new();
    let disk = FaultyDisk::new(DiskFaults::default(), 1, trace.clone());
    let faulty = store.faulty(ObjectStoreFaults::default(), 2, Some(trace));
    let cluster = SimCluster::start_with_stores(
        &handle,
        vec![(disk, SimClock::new(0, 0), Some(faulty))],
        |config| config.tier_interval_ms = 100,
    );
    let bootstrap = cluster.bootstrap();
    let client_node = handle.create_node().name("client").ip(client_ip(0)).build();
    let workload_for_client = workload.clone();
    client_node
        .spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            create_topic(&bootstrap, &workload_for_client, deadline)
                .await
                .expect("topic created");
            let client = connect(&bootstrap, Default::default(), deadline)
                .await
                .expect("client connects");
            let producer = Producer::new(
                client,
                ProducerConfig {
                    acks: -1,
                    ..ProducerConfig::default()
                },
            )
            .expect("producer config");
            for i in 0..count {
                for partition in 0..workload_for_client.partitions {
                    let record = Record::from_value(Bytes::from(format!("{partition}-{i}")));
                    producer
                        .send_batch(&workload_for_client.topic, partition, vec![record])
                        .await
                        .expect("acknowledged");
                }
            }
        })
        .await
        .expect("client task");
    cluster
}

#[madsim::test]
async fn the_tier_check_catches_a_lost_file_and_a_damaged_manifest() {
    let store = SimObjectStore::new();
    let workload = WorkloadConfig {
        topic: "archive".to_string(),
        partitions: 2,
        topic_configs: tiered_topic_configs(),
        ..WorkloadConfig::default()
    };
    // 200 batches per partition of ~80 bytes: several 4 KiB segments each.
    let cluster = tiered_broker_with_records(&store, &workload, 200).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = wait_for_offload(&cluster, &workload.topic, 2, &store, deadline).await;
    assert!(report.problems.is_empty(), "{report}");
    assert!(report.caught_up_after_s.is_some(), "{report}");
    for partition in &report.partitions {
        assert!(partition.remote_files >= 2, "{report}");
        assert!(partition.local_start_offset > 0, "{report}");
        assert_eq!(
            partition.remote_end_offset, partition.local_start_offset,
            "local.retention.bytes=0 keeps only the active segment: {report}"
        );
    }

    // A topic that was never offloaded is a problem (nothing to show for the scenario).
    let nothing = check_store(&cluster, "no-such-topic", 1, &store).await;
    assert!(
        nothing
            .problems
            .iter()
            .any(|p| p.contains("nothing of no-such-topic")),
        "{nothing}"
    );

    // Partition 0 loses a file the manifest names.
    let direct = store.direct();
    let lost = Path::from("archive/partition=0/00000000000000000000-00000000000000000000.parquet");
    let listed = direct
        .list_with_delimiter(Some(&Path::from("archive/partition=0")))
        .await
        .expect("list");
    let first_file = listed
        .objects
        .iter()
        .map(|m| m.location.clone())
        .find(|l| l.as_ref().ends_with(".parquet"))
        .unwrap_or(lost);
    direct.delete(&first_file).await.expect("delete");
    let report = check_store(&cluster, &workload.topic, 2, &store).await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("archive-0") && p.contains("not in the store")),
        "{report}"
    );
    assert!(
        report.problems.iter().all(|p| !p.contains("archive-1")),
        "partition 1 is intact: {report}"
    );

    // Partition 1's manifest is overwritten with garbage: it names nothing readable, and the
    // broker holds offsets locally only from above the store's (now unknown) end.
    direct
        .put(
            &Path::from("archive/partition=1/manifest.json"),
            PutPayload::from_static(b"{not json"),
        )
        .await
        .expect("put");
    let report = check_store(&cluster, &workload.topic, 2, &store).await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("archive-1") && p.contains("bad manifest")),
        "{report}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("archive-1") && p.contains("are nowhere")),
        "{report}"
    );
}
