//! DeleteTopics (v1-6): by name, and by topic id in v6.

use std::sync::Arc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::broker::Broker;
use crate::errors::UNKNOWN_TOPIC_ID;
use crate::internal_topics;

fn result_for(broker: &Broker, name: Option<&str>, id: Uuid, version: i16) -> DeletableTopicResult {
    let delete = |name: &str| {
        internal_topics::check_client_delete(name)
            .and_then(|()| broker.delete_topic(name))
            .map(|t| (t.name().to_string(), t.id()))
            .map_err(|e| (e.code(), e.to_string()))
    };
    let outcome: Result<(String, Uuid), (i16, String)> = match name {
        Some(name) => delete(name),
        None => match broker.topic_by_id(id) {
            Some(topic) => delete(topic.name()),
            None => Err((UNKNOWN_TOPIC_ID.code(), format!("unknown topic id {id}"))),
        },
    };
    let mut result = DeletableTopicResult::default();
    match outcome {
        Ok((name, id)) => {
            result = result
                .with_name(Some(TopicName(StrBytes::from_string(name))))
                .with_error_code(0);
            if version >= 6 {
                result = result.with_topic_id(id);
            }
        }
        Err((code, message)) => {
            result = result
                .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
                .with_error_code(code);
            if version >= 5 {
                result = result.with_error_message(Some(StrBytes::from_string(message)));
            }
            if version >= 6 {
                result = result.with_topic_id(id);
            }
        }
    }
    result
}

/// Handles a DeleteTopics request, off the async workers and after the admin requests before it
/// ([`Broker::run_admin`]).
pub async fn handle(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    broker
        .run_admin(move |broker| handle_blocking(broker, request, version))
        .await
}

fn handle_blocking(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let responses = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| {
                result_for(
                    broker,
                    t.name.as_ref().map(|n| n.0.as_str()),
                    t.topic_id,
                    version,
                )
            })
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| result_for(broker, Some(n.0.as_str()), Uuid::nil(), version))
            .collect()
    };
    DeleteTopicsResponse::default()
        .with_throttle_time_ms(0)
        .with_responses(responses)
}
