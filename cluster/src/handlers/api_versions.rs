//! ApiVersions: the table of supported APIs, with no optional tagged fields (Debian's librdkafka
//! 2.0.2 failed to parse a v3 reply with extra content).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::SUPPORTED_APIS;
use crate::errors::UNSUPPORTED_VERSION;

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// Answers an ApiVersions request at a supported `version`.
pub fn handle(_request: &ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(api_keys());
    if version >= 1 {
        response = response.with_throttle_time_ms(0);
    }
    response
}

/// The answer to an ApiVersions request of a version Strata does not support: UNSUPPORTED_VERSION
/// with the supported ranges; encode it as a v0 body so any client can read it and retry.
pub fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(UNSUPPORTED_VERSION.code())
        .with_api_keys(api_keys())
}
