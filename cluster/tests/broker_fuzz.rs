//! Random bytes fed to the request decoder: it must return an error or a request, never panic
//! and never abort. Installs [`GuardedAllocator`] like the `strata` binary: kafka-protocol
//! preallocates arrays from untrusted lengths.

mod broker_util;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, MetadataRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;
use strata_cluster::handlers::SUPPORTED_APIS;
use strata_cluster::server::{decode_request, GuardedAllocator};

#[global_allocator]
static ALLOC: GuardedAllocator = GuardedAllocator;

/// A valid header for a served API and version, followed by `tail`.
fn frame_with_header(api_index: usize, version_offset: i16, tail: &[u8]) -> Bytes {
    let (api_key, min, max) = SUPPORTED_APIS[api_index % SUPPORTED_APIS.len()];
    let span = max - min + 1;
    let version = min + version_offset.rem_euclid(span);
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut buf = bytes::BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("encode header");
    buf.extend_from_slice(tail);
    buf.freeze()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(Bytes::from(bytes));
    }

    #[test]
    fn random_bodies_behind_valid_headers_never_panic(
        api_index in 0usize..64,
        version_offset in 0i16..32,
        // Biased towards 0, 1 and 0xff so that lengths and nulls are often plausible and the
        // decoder gets deep into the bodies; any byte can appear, so huge lengths do too.
        tail in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), 0u8..16, any::<u8>()], 0..256),
    ) {
        let _ = decode_request(frame_with_header(api_index, version_offset, &tail));
    }

    #[test]
    fn truncations_of_a_valid_request_are_errors(cut in 0usize..64) {
        let mut frame = frame_with_header(3, 0, &[]).to_vec(); // Metadata v0 header
        let mut body = bytes::BytesMut::new();
        MetadataRequest::default()
            .with_topics(Some(vec![]))
            .encode(&mut body, 0)
            .expect("encode");
        frame.extend_from_slice(&body);
        let whole = decode_request(Bytes::from(frame.clone()));
        prop_assert!(whole.is_ok());
        prop_assert_eq!(whole.unwrap().api_key, ApiKey::Metadata);
        let cut = cut.min(frame.len());
        if cut < frame.len() {
            prop_assert!(decode_request(Bytes::from(frame[..cut].to_vec())).is_err());
        }
    }
}

/// A Produce v3 frame whose topic array claims i32::MAX entries: the decoder asks for ~100 GiB
/// up front. The connection must close and the broker keep serving.
#[tokio::test]
async fn hostile_array_length_closes_only_that_connection() {
    let broker = broker_util::TestBroker::start().await;
    for (api_index, version_offset) in [(0usize, 0i16), (0, 6), (1, 0), (3, 9)] {
        let mut conn = broker.connect().await;
        let mut tail = Vec::new();
        if SUPPORTED_APIS[api_index].0 == ApiKey::Produce {
            tail.extend_from_slice(&[0xff, 0xff]); // transactional_id: null
            tail.extend_from_slice(&[0, 1]); // acks
            tail.extend_from_slice(&[0, 0, 0x75, 0x30]); // timeout
        }
        tail.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0x8f, 0xff, 0xff, 0xff, 0x0f]);
        conn.send_frame(&frame_with_header(api_index, version_offset, &tail))
            .await;
        assert!(conn.is_closed().await);
    }
    let mut conn = broker.connect().await;
    let response: kafka_protocol::messages::ApiVersionsResponse = conn
        .call(
            ApiKey::ApiVersions,
            3,
            &kafka_protocol::messages::ApiVersionsRequest::default(),
        )
        .await;
    assert_eq!(response.error_code, 0);
    broker.stop().await;
}
