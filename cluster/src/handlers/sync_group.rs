//! SyncGroup (v0-v5): the leader's assignments go to every member.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::group::{Pending, SyncResult};

/// Handles a SyncGroup request; a follower waits (bounded) for the leader's assignment.
pub async fn handle(
    broker: &Arc<Broker>,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let assignments: BTreeMap<String, bytes::Bytes> = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let instance = if version >= 3 {
        request.group_instance_id.as_ref().map(|s| s.as_str())
    } else {
        None
    };
    let (protocol_type, protocol_name) = if version >= 5 {
        (
            request.protocol_type.as_ref().map(|s| s.as_str()),
            request.protocol_name.as_ref().map(|s| s.as_str()),
        )
    } else {
        (None, None)
    };
    let now = broker.clock().monotonic();
    let pending = broker.groups().sync(
        now,
        request.group_id.0.as_str(),
        request.generation_id,
        request.member_id.as_str(),
        instance,
        protocol_type,
        protocol_name,
        assignments,
    );
    let result = match pending {
        Pending::Done(result) => result,
        Pending::Wait(receiver, timeout) => match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => SyncResult::error(ResponseError::RebalanceInProgress),
        },
    };
    let mut response = SyncGroupResponse::default()
        .with_error_code(result.error.map_or(0, |e| e.code()))
        .with_assignment(result.assignment);
    if version >= 5 {
        response.protocol_type = result.protocol_type.map(StrBytes::from_string);
        response.protocol_name = result.protocol_name.map(StrBytes::from_string);
    }
    response
}
