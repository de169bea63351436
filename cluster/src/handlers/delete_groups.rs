//! DeleteGroups (v0-v2): only empty groups (NON_EMPTY_GROUP otherwise); their committed offsets
//! get tombstones in `__consumer_offsets`.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::broker::Broker;

/// Handles a DeleteGroups request.
pub async fn handle(
    broker: &Arc<Broker>,
    request: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group in request.groups_names {
        let error = broker
            .groups()
            .delete_group(broker, group.0.as_str())
            .await
            .err();
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group)
                .with_error_code(error.map_or(0, |e| e.code())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
