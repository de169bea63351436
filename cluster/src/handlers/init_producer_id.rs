//! InitProducerId (v0-4): a fresh producer id (never reused, even across restarts) with epoch 0.
//! Transactional ids are refused (no transaction coordinator): see
//! [`crate::errors::TRANSACTIONS_UNSUPPORTED`]. An empty transactional id counts as none.

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
    // kafka-protocol's default request carries an empty (not null) transactional id: treat it
    // as "idempotent only" rather than failing clients built on those defaults.
    let transactional = request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.0.is_empty());
    if transactional {
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
