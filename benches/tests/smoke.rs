//! Smoke test of the load tool against an in-process broker on a temp dir: it must produce and
//! consume records and print a report that parses as JSON. No timing assertion.

use std::sync::Arc;
use std::time::Duration;

use strata_benches::{run, LoadConfig, Mode};
use strata_cluster::{Broker, BrokerConfig};
use strata_storage::{Clock, Disk, RealDisk, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A broker serving a temp dir on 127.0.0.1:0 until stopped.
struct TestBroker {
    bootstrap: String,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    async fn start() -> TestBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let config = BrokerConfig {
            listen: addr,
            data_dir: dir.path().join("data"),
            ..BrokerConfig::default()
        };
        let disk: Arc<dyn Disk> = Arc::new(RealDisk::new());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let broker = Broker::open(config, disk, clock)
            .await
            .expect("broker opens");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(strata_cluster::server::serve(
            broker,
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        TestBroker {
            bootstrap: addr.to_string(),
            stop: Some(stop),
            server,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server)
            .await
            .expect("server task")
            .expect("serve ends cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_for_two_seconds_produces_consumes_and_reports_json() {
    let broker = TestBroker::start().await;
    let config = LoadConfig {
        partitions: 2,
        duration: Some(Duration::from_secs(2)),
        // Bounded data: at most ~100k records of 100 B.
        throughput_records_per_s: Some(50_000.0),
        batch_records: 100,
        producers: 2,
        consumers: 2,
        ..LoadConfig::new(Mode::E2e, &broker.bootstrap, "smoke-e2e")
    };
    let report = run(config).await.expect("e2e run");
    let produce = report.produce.as_ref().expect("produce phase");
    let consume = report.consume.as_ref().expect("consume phase");
    assert!(produce.records > 0, "{report:?}");
    assert_eq!(
        consume.records, produce.records,
        "e2e drains everything it produced: {report:?}"
    );
    assert_eq!(produce.bytes, produce.records * 100);
    assert!(
        produce.records <= 2 * 50_000 + 2,
        "the target rate caps what 2 s can produce: {report:?}"
    );
    assert_eq!(produce.errors, 0, "{report:?}");
    let e2e = report.end_to_end_latency_ms.expect("e2e latency");
    assert_eq!(e2e.samples, consume.records);

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("report is JSON");
    assert_eq!(json["mode"], "e2e");
    assert_eq!(json["partitions"], 2);
    assert!(
        json["produce"]["records"]
            .as_u64()
            .expect("produce.records")
            > 0
    );
    assert!(
        json["consume"]["records"]
            .as_u64()
            .expect("consume.records")
            > 0
    );
    assert!(json["end_to_end_latency_ms"]["p99"].as_f64().is_some());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_acks_all_then_consume_reads_exactly_what_was_produced() {
    let broker = TestBroker::start().await;
    let produce = LoadConfig {
        partitions: 3,
        num_records: Some(5_000),
        record_size_bytes: 1024,
        acks: -1,
        idempotent: true,
        batch_records: 250,
        producers: 2,
        ..LoadConfig::new(Mode::Produce, &broker.bootstrap, "smoke-pc")
    };
    let report = run(produce).await.expect("produce run");
    let produced = report.produce.expect("produce phase");
    assert_eq!(
        produced.records, 5_000,
        "a count-bounded run sends exactly the count"
    );
    assert_eq!(produced.bytes, 5_000 * 1024);
    assert!(produced.latency_ms.samples == 5_000 && produced.latency_ms.max > 0.0);
    assert!(report.consume.is_none());

    let consume = LoadConfig {
        consumers: 2,
        ..LoadConfig::new(Mode::Consume, &broker.bootstrap, "smoke-pc")
    };
    let report = run(consume).await.expect("consume run");
    assert_eq!(
        report.partitions, 3,
        "the topic was created with --partitions"
    );
    let consumed = report.consume.clone().expect("consume phase");
    assert_eq!(consumed.records, 5_000);
    assert_eq!(consumed.bytes, 5_000 * 1024);
    assert!(report.produce.is_none());
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("report is JSON");
    assert_eq!(json["consume"]["records"], 5_000);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_of_a_missing_topic_fails_instead_of_waiting() {
    let broker = TestBroker::start().await;
    let config = LoadConfig::new(Mode::Consume, &broker.bootstrap, "no-such-topic");
    let error = run(config).await.expect_err("missing topic");
    assert!(format!("{error:#}").contains("no-such-topic"), "{error:#}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_round_trip_through_the_load_tool() {
    let broker = TestBroker::start().await;
    let produce = LoadConfig {
        num_records: Some(2_000),
        record_size_bytes: 200,
        // acks=all: the consume run reads up to the high watermark, which is the durable end.
        acks: -1,
        compression: strata_cluster::client::Compression::Lz4,
        batch_records: 300,
        ..LoadConfig::new(Mode::Produce, &broker.bootstrap, "smoke-lz4")
    };
    let report = run(produce).await.expect("produce run");
    assert_eq!(report.produce.as_ref().map(|p| p.records), Some(2_000));
    assert_eq!(
        report
            .producer_settings
            .as_ref()
            .map(|s| s.compression.as_str()),
        Some("lz4")
    );
    let consume = LoadConfig {
        num_records: Some(2_000),
        ..LoadConfig::new(Mode::Consume, &broker.bootstrap, "smoke-lz4")
    };
    let report = run(consume).await.expect("consume run");
    let consumed = report.consume.expect("consume phase");
    assert_eq!(consumed.records, 2_000);
    assert_eq!(
        consumed.bytes,
        2_000 * 200,
        "values decompress to their size"
    );
    broker.stop().await;
}

/// Pipelined producers (`--max-in-flight 4`): every record is acknowledged once, lands once,
/// and the consumer reads back exactly what was produced. Settings the mode cannot honour are
/// refused up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_producers_write_every_record_once() {
    let broker = TestBroker::start().await;
    let produce = LoadConfig {
        partitions: 2,
        num_records: Some(6_000),
        record_size_bytes: 512,
        acks: -1,
        batch_records: 100,
        producers: 2,
        max_in_flight: 4,
        ..LoadConfig::new(Mode::Produce, &broker.bootstrap, "smoke-pipelined")
    };
    let report = run(produce.clone()).await.expect("pipelined produce run");
    let produced = report.produce.expect("produce phase");
    assert_eq!(produced.records, 6_000, "{produced:?}");
    assert_eq!(produced.errors, 0, "{produced:?}");
    assert_eq!(produced.latency_ms.samples, 6_000);

    let consume = LoadConfig {
        consumers: 2,
        ..LoadConfig::new(Mode::Consume, &broker.bootstrap, "smoke-pipelined")
    };
    let consumed = run(consume)
        .await
        .expect("consume run")
        .consume
        .expect("consume phase");
    assert_eq!(consumed.records, 6_000, "nothing written twice or lost");
    assert_eq!(consumed.bytes, 6_000 * 512);

    for refused in [
        LoadConfig {
            throughput_records_per_s: Some(1000.0),
            ..produce.clone()
        },
        LoadConfig {
            idempotent: true,
            ..produce.clone()
        },
        LoadConfig {
            acks: 0,
            ..produce.clone()
        },
        LoadConfig {
            max_in_flight: 0,
            ..produce.clone()
        },
    ] {
        assert!(refused.validate().is_err(), "{refused:?}");
    }
    broker.stop().await;
}
