//! ListGroups (v0-v5): every group of this coordinator, filtered by state (v4+) and type (v5+).

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;

/// Answers a ListGroups request.
pub fn handle(
    broker: &Arc<Broker>,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let groups = broker
        .groups()
        .list()
        .into_iter()
        .filter(|g| {
            version < 4 || states.is_empty() || states.contains(&g.state.name().to_lowercase())
        })
        .filter(|_| version < 5 || types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|g| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(StrBytes::from_static_str(g.state.name()));
            }
            if version >= 5 {
                listed = listed.with_group_type(StrBytes::from_static_str("classic"));
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
