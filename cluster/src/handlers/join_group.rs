//! JoinGroup (v0-v9): see [`crate::group`] for the state machine.

use std::sync::Arc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::RequestContext;
use crate::broker::Broker;
use crate::group::{JoinParams, JoinResult, Pending};

fn response(result: JoinResult, version: i16) -> JoinGroupResponse {
    let members = result
        .members
        .into_iter()
        .map(|m| {
            let member = JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                .with_metadata(m.metadata);
            if version >= 5 {
                member.with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
            } else {
                member
            }
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(result.error.map_or(0, |e| e.code()))
        .with_generation_id(result.generation_id)
        .with_leader(StrBytes::from_string(result.leader))
        .with_member_id(StrBytes::from_string(result.member_id))
        .with_members(members);
    response.protocol_name = result.protocol_name.map(StrBytes::from_string);
    if version < 7 && response.protocol_name.is_none() {
        // Non-nullable before v7.
        response.protocol_name = Some(StrBytes::from_static_str(""));
    }
    if version >= 7 {
        response.protocol_type = result.protocol_type.map(StrBytes::from_string);
    }
    response
}

/// Handles a JoinGroup request; waits (bounded) until the rebalance completes.
pub async fn handle(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    context: &RequestContext,
) -> JoinGroupResponse {
    let params = JoinParams {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: if version >= 5 {
            request.group_instance_id.map(|s| s.to_string())
        } else {
            None
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        client_id: context.client_id.clone(),
        client_host: context.client_host.clone(),
        require_known_member_id: version >= 4,
    };
    let member_id = params.member_id.clone();
    let now = broker.clock().monotonic();
    let result = match broker.groups().join(now, params) {
        Pending::Done(result) => result,
        Pending::Wait(receiver, timeout) => match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(result)) => result,
            // Superseded or timed out: the client rejoins.
            Ok(Err(_)) | Err(_) => {
                JoinResult::error(ResponseError::RebalanceInProgress, &member_id)
            }
        },
    };
    response(result, version)
}
