//! InitProducerId (v0-4): a fresh producer id (never reused, even across restarts) with epoch 0.
//! Transactional ids are refused (no transaction coordinator): see
//! [`crate::errors::TRANSACTIONS_UNSUPPORTED`].

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;
use crate::errors::TRANSACTIONS_UNSUPPORTED;

/// Handles an InitProducerId request.
pub fn handle(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default().with_throttle_time_ms(0);
    if request.transactional_id.is_some() {
        return response
            .with_error_code(TRANSACTIONS_UNSUPPORTED.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    match broker.allocate_producer_id() {
        Ok(id) => response
            .with_error_code(0)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::warn!(%error, "producer id allocation failed");
            response
                .with_error_code(error.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
