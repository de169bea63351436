//! Strata's client `Connection` against hand-written fake brokers: version negotiation fallback,
//! timeouts, and bad bytes (errors, never panics).

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, MetadataRequest, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use strata_cluster::client::{ClientError, Connection, RESPONSE_BYTES_MAX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one request frame; returns (api key, api version, correlation id).
async fn read_request(stream: &mut TcpStream) -> Option<(i16, i16, i32)> {
    let length = stream.read_i32().await.ok()?;
    let mut body = vec![0u8; usize::try_from(length).ok()?];
    stream.read_exact(&mut body).await.ok()?;
    let key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    let correlation = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    Some((key, version, correlation))
}

fn api_versions_body(error_code: i16, metadata_max: i16, version: i16) -> BytesMut {
    let response = ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::ApiVersions as i16)
                .with_min_version(0)
                .with_max_version(if error_code == 0 { 3 } else { 0 }),
            ApiVersion::default()
                .with_api_key(ApiKey::Metadata as i16)
                .with_min_version(0)
                .with_max_version(metadata_max),
        ]);
    let mut buf = BytesMut::new();
    response.encode(&mut buf, version).expect("encode");
    buf
}

async fn write_response(stream: &mut TcpStream, correlation: i32, body: &[u8]) {
    let mut header = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation)
        .encode(&mut header, 0)
        .expect("header");
    let mut frame = BytesMut::new();
    frame.put_i32((header.len() + body.len()) as i32);
    frame.extend_from_slice(&header);
    frame.extend_from_slice(body);
    stream.write_all(&frame).await.expect("write");
    // madsim's TcpStream sends buffered bytes on flush.
    stream.flush().await.expect("flush");
}

async fn fake_broker<F, Fut>(serve_one: F) -> String
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            serve_one(stream).await;
        }
    });
    addr
}

#[tokio::test]
async fn falls_back_to_api_versions_v0_and_caps_versions() {
    let addr = fake_broker(|mut stream| async move {
        let (key, version, correlation) = read_request(&mut stream).await.expect("request");
        assert_eq!((key, version), (ApiKey::ApiVersions as i16, 3));
        // An old broker: UNSUPPORTED_VERSION in a v0 body.
        write_response(&mut stream, correlation, &api_versions_body(35, 5, 0)).await;
        let (key, version, correlation) = read_request(&mut stream).await.expect("request");
        assert_eq!((key, version), (ApiKey::ApiVersions as i16, 0));
        write_response(&mut stream, correlation, &api_versions_body(0, 5, 0)).await;
        // Keep the socket open until the client is done.
        let _ = read_request(&mut stream).await;
    })
    .await;
    let conn = Connection::connect(&addr, "t", 5_000)
        .await
        .expect("connect");
    assert_eq!(conn.version_for::<MetadataRequest>().expect("metadata"), 5);
    let err = conn
        .version_for::<kafka_protocol::messages::ProduceRequest>()
        .expect_err("no produce");
    assert!(matches!(err, ClientError::UnsupportedApi { .. }), "{err}");
}

#[tokio::test]
async fn silent_broker_times_out() {
    let addr = fake_broker(|mut stream| async move {
        let _ = read_request(&mut stream).await;
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    })
    .await;
    let started = std::time::Instant::now();
    let err = Connection::connect(&addr, "t", 300)
        .await
        .expect_err("timeout");
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn oversized_response_length_is_an_error() {
    let addr = fake_broker(|mut stream| async move {
        let _ = read_request(&mut stream).await;
        let _ = stream
            .write_all(&((RESPONSE_BYTES_MAX as i32) + 1).to_be_bytes())
            .await;
        let _ = stream.flush().await;
        let _ = read_request(&mut stream).await;
    })
    .await;
    let err = Connection::connect(&addr, "t", 5_000)
        .await
        .expect_err("too big");
    assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn garbage_and_wrong_correlation_are_errors() {
    // A body that is not an ApiVersions response.
    let addr = fake_broker(|mut stream| async move {
        let (_, _, correlation) = read_request(&mut stream).await.expect("request");
        write_response(&mut stream, correlation, &[0xff, 0xff, 0xff]).await;
        let _ = read_request(&mut stream).await;
    })
    .await;
    let err = Connection::connect(&addr, "t", 5_000)
        .await
        .expect_err("garbage");
    assert!(matches!(err, ClientError::Protocol { .. }), "{err}");

    // A well-formed response with someone else's correlation id.
    let addr = fake_broker(|mut stream| async move {
        let (_, _, correlation) = read_request(&mut stream).await.expect("request");
        write_response(&mut stream, correlation + 100, &api_versions_body(0, 12, 3)).await;
        let _ = read_request(&mut stream).await;
    })
    .await;
    let err = Connection::connect(&addr, "t", 5_000)
        .await
        .expect_err("correlation");
    assert!(
        matches!(&err, ClientError::Protocol { reason, .. } if reason.contains("correlation")),
        "{err}"
    );

    // The broker hangs up mid-response.
    let addr = fake_broker(|mut stream| async move {
        let _ = read_request(&mut stream).await;
        let _ = stream.write_all(&[0, 0, 0, 50, 1, 2]).await;
        let _ = stream.flush().await;
    })
    .await;
    let err = Connection::connect(&addr, "t", 5_000)
        .await
        .expect_err("eof");
    assert!(matches!(err, ClientError::Disconnected { .. }), "{err}");
}
