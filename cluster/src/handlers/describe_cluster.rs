//! DescribeCluster (v0-v2, KIP-700; what Kafka's admin client uses for `describeCluster`): the
//! cluster id, this node as the only broker and the controller, and the cluster authorized
//! operations when asked (every cluster operation: no authorizer). This node is a broker
//! endpoint: a request for controllers (endpoint type 2) answers MISMATCHED_ENDPOINT_TYPE and an
//! unknown type UNSUPPORTED_ENDPOINT_TYPE (INVALID_REQUEST in v0, whose schema has neither), as
//! Kafka's brokers do.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::authorized_operations;
use crate::broker::Broker;

/// Kafka's `EndpointType.BROKER`.
const ENDPOINT_TYPE_BROKER: i8 = 1;
/// Kafka's `EndpointType.CONTROLLER`.
const ENDPOINT_TYPE_CONTROLLER: i8 = 2;

/// Answers a DescribeCluster request.
pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    if request.endpoint_type != ENDPOINT_TYPE_BROKER {
        let (error, message) = if request.endpoint_type == ENDPOINT_TYPE_CONTROLLER {
            (
                ResponseError::MismatchedEndpointType,
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint \
                 of type CONTROLLER"
                    .to_string(),
            )
        } else {
            (
                ResponseError::UnsupportedEndpointType,
                format!("Unsupported endpoint type {}", request.endpoint_type),
            )
        };
        let error = if version == 0 {
            ResponseError::InvalidRequest
        } else {
            error
        };
        return DescribeClusterResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)));
    }
    let (host, port) = broker.advertised_endpoint();
    let node = BrokerId(broker.node_id());
    DescribeClusterResponse::default()
        .with_error_code(0)
        .with_endpoint_type(ENDPOINT_TYPE_BROKER)
        .with_cluster_id(StrBytes::from_string(broker.cluster_id().to_string()))
        .with_controller_id(node)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node)
            .with_host(StrBytes::from_string(host))
            .with_port(port)
            .with_rack(None)])
        .with_cluster_authorized_operations(authorized_operations::answer(
            request.include_cluster_authorized_operations,
            authorized_operations::CLUSTER,
        ))
}
