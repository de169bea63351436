//! FindCoordinator (v0-v4): this single node coordinates every group. Transaction coordinators
//! do not exist (Strata has no transactions): key type 1 answers INVALID_REQUEST.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::errors::TRANSACTIONS_UNSUPPORTED;

/// Key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

fn error_for(key_type: i8) -> Option<(ResponseError, String)> {
    match key_type {
        KEY_TYPE_GROUP => None,
        1 => Some((
            TRANSACTIONS_UNSUPPORTED,
            "Strata has no transaction coordinator".to_string(),
        )),
        other => Some((
            ResponseError::InvalidRequest,
            format!("unknown coordinator key type {other}"),
        )),
    }
}

/// Answers a FindCoordinator request.
pub fn handle(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (host, port) = broker.advertised_endpoint();
    let node = BrokerId(broker.node_id());
    let error = error_for(request.key_type);
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let entry = Coordinator::default().with_key(key.clone());
                match &error {
                    None => entry
                        .with_node_id(node)
                        .with_host(StrBytes::from_string(host.clone()))
                        .with_port(port),
                    Some((code, message)) => entry
                        .with_node_id(BrokerId(-1))
                        .with_host(StrBytes::from_static_str(""))
                        .with_port(-1)
                        .with_error_code(code.code())
                        .with_error_message(Some(StrBytes::from_string(message.clone()))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let response = FindCoordinatorResponse::default();
    match error {
        None => response
            .with_node_id(node)
            .with_host(StrBytes::from_string(host))
            .with_port(port),
        Some((code, message)) => {
            let response = response
                .with_error_code(code.code())
                .with_node_id(BrokerId(-1))
                .with_host(StrBytes::from_static_str(""))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(Some(StrBytes::from_string(message)))
            } else {
                response
            }
        }
    }
}
