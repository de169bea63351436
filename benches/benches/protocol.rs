//! Criterion benchmarks of the produce request path before the log: decoding a 1 MiB
//! ProduceRequest with `kafka-protocol` (as the broker does), and decoding it then checking the
//! framing and CRC-32C of every batch it carries.
//!
//! `cargo bench -p strata-benches --bench protocol`.

mod common;

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strata_storage::batch::{self, build};

/// Record bytes in the request.
const REQUEST_RECORDS_BYTES: usize = 1024 * 1024;
/// Bytes of each batch in the request.
const BATCH_BYTES: usize = 16 * 1024;

/// About 1 MiB of 16 KiB batches of 100-byte records, back to back.
fn records_of_about(total: usize) -> Bytes {
    let template = build::simple_batch(BATCH_BYTES / 108, 100, 1_700_000_000_000);
    let mut out = Vec::with_capacity(total + template.len());
    while out.len() + template.len() <= total {
        out.extend_from_slice(&template);
    }
    Bytes::from(out)
}

/// The body of a ProduceRequest (acks=all) with `records` for one partition, at `version`.
fn encoded_request(records: Bytes, version: i16) -> Bytes {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let mut buf = BytesMut::new();
    request
        .encode(&mut buf, version)
        .expect("encode the produce request");
    buf.freeze()
}

fn produce_request_decode(c: &mut Criterion) {
    let records = records_of_about(REQUEST_RECORDS_BYTES);
    let mut group = c.benchmark_group("produce_request_1MiB");
    group.throughput(Throughput::Bytes(records.len() as u64));
    // v3: the oldest Produce with record batches; v9: flexible (librdkafka 2.x); v12: what
    // Strata's client sends.
    for version in [3i16, 9, 12] {
        let body = encoded_request(records.clone(), version);
        group.bench_with_input(BenchmarkId::new("decode", version), &body, |b, body| {
            b.iter(|| {
                let mut buf = body.clone();
                ProduceRequest::decode(&mut buf, version).expect("decode")
            })
        });
    }
    let version = 9;
    let body = encoded_request(records, version);
    group.bench_function("decode_and_validate_batches_v9", |b| {
        b.iter(|| {
            let mut buf = body.clone();
            let request = ProduceRequest::decode(&mut buf, version).expect("decode");
            let mut count = 0usize;
            for topic in &request.topic_data {
                for partition in &topic.partition_data {
                    let records = partition.records.as_ref().expect("records");
                    for item in batch::batches(records) {
                        let (_, bytes) = item.expect("framing");
                        batch::verify_crc(bytes).expect("crc");
                        count += 1;
                    }
                }
            }
            black_box(count)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = produce_request_decode
}
criterion_main!(benches);
