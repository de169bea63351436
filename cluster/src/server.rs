//! The Kafka listener: one task per connection, 4-byte big-endian length-prefixed frames, header
//! decode, dispatch, responses in request order.
//!
//! A connection reads and handles its requests in order, and answers them in order. Produce
//! requests (acks 1 or all) are pipelined: each is appended before the next request is read,
//! and a writer task sends the answers, so an acks=all request waiting for its fsync does not
//! keep the next produce request from appending (they share a group commit). Every other request
//! first waits until the answers before it are written, as in Kafka, which mutes a channel until
//! its response is sent. Malformed input closes only that
//! connection: a negative or too large length prefix, a header that does not decode, an unknown
//! API key, an unsupported version (except ApiVersions, which answers UNSUPPORTED_VERSION in a v0
//! body so the client can retry), or a body that does not decode.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::handlers::{self, api_versions, Outcome, Request, Response};

/// Why a frame could not be turned into a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than an API key and version.
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    /// An API key Kafka does not define, or one Strata does not serve.
    #[error("unknown or unserved API key {0}")]
    UnknownApiKey(i16),
    /// A version outside the supported range of a served API.
    #[error("unsupported version {version} of {api_key:?}")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The requested version.
        version: i16,
        /// The request's correlation id (for the ApiVersions error answer).
        correlation_id: i32,
    },
    /// The request header did not decode.
    #[error("bad request header: {0}")]
    Header(String),
    /// The request body did not decode.
    #[error("bad request body: {0}")]
    Body(String),
}

/// A decoded request: its header, API and body.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRequest {
    /// The request header.
    pub header: RequestHeader,
    /// The API key.
    pub api_key: ApiKey,
    /// The body.
    pub request: Request,
}

/// Decodes one frame (without its length prefix) into a request. Never panics on any input.
pub fn decode_request(frame: Bytes) -> Result<DecodedRequest, FrameError> {
    if frame.len() < 4 {
        return Err(FrameError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| FrameError::UnknownApiKey(raw_key))?;
    let (min, max) =
        handlers::supported_versions(api_key).ok_or(FrameError::UnknownApiKey(raw_key))?;
    let mut body = frame;
    let header = if (min..=max).contains(&version) {
        decode_request_header_from_buffer(&mut body)
            .map_err(|e| FrameError::Header(format!("{e:#}")))?
    } else if api_key == ApiKey::ApiVersions {
        // The header of an unknown ApiVersions version: v2 for v3+ (Kafka never changes it).
        let header = decode_request_header_from_buffer(&mut body)
            .map_err(|e| FrameError::Header(format!("{e:#}")))?;
        return Err(FrameError::UnsupportedVersion {
            api_key,
            version,
            correlation_id: header.correlation_id,
        });
    } else {
        // Peek the correlation id only for logging; the connection will be closed.
        let correlation_id = body
            .get(4..8)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(-1);
        return Err(FrameError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    };
    let request = Request::decode(api_key, &mut body, version).map_err(FrameError::Body)?;
    Ok(DecodedRequest {
        header,
        api_key,
        request,
    })
}

/// Record bytes in a Fetch answer from which it is written as parts, without copying the
/// records into the frame (below it, one copy is cheaper than the extra writes).
const ZERO_COPY_RECORDS_BYTES_MIN: usize = 64 * 1024;

/// Bytes of the marker that stands in for one partition's records while a Fetch answer is
/// encoded.
const RECORDS_MARKER_BYTES: usize = 16;

/// The marker for the `index`-th records field: 0xFF bytes (never in UTF-8 text) around a tag and
/// the index. The splice checks each marker is found exactly where expected, so a collision (a
/// topic id that happened to contain it) falls back to the copying encode, never to a bad frame.
fn records_marker(index: u32) -> [u8; RECORDS_MARKER_BYTES] {
    let mut marker = [0u8; RECORDS_MARKER_BYTES];
    marker[..10].copy_from_slice(&[0xFF, 0xFE, b'S', b'T', b'R', b'A', b'T', b'A', 0xFF, 0x00]);
    marker[10..14].copy_from_slice(&index.to_be_bytes());
    marker[14..].copy_from_slice(&[0xFE, 0xFF]);
    marker
}

/// Encodes an answer as the byte strings to write back to back (the frame's length prefix
/// included). A Fetch answer carrying at least [`ZERO_COPY_RECORDS_BYTES_MIN`] of records keeps
/// each partition's records as its own part, so record data goes from the segment read to the
/// socket without a copy into the frame; everything else is one encoded frame.
pub fn encode_response_parts(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    response: Response,
) -> Result<Vec<Bytes>, String> {
    let response = match response {
        Response::Fetch(fetch) => match fetch_response_parts(correlation_id, version, fetch) {
            Ok(parts) => return Ok(parts),
            Err(fetch) => Response::Fetch(*fetch),
        },
        other => other,
    };
    Ok(vec![encode_response(
        correlation_id,
        api_key,
        version,
        &response,
    )?])
}

/// The parts of a Fetch answer: the frame encoded with a small marker in place of each
/// partition's records, cut at the markers, with the records (and their real length prefixes)
/// in between. Gives the answer back (unchanged) when it is small or anything does not line up.
fn fetch_response_parts(
    correlation_id: i32,
    version: i16,
    mut fetch: FetchResponse,
) -> Result<Vec<Bytes>, Box<FetchResponse>> {
    let records_bytes: usize = fetch
        .responses
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .filter_map(|partition| partition.records.as_ref().map(Bytes::len))
        .sum();
    if records_bytes < ZERO_COPY_RECORDS_BYTES_MIN {
        return Err(Box::new(fetch));
    }
    // The fallback answer: a clone shares the records (`Bytes`), it copies only the metadata.
    let original = fetch.clone();
    let mut taken: Vec<Bytes> = Vec::new();
    for partition in fetch
        .responses
        .iter_mut()
        .flat_map(|topic| topic.partitions.iter_mut())
    {
        if let Some(records) = partition.records.as_mut() {
            if !records.is_empty() {
                let Ok(index) = u32::try_from(taken.len()) else {
                    return Err(Box::new(original));
                };
                let marker = Bytes::copy_from_slice(&records_marker(index));
                taken.push(std::mem::replace(records, marker));
            }
        }
    }
    encode_response(
        correlation_id,
        ApiKey::Fetch,
        version,
        &Response::Fetch(fetch),
    )
    .ok()
    .and_then(|head| splice_records(&head, &taken, version >= 12))
    .ok_or_else(|| Box::new(original))
}

/// Cuts `head` (a frame with markers for records) at each marker and splices in the records with
/// their real length prefix (compact: unsigned varint of length + 1; else i32 length). `None`
/// unless every marker is found once, in order, behind the length prefix of a marker.
fn splice_records(head: &Bytes, records: &[Bytes], compact: bool) -> Option<Vec<Bytes>> {
    let prefix_bytes = if compact { 1 } else { 4 };
    let mut marker_prefix = Vec::with_capacity(4);
    put_records_length(&mut marker_prefix, RECORDS_MARKER_BYTES, compact)?;
    let mut parts = Vec::with_capacity(2 * records.len() + 1);
    let mut from = 0usize;
    for (index, data) in records.iter().enumerate() {
        let marker = records_marker(u32::try_from(index).ok()?);
        let found = from + find_bytes(&head[from..], &marker)?;
        if found < from + prefix_bytes
            || head[found - prefix_bytes..found] != marker_prefix[..]
            || find_bytes(&head[found + RECORDS_MARKER_BYTES..], &marker).is_some()
        {
            return None;
        }
        let mut prefix = Vec::with_capacity(5);
        put_records_length(&mut prefix, data.len(), compact)?;
        parts.push(head.slice(from..found - prefix_bytes));
        parts.push(Bytes::from(prefix));
        parts.push(data.clone());
        from = found + RECORDS_MARKER_BYTES;
    }
    parts.push(head.slice(from..));
    // The frame's length prefix: the body is now longer by the records minus the markers.
    let total: usize = parts.iter().map(Bytes::len).sum();
    let body_len = i32::try_from(total.checked_sub(4)?).ok()?;
    let first = parts.first_mut()?;
    if first.len() < 4 {
        return None;
    }
    let mut patched = BytesMut::from(&first[..]);
    patched[0..4].copy_from_slice(&body_len.to_be_bytes());
    *first = patched.freeze();
    Some(parts)
}

fn put_records_length(out: &mut Vec<u8>, len: usize, compact: bool) -> Option<()> {
    if compact {
        let mut value = u32::try_from(len.checked_add(1)?).ok()?;
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    } else {
        out.extend_from_slice(&i32::try_from(len).ok()?.to_be_bytes());
    }
    Some(())
}

/// The position of the first occurrence of `needle` in `haystack`.
fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Encodes a response frame: length prefix, response header, body at `version`.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    response: &Response,
) -> Result<Bytes, String> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header_version = api_key.response_header_version(version);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(|e| format!("response header: {e:#}"))?;
    response.encode(&mut buf, version)?;
    let body_len = i32::try_from(buf.len() - 4).map_err(|_| "response too large".to_string())?;
    buf[0..4].copy_from_slice(&body_len.to_be_bytes());
    Ok(buf.freeze())
}

/// Why reading a frame stopped.
#[derive(Debug)]
enum ReadError {
    /// The peer closed the connection between frames.
    Eof,
    /// I/O error or EOF inside a frame.
    Io(std::io::Error),
    /// Length prefix negative or above `request_bytes_max`.
    BadLength(i32),
    /// No request read and no answer written for `connections.max.idle.ms`.
    Idle,
    /// A frame whose first byte arrived did not arrive whole within
    /// `socket.request.read.timeout.ms`.
    FrameTimeout,
}

/// Bytes reserved for a frame before its body arrives: enough for a produce request of
/// `message.max.bytes` (1 MiB by default) in one allocation. A longer frame grows its buffer as
/// its bytes arrive, so a peer that announces a huge frame and stalls holds at most this much.
const FRAME_RESERVE_BYTES_MAX: usize = (1 << 20) + (64 << 10);

/// The broker-wide budget of request bytes being read (`queued.max.request.bytes`): a frame's
/// reader holds permits for its announced length (clamped to the budget, so that any legal
/// frame can be read) from its length prefix to its last byte. Thousands of connections that
/// each announce a large frame and stall therefore hold at most the budget, not their sum; the
/// others wait for permits (within `socket.request.read.timeout.ms`, like the rest of the frame).
#[derive(Debug, Clone)]
pub struct FrameBudget {
    semaphore: Arc<tokio::sync::Semaphore>,
    bytes_max: usize,
}

impl FrameBudget {
    /// A budget of `bytes_max` bytes (at least 1, at most the semaphore's maximum).
    pub fn new(bytes_max: usize) -> FrameBudget {
        let bytes_max = bytes_max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        FrameBudget {
            semaphore: Arc::new(tokio::sync::Semaphore::new(bytes_max)),
            bytes_max,
        }
    }

    /// Bytes of frames being read right now.
    pub fn used_bytes(&self) -> usize {
        self.bytes_max
            .saturating_sub(self.semaphore.available_permits())
    }

    async fn reserve(&self, length: usize) -> tokio::sync::SemaphorePermit<'_> {
        let permits = u32::try_from(length.clamp(1, self.bytes_max)).unwrap_or(u32::MAX);
        self.semaphore
            .acquire_many(permits)
            .await
            .expect("the frame budget's semaphore is never closed")
    }
}

/// The limits of reading one frame.
#[derive(Debug, Clone, Copy)]
struct FrameLimits {
    /// `socket.request.max.bytes`.
    bytes_max: usize,
    /// `connections.max.idle.ms`, as the longest wait for a frame's first byte with no
    /// activity on the connection.
    idle_max: Duration,
    /// `socket.request.read.timeout.ms`: from a frame's first byte to its last.
    read_max: Duration,
}

/// Reads one frame into `buffer` and splits it off, never buffering more than
/// `limits.bytes_max` (memory grows with the bytes that actually arrive, not with the announced
/// length).
///
/// While no byte of the frame has arrived, the connection is idle unless `state` saw activity
/// (an answer written) within `limits.idle_max`; once the first byte is in, the whole frame
/// must arrive within `limits.read_max`.
///
/// `buffer` is the connection's: once the previous frame's `Bytes` are dropped (after its
/// request was handled), `reserve` takes the same allocation back, so a connection streaming
/// produce requests reads each one into memory that is already mapped, with no reallocation
/// copies on the way.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    limits: FrameLimits,
    budget: &FrameBudget,
    state: &ConnectionState,
) -> Result<Bytes, ReadError> {
    let mut prefix = [0u8; 4];
    // `read` is cancel safe: losing the race against the idle timer loses no byte.
    let filled = loop {
        let idle_at = state.last_activity() + limits.idle_max;
        tokio::select! {
            biased;
            read = reader.read(&mut prefix) => match read.map_err(ReadError::Io)? {
                0 => return Err(ReadError::Eof),
                n => break n,
            },
            _ = tokio::time::sleep_until(idle_at) => {
                if state.last_activity() + limits.idle_max <= tokio::time::Instant::now() {
                    return Err(ReadError::Idle);
                }
            }
        }
    };
    match tokio::time::timeout(
        limits.read_max,
        read_frame_rest(reader, buffer, limits.bytes_max, budget, prefix, filled),
    )
    .await
    {
        Ok(read) => read,
        Err(_elapsed) => {
            buffer.clear();
            Err(ReadError::FrameTimeout)
        }
    }
}

/// The rest of a frame whose first `filled` prefix bytes are in `prefix`.
async fn read_frame_rest<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    max_bytes: usize,
    budget: &FrameBudget,
    mut prefix: [u8; 4],
    mut filled: usize,
) -> Result<Bytes, ReadError> {
    while filled < 4 {
        let n = reader
            .read(&mut prefix[filled..])
            .await
            .map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        filled += n;
    }
    let length = i32::from_be_bytes(prefix);
    if length < 0 || length as usize > max_bytes {
        return Err(ReadError::BadLength(length));
    }
    let length = length as usize;
    // Held until the frame is whole (dropped on every early return too).
    let _reserved = budget.reserve(length).await;
    debug_assert!(buffer.is_empty());
    buffer.clear();
    buffer.reserve(length.min(FRAME_RESERVE_BYTES_MAX));
    while buffer.len() < length {
        let missing = length - buffer.len();
        if buffer.capacity() == buffer.len() {
            // Past the first reservation: double, but never past the announced length.
            buffer.reserve(missing.min(buffer.len().max(4096)));
        }
        let n = (&mut *reader)
            .take(missing as u64)
            .read_buf(buffer)
            .await
            .map_err(ReadError::Io)?;
        if n == 0 {
            buffer.clear();
            return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    assert_eq!(buffer.len(), length);
    Ok(buffer.split().freeze())
}

/// Writes a frame given as parts, back to back.
async fn write_frame_parts<W: AsyncWrite + Unpin>(
    writer: &mut W,
    parts: &[Bytes],
) -> std::io::Result<()> {
    for part in parts {
        writer.write_all(part).await?;
    }
    writer.flush().await
}

/// Answers a connection may owe at once: produce requests appended and waiting for their fsync,
/// plus answers not yet written. Kafka clients pipeline up to 5 requests per connection by
/// default (librdkafka more); past this many the connection stops reading until answers go out.
/// Their bytes are bounded separately, by `queued.max.response.bytes`.
const ANSWERS_QUEUED_MAX: usize = 16;

/// The longest connection timeout (`connections.max.idle.ms`,
/// `socket.request.read.timeout.ms`) honoured, like Kafka's int configs (about 24.8 days):
/// longer ones are clamped so deadlines never overflow the clock.
const CONNECTION_TIMEOUT_MS_MAX: u64 = i32::MAX as u64;

/// A connection timeout of `ms` milliseconds, clamped to [1 ms, [`CONNECTION_TIMEOUT_MS_MAX`]].
fn timeout_from_ms(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(1, CONNECTION_TIMEOUT_MS_MAX))
}

/// The shortest back-off after a failed accept; it doubles up to [`ACCEPT_BACKOFF_MAX`] while
/// accepts keep failing (EMFILE: no descriptor until a connection or file closes), so a broker
/// out of descriptors does not spin logging, and serves its existing connections meanwhile.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// The longest back-off between failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// `max.connections` when the descriptor limit is unlimited or cannot be read.
const CONNECTIONS_MAX_FALLBACK: usize = 65_536;

/// The least default `max.connections`, however low the descriptor limit.
const CONNECTIONS_MAX_DEFAULT_MIN: usize = 16;

/// The default `max.connections` (and `max.connections.per.ip`): half the soft
/// `RLIMIT_NOFILE`. Every connection holds one descriptor; the other half stays for the
/// broker's own files (segments, indexes, checkpoints, directory fsyncs) and the metrics
/// listener, so clients alone cannot exhaust the descriptors the log needs. Kafka's default is
/// unlimited (Int.MAX).
pub fn connections_max_default() -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        if read && limit.rlim_cur != libc::RLIM_INFINITY {
            return usize::try_from(limit.rlim_cur / 2)
                .unwrap_or(CONNECTIONS_MAX_FALLBACK)
                .max(CONNECTIONS_MAX_DEFAULT_MIN);
        }
    }
    CONNECTIONS_MAX_FALLBACK
}

#[derive(Default)]
struct ConnectionCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// `max.connections` and `max.connections.per.ip`: the open connections, in total and per
/// client address.
struct ConnectionLimits {
    total_max: usize,
    per_ip_max: usize,
    counts: Mutex<ConnectionCounts>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Total,
    PerIp,
}

/// One admitted connection; gives its place back when dropped.
struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    fn counts(&self) -> std::sync::MutexGuard<'_, ConnectionCounts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let mut counts = self.counts();
        if counts.total >= self.total_max {
            return Err(Refused::Total);
        }
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.per_ip_max {
            return Err(Refused::PerIp);
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(from_ip) = counts.per_ip.get_mut(&self.ip) {
            *from_ip = from_ip.saturating_sub(1);
            if *from_ip == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// What the reader and the writer task of one connection share.
struct ConnectionState {
    /// Record bytes of the answers handled and not yet written (see [`Owed`]).
    owed_bytes: AtomicUsize,
    /// Notified when an answer owed is written or dropped.
    answer_done: Notify,
    /// When a request was last read or an answer last written.
    last_activity: Mutex<tokio::time::Instant>,
}

impl ConnectionState {
    fn new() -> ConnectionState {
        ConnectionState {
            owed_bytes: AtomicUsize::new(0),
            answer_done: Notify::new(),
            last_activity: Mutex::new(tokio::time::Instant::now()),
        }
    }

    fn last_activity(&self) -> tokio::time::Instant {
        *self
            .last_activity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn touch(&self) {
        *self
            .last_activity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = tokio::time::Instant::now();
    }
}

/// The record bytes of one answer owed, counted by its connection and by the broker's
/// `strata_connection_answers_owed_bytes` until dropped (after the answer is written).
struct Owed {
    state: Arc<ConnectionState>,
    bytes: usize,
    _metric: crate::metrics::OwedGuard,
}

impl Owed {
    fn new(broker: &Broker, state: &Arc<ConnectionState>, bytes: usize) -> Owed {
        state.owed_bytes.fetch_add(bytes, Ordering::SeqCst);
        Owed {
            state: Arc::clone(state),
            bytes,
            _metric: broker.metrics().answer_owed(bytes),
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        self.state
            .owed_bytes
            .fetch_sub(self.bytes, Ordering::SeqCst);
        self.state.answer_done.notify_one();
    }
}

/// The record bytes an answer carries (Fetch answers; other answers are small and bounded by
/// their request).
fn answer_record_bytes(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Respond(Response::Fetch(fetch)) => fetch
            .responses
            .iter()
            .flat_map(|topic| topic.partitions.iter())
            .filter_map(|partition| partition.records.as_ref().map(Bytes::len))
            .sum(),
        _ => 0,
    }
}

/// An answer the connection's writer task awaits and writes, in request order.
struct QueuedAnswer {
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    started: std::time::Instant,
    answer: Pin<Box<dyn Future<Output = Outcome> + Send>>,
    /// The answer's bytes, owed until it is written.
    owed: Option<Owed>,
}

enum WriterItem {
    Answer(QueuedAnswer),
    /// Answered once every answer queued before it is written.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Serves one connection until the peer closes it, it misbehaves, it stays idle for
/// `connections.max.idle.ms`, or the broker shuts down.
///
/// Requests are read and handled in order. A produce request with acks=1 or acks=all is
/// appended before the next request is read, but its answer (for acks=all: after the fsync) is
/// left to the writer task, so the next pipelined produce request appends while the first waits,
/// and both share one group commit. Answers go out in request order. Any other request first
/// waits until every earlier answer is written, so it sees their effects as in Kafka, which
/// handles one request per connection at a time.
///
/// Memory: the frame buffer grows with the bytes that arrive (at most
/// `socket.request.max.bytes`), and the connection stops reading requests while the answers it
/// owes carry `queued.max.response.bytes` of records or more, so a client that pipelines fetches
/// and never reads pins at most that budget plus one answer (whose records also count against
/// the broker-wide `fetch.memory.max.bytes`).
async fn handle_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    budget: FrameBudget,
    _slot: ConnectionSlot,
) {
    let _ = stream.set_nodelay(true);
    let _connection = broker.metrics().connection_opened();
    let (mut reader, writer) = tokio::io::split(stream);
    let (answers, queued) = tokio::sync::mpsc::channel(ANSWERS_QUEUED_MAX);
    let state = Arc::new(ConnectionState::new());
    let writer_task = tokio::spawn(write_answers(
        Arc::clone(&broker),
        writer,
        queued,
        peer,
        Arc::clone(&state),
    ));
    let config = broker.config();
    let limits = FrameLimits {
        bytes_max: config.request_bytes_max,
        idle_max: timeout_from_ms(config.connection_idle_ms_max),
        read_max: timeout_from_ms(config.frame_read_ms_max),
    };
    let max_bytes = limits.bytes_max;
    let answers_bytes_max = config.connection_answers_bytes_max;
    let mut frame_buffer = BytesMut::new();
    // Whether a produce answer may still be unwritten (then a barrier precedes other requests).
    let mut produce_queued = false;
    'connection: loop {
        // Read no request while the answers owed carry the budget (a client not reading its
        // fetches); always read when nothing is owed.
        loop {
            let owed = state.owed_bytes.load(Ordering::SeqCst);
            if owed == 0 || owed < answers_bytes_max {
                break;
            }
            tokio::select! {
                biased;
                _ = broker.shutdown_started() => break 'connection,
                _ = answers.closed() => break 'connection,
                _ = state.answer_done.notified() => {}
            }
        }
        let frame = tokio::select! {
            biased;
            _ = broker.shutdown_started() => break,
            _ = answers.closed() => break,
            frame = read_frame(&mut reader, &mut frame_buffer, limits, &budget, &state) => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(ReadError::Eof) => break,
            Err(ReadError::Io(error)) => {
                tracing::debug!(%peer, %error, "connection read failed");
                break;
            }
            Err(ReadError::BadLength(length)) => {
                broker.metrics().record_bad_frame();
                tracing::warn!(%peer, length, max_bytes, "closing connection: bad frame length");
                break;
            }
            Err(ReadError::Idle) => {
                broker.metrics().record_connection_closed("idle");
                tracing::debug!(%peer, idle_ms = config.connection_idle_ms_max, "closing idle connection");
                break;
            }
            Err(ReadError::FrameTimeout) => {
                broker.metrics().record_connection_closed("frame_timeout");
                tracing::debug!(%peer, timeout_ms = config.frame_read_ms_max, "closing connection: frame not read in time");
                break;
            }
        };
        state.touch();
        let decoded = match decode_request(frame) {
            Ok(decoded) => decoded,
            Err(FrameError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                version,
                correlation_id,
            }) => {
                tracing::debug!(%peer, version, "ApiVersions version unsupported; answering with v0");
                let response = Response::ApiVersions(api_versions::unsupported_version_response());
                let answer = QueuedAnswer {
                    correlation_id,
                    api_key: ApiKey::ApiVersions,
                    version: 0,
                    started: std::time::Instant::now(),
                    answer: Box::pin(std::future::ready(Outcome::Respond(response))),
                    owed: None,
                };
                if answers.send(WriterItem::Answer(answer)).await.is_err() {
                    break;
                }
                continue;
            }
            Err(error) => {
                broker.metrics().record_bad_frame();
                tracing::warn!(%peer, %error, "closing connection: undecodable request");
                break;
            }
        };
        let version = decoded.header.request_api_version;
        let correlation_id = decoded.header.correlation_id;
        let api_key = decoded.api_key;
        tracing::trace!(%peer, ?api_key, version, correlation_id, "request");
        let started = std::time::Instant::now();
        let mut owed = None;
        let answer: Pin<Box<dyn Future<Output = Outcome> + Send>> = match decoded.request {
            Request::Produce(request) if request.acks != 0 => {
                produce_queued = true;
                Box::pin(handlers::produce::append(&broker, request, version).finish())
            }
            request => {
                if produce_queued {
                    let (done, written) = tokio::sync::oneshot::channel();
                    if answers.send(WriterItem::Barrier(done)).await.is_err()
                        || written.await.is_err()
                    {
                        break;
                    }
                    produce_queued = false;
                }
                let context = handlers::RequestContext {
                    client_id: decoded
                        .header
                        .client_id
                        .as_ref()
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    client_host: format!("/{}", peer.ip()),
                };
                let outcome =
                    handlers::handle_in_context(&broker, request, version, &context).await;
                if matches!(outcome, Outcome::Close) {
                    broker
                        .metrics()
                        .record_request(api_key, started.elapsed(), &outcome);
                    tracing::debug!(%peer, ?api_key, "closing connection after a failed acks=0 produce");
                    break;
                }
                owed = Some(Owed::new(&broker, &state, answer_record_bytes(&outcome)));
                Box::pin(std::future::ready(outcome))
            }
        };
        let queued_answer = QueuedAnswer {
            correlation_id,
            api_key,
            version,
            started,
            answer,
            owed,
        };
        if answers
            .send(WriterItem::Answer(queued_answer))
            .await
            .is_err()
        {
            break;
        }
    }
    // The writer answers what is queued (produce answers wait for their fsync), then closes.
    drop(answers);
    if let Err(error) = writer_task.await {
        tracing::warn!(%peer, %error, "connection writer ended abnormally");
    }
}

/// The writer half of a connection: awaits each queued answer in order and writes it. Stops at
/// the first failed write, or a write the client does not take within `connections.max.idle.ms`
/// (it stopped reading); the reader sees the channel closed and stops too.
async fn write_answers<W: AsyncWrite + Unpin>(
    broker: Arc<Broker>,
    mut writer: W,
    mut queued: tokio::sync::mpsc::Receiver<WriterItem>,
    peer: SocketAddr,
    state: Arc<ConnectionState>,
) {
    let write_max = timeout_from_ms(broker.config().connection_idle_ms_max);
    while let Some(item) = queued.recv().await {
        let queued_answer = match item {
            WriterItem::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
            WriterItem::Answer(queued_answer) => queued_answer,
        };
        let QueuedAnswer {
            correlation_id,
            api_key,
            version,
            started,
            answer,
            owed,
        } = queued_answer;
        let outcome = answer.await;
        broker
            .metrics()
            .record_request(api_key, started.elapsed(), &outcome);
        match outcome {
            Outcome::Respond(response) => {
                match encode_response_parts(correlation_id, api_key, version, response) {
                    Ok(parts) => {
                        match tokio::time::timeout(
                            write_max,
                            write_frame_parts(&mut writer, &parts),
                        )
                        .await
                        {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "connection write failed");
                                break;
                            }
                            Err(_elapsed) => {
                                broker.metrics().record_connection_closed("write_timeout");
                                tracing::debug!(%peer, "closing connection: the client does not read its answers");
                                break;
                            }
                        }
                    }
                    Err(error) => {
                        tracing::error!(%peer, ?api_key, version, %error, "encoding response failed; closing connection");
                        break;
                    }
                }
            }
            Outcome::NoResponse => {}
            Outcome::Close => {
                // Only an acks=0 produce closes, and the reader handles those itself.
                tracing::debug!(%peer, ?api_key, "closing connection");
                break;
            }
        }
        state.touch();
        drop(owed);
    }
    let _ = writer.shutdown().await;
}

/// Accepts Kafka connections on `listener` until `shutdown` resolves; then stops accepting, and
/// flushes and closes every partition.
///
/// A connection past `max.connections`, or past `max.connections.per.ip` from its address, is
/// closed as soon as it is accepted (Kafka instead stops accepting; closing tells the client at
/// once, and it retries with its reconnect back-off), while existing connections keep working.
/// A failed accept (EMFILE: out of file descriptors) is back-pressure, not an error of the
/// broker: it backs off from 10 ms doubling to 1 s while accepts keep failing.
///
/// With `metrics_listen` set in the config, also serves Prometheus metrics there (see
/// [`crate::metrics`]). A metrics address that cannot be bound is logged as an error and the
/// broker serves Kafka clients without metrics: the endpoint is auxiliary, and a second broker
/// on the same host with the default metrics port must still serve.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        broker.set_bound_addr(addr);
        tracing::info!(%addr, "listening for Kafka clients");
    }
    if let Some(metrics_addr) = broker.config().metrics_listen {
        match crate::metrics::spawn_endpoint(Arc::clone(&broker), metrics_addr).await {
            Ok(bound) => tracing::info!("metrics listening on http://{bound}/metrics"),
            Err(error) => tracing::error!(
                %error,
                "cannot listen for metrics on {metrics_addr}; serving without a metrics endpoint"
            ),
        }
    }
    let limits = Arc::new(ConnectionLimits {
        total_max: broker.config().connections_max,
        per_ip_max: broker.config().connections_per_ip_max,
        counts: Mutex::new(ConnectionCounts::default()),
    });
    let budget = FrameBudget::new(broker.config().queued_request_bytes_max);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    match limits.admit(peer.ip()) {
                        Ok(slot) => {
                            tracing::debug!(%peer, "connection accepted");
                            tokio::spawn(handle_connection(Arc::clone(&broker), stream, peer, budget.clone(), slot));
                        }
                        Err(refused) => {
                            broker.metrics().record_connection_rejected(refused == Refused::PerIp);
                            tracing::debug!(%peer, ?refused, "connection limit reached; closing the new connection");
                            drop(stream);
                        }
                    }
                }
                Err(error) => {
                    broker.metrics().record_accept_error();
                    tracing::warn!(
                        %error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "accept failed; existing connections are still served"
                    );
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            },
        }
    }
    drop(listener);
    broker
        .shutdown()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// A global allocator that keeps hostile length fields from aborting the process.
///
/// kafka-protocol 0.18 decodes an array by calling `Vec::with_capacity(len)` with the length read
/// from the wire before reading any element, so a 20-byte frame claiming 2^31 elements asks the
/// allocator for tens of GiB. The system allocator fails such a request and Rust aborts the
/// process (allocation failure is not a panic): one frame would kill the broker.
///
/// [`GuardedAllocator`] serves allocations of [`HUGE_ALLOCATION_BYTES`] or more with an anonymous
/// `mmap(MAP_NORESERVE)`: address space only, no commit charge (Linux does not count
/// `MAP_NORESERVE` mappings under the default heuristic overcommit policy), so the oversized
/// `Vec` is created, the decoder runs out of input right away, and the mapping is released. Every
/// other allocation goes to the system allocator. Strata never needs a single allocation of that
/// size for real data (frames are capped by `socket.request.max.bytes`, 100 MiB by default).
///
/// Binaries that serve Kafka clients install it:
/// `#[global_allocator] static ALLOC: strata_cluster::server::GuardedAllocator = strata_cluster::server::GuardedAllocator;`
/// Under `vm.overcommit_memory = 2` (strict accounting) the guard cannot help.
pub struct GuardedAllocator;

/// Allocations at least this large are served by `mmap(MAP_NORESERVE)`.
pub const HUGE_ALLOCATION_BYTES: usize = 1 << 30;

#[cfg(target_os = "linux")]
mod guarded {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::ptr;

    use super::{GuardedAllocator, HUGE_ALLOCATION_BYTES};

    const PAGE_BYTES: usize = 4096;

    fn is_huge(size: usize, align: usize) -> bool {
        size >= HUGE_ALLOCATION_BYTES && align <= PAGE_BYTES
    }

    unsafe fn map(size: usize) -> *mut u8 {
        // SAFETY: an anonymous private mapping with no address hint has no preconditions.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            ptr::null_mut()
        } else {
            p.cast()
        }
    }

    // SAFETY: huge blocks come from `map` (page aligned, zeroed, `size` bytes) and are released
    // with `munmap` of the same size; the choice depends only on (size, align), which Rust passes
    // identically to alloc, dealloc and realloc of one block. Everything else is `System`.
    unsafe impl GlobalAlloc for GuardedAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if is_huge(layout.size(), layout.align()) {
                unsafe { map(layout.size()) }
            } else {
                unsafe { System.alloc(layout) }
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if is_huge(layout.size(), layout.align()) {
                // Anonymous mappings are zero-filled.
                unsafe { map(layout.size()) }
            } else {
                unsafe { System.alloc_zeroed(layout) }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if is_huge(layout.size(), layout.align()) {
                unsafe {
                    libc::munmap(ptr.cast(), layout.size());
                }
            } else {
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let old_huge = is_huge(layout.size(), layout.align());
            let new_huge = is_huge(new_size, layout.align());
            if !old_huge && !new_huge {
                return unsafe { System.realloc(ptr, layout, new_size) };
            }
            // SAFETY: the caller guarantees `new_size`, rounded up to `align`, fits in isize.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            let new_ptr = unsafe { self.alloc(new_layout) };
            if !new_ptr.is_null() {
                unsafe {
                    ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
            }
            new_ptr
        }
    }
}

#[cfg(not(target_os = "linux"))]
// SAFETY: plain delegation to the system allocator.
unsafe impl std::alloc::GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    /// Goal: frames being read hold the broker-wide budget: with 100 bytes of budget, a frame
    /// of 80 bytes stalled halfway makes a 50-byte frame on another connection wait, although
    /// all its bytes are there, until the first frame is whole.
    #[tokio::test]
    async fn stalled_frames_hold_the_frame_budget_and_others_wait() {
        use tokio::io::AsyncWriteExt;
        let budget = FrameBudget::new(100);
        let (mut stalled_client, mut stalled) = tokio::io::duplex(1024);
        let (mut ready_client, mut ready) = tokio::io::duplex(1024);
        stalled_client
            .write_all(&80i32.to_be_bytes())
            .await
            .unwrap();
        stalled_client.write_all(&[7u8; 40]).await.unwrap();
        ready_client.write_all(&50i32.to_be_bytes()).await.unwrap();
        ready_client.write_all(&[9u8; 50]).await.unwrap();
        let read = |reader, budget| async move {
            let mut buffer = BytesMut::new();
            read_frame_rest(reader, &mut buffer, 1000, budget, [0; 4], 0).await
        };
        let first = read(&mut stalled, &budget);
        tokio::pin!(first);
        // The stalled frame takes its 80 bytes of budget and waits for its body.
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut first)
            .await
            .is_err());
        assert_eq!(budget.used_bytes(), 80);
        let second = read(&mut ready, &budget);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "a frame was read past the budget"
        );
        stalled_client.write_all(&[7u8; 40]).await.unwrap();
        assert_eq!(first.await.expect("whole").len(), 80);
        assert_eq!(second.await.expect("whole").len(), 50);
        assert_eq!(budget.used_bytes(), 0, "every permit returned");
        // A frame larger than the whole budget is still read (its reservation is clamped).
        let big = FrameBudget::new(10);
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&64i32.to_be_bytes()).await.unwrap();
        client.write_all(&[1u8; 64]).await.unwrap();
        let mut buffer = BytesMut::new();
        let frame = read_frame_rest(&mut server, &mut buffer, 1000, &big, [0; 4], 0).await;
        assert_eq!(frame.expect("whole").len(), 64);
    }

    fn records(len: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect::<Vec<u8>>(),
        )
    }

    fn fetch_answer(records_per_partition: Vec<Option<Bytes>>) -> FetchResponse {
        let partitions = records_per_partition
            .into_iter()
            .enumerate()
            .map(|(index, records)| {
                PartitionData::default()
                    .with_partition_index(index as i32)
                    .with_high_watermark(1000)
                    .with_records(records)
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("events")))
            .with_partitions(partitions)])
    }

    fn joined(parts: &[Bytes]) -> Vec<u8> {
        parts.iter().flat_map(|part| part.iter().copied()).collect()
    }

    /// Written as parts, a Fetch answer is byte for byte the frame the copying encode makes, at
    /// the non-flexible and the flexible versions, with empty and null records among them; the
    /// records themselves are not copied (their parts share the read buffers).
    #[test]
    fn fetch_answer_parts_equal_the_copied_frame() {
        let big = records(300_000, 1);
        let other = records(70_000, 2);
        for version in [4, 11, 12] {
            let answer = fetch_answer(vec![
                Some(big.clone()),
                None,
                Some(Bytes::new()),
                Some(other.clone()),
                Some(records(200, 3)),
            ]);
            let copied =
                encode_response(7, ApiKey::Fetch, version, &Response::Fetch(answer.clone()))
                    .expect("encodes");
            let parts = encode_response_parts(7, ApiKey::Fetch, version, Response::Fetch(answer))
                .expect("encodes");
            assert!(parts.len() > 1, "v{version}: written as parts");
            assert_eq!(joined(&parts), copied.to_vec(), "v{version}");
            assert!(
                parts.iter().any(|part| part.as_ptr() == big.as_ptr()),
                "v{version}: the records are the read buffer itself"
            );
        }
    }

    /// Small Fetch answers are encoded the copying way, as one frame.
    #[test]
    fn small_fetch_answers_are_one_frame() {
        let small = fetch_answer(vec![Some(records(1000, 4))]);
        let parts = encode_response_parts(1, ApiKey::Fetch, 12, Response::Fetch(small.clone()))
            .expect("encodes");
        assert_eq!(parts.len(), 1);
        let copied =
            encode_response(1, ApiKey::Fetch, 12, &Response::Fetch(small)).expect("encodes");
        assert_eq!(parts[0], copied);
    }

    /// A marker found where it should not be (here: planted in a second records field) makes
    /// the splice refuse, so the answer goes out copied instead.
    #[test]
    fn a_marker_collision_falls_back_to_the_copy() {
        let head = {
            let mut frame = BytesMut::new();
            frame.put_i32(0);
            frame.put_u8(17);
            frame.put_slice(&records_marker(0));
            frame.put_u8(17);
            frame.put_slice(&records_marker(0));
            frame.freeze()
        };
        assert!(splice_records(&head, &[records(10, 1)], true).is_none());
        let head_ok = head.slice(..4 + 1 + RECORDS_MARKER_BYTES);
        let parts = splice_records(&head_ok, &[records(10, 1)], true).expect("splices");
        assert_eq!(joined(&parts)[4], 11, "compact length of 10 bytes is 11");
        assert_eq!(&joined(&parts)[0..4], &(1 + 10i32).to_be_bytes());
    }
}
