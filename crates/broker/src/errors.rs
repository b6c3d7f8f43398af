//! The one place where internal errors become Kafka error codes.

use sluice_log::{AppendError, ReadError};
use sluice_protocol::error::ResponseError;

use crate::broker::CreateTopicError;
use crate::metadata::MetadataError;

/// Kafka's code for "no error".
pub(crate) const NONE: i16 = 0;

pub(crate) fn code(error: ResponseError) -> i16 {
    error.code()
}

pub(crate) fn append_error(error: &AppendError) -> ResponseError {
    match error {
        AppendError::Corrupt(_) => ResponseError::CorruptMessage,
        AppendError::Invalid(_) => ResponseError::InvalidRecord,
        AppendError::TooLarge { .. } | AppendError::DecompressedTooLarge { .. } => {
            ResponseError::MessageTooLarge
        }
        // Kafka answers UNKNOWN_SERVER_ERROR here (its validator lets an IllegalArgumentException
        // escape); the code it uses for a codec a request may not use says more.
        AppendError::UnsupportedCompression(_) => ResponseError::UnsupportedCompressionType,
        AppendError::RecordErrors {
            timestamps: true, ..
        } => ResponseError::InvalidTimestamp,
        AppendError::RecordErrors { .. } => ResponseError::InvalidRecord,
        AppendError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        AppendError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        AppendError::TxnNotVerified(_) => ResponseError::InvalidTxnState,
        AppendError::Io(_) | AppendError::Poisoned => ResponseError::KafkaStorageError,
        // Follower appends only (replica fetchers handle these themselves).
        AppendError::OffsetMismatch { .. } => ResponseError::OffsetOutOfRange,
        AppendError::StaleLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
    }
}

pub(crate) fn read_error(error: &ReadError) -> ResponseError {
    match error {
        ReadError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        ReadError::Io(_) => ResponseError::KafkaStorageError,
    }
}

pub(crate) fn metadata_error(error: &MetadataError) -> ResponseError {
    match error {
        MetadataError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        MetadataError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        MetadataError::InvalidPartitions(_) | MetadataError::PartitionsNotIncreased { .. } => {
            ResponseError::InvalidPartitions
        }
        MetadataError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        MetadataError::Io { .. } | MetadataError::Corrupt { .. } => {
            ResponseError::KafkaStorageError
        }
        MetadataError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        MetadataError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        // The quorum could not commit the change now (no leader, stopping): retriable.
        MetadataError::Open(_) | MetadataError::Propose(_) => ResponseError::NotController,
        MetadataError::Refused(_) => ResponseError::InvalidRequest,
    }
}

pub(crate) fn create_topic_error(error: &CreateTopicError) -> ResponseError {
    match error {
        CreateTopicError::Metadata(e) => metadata_error(e),
        CreateTopicError::Config(_) => ResponseError::InvalidConfig,
        CreateTopicError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub(crate) fn alter_reassignment_error(
    error: &crate::handlers::reassignments::AlterError,
) -> ResponseError {
    use crate::handlers::reassignments::AlterError;
    use sluice_meta::controller::ReassignError;
    match error {
        AlterError::Reassign(ReassignError::UnknownPartition { .. }) => {
            ResponseError::UnknownTopicOrPartition
        }
        AlterError::Reassign(
            ReassignError::InvalidTarget { .. } | ReassignError::NoInSyncReplica { .. },
        ) => ResponseError::InvalidReplicaAssignment,
        AlterError::Reassign(ReassignError::NoReassignmentInProgress { .. }) => {
            ResponseError::NoReassignmentInProgress
        }
        AlterError::Metadata(e) => metadata_error(e),
    }
}
