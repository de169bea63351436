//! The idempotent producer's retry path end to end: a proxy between client and broker drops the
//! response of a Produce request after the broker has applied it; the producer resends the same
//! batch and the broker must drop the duplicate. A non-idempotent producer in the same situation
//! writes the record twice (which shows the proxy really loses the response).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, MetadataResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use strata_cluster::client::{Client, ClientConfig, Producer, ProducerConfig, Record};
use strata_cluster::{Broker, BrokerConfig};
use strata_storage::{Clock, Disk, MemDisk, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let length = stream.read_i32().await.ok()?;
    let mut body = vec![0u8; usize::try_from(length).ok()?];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

async fn write_frame(stream: &mut TcpStream, body: &[u8]) -> Option<()> {
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await.ok()?;
    stream.flush().await.ok()
}

/// Rewrites every broker port in a Metadata response body (header included) to `port`.
fn rewrite_metadata(body: Vec<u8>, version: i16, port: u16) -> Vec<u8> {
    let header_version = ApiKey::Metadata.response_header_version(version);
    let mut bytes = Bytes::from(body);
    let header = ResponseHeader::decode(&mut bytes, header_version).expect("metadata header");
    let mut response = MetadataResponse::decode(&mut bytes, version).expect("metadata body");
    for broker in &mut response.brokers {
        broker.port = i32::from(port);
    }
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version).expect("header");
    response.encode(&mut out, version).expect("body");
    out.to_vec()
}

/// A Kafka-aware proxy: forwards request/response pairs, points Metadata at itself, and hangs up
/// instead of delivering the response of the next `drop_produce_responses` Produce requests.
struct Proxy {
    addr: String,
    drop_produce_responses: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let local = listener.local_addr().expect("addr");
        let drop_produce_responses = Arc::new(AtomicUsize::new(0));
        let drops = Arc::clone(&drop_produce_responses);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let drops = Arc::clone(&drops);
                tokio::spawn(async move {
                    let _ = Self::pump(client, upstream, local.port(), drops).await;
                });
            }
        });
        Proxy {
            addr: local.to_string(),
            drop_produce_responses,
        }
    }

    async fn pump(
        mut client: TcpStream,
        upstream: String,
        port: u16,
        drops: Arc<AtomicUsize>,
    ) -> Option<()> {
        let mut broker = TcpStream::connect(upstream).await.ok()?;
        loop {
            let request = read_frame(&mut client).await?;
            let key = i16::from_be_bytes([*request.first()?, *request.get(1)?]);
            let version = i16::from_be_bytes([*request.get(2)?, *request.get(3)?]);
            write_frame(&mut broker, &request).await?;
            let response = read_frame(&mut broker).await?;
            if key == ApiKey::Produce as i16
                && drops
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                // The broker applied the batch; the client never hears of it.
                return None;
            }
            let response = if key == ApiKey::Metadata as i16 {
                rewrite_metadata(response, version, port)
            } else {
                response
            };
            write_frame(&mut client, &response).await?;
        }
    }
}

async fn start_broker() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = BrokerConfig {
        data_dir: "/data".into(),
        listen: addr,
        ..BrokerConfig::default()
    };
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let broker = Broker::open(config, disk, clock)
        .await
        .expect("broker opens");
    tokio::spawn(strata_cluster::server::serve(
        broker,
        listener,
        std::future::pending::<()>(),
    ));
    addr.to_string()
}

fn value(v: &str) -> Record {
    Record {
        value: Some(Bytes::copy_from_slice(v.as_bytes())),
        ..Record::default()
    }
}

async fn values(client: &Client, topic: &str) -> Vec<Bytes> {
    client
        .fetch(topic, 0, 0, 0, 1 << 20)
        .await
        .expect("fetch")
        .records
        .into_iter()
        .map(|r| r.value.expect("value"))
        .collect()
}

#[tokio::test]
async fn lost_produce_response_is_retried_without_duplicates_when_idempotent() {
    let broker = start_broker().await;
    let proxy = Proxy::start(broker).await;
    let config = ClientConfig {
        request_timeout_ms: 5_000,
        client_id: "idempotence-test".to_string(),
    };
    let client = Client::connect(&proxy.addr, config).await.expect("connect");
    client
        .create_topics("idem", 1, 1, &[])
        .await
        .expect("create");
    client
        .create_topics("plain", 1, 1, &[])
        .await
        .expect("create");

    let idempotent = Producer::new(
        client.clone(),
        ProducerConfig {
            retries: 3,
            retry_backoff_ms: 10,
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    assert_eq!(
        idempotent
            .send("idem", Some(0), value("a"))
            .await
            .expect("a"),
        (0, 0)
    );
    proxy.drop_produce_responses.store(1, Ordering::SeqCst);
    let (_, offset_b) = idempotent
        .send("idem", Some(0), value("b"))
        .await
        .expect("b");
    assert_eq!(
        proxy.drop_produce_responses.load(Ordering::SeqCst),
        0,
        "a response was dropped"
    );
    assert!(offset_b == 1 || offset_b == -1, "offset of b: {offset_b}");
    assert_eq!(
        idempotent
            .send("idem", Some(0), value("c"))
            .await
            .expect("c"),
        (0, 2)
    );
    assert_eq!(
        values(&client, "idem").await,
        vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            Bytes::from_static(b"c")
        ]
    );

    let plain = Producer::new(
        client.clone(),
        ProducerConfig {
            idempotent: false,
            retries: 3,
            retry_backoff_ms: 10,
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    proxy.drop_produce_responses.store(1, Ordering::SeqCst);
    plain.send("plain", Some(0), value("x")).await.expect("x");
    assert_eq!(
        values(&client, "plain").await,
        vec![Bytes::from_static(b"x"), Bytes::from_static(b"x")],
        "without idempotence the resend is a duplicate"
    );
}
