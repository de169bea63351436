//! Test helpers: a broker on 127.0.0.1:0 over a `MemDisk`, and a raw Kafka connection that
//! frames requests encoded with kafka-protocol.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_cluster::{Broker, BrokerConfig};
use strata_storage::{Clock, Disk, MemDisk, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A broker serving on an ephemeral port.
pub struct TestBroker {
    pub broker: Arc<Broker>,
    pub addr: SocketAddr,
    pub disk: Arc<MemDisk>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestBroker {
    /// Starts a broker with the default config (data dir `/data`) on a fresh `MemDisk`.
    pub async fn start() -> TestBroker {
        Self::start_with(BrokerConfig::default(), Arc::new(MemDisk::new())).await
    }

    /// Starts a broker with `config` on `disk`. Groups rebalance at once
    /// (`group.initial.rebalance.delay.ms` = 0) so that tests need not wait Kafka's 3 s; a test of
    /// the delay sets it with `broker.groups().set_config`. Topics may have segments of any size
    /// from 14 bytes (`segment_bytes_min`), so that tests roll segments often, unless `config`
    /// asks for a floor above the default (a test of the floor).
    pub async fn start_with(mut config: BrokerConfig, disk: Arc<MemDisk>) -> TestBroker {
        config.data_dir = "/data".into();
        config.group_initial_rebalance_delay_ms = 0;
        if config.segment_bytes_min == strata_cluster::config::SEGMENT_BYTES_MIN_DEFAULT {
            config.segment_bytes_min = strata_cluster::config::SEGMENT_BYTES_MIN_FLOOR;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        config.listen = addr;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let disk_dyn: Arc<dyn Disk> = disk.clone();
        let broker = Broker::open(config, disk_dyn, clock)
            .await
            .expect("broker opens");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(strata_cluster::server::serve(
            Arc::clone(&broker),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        TestBroker {
            broker,
            addr,
            disk,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Opens a raw connection.
    pub async fn connect(&self) -> Conn {
        Conn::connect(self.addr).await
    }

    /// Stops the server and shuts the broker down (flush + close).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("serve ends cleanly");
        }
    }
}

/// A raw Kafka connection.
pub struct Conn {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Conn {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Encodes and sends a request; returns its correlation id.
    pub async fn send<Req: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> i32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strata-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api_key.request_header_version(version))
            .expect("encode header");
        request.encode(&mut body, version).expect("encode request");
        self.send_frame(&body).await;
        correlation_id
    }

    /// Sends `payload` with a correct length prefix.
    pub async fn send_frame(&mut self, payload: &[u8]) {
        let mut frame = BytesMut::with_capacity(payload.len() + 4);
        frame.put_i32(payload.len() as i32);
        frame.put_slice(payload);
        self.stream.write_all(&frame).await.expect("write frame");
    }

    /// Sends raw bytes (no framing added).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads one response frame (5 s timeout).
    pub async fn read_frame(&mut self) -> Bytes {
        tokio::time::timeout(Duration::from_secs(5), async {
            let length = self.stream.read_i32().await.expect("read length");
            let mut buf = vec![0u8; length as usize];
            self.stream.read_exact(&mut buf).await.expect("read body");
            Bytes::from(buf)
        })
        .await
        .expect("response within 5 s")
    }

    /// Reads and decodes one response; returns (correlation id, body).
    pub async fn recv<Resp: Decodable>(&mut self, api_key: ApiKey, version: i16) -> (i32, Resp) {
        let mut frame = self.read_frame().await;
        let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
            .expect("decode response header");
        let body = Resp::decode(&mut frame, version).expect("decode response body");
        assert_eq!(
            frame.remaining(),
            0,
            "trailing bytes in {api_key:?} v{version} response"
        );
        (header.correlation_id, body)
    }

    /// Sends a request and reads its response.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        let correlation_id = self.send(api_key, version, request).await;
        let (got, response) = self.recv(api_key, version).await;
        assert_eq!(got, correlation_id, "correlation id");
        response
    }

    /// True if the broker closed the connection (EOF or reset within 5 s).
    pub async fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => false,
            Err(_) => false,
        }
    }
}

/// One v2 record batch with `values`, optionally idempotent.
pub fn batch(values: &[&[u8]], producer: Option<(i64, i16, i32)>) -> Bytes {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch only while offset - sequence is constant;
            // only the first record's sequence is written (the base sequence, -1 if none).
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}
