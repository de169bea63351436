//! DescribeConfigs (v1-4) for TOPIC and BROKER resources.

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::configs::{self, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::broker::Broker;
use crate::errors::BrokerError;

/// Handles a DescribeConfigs request.
pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let include_documentation = version >= 3 && request.include_documentation;
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let keys = resource.configuration_keys.as_deref();
            let name = resource.resource_name.as_str();
            let outcome = match resource.resource_type {
                RESOURCE_TOPIC => match broker.topic(name) {
                    Some(topic) => Ok(configs::describe_topic(
                        broker.config(),
                        &topic.config(),
                        keys,
                        request.include_synonyms,
                        include_documentation,
                        version,
                    )),
                    None => Err(BrokerError::UnknownTopicOrPartition(name.to_string())),
                },
                RESOURCE_BROKER => configs::check_broker_resource(broker, name)
                    .map(|()| configs::describe_broker(broker.config(), keys, version)),
                other => Err(configs::unsupported_resource(other)),
            };
            let base = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match outcome {
                Ok(entries) => base
                    .with_error_code(0)
                    .with_error_message(None)
                    .with_configs(entries),
                Err(error) => base
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            }
        })
        .collect();
    DescribeConfigsResponse::default()
        .with_throttle_time_ms(0)
        .with_results(results)
}
