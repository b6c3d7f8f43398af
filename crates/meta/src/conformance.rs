//! openraft's storage conformance suite run against our log store and state machine.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use tokio::sync::watch;

use crate::log_store::LogStore;
use crate::raft_types::TypeConfig;
use crate::state_machine::{Applied, SnapshotFile, StateMachineStore};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_store = LogStore::open(dir.path()).expect("open log store");
        let snapshots = SnapshotFile::open(dir.path()).expect("open snapshot file");
        let (publisher, _) = watch::channel(Applied::default());
        let state_machine = StateMachineStore::new(snapshots, publisher);
        Ok((dir, log_store, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_passes_openraft_suite() {
    Suite::test_all(Builder).await.unwrap();
}
