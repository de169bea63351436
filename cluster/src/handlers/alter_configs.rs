//! AlterConfigs (v0-2): replaces a topic's whole set of config overrides. Broker configs are
//! static: altering them is INVALID_REQUEST.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::configs::{self, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::broker::Broker;
use crate::errors::BrokerError;

/// Handles an AlterConfigs request.
pub fn handle(
    broker: &Arc<Broker>,
    request: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let responses = request
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let outcome = match resource.resource_type {
                RESOURCE_TOPIC => {
                    let mut overrides = BTreeMap::new();
                    let mut null_value = None;
                    for entry in &resource.configs {
                        match &entry.value {
                            Some(value) => {
                                overrides.insert(entry.name.to_string(), value.to_string());
                            }
                            None => null_value = Some(entry.name.to_string()),
                        }
                    }
                    match null_value {
                        Some(key) => Err(BrokerError::InvalidRequest(format!(
                            "null value for config {key} is not supported"
                        ))),
                        None => configs::replace_topic_config(
                            broker,
                            name,
                            overrides,
                            request.validate_only,
                        ),
                    }
                }
                RESOURCE_BROKER => configs::check_broker_resource(broker, name)
                    .and_then(|()| Err(configs::broker_configs_read_only())),
                other => Err(configs::unsupported_resource(other)),
            };
            let base = AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match outcome {
                Ok(()) => base.with_error_code(0).with_error_message(None),
                Err(error) => base
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            }
        })
        .collect();
    AlterConfigsResponse::default()
        .with_throttle_time_ms(0)
        .with_responses(responses)
}
