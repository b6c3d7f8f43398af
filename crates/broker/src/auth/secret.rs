//! Where this node's cluster secret comes from: the file `cluster.secret.file` names
//! (`--cluster-secret-file`), else `<data dir>/cluster-secret`. A one-voter cluster creates the
//! latter on its first start, so a single node needs no configuration; a cluster of several
//! voters needs the same secret on every node, so a node of one refuses to start without it.

use std::path::{Path, PathBuf};

use sluice_meta::membership::{ClusterSecret, SecretError};
use tracing::info;

use crate::config::BrokerConfig;

/// The secret's file in the data directory when `cluster.secret.file` is not given.
pub const DATA_DIR_SECRET_FILE: &str = "cluster-secret";

/// Why this node has no usable cluster secret. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClusterSecretError {
    #[error(
        "{source}; create one with `sluice cluster secret --file {path}` and give every node \
         of the cluster the same file",
        path = path.display()
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: SecretError,
    },
    #[error(
        "this node is one of {voters} metadata voters but has no cluster secret, and every node \
         of a cluster must hold the same one: create it once with `sluice cluster secret \
         --file cluster.secret`, copy that file to every node (keep it private: chmod 600), \
         and start each node with --cluster-secret-file cluster.secret \
         (SLUICE_CLUSTER_SECRET_FILE, or \"cluster.secret.file\" in --config)"
    )]
    Missing { voters: usize },
    #[error("cannot create the cluster secret: {0}")]
    Create(#[source] SecretError),
}

/// Loads (or, for a one-voter cluster's first start, creates) this node's cluster secret, and
/// logs where it came from with its fingerprint (never the secret).
pub fn load(config: &BrokerConfig) -> Result<ClusterSecret, ClusterSecretError> {
    let unreadable = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ClusterSecretError::Unreadable { path, source }
    };
    if let Some(path) = &config.cluster_secret_file {
        let secret = ClusterSecret::load(path).map_err(unreadable(path))?;
        info!(path = %path.display(), fingerprint = %secret.fingerprint(), "cluster secret loaded");
        return Ok(secret);
    }
    let path = config.data_dir.join(DATA_DIR_SECRET_FILE);
    if path.exists() {
        let secret = ClusterSecret::load(&path).map_err(unreadable(&path))?;
        info!(path = %path.display(), fingerprint = %secret.fingerprint(), "cluster secret loaded");
        return Ok(secret);
    }
    if config.voters.len() > 1 {
        return Err(ClusterSecretError::Missing {
            voters: config.voters.len(),
        });
    }
    let secret = ClusterSecret::create(&path).map_err(ClusterSecretError::Create)?;
    info!(
        path = %path.display(),
        fingerprint = %secret.fingerprint(),
        "created the cluster secret (nodes joining this cluster later need a copy)"
    );
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Voter;

    fn config(dir: &Path) -> BrokerConfig {
        BrokerConfig {
            data_dir: dir.to_path_buf(),
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn a_single_node_creates_its_secret_once_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = load(&config(dir.path())).unwrap();
        let again = load(&config(dir.path())).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert!(dir.path().join(DATA_DIR_SECRET_FILE).exists());
    }

    #[test]
    fn a_cluster_node_needs_a_given_secret_and_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.voters = (1..=3)
            .map(|id| Voter {
                id,
                host: "127.0.0.1".into(),
                port: 19200 + id as u16,
            })
            .collect();
        let missing = load(&config).unwrap_err().to_string();
        assert!(missing.contains("one of 3 metadata voters"), "{missing}");
        assert!(
            missing.contains("sluice cluster secret --file"),
            "{missing}"
        );
        assert!(!dir.path().join(DATA_DIR_SECRET_FILE).exists());

        let file = dir.path().join("given.secret");
        config.cluster_secret_file = Some(file.clone());
        let unreadable = load(&config).unwrap_err().to_string();
        assert!(
            unreadable.contains("cannot read the cluster secret file"),
            "{unreadable}"
        );
        let created = ClusterSecret::create(&file).unwrap();
        assert_eq!(load(&config).unwrap().fingerprint(), created.fingerprint());
    }
}
