//! Goal: the simulator's object store (`strata_sim::object_store`) behaves as its fault model
//! says, under madsim: faults follow the seed deterministically, a failed multipart upload never
//! leaves a visible object, objects written from a node survive that node's crash, and latency
//! advances simulated time.
//!
//! Run: `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-sim cargo test -p strata-sim --test object_store`
#![cfg(madsim)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use madsim::runtime::{Handle, Runtime};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use strata_sim::object_store::{FaultyObjectStore, ObjectStoreFaults, SimObjectStore};

fn faults() -> ObjectStoreFaults {
    ObjectStoreFaults {
        latency_ms: 5..50,
        slow_rate: 0.1,
        slow_part_rate: 0.2,
        slow_ms: 2_000,
        error_rate: 0.2,
        part_error_rate: 0.2,
        lost_reply_rate: 0.1,
    }
}

/// Runs `f` in a fresh madsim runtime with `seed` on a thread of its own (one runtime per
/// thread keeps runs deterministic).
fn simulate<T: Send + 'static>(
    seed: u64,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(f())
    })
    .join()
    .expect("simulation thread")
}

/// A fixed sequence of requests; returns each outcome (ok or the error) and when it finished.
async fn request_log(store: &FaultyObjectStore) -> Vec<String> {
    let start = Instant::now();
    let mut log = Vec::new();
    for i in 0..40 {
        let path = Path::from(format!("log/{i}"));
        let put = store
            .put(&path, PutPayload::from(format!("v{i}").into_bytes()))
            .await;
        let got = store.get(&path).await;
        let got = match got {
            Ok(result) => result.bytes().await.map(|b| b.len()),
            Err(e) => Err(e),
        };
        log.push(format!(
            "{i} put {:?} get {:?} at {} ms",
            put.map(|_| ()).map_err(|e| e.to_string()),
            got.map_err(|e| e.to_string()),
            start.elapsed().as_millis()
        ));
    }
    log
}

fn seeded_log(seed: u64) -> (Vec<String>, u64) {
    simulate(seed, move || {
        Box::pin(async move {
            let store = SimObjectStore::new().faulty(faults(), seed, None);
            let log = request_log(&store).await;
            (log, store.stats().errors)
        })
    })
}

#[test]
fn faults_follow_the_seed() {
    let (a, errors_a) = seeded_log(7);
    let (b, errors_b) = seeded_log(7);
    assert_eq!(a, b, "the same seed gives the same faults and timings");
    assert_eq!(errors_a, errors_b);
    assert!(
        errors_a > 0,
        "a 20% error rate over 80 requests injected nothing"
    );
    let (c, _) = seeded_log(8);
    assert_ne!(a, c, "another seed gives other faults");
}

#[test]
fn latency_advances_simulated_time() {
    simulate(1, || {
        Box::pin(async {
            let faults = ObjectStoreFaults {
                latency_ms: 100..101,
                ..ObjectStoreFaults::default()
            };
            let store = SimObjectStore::new().faulty(faults, 1, None);
            let path = Path::from("slow/object");
            let wall = std::time::SystemTime::now();
            let start = Instant::now();
            store
                .put(&path, PutPayload::from_static(b"x"))
                .await
                .expect("no errors configured");
            store.get(&path).await.expect("no errors configured");
            let elapsed = start.elapsed();
            assert!(
                elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(210),
                "two requests of 100 ms took {elapsed:?} of simulated time"
            );
            // Simulated: `SystemTime` moves with the simulation, not with the real clock.
            let moved = wall.elapsed().expect("simulated time moves forward");
            assert!(moved >= Duration::from_millis(200));
        })
    });
}

#[test]
fn a_failed_multipart_upload_never_leaves_an_object() {
    simulate(3, || {
        Box::pin(async {
            let shared = SimObjectStore::new();
            let faults = ObjectStoreFaults {
                part_error_rate: 0.3,
                error_rate: 0.2,
                slow_part_rate: 0.2,
                slow_ms: 500,
                latency_ms: 1..20,
                ..ObjectStoreFaults::default()
            };
            let store = shared.faulty(faults, 3, None);
            let direct = shared.direct();
            let (mut completed, mut failed) = (0, 0);
            for i in 0..60 {
                let path = Path::from(format!("upload/{i}"));
                let Ok(mut upload) = store.put_multipart(&path).await else {
                    failed += 1;
                    assert!(
                        direct.head(&path).await.is_err(),
                        "{path} exists after a failed create"
                    );
                    continue;
                };
                let mut parts_ok = true;
                for part in 0..3u8 {
                    let data = PutPayload::from(vec![part; 1000]);
                    parts_ok &= upload.put_part(data).await.is_ok();
                }
                match upload.complete().await {
                    Ok(_) => {
                        assert!(parts_ok, "{path}: completed although a part failed");
                        completed += 1;
                        let bytes = direct.get(&path).await.expect("completed").bytes().await;
                        assert_eq!(bytes.expect("read").len(), 3000, "{path}: whole object");
                    }
                    Err(_) => {
                        failed += 1;
                        assert!(
                            direct.head(&path).await.is_err(),
                            "{path}: a failed upload left a visible object"
                        );
                        assert!(direct.list(Some(&path)).next().await.is_none());
                    }
                }
            }
            assert!(
                completed > 5 && failed > 5,
                "{completed} completed, {failed} failed"
            );
        })
    });
}

fn store_node_ip() -> IpAddr {
    IpAddr::from([10, 0, 3, 1])
}

#[test]
fn objects_survive_the_crash_of_the_node_that_wrote_them() {
    simulate(5, || {
        Box::pin(async {
            let handle = Handle::current();
            let shared = SimObjectStore::new();
            let store: Arc<dyn ObjectStore> = Arc::new(shared.faulty(
                ObjectStoreFaults {
                    latency_ms: 10..20,
                    ..ObjectStoreFaults::default()
                },
                5,
                None,
            ));
            let node = handle
                .create_node()
                .name("tiering-node")
                .ip(store_node_ip())
                .build();
            let writer = store.clone();
            node.spawn(async move {
                writer
                    .put(&Path::from("seg/0"), PutPayload::from_static(b"durable"))
                    .await
                    .expect("put");
                // An upload that never completes: the node dies in the middle of it.
                let mut upload = writer
                    .put_multipart(&Path::from("seg/1"))
                    .await
                    .expect("create");
                upload
                    .put_part(PutPayload::from_static(b"half"))
                    .await
                    .expect("part");
                std::future::pending::<()>().await;
            });
            tokio::time::sleep(Duration::from_secs(1)).await;
            handle.kill(node.id());
            tokio::time::sleep(Duration::from_millis(100)).await;
            handle.restart(node.id());
            let node = handle.get_node(node.id()).expect("restarted node");
            let reader = store.clone();
            let read = node
                .spawn(async move {
                    let bytes = reader.get(&Path::from("seg/0")).await?.bytes().await?;
                    let half = reader.head(&Path::from("seg/1")).await;
                    Ok::<_, object_store::Error>((bytes, half.is_err()))
                })
                .await
                .expect("reader task");
            let (bytes, upload_invisible) = read.expect("read after the crash");
            assert_eq!(bytes, Bytes::from_static(b"durable"));
            assert!(
                upload_invisible,
                "the killed node's unfinished upload is not visible"
            );
        })
    });
}

#[test]
fn lost_replies_take_effect_and_outages_do_not() {
    simulate(9, || {
        Box::pin(async {
            let shared = SimObjectStore::new();
            let direct = shared.direct();
            let lossy = shared.faulty(
                ObjectStoreFaults {
                    lost_reply_rate: 1.0,
                    ..ObjectStoreFaults::default()
                },
                9,
                None,
            );
            let path = Path::from("ambiguous");
            assert!(lossy
                .put(&path, PutPayload::from_static(b"a"))
                .await
                .is_err());
            assert!(
                direct.head(&path).await.is_ok(),
                "a lost reply's put took effect"
            );
            assert_eq!(lossy.stats().lost_replies, 1);

            let store = shared.faulty(ObjectStoreFaults::default(), 9, None);
            store.set_outage(true);
            let path = Path::from("during-outage");
            assert!(store
                .put(&path, PutPayload::from_static(b"b"))
                .await
                .is_err());
            assert!(
                direct.head(&path).await.is_err(),
                "a put during an outage has no effect"
            );
            assert!(store.list(None).next().await.expect("one item").is_err());
            let existing = Path::from("ambiguous");
            assert!(store.delete(&existing).await.is_err());
            assert!(
                direct.head(&existing).await.is_ok(),
                "a delete during an outage has no effect"
            );
            store.set_outage(false);
            store
                .put(&path, PutPayload::from_static(b"b"))
                .await
                .expect("the outage is over");
            assert_eq!(store.stats().errors, 3);
            store.delete(&existing).await.expect("the outage is over");
            assert!(direct.head(&existing).await.is_err(), "deleted");
        })
    });
}
