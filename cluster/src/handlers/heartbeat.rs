//! Heartbeat (v0-v4).

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;

/// Answers a Heartbeat request.
pub fn handle(broker: &Arc<Broker>, request: HeartbeatRequest, version: i16) -> HeartbeatResponse {
    let instance = if version >= 3 {
        request.group_instance_id.as_ref().map(|s| s.as_str())
    } else {
        None
    };
    let error = broker.groups().heartbeat(
        broker.clock().monotonic(),
        request.group_id.0.as_str(),
        request.generation_id,
        request.member_id.as_str(),
        instance,
    );
    HeartbeatResponse::default().with_error_code(error.map_or(0, |e| e.code()))
}
