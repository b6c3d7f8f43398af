//! Request handlers, one Kafka API per file, named after the API.

pub(crate) mod api_versions;
pub(crate) mod configs;
pub(crate) mod create_topics;
pub(crate) mod delete_topics;
pub(crate) mod describe_cluster;
pub(crate) mod fetch;
pub(crate) mod groups;
pub(crate) mod init_producer_id;
pub(crate) mod list_offsets;
pub(crate) mod log_dirs;
pub(crate) mod metadata;
pub(crate) mod partitions_admin;
pub(crate) mod produce;
pub(crate) mod reassignments;
pub(crate) mod sasl;
pub(crate) mod txn;
pub(crate) mod write_txn_markers;
