//! One TCP connection to one broker.
//!
//! Responses are decoded by `kafka-protocol`, which preallocates arrays from their wire length:
//! a corrupt length can ask for a huge allocation. Binaries should install
//! `strata_cluster::server::GuardedAllocator` as their global allocator (the `strata` binary
//! does).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::error::ClientError;

/// The largest response the client accepts (a 4-byte length above it is treated as garbage).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The newest version of `key` this client sends, below the `kafka-protocol` crate's maximum
/// where a newer version would change semantics the client does not implement (topic ids in
/// Produce v13 and Fetch v13+).
fn client_version_max(key: ApiKey) -> i16 {
    match key {
        ApiKey::Produce => 12,
        ApiKey::Fetch => 12,
        ApiKey::Metadata => 12,
        other => other.valid_versions().max,
    }
}

/// The mutable half of a connection, guarded by the connection's mutex: one request and its
/// response at a time.
struct Wire {
    stream: TcpStream,
    correlation_id_next: i32,
    /// Set while a request is between its first written byte and its fully read response. If a
    /// call is cancelled (e.g. by its timeout) in that window, the stream is out of step and the
    /// connection must not be used again.
    mid_request: bool,
}

/// One TCP connection to one broker, with the API versions negotiated at connect time.
///
/// Requests on one connection are sent one at a time; share a `Connection` between tasks through
/// an `Arc` and they queue on its mutex.
pub struct Connection {
    addr: String,
    client_id: String,
    request_timeout_ms: u64,
    /// Broker's (min, max) version per API key.
    broker_versions: HashMap<i16, (i16, i16)>,
    wire: Mutex<Wire>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`) and negotiates API versions (ApiVersions v3, falling back
    /// to v0 if the broker answers UNSUPPORTED_VERSION). Connecting and negotiating each get
    /// `request_timeout_ms`.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        request_timeout_ms: u64,
    ) -> Result<Connection, ClientError> {
        let timeout = Duration::from_millis(request_timeout_ms);
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(ClientError::Io {
                    addr: addr.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr: addr.to_string(),
                    api: "connect".to_string(),
                    timeout_ms: request_timeout_ms,
                })
            }
        };
        stream.set_nodelay(true).map_err(|source| ClientError::Io {
            addr: addr.to_string(),
            source,
        })?;
        let mut connection = Connection {
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            request_timeout_ms,
            broker_versions: HashMap::new(),
            wire: Mutex::new(Wire {
                stream,
                correlation_id_next: 0,
                mid_request: false,
            }),
        };
        connection.broker_versions = connection.negotiate().await?;
        Ok(connection)
    }

    async fn negotiate(&self) -> Result<HashMap<i16, (i16, i16)>, ClientError> {
        const VERSION_NEWEST: i16 = 3;
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strata-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut body = self
            .request_raw(&request, VERSION_NEWEST, self.request_timeout_ms)
            .await?;
        let mut response = match ApiVersionsResponse::decode(&mut body.clone(), VERSION_NEWEST) {
            Ok(response) if response.error_code != ResponseError::UnsupportedVersion.code() => {
                response
            }
            // A broker that does not know our version answers UNSUPPORTED_VERSION in a v0 body
            // listing its ranges: read it as v0 and ask again at the newest version it knows.
            _ => {
                let v0 = ApiVersionsResponse::decode(&mut body, 0).map_err(|e| {
                    self.protocol(format!(
                        "bad ApiVersions response (v{VERSION_NEWEST} or v0): {e}"
                    ))
                })?;
                let broker_max = versions_map(&v0)
                    .get(&ApiVersionsRequest::KEY)
                    .map(|&(_, max)| max)
                    .unwrap_or(0);
                let version = broker_max.clamp(0, VERSION_NEWEST - 1);
                let retry = if version >= 3 {
                    request
                } else {
                    ApiVersionsRequest::default()
                };
                body = self
                    .request_raw(&retry, version, self.request_timeout_ms)
                    .await?;
                ApiVersionsResponse::decode(&mut body, version).map_err(|e| {
                    self.protocol(format!("bad ApiVersions v{version} response: {e}"))
                })?
            }
        };
        if response.error_code != 0 {
            return Err(ClientError::from_code(
                response.error_code,
                format!("api versions from {}", self.addr),
                None,
            ));
        }
        response.api_keys.retain(|v| v.min_version <= v.max_version);
        Ok(versions_map(&response))
    }

    /// The broker address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection can no longer be used (closed, or left mid-request).
    pub fn is_broken(&self) -> bool {
        match self.wire.try_lock() {
            Ok(wire) => wire.mid_request,
            // Someone is using it: not known to be broken.
            Err(_) => false,
        }
    }

    /// The version to use for request type `R`: min(client max, broker max), or an error if the
    /// ranges do not overlap.
    pub fn version_for<R: Request>(&self) -> Result<i16, ClientError> {
        let key = api_key::<R>(&self.addr)?;
        let client_max = client_version_max(key).min(R::VERSIONS.max);
        let client_min = R::VERSIONS.min;
        let unsupported = |broker_versions: String| ClientError::UnsupportedApi {
            addr: self.addr.clone(),
            api: format!("{key:?}"),
            broker_versions,
        };
        let Some(&(broker_min, broker_max)) = self.broker_versions.get(&R::KEY) else {
            return Err(unsupported("none".to_string()));
        };
        let version = client_max.min(broker_max);
        if version < client_min || version < broker_min {
            return Err(unsupported(format!("{broker_min}..{broker_max}")));
        }
        Ok(version)
    }

    /// Sends `request` at the negotiated version and waits for its response, within the
    /// connection's request timeout.
    pub async fn request<R: Request>(&self, request: &R) -> Result<R::Response, ClientError> {
        let version = self.version_for::<R>()?;
        self.request_versioned(request, version).await
    }

    /// Sends `request` at `version` and waits for its response within the request timeout.
    pub async fn request_versioned<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        self.request_with_timeout(request, version, self.request_timeout_ms)
            .await
    }

    /// Sends `request` at `version` and waits up to `timeout_ms` for its response (e.g. a fetch
    /// that may legitimately wait `max_wait_ms` on the broker).
    pub async fn request_with_timeout<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout_ms: u64,
    ) -> Result<R::Response, ClientError> {
        let mut body = self.request_raw(request, version, timeout_ms).await?;
        R::Response::decode(&mut body, version)
            .map_err(|e| self.protocol(format!("bad {} v{version} response: {e}", api_name::<R>())))
    }

    /// Sends `request` and returns the response body after its (checked) header.
    async fn request_raw<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout_ms: u64,
    ) -> Result<Bytes, ClientError> {
        let frame_and_id = self.encode(request, version)?;
        let call = async {
            let mut wire = self.wire.lock().await;
            let correlation_id = self.write_frame(&mut wire, frame_and_id).await?;
            let mut body = self.read_frame(&mut wire).await?;
            wire.mid_request = false;
            drop(wire);
            let header_version = R::Response::header_version(version);
            let header = ResponseHeader::decode(&mut body, header_version)
                .map_err(|e| self.protocol(format!("bad response header: {e}")))?;
            if header.correlation_id != correlation_id {
                return Err(self.protocol(format!(
                    "correlation id {} does not match request {}",
                    header.correlation_id, correlation_id
                )));
            }
            Ok(body)
        };
        self.with_timeout::<R, _>(call, timeout_ms).await
    }

    /// Sends `request` at `version` without waiting for a response (Produce with acks=0, for
    /// which the broker sends none).
    pub async fn send_without_response<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<(), ClientError> {
        let frame_and_id = self.encode(request, version)?;
        let call = async {
            let mut wire = self.wire.lock().await;
            self.write_frame(&mut wire, frame_and_id).await?;
            wire.mid_request = false;
            Ok(())
        };
        self.with_timeout::<R, _>(call, self.request_timeout_ms)
            .await
    }

    async fn with_timeout<R: Request, T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
        timeout_ms: u64,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(Duration::from_millis(timeout_ms), call).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr.clone(),
                api: api_name::<R>(),
                timeout_ms,
            }),
        }
    }

    /// Encodes header + body with a placeholder correlation id at a fixed position; returns the
    /// frame (without length prefix) and the offset of the correlation id.
    fn encode<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<(BytesMut, usize), ClientError> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(0)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = BytesMut::new();
        buf.put_i32(0); // length, filled in write_frame
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| ClientError::InvalidArgument(format!("encoding request header: {e}")))?;
        request.encode(&mut buf, version).map_err(|e| {
            ClientError::InvalidArgument(format!(
                "encoding {} v{version} request: {e}",
                api_name::<R>()
            ))
        })?;
        // api key (2) + api version (2), then the correlation id.
        Ok((buf, 4 + 4))
    }

    async fn write_frame(
        &self,
        wire: &mut Wire,
        (mut frame, correlation_offset): (BytesMut, usize),
    ) -> Result<i32, ClientError> {
        if wire.mid_request {
            return Err(ClientError::Disconnected {
                addr: self.addr.clone(),
            });
        }
        let correlation_id = wire.correlation_id_next;
        wire.correlation_id_next = wire.correlation_id_next.wrapping_add(1);
        let length = i32::try_from(frame.len() - 4).map_err(|_| {
            ClientError::InvalidArgument(format!("request of {} bytes is too large", frame.len()))
        })?;
        frame[0..4].copy_from_slice(&length.to_be_bytes());
        frame[correlation_offset..correlation_offset + 4]
            .copy_from_slice(&correlation_id.to_be_bytes());
        wire.mid_request = true;
        wire.stream
            .write_all(&frame)
            .await
            .map_err(|e| self.io_error(e))?;
        wire.stream.flush().await.map_err(|e| self.io_error(e))?;
        Ok(correlation_id)
    }

    async fn read_frame(&self, wire: &mut Wire) -> Result<Bytes, ClientError> {
        let mut length_bytes = [0u8; 4];
        wire.stream
            .read_exact(&mut length_bytes)
            .await
            .map_err(|e| self.io_error(e))?;
        let length = i32::from_be_bytes(length_bytes);
        let length = usize::try_from(length)
            .ok()
            .filter(|&l| (4..=RESPONSE_BYTES_MAX).contains(&l))
            .ok_or_else(|| self.protocol(format!("response length {length} out of bounds")))?;
        // Grow with the bytes that actually arrive, not with the announced length.
        let mut body = Vec::with_capacity(length.min(64 * 1024));
        let read = (&mut wire.stream)
            .take(length as u64)
            .read_to_end(&mut body)
            .await
            .map_err(|e| self.io_error(e))?;
        if read != length {
            return Err(ClientError::Disconnected {
                addr: self.addr.clone(),
            });
        }
        Ok(Bytes::from(body))
    }

    fn io_error(&self, source: std::io::Error) -> ClientError {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            ClientError::Disconnected {
                addr: self.addr.clone(),
            }
        } else {
            ClientError::Io {
                addr: self.addr.clone(),
                source,
            }
        }
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        }
    }
}

impl Connection {
    /// Turns the connection into a [`Pipeline`], which keeps several requests in flight.
    pub fn into_pipeline(self) -> Pipeline {
        Pipeline {
            conn: self,
            outstanding: VecDeque::new(),
            broken: false,
        }
    }
}

/// A connection that pipelines requests, as Kafka producers do
/// (`max.in.flight.requests.per.connection`): [`Pipeline::send`] writes a request without
/// waiting for its answer, [`Pipeline::recv`] reads the answer to the oldest request still
/// outstanding (a Kafka broker answers a connection's requests in the order they were sent).
///
/// For load generation and tests: one owner, no retries. After any error (including a timeout
/// or a cancelled call) the pipeline refuses further use.
pub struct Pipeline {
    conn: Connection,
    /// Correlation ids of the requests sent and not yet answered, oldest first.
    outstanding: VecDeque<i32>,
    /// Set while a frame is half written or half read, and after any error.
    broken: bool,
}

impl Pipeline {
    /// The underlying connection (address, negotiated versions).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Requests sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    fn check_usable(&self) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Disconnected {
                addr: self.conn.addr.clone(),
            });
        }
        Ok(())
    }

    /// Writes `request` at `version` (within the request timeout) without waiting for its
    /// answer; `recv` returns the answers in the order of the `send`s.
    pub async fn send<R: Request>(&mut self, request: &R, version: i16) -> Result<(), ClientError> {
        self.check_usable()?;
        let frame = self.conn.encode(request, version)?;
        let conn = &self.conn;
        self.broken = true;
        let call = async {
            let mut wire = conn.wire.lock().await;
            let correlation_id = conn.write_frame(&mut wire, frame).await?;
            // The pipeline tracks the answers itself.
            wire.mid_request = false;
            Ok(correlation_id)
        };
        let correlation_id = conn
            .with_timeout::<R, _>(call, conn.request_timeout_ms)
            .await?;
        self.broken = false;
        self.outstanding.push_back(correlation_id);
        Ok(())
    }

    /// Reads the answer to the oldest outstanding request, a request of type `R` sent at
    /// `version`, waiting up to `timeout_ms`.
    pub async fn recv<R: Request>(
        &mut self,
        version: i16,
        timeout_ms: u64,
    ) -> Result<R::Response, ClientError> {
        self.check_usable()?;
        let Some(&expected) = self.outstanding.front() else {
            return Err(ClientError::InvalidArgument(
                "recv on a pipeline with no request outstanding".to_string(),
            ));
        };
        let conn = &self.conn;
        self.broken = true;
        let call = async {
            let mut wire = conn.wire.lock().await;
            conn.read_frame(&mut wire).await
        };
        let mut body = conn.with_timeout::<R, _>(call, timeout_ms).await?;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| conn.protocol(format!("bad response header: {e}")))?;
        if header.correlation_id != expected {
            return Err(conn.protocol(format!(
                "correlation id {} does not match request {expected}",
                header.correlation_id
            )));
        }
        let response = R::Response::decode(&mut body, version).map_err(|e| {
            conn.protocol(format!("bad {} v{version} response: {e}", api_name::<R>()))
        })?;
        self.outstanding.pop_front();
        self.broken = false;
        Ok(response)
    }
}

fn versions_map(response: &ApiVersionsResponse) -> HashMap<i16, (i16, i16)> {
    response
        .api_keys
        .iter()
        .map(|v| (v.api_key, (v.min_version, v.max_version)))
        .collect()
}

fn api_key<R: Request>(addr: &str) -> Result<ApiKey, ClientError> {
    ApiKey::try_from(R::KEY).map_err(|_| ClientError::Protocol {
        addr: addr.to_string(),
        reason: format!("unknown api key {}", R::KEY),
    })
}

fn api_name<R: Request>() -> String {
    match ApiKey::try_from(R::KEY) {
        Ok(key) => format!("{key:?}"),
        Err(_) => format!("api {}", R::KEY),
    }
}
