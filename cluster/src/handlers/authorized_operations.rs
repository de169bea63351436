//! The `authorized_operations` bitfields of Metadata, DescribeCluster and DescribeGroups.
//!
//! Kafka answers a 32-bit field with bit `n` set for each `AclOperation` of code `n` the caller
//! may perform on the resource. Strata has no authorizer, and Kafka without one answers every
//! operation valid for the resource type (its `AclEntry.supportedOperations`), so these are
//! constants. A request that did not ask for the field gets [`NOT_REQUESTED`].

/// Kafka's "not requested" sentinel (`Integer.MIN_VALUE`).
pub const NOT_REQUESTED: i32 = i32::MIN;

// Kafka's `AclOperation` codes.
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

const fn bits(operations: &[u8]) -> i32 {
    let mut field = 0i32;
    let mut i = 0;
    while i < operations.len() {
        field |= 1 << operations[i];
        i += 1;
    }
    field
}

/// A topic: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub const TOPIC: i32 = bits(&[
    READ,
    WRITE,
    CREATE,
    DELETE,
    ALTER,
    DESCRIBE,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
]);

/// The cluster: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
/// IDEMPOTENT_WRITE.
pub const CLUSTER: i32 = bits(&[
    CREATE,
    ALTER,
    DESCRIBE,
    CLUSTER_ACTION,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    IDEMPOTENT_WRITE,
]);

/// A group (Kafka 4.x, where groups have configs): READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS.
pub const GROUP: i32 = bits(&[READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS]);

/// `operations` if the request asked for them, else [`NOT_REQUESTED`].
pub fn answer(requested: bool, operations: i32) -> i32 {
    if requested {
        operations
    } else {
        NOT_REQUESTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields carry exactly the operations Kafka lists for each resource type, by code.
    #[test]
    fn bitfields_name_kafkas_operation_codes() {
        let codes = |field: i32| {
            (0..32)
                .filter(|b| field & (1 << b) != 0)
                .collect::<Vec<_>>()
        };
        assert_eq!(codes(TOPIC), vec![3, 4, 5, 6, 7, 8, 10, 11]);
        assert_eq!(codes(CLUSTER), vec![5, 7, 8, 9, 10, 11, 12]);
        assert_eq!(codes(GROUP), vec![3, 6, 8, 10, 11]);
        assert_eq!(answer(false, TOPIC), i32::MIN);
        assert_eq!(answer(true, TOPIC), TOPIC);
    }
}
