//! LeaveGroup (v0-v5; v3+ removes a batch of members, by member id or static instance id).

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::broker::Broker;

/// Answers a LeaveGroup request.
pub fn handle(
    broker: &Arc<Broker>,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let result = broker.groups().leave(
        broker.clock().monotonic(),
        request.group_id.0.as_str(),
        &members,
    );
    match result {
        Err(error) => LeaveGroupResponse::default().with_error_code(error.code()),
        Ok(errors) if version >= 3 => {
            let responses = request
                .members
                .into_iter()
                .zip(errors)
                .map(|(m, error)| {
                    MemberResponse::default()
                        .with_member_id(m.member_id)
                        .with_group_instance_id(m.group_instance_id)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            LeaveGroupResponse::default().with_members(responses)
        }
        Ok(errors) => LeaveGroupResponse::default()
            .with_error_code(errors.first().copied().flatten().map_or(0, |e| e.code())),
    }
}
