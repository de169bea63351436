//! IncrementalAlterConfigs (v0-1): SET / DELETE / APPEND / SUBTRACT on a topic's overrides
//! (APPEND and SUBTRACT only on list configs: cleanup.policy). Broker configs are static.

use std::sync::Arc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::configs::{self, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::broker::Broker;
use crate::config::{self, ConfigType};
use crate::errors::BrokerError;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn alter_topic(
    broker: &Broker,
    name: &str,
    resource: &kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), BrokerError> {
    let topic = broker
        .topic(name)
        .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
    let current = topic.config();
    let mut overrides = current.overrides().clone();
    for entry in &resource.configs {
        let key = entry.name.to_string();
        let spec = config::topic_config_spec(&key).ok_or_else(|| {
            BrokerError::InvalidConfig(format!("Unknown topic config name: {key}"))
        })?;
        let value = entry.value.as_ref().map(|v| v.to_string());
        match entry.config_operation {
            OP_SET => {
                let value = value.ok_or_else(|| {
                    BrokerError::InvalidRequest(format!("null value to SET for config {key}"))
                })?;
                overrides.insert(key, value);
            }
            OP_DELETE => {
                overrides.remove(&key);
            }
            OP_APPEND | OP_SUBTRACT => {
                if spec.config_type != ConfigType::List {
                    return Err(BrokerError::InvalidConfig(format!(
                        "Config value append/subtract is not allowed for config {key} (not a list)"
                    )));
                }
                let current_value = overrides
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| config::default_topic_config(&key, broker.config()));
                let mut items: Vec<String> = current_value
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                let changes: Vec<String> = value
                    .unwrap_or_default()
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                if entry.config_operation == OP_APPEND {
                    for change in changes {
                        if !items.contains(&change) {
                            items.push(change);
                        }
                    }
                } else {
                    items.retain(|item| !changes.contains(item));
                }
                overrides.insert(key, items.join(","));
            }
            other => {
                return Err(BrokerError::InvalidRequest(format!(
                    "unknown config operation {other}"
                )))
            }
        }
    }
    configs::replace_topic_config(broker, name, overrides, validate_only)
}

/// Handles an IncrementalAlterConfigs request.
pub fn handle(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let responses = request
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let outcome = match resource.resource_type {
                RESOURCE_TOPIC => alter_topic(broker, name, resource, request.validate_only),
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
    IncrementalAlterConfigsResponse::default()
        .with_throttle_time_ms(0)
        .with_responses(responses)
}
