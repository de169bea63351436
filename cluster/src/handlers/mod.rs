//! One module per Kafka API, the table of supported versions, and request dispatch.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, FetchResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::broker::Broker;

pub mod alter_configs;
pub mod api_versions;
pub mod authorized_operations;
pub mod configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;

/// The API versions Strata serves: `(api, min, max)`. Conservative ranges that old and new
/// clients all handle and that address topics by name. Minimums are raised where kafka-protocol
/// 0.18 (Kafka 4.1 schemas) has no codec for older versions.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
];

/// The supported `(min, max)` versions of `api_key`, if Strata serves it.
pub fn supported_versions(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|(_, min, max)| (*min, *max))
}

macro_rules! api_enums {
    ($($variant:ident($req:ty, $resp:ty)),* $(,)?) => {
        /// A decoded request body of a supported API.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $(
                #[doc = concat!("A ", stringify!($variant), " request.")]
                $variant($req),
            )*
        }

        /// A response body to encode.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Response {
            $(
                #[doc = concat!("A ", stringify!($variant), " response.")]
                $variant($resp),
            )*
        }

        impl Request {
            /// Decodes the body of a request of `api_key` at `version`. Returns an error (never
            /// panics) on malformed input or an API Strata does not serve.
            pub fn decode(api_key: ApiKey, body: &mut Bytes, version: i16) -> Result<Request, String> {
                match api_key {
                    $(
                        ApiKey::$variant => <$req as Decodable>::decode(body, version)
                            .map(Request::$variant)
                            .map_err(|e| format!("{api_key:?} v{version}: {e:#}")),
                    )*
                    other => Err(format!("API {other:?} is not served")),
                }
            }

            /// The API key of this request.
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $(Request::$variant(_) => ApiKey::$variant,)*
                }
            }
        }

        impl Response {
            /// Encodes the response body at `version`.
            pub fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), String> {
                match self {
                    $(
                        Response::$variant(body) => body
                            .encode(buf, version)
                            .map_err(|e| format!("{} v{version}: {e:#}", stringify!($variant))),
                    )*
                }
            }
        }
    };
}

api_enums! {
    Produce(ProduceRequest, ProduceResponse),
    Fetch(FetchRequest, FetchResponse),
    ListOffsets(ListOffsetsRequest, ListOffsetsResponse),
    Metadata(MetadataRequest, MetadataResponse),
    ApiVersions(ApiVersionsRequest, ApiVersionsResponse),
    CreateTopics(CreateTopicsRequest, CreateTopicsResponse),
    DeleteTopics(DeleteTopicsRequest, DeleteTopicsResponse),
    InitProducerId(InitProducerIdRequest, InitProducerIdResponse),
    DescribeConfigs(DescribeConfigsRequest, DescribeConfigsResponse),
    AlterConfigs(AlterConfigsRequest, AlterConfigsResponse),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse),
    FindCoordinator(FindCoordinatorRequest, FindCoordinatorResponse),
    JoinGroup(JoinGroupRequest, JoinGroupResponse),
    SyncGroup(SyncGroupRequest, SyncGroupResponse),
    Heartbeat(HeartbeatRequest, HeartbeatResponse),
    LeaveGroup(LeaveGroupRequest, LeaveGroupResponse),
    OffsetCommit(OffsetCommitRequest, OffsetCommitResponse),
    OffsetFetch(OffsetFetchRequest, OffsetFetchResponse),
    ListGroups(ListGroupsRequest, ListGroupsResponse),
    DescribeGroups(DescribeGroupsRequest, DescribeGroupsResponse),
    DeleteGroups(DeleteGroupsRequest, DeleteGroupsResponse),
    OffsetDelete(OffsetDeleteRequest, OffsetDeleteResponse),
    DescribeCluster(DescribeClusterRequest, DescribeClusterResponse),
    DeleteRecords(DeleteRecordsRequest, DeleteRecordsResponse),
    CreatePartitions(CreatePartitionsRequest, CreatePartitionsResponse),
}

/// What the connection does after a request was handled.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response.
    Respond(Response),
    /// Send nothing (acks=0 produce that succeeded).
    NoResponse,
    /// Close the connection without answering (acks=0 produce that failed, like Kafka).
    Close,
}

/// Who sent a request (group members are described with it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The request header's client id.
    pub client_id: String,
    /// The client's address, as Kafka prints it (`/ip`).
    pub client_host: String,
}

/// Handles one request at `version` (already checked to be within [`SUPPORTED_APIS`]).
pub async fn handle(broker: &Arc<Broker>, request: Request, version: i16) -> Outcome {
    handle_in_context(broker, request, version, &RequestContext::default()).await
}

/// [`handle`] with the sender's identity.
pub async fn handle_in_context(
    broker: &Arc<Broker>,
    request: Request,
    version: i16,
    context: &RequestContext,
) -> Outcome {
    match request {
        Request::FindCoordinator(req) => Outcome::Respond(Response::FindCoordinator(
            find_coordinator::handle(broker, req, version),
        )),
        Request::JoinGroup(req) => Outcome::Respond(Response::JoinGroup(
            join_group::handle(broker, req, version, context).await,
        )),
        Request::SyncGroup(req) => Outcome::Respond(Response::SyncGroup(
            sync_group::handle(broker, req, version).await,
        )),
        Request::Heartbeat(req) => {
            Outcome::Respond(Response::Heartbeat(heartbeat::handle(broker, req, version)))
        }
        Request::LeaveGroup(req) => Outcome::Respond(Response::LeaveGroup(leave_group::handle(
            broker, req, version,
        ))),
        Request::OffsetCommit(req) => Outcome::Respond(Response::OffsetCommit(
            offset_commit::handle(broker, req, version).await,
        )),
        Request::OffsetFetch(req) => Outcome::Respond(Response::OffsetFetch(offset_fetch::handle(
            broker, req, version,
        ))),
        Request::ListGroups(req) => Outcome::Respond(Response::ListGroups(list_groups::handle(
            broker, req, version,
        ))),
        Request::DescribeGroups(req) => Outcome::Respond(Response::DescribeGroups(
            describe_groups::handle(broker, req, version),
        )),
        Request::DeleteGroups(req) => Outcome::Respond(Response::DeleteGroups(
            delete_groups::handle(broker, req, version).await,
        )),
        Request::OffsetDelete(req) => Outcome::Respond(Response::OffsetDelete(
            offset_delete::handle(broker, req, version).await,
        )),
        Request::ApiVersions(req) => {
            Outcome::Respond(Response::ApiVersions(api_versions::handle(&req, version)))
        }
        Request::Metadata(req) => {
            Outcome::Respond(Response::Metadata(metadata::handle(broker, req, version)))
        }
        Request::Produce(req) => produce::handle(broker, req, version).await,
        Request::Fetch(req) => {
            Outcome::Respond(Response::Fetch(fetch::handle(broker, req, version).await))
        }
        Request::ListOffsets(req) => Outcome::Respond(Response::ListOffsets(
            list_offsets::handle(broker, req, version).await,
        )),
        Request::CreateTopics(req) => Outcome::Respond(Response::CreateTopics(
            create_topics::handle(broker, req, version).await,
        )),
        Request::DeleteTopics(req) => Outcome::Respond(Response::DeleteTopics(
            delete_topics::handle(broker, req, version).await,
        )),
        Request::InitProducerId(req) => Outcome::Respond(Response::InitProducerId(
            init_producer_id::handle(broker, req, version),
        )),
        Request::DescribeConfigs(req) => Outcome::Respond(Response::DescribeConfigs(
            describe_configs::handle(broker, req, version),
        )),
        Request::AlterConfigs(req) => Outcome::Respond(Response::AlterConfigs(
            alter_configs::handle(broker, req, version),
        )),
        Request::DeleteRecords(req) => Outcome::Respond(Response::DeleteRecords(
            delete_records::handle(broker, req, version).await,
        )),
        Request::CreatePartitions(req) => Outcome::Respond(Response::CreatePartitions(
            create_partitions::handle(broker, req, version).await,
        )),
        Request::IncrementalAlterConfigs(req) => {
            Outcome::Respond(Response::IncrementalAlterConfigs(
                incremental_alter_configs::handle(broker, req, version),
            ))
        }
        Request::DescribeCluster(req) => Outcome::Respond(Response::DescribeCluster(
            describe_cluster::handle(broker, req, version),
        )),
    }
}
