//! Object storage for the simulator: one shared in-memory object store that lives outside every
//! node, wrapped by [`FaultyObjectStore`] to inject seeded latency, errors, lost replies and slow
//! or failed multipart uploads.
//!
//! Every simulated broker of a run with an object store (the `tiered` and `mixed` scenarios) gets
//! an `Arc<dyn ObjectStore>` (its own [`FaultyObjectStore`] over the run's one
//! [`SimObjectStore`]) exactly as it would get an S3 client in production, and tiers to it.
//!
//! # Fault model
//!
//! - **Durability.** The objects live in `object_store`'s `InMemory`, owned by the harness, not
//!   by any node: a node that crashes, restarts or is partitioned away loses nothing it wrote
//!   (an acknowledged `put` or multipart `complete` is durable, as in S3). What a crash does lose
//!   is the node's own state: a multipart upload in flight when its node dies is never
//!   completed, so its object never appears.
//! - **Atomic visibility.** A `put` or a multipart upload becomes visible whole, at once, or not
//!   at all. A multipart upload whose parts or `complete` failed, or that was aborted or dropped,
//!   never leaves a visible object (nor a partial one).
//! - **Latency.** Every request (each put, get, head, delete, copy, listing, multipart create,
//!   part and complete) first waits a latency drawn from [`ObjectStoreFaults::latency_ms`]; with
//!   probability [`ObjectStoreFaults::slow_rate`] it is a slow request and waits
//!   [`ObjectStoreFaults::slow_ms`] more (a multipart part is slow with
//!   [`ObjectStoreFaults::slow_part_rate`]). The waits are simulated time.
//! - **Errors.** After its latency a request fails with probability
//!   [`ObjectStoreFaults::error_rate`] (a multipart part with
//!   [`ObjectStoreFaults::part_error_rate`]) and has no effect: the error is certain.
//! - **Lost replies.** With probability [`ObjectStoreFaults::lost_reply_rate`] a `put` or
//!   `copy` takes effect and then fails (the reply was lost): the caller cannot tell it from an
//!   error without effect, as with a timed-out S3 request. A multipart `complete` is never
//!   ambiguous here, so a failed upload never leaves an object; nor is a delete.
//! - **Outages.** [`FaultyObjectStore::set_outage`] makes every request fail without effect (after
//!   its latency) until it is turned off: the nemesis's "object store unavailable" window.
//! - **Bursts.** [`FaultyObjectStore::set_faults`] replaces the rates for the requests that
//!   arrive from then on (the nemesis's error bursts, latency spikes and lost-reply windows).
//! - Deletes (`delete`, `delete_stream`) are one request per location: each waits its latency
//!   and may fail without effect. Listings (`list`, `list_with_offset`) fail as a whole (the
//!   stream yields one error and ends) with the error probability or during an outage, without
//!   latency.
//!
//! Every draw comes from one RNG seeded at creation, in the order requests arrive, so under
//! madsim a seed gives the same faults every run. Each request and its outcome also goes into
//! the run's trace hash when the store has a [`Trace`].

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use crate::rng::SimRng;
use crate::trace::Trace;

/// The name errors of this store carry (`object_store::Error::Generic::store`).
pub const STORE_NAME: &str = "SimObjectStore";

/// Seeded fault rates of a [`FaultyObjectStore`]; the default injects nothing and has no latency.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStoreFaults {
    /// Latency of every request, in ms (uniform; an empty range means none).
    pub latency_ms: Range<u64>,
    /// Probability that a request (not a multipart part) is slow.
    pub slow_rate: f64,
    /// Probability that a multipart part is slow.
    pub slow_part_rate: f64,
    /// Extra latency of a slow request or part, in ms.
    pub slow_ms: u64,
    /// Probability that a request (not a part) fails without effect.
    pub error_rate: f64,
    /// Probability that a multipart part fails (the upload cannot complete).
    pub part_error_rate: f64,
    /// Probability that a `put` or `copy` takes effect and then reports an error.
    pub lost_reply_rate: f64,
}

impl Default for ObjectStoreFaults {
    fn default() -> Self {
        ObjectStoreFaults {
            latency_ms: 0..0,
            slow_rate: 0.0,
            slow_part_rate: 0.0,
            slow_ms: 0,
            error_rate: 0.0,
            part_error_rate: 0.0,
            lost_reply_rate: 0.0,
        }
    }
}

/// What a [`FaultyObjectStore`] injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectStoreStats {
    /// Requests (including multipart parts).
    pub requests: u64,
    /// Requests and parts that were slow.
    pub slow: u64,
    /// Requests and parts that failed without effect (outages included).
    pub errors: u64,
    /// Requests that took effect and reported an error.
    pub lost_replies: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    slow: AtomicU64,
    errors: AtomicU64,
    lost_replies: AtomicU64,
}

/// What the fault draw decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Carry it out and report the outcome.
    Succeed,
    /// Fail without effect.
    Fail,
    /// Carry it out, then report an error.
    LoseReply,
}

struct Shared {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<ObjectStoreFaults>,
    rng: Mutex<SimRng>,
    outage: AtomicBool,
    counters: Counters,
    trace: Option<Trace>,
}

impl Shared {
    /// Draws a request's delay and fate (in arrival order, so deterministic per seed).
    fn draw(&self, part: bool, may_lose_reply: bool) -> (Duration, Fate) {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let f = self
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut delay_ms = if f.latency_ms.is_empty() {
            0
        } else {
            rng.range(f.latency_ms.clone())
        };
        let slow = rng.chance(if part { f.slow_part_rate } else { f.slow_rate });
        if slow {
            delay_ms += f.slow_ms;
            self.counters.slow.fetch_add(1, Ordering::Relaxed);
        }
        let fail = rng.chance(if part {
            f.part_error_rate
        } else {
            f.error_rate
        });
        let lose = may_lose_reply && rng.chance(f.lost_reply_rate);
        let fate = if fail || self.outage.load(Ordering::SeqCst) {
            Fate::Fail
        } else if lose {
            Fate::LoseReply
        } else {
            Fate::Succeed
        };
        (Duration::from_millis(delay_ms), fate)
    }

    /// Waits the request's latency and decides its fate; the outage is checked after the wait,
    /// so an outage that starts while a request is in flight fails it.
    async fn admit(&self, op: &str, location: &str, part: bool, may_lose_reply: bool) -> Fate {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let (delay, drawn) = self.draw(part, may_lose_reply);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let fate = if self.outage.load(Ordering::SeqCst) {
            Fate::Fail
        } else {
            drawn
        };
        match fate {
            Fate::Fail => self.counters.errors.fetch_add(1, Ordering::Relaxed),
            Fate::LoseReply => self.counters.lost_replies.fetch_add(1, Ordering::Relaxed),
            Fate::Succeed => 0,
        };
        self.record(op, location, &format!("{fate:?}"));
        fate
    }

    fn record(&self, op: &str, location: &str, outcome: &str) {
        if let Some(trace) = &self.trace {
            trace.event(
                "object-store",
                &[op.as_bytes(), location.as_bytes(), outcome.as_bytes()],
            );
        }
    }
}

fn injected(op: &str, location: &str, what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE_NAME,
        source: format!("injected fault: {op} {location}: {what}").into(),
    }
}

/// Runs `call` under the fate `admit` drew: a `Fail` never reaches the inner store.
async fn faulted<T, F>(
    shared: &Shared,
    op: &str,
    location: &str,
    lose: bool,
    call: F,
) -> object_store::Result<T>
where
    F: std::future::Future<Output = object_store::Result<T>>,
{
    match shared.admit(op, location, false, lose).await {
        Fate::Fail => Err(injected(op, location, "request failed")),
        Fate::Succeed => call.await,
        Fate::LoseReply => {
            call.await?;
            Err(injected(
                op,
                location,
                "reply lost after the request took effect",
            ))
        }
    }
}

/// Panics unless every rate of `faults` is a probability (a harness bug).
fn check_rates(faults: &ObjectStoreFaults) {
    for rate in [
        faults.slow_rate,
        faults.slow_part_rate,
        faults.error_rate,
        faults.part_error_rate,
        faults.lost_reply_rate,
    ] {
        assert!(
            (0.0..=1.0).contains(&rate),
            "fault rates are probabilities: {faults:?}"
        );
    }
}

/// A shared in-memory object store that survives node crashes: create one per simulated run
/// (outside any node) and hand clones of [`SimObjectStore::faulty`] wrappers to the nodes.
#[derive(Debug, Clone)]
pub struct SimObjectStore {
    memory: Arc<InMemory>,
}

impl Default for SimObjectStore {
    fn default() -> Self {
        SimObjectStore::new()
    }
}

impl SimObjectStore {
    /// An empty store.
    pub fn new() -> SimObjectStore {
        SimObjectStore {
            memory: Arc::new(InMemory::new()),
        }
    }

    /// The store without faults (for the harness and the checker: what is really stored).
    pub fn direct(&self) -> Arc<dyn ObjectStore> {
        self.memory.clone()
    }

    /// A view of the store that injects `faults`, drawn from `seed`.
    pub fn faulty(
        &self,
        faults: ObjectStoreFaults,
        seed: u64,
        trace: Option<Trace>,
    ) -> FaultyObjectStore {
        FaultyObjectStore::new(self.memory.clone(), faults, seed, trace)
    }
}

/// An [`ObjectStore`] that delegates to another one, injecting the faults of the module's fault
/// model. Clones share the RNG, the outage switch and the counters.
#[derive(Clone)]
pub struct FaultyObjectStore {
    shared: Arc<Shared>,
}

impl FaultyObjectStore {
    /// Wraps `inner`; the faults are drawn from `seed`; requests go into `trace` if given.
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        faults: ObjectStoreFaults,
        seed: u64,
        trace: Option<Trace>,
    ) -> FaultyObjectStore {
        check_rates(&faults);
        FaultyObjectStore {
            shared: Arc::new(Shared {
                inner,
                faults: Mutex::new(faults),
                rng: Mutex::new(SimRng::new(seed)),
                outage: AtomicBool::new(false),
                counters: Counters::default(),
                trace,
            }),
        }
    }

    /// Starts (`true`) or ends an outage: meanwhile every request fails without effect.
    pub fn set_outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::SeqCst);
        self.shared
            .record("outage", "", if on { "on" } else { "off" });
    }

    /// The fault rates in force.
    pub fn faults(&self) -> ObjectStoreFaults {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the fault rates: requests that arrive from now on draw from `faults` (requests
    /// already waiting their latency keep the fate they drew, except that an outage fails them).
    pub fn set_faults(&self, faults: ObjectStoreFaults) {
        check_rates(&faults);
        self.shared.record("faults", "", &format!("{faults:?}"));
        *self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// What was injected so far.
    pub fn stats(&self) -> ObjectStoreStats {
        let c = &self.shared.counters;
        ObjectStoreStats {
            requests: c.requests.load(Ordering::Relaxed),
            slow: c.slow.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            lost_replies: c.lost_replies.load(Ordering::Relaxed),
        }
    }

    /// A stream call's fault: one error and the end, or the inner stream.
    fn stream_fault<T: Send + 'static>(
        &self,
        op: &str,
        location: &str,
        inner: impl FnOnce() -> BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        self.shared
            .counters
            .requests
            .fetch_add(1, Ordering::Relaxed);
        let (_, fate) = self.shared.draw(false, false);
        self.shared.record(op, location, &format!("{fate:?}"));
        if fate == Fate::Fail {
            self.shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            stream::once(std::future::ready(Err(injected(
                op,
                location,
                "request failed",
            ))))
            .boxed()
        } else {
            inner()
        }
    }
}

impl fmt::Debug for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyObjectStore")
            .field("faults", &self.faults())
            .field("outage", &self.shared.outage.load(Ordering::SeqCst))
            .field("stats", &self.stats())
            .finish()
    }
}

impl fmt::Display for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjectStore({})", self.shared.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let call = self.shared.inner.put_opts(location, payload, opts);
        faulted(&self.shared, "put", location.as_ref(), true, call).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let call = self.shared.inner.put_multipart_opts(location, opts);
        let upload = faulted(
            &self.shared,
            "multipart-create",
            location.as_ref(),
            false,
            call,
        )
        .await?;
        Ok(Box::new(FaultyUpload {
            shared: self.shared.clone(),
            location: location.to_string(),
            inner: upload,
            part_failed: Arc::new(AtomicBool::new(false)),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let call = self.shared.inner.get_opts(location, options);
        faulted(&self.shared, "get", location.as_ref(), false, call).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let call = self.shared.inner.get_ranges(location, ranges);
        faulted(&self.shared, "get-ranges", location.as_ref(), false, call).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // Each location is a request of its own (`ObjectStoreExt::delete` is a one-item
        // stream): it waits its latency and may fail; a failed one never reaches the inner
        // store, which passes the error on in its place.
        let shared = self.shared.clone();
        let admitted = locations
            .then(move |location| {
                let shared = shared.clone();
                async move {
                    let path = location?;
                    match shared.admit("delete", path.as_ref(), false, false).await {
                        Fate::Fail => Err(injected("delete", path.as_ref(), "request failed")),
                        Fate::Succeed | Fate::LoseReply => Ok(path),
                    }
                }
            })
            .boxed();
        self.shared.inner.delete_stream(admitted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let location = prefix.map(|p| p.to_string()).unwrap_or_default();
        self.stream_fault("list", &location, || self.shared.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let location = prefix.map(|p| p.to_string()).unwrap_or_default();
        self.stream_fault("list-with-offset", &location, || {
            self.shared.inner.list_with_offset(prefix, offset)
        })
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let location = prefix.map(|p| p.to_string()).unwrap_or_default();
        let call = self.shared.inner.list_with_delimiter(prefix);
        faulted(&self.shared, "list-with-delimiter", &location, false, call).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let call = self.shared.inner.copy_opts(from, to, options);
        faulted(&self.shared, "copy", to.as_ref(), true, call).await
    }
}

/// A multipart upload through a [`FaultyObjectStore`]: parts may be slow or fail; once a part
/// failed, `complete` fails without effect (the object never appears), as S3 refuses to complete
/// an upload with a missing part.
struct FaultyUpload {
    shared: Arc<Shared>,
    location: String,
    inner: Box<dyn MultipartUpload>,
    /// Set by a failed part (parts run as independent futures).
    part_failed: Arc<AtomicBool>,
}

impl fmt::Debug for FaultyUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyUpload")
            .field("location", &self.location)
            .field("part_failed", &self.part_failed.load(Ordering::SeqCst))
            .finish()
    }
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        // The inner part is registered now (InMemory keeps parts in call order); the fault
        // decides whether the caller sees it succeed.
        let inner = self.inner.put_part(data);
        let shared = self.shared.clone();
        let location = self.location.clone();
        let part_failed = self.part_failed.clone();
        Box::pin(async move {
            match shared.admit("multipart-part", &location, true, false).await {
                Fate::Fail => {
                    part_failed.store(true, Ordering::SeqCst);
                    Err(injected("multipart-part", &location, "part upload failed"))
                }
                Fate::Succeed | Fate::LoseReply => inner.await,
            }
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let fate = self
            .shared
            .admit("multipart-complete", &self.location, false, false)
            .await;
        if fate == Fate::Fail {
            return Err(injected(
                "multipart-complete",
                &self.location,
                "complete failed",
            ));
        }
        if self.part_failed.load(Ordering::SeqCst) {
            return Err(injected(
                "multipart-complete",
                &self.location,
                "a part of this upload failed",
            ));
        }
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        // An abort's own failure leaves the upload incomplete, hence invisible, all the same.
        let fate = self
            .shared
            .admit("multipart-abort", &self.location, false, false)
            .await;
        self.inner.abort().await?;
        match fate {
            Fate::Fail => Err(injected("multipart-abort", &self.location, "abort failed")),
            Fate::Succeed | Fate::LoseReply => Ok(()),
        }
    }
}
