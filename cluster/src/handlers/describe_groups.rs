//! DescribeGroups (v0-v5): state, protocol, members (metadata and assignments when Stable). An
//! unknown group is described as Dead with no error, as Kafka does before v6. v3+ answers the
//! group's authorized operations when asked (every group operation: no authorizer).

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;

use super::authorized_operations;
use crate::broker::Broker;

/// Answers a DescribeGroups request.
pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let d = broker.groups().describe(id.0.as_str());
            let members = d
                .members
                .into_iter()
                .map(|m| {
                    let member = DescribedGroupMember::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_client_id(StrBytes::from_string(m.client_id))
                        .with_client_host(StrBytes::from_string(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment);
                    if version >= 4 {
                        member
                            .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                    } else {
                        member
                    }
                })
                .collect();
            let mut group = DescribedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(d.group_id)))
                .with_group_state(StrBytes::from_static_str(d.state.name()))
                .with_protocol_type(StrBytes::from_string(d.protocol_type))
                .with_protocol_data(StrBytes::from_string(d.protocol_name))
                .with_members(members);
            if version >= 3 {
                // No ACLs: Kafka's "not requested" sentinel unless asked; then every group
                // operation.
                group = group.with_authorized_operations(authorized_operations::answer(
                    request.include_authorized_operations,
                    authorized_operations::GROUP,
                ));
            }
            group
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
