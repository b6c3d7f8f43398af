//! Proof of cluster membership: the cluster secret that every node of one cluster holds, and the
//! challenge–response by which a connecting node and the node it connects to prove to each other
//! that they hold it, without sending it.
//!
//! The exchange is transport-neutral (bytes in, bytes out): the controller listener runs it in
//! its first frames (`crate::server`, `crate::network`), the broker's Kafka listener as the SASL
//! mechanism `SLUICE-CLUSTER` (SaslHandshake, then two SaslAuthenticate round trips).
//!
//! ```text
//! client -> server  client-first  = 'C' | version | client node id (u64) | client nonce (32 bytes)
//! server -> client  server-first  = 'S' | version | server node id (u64) | server nonce (32 bytes)
//! client -> server  client-proof  = HMAC-SHA256(secret, CLIENT_LABEL | client-first | server-first)
//! server -> client  server-proof  = HMAC-SHA256(secret, SERVER_LABEL | client-first | server-first)
//! ```
//!
//! Both nonces come from the operating system's random source, so each proof covers a
//! transcript no earlier connection had: a recorded exchange cannot be replayed, in either
//! direction, and the two labels keep one side's proof from serving as the other's. Proofs are
//! compared in constant time. The client proves first; the server proves back so a node also
//! knows it reached a member (a follower must not append what an impostor "leader" sends).
//!
//! What this does not give: confidentiality or integrity of the connection after the exchange.
//! An attacker who can rewrite traffic between two nodes can still relay a handshake and take
//! over the connection; TLS (the security work after this) closes that.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::raft_types::NodeId;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of randomness in a secret.
pub const SECRET_BYTES: usize = 32;
/// Bytes of each side's nonce.
const NONCE_BYTES: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 output).
const PROOF_BYTES: usize = 32;
/// The exchange's version; a peer speaking another one is refused with a message saying so.
const VERSION: u8 = 1;
/// Length of client-first and server-first: tag, version, node id, nonce.
const HELLO_BYTES: usize = 1 + 1 + 8 + NONCE_BYTES;
const CLIENT_TAG: u8 = b'C';
const SERVER_TAG: u8 = b'S';
const CLIENT_LABEL: &[u8] = b"sluice cluster membership v1: client proof";
const SERVER_LABEL: &[u8] = b"sluice cluster membership v1: server proof";
const FINGERPRINT_LABEL: &[u8] = b"sluice cluster secret fingerprint";

/// The secret every node of one cluster holds. Its bytes never leave this type except through
/// [`ClusterSecret::to_hex`] (to write the file a person creates); `Debug` shows only the
/// fingerprint.
#[derive(Clone)]
pub struct ClusterSecret {
    key: Arc<[u8; SECRET_BYTES]>,
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret(fingerprint {})", self.fingerprint())
    }
}

/// Why a cluster secret could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the cluster secret file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the cluster secret file {path} does not hold a cluster secret: {reason} (expected \
         {} hexadecimal characters, as `sluice cluster secret` or `openssl rand -hex {SECRET_BYTES}` \
         writes)",
        SECRET_BYTES * 2
    )]
    Malformed { path: PathBuf, reason: String },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

impl ClusterSecret {
    /// A new secret from the operating system's random source.
    pub fn generate() -> Result<Self, SecretError> {
        let mut key = [0u8; SECRET_BYTES];
        getrandom::fill(&mut key).map_err(|e| SecretError::Random(e.to_string()))?;
        Ok(Self { key: Arc::new(key) })
    }

    /// Parses the text of a secret file: the hexadecimal secret, surrounding whitespace allowed.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SecretError> {
        let malformed = |reason: String| SecretError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let hex = text.trim();
        if hex.len() != SECRET_BYTES * 2 {
            return Err(malformed(format!("it has {} characters", hex.len())));
        }
        let mut key = [0u8; SECRET_BYTES];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(high), Some(low)) => key[i] = (high * 16 + low) as u8,
                _ => {
                    return Err(malformed(
                        "it has a character that is not hexadecimal".into(),
                    ))
                }
            }
        }
        Ok(Self { key: Arc::new(key) })
    }

    /// Reads the secret in `path`. Warns (without refusing: mounted secrets are often 0644)
    /// when the file is readable by others than its owner.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let read_error = |source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        };
        let text = fs::read_to_string(path).map_err(read_error)?;
        let mode = fs::metadata(path).map_err(read_error)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the cluster secret file is readable by others than its owner; anyone who can \
                 read it can act as a node of this cluster (chmod 600 it)"
            );
        }
        Self::parse(path, &text)
    }

    /// Creates `path` holding a new secret, readable and writable by its owner only (0600),
    /// and syncs it; fails if the file exists. Returns the secret written.
    pub fn create(path: &Path) -> Result<Self, SecretError> {
        let secret = Self::generate()?;
        let write_error = |source| SecretError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_error)?;
        let mut text = secret.to_hex();
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fsutil::fsync_dir(dir).map_err(write_error)?;
        }
        Ok(secret)
    }

    /// The secret as hexadecimal text: what a secret file holds. Print it only into that file.
    pub fn to_hex(&self) -> String {
        hex(&self.key[..])
    }

    /// A short, one-way name for this secret (16 hex digits of an HMAC under it), so people can
    /// compare nodes' secrets in their logs without showing them.
    pub fn fingerprint(&self) -> String {
        hex(&self.mac(&[FINGERPRINT_LABEL])[..8])
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; PROOF_BYTES] {
        let mut mac = self.keyed();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn keyed(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key[..]).expect("HMAC takes a key of any length")
    }

    /// Whether `proof` is the MAC of `parts`, compared in constant time.
    fn verify(&self, parts: &[&[u8]], proof: &[u8]) -> bool {
        let mut mac = self.keyed();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(proof).is_ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a membership exchange failed. The messages are written for the log of the node that
/// sees the failure, and for the peer it refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("malformed {step}: {reason}")]
    Malformed { step: &'static str, reason: String },
    #[error("the peer speaks version {0} of the cluster-membership exchange; this node speaks version {VERSION}")]
    UnsupportedVersion(u8),
    #[error("expected node {expected} but reached node {actual}")]
    WrongPeer { expected: NodeId, actual: NodeId },
    #[error(
        "node {node}'s proof does not match this node's cluster secret: the two hold different \
         cluster secrets (or it holds none), so it is refused as not a member of this cluster"
    )]
    ClientNotMember { node: NodeId },
    #[error(
        "node {node} could not prove it holds this node's cluster secret: the two hold \
         different cluster secrets, so it is not trusted as a member of this cluster"
    )]
    ServerNotMember { node: NodeId },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

fn nonce() -> Result<[u8; NONCE_BYTES], HandshakeError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(nonce)
}

fn hello(tag: u8, node: NodeId, nonce: &[u8; NONCE_BYTES]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HELLO_BYTES);
    out.push(tag);
    out.push(VERSION);
    out.extend_from_slice(&node.0.to_be_bytes());
    out.extend_from_slice(nonce);
    out
}

/// Checks a client-first or server-first message and returns the node id it names.
fn parse_hello(step: &'static str, tag: u8, bytes: &[u8]) -> Result<NodeId, HandshakeError> {
    let malformed = |reason: String| HandshakeError::Malformed { step, reason };
    if bytes.len() >= 2 && bytes[0] == tag && bytes[1] != VERSION {
        return Err(HandshakeError::UnsupportedVersion(bytes[1]));
    }
    if bytes.len() != HELLO_BYTES {
        return Err(malformed(format!(
            "{} bytes instead of {HELLO_BYTES}",
            bytes.len()
        )));
    }
    if bytes[0] != tag {
        return Err(malformed(format!("it starts with byte {}", bytes[0])));
    }
    let id = u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"));
    Ok(NodeId(id))
}

fn check_proof_length(step: &'static str, proof: &[u8]) -> Result<(), HandshakeError> {
    if proof.len() != PROOF_BYTES {
        return Err(HandshakeError::Malformed {
            step,
            reason: format!("{} bytes instead of {PROOF_BYTES}", proof.len()),
        });
    }
    Ok(())
}

/// The connecting side, before it has the server's challenge.
#[derive(Debug)]
pub struct ClientHandshake {
    secret: ClusterSecret,
    peer: NodeId,
    client_first: Vec<u8>,
}

/// The connecting side after sending its proof, waiting for the server's.
#[derive(Debug)]
pub struct ClientAwaitingProof {
    secret: ClusterSecret,
    peer: NodeId,
    client_first: Vec<u8>,
    server_first: Vec<u8>,
}

impl ClientHandshake {
    /// Node `me` starts proving membership to node `peer`; returns the state and client-first.
    pub fn start(
        secret: &ClusterSecret,
        me: NodeId,
        peer: NodeId,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let client_first = hello(CLIENT_TAG, me, &nonce()?);
        let state = Self {
            secret: secret.clone(),
            peer,
            client_first: client_first.clone(),
        };
        Ok((state, client_first))
    }

    /// Answers server-first with the client's proof (client-proof).
    pub fn respond(
        self,
        server_first: &[u8],
    ) -> Result<(ClientAwaitingProof, Vec<u8>), HandshakeError> {
        let server = parse_hello("server-first", SERVER_TAG, server_first)?;
        if server != self.peer {
            return Err(HandshakeError::WrongPeer {
                expected: self.peer,
                actual: server,
            });
        }
        let proof = self
            .secret
            .mac(&[CLIENT_LABEL, &self.client_first, server_first]);
        let state = ClientAwaitingProof {
            secret: self.secret,
            peer: self.peer,
            client_first: self.client_first,
            server_first: server_first.to_vec(),
        };
        Ok((state, proof.to_vec()))
    }
}

impl ClientAwaitingProof {
    /// Checks the server's proof: `Ok` means the peer holds the same secret.
    pub fn finish(self, server_proof: &[u8]) -> Result<(), HandshakeError> {
        check_proof_length("server-proof", server_proof)?;
        let parts: [&[u8]; 3] = [SERVER_LABEL, &self.client_first, &self.server_first];
        if self.secret.verify(&parts, server_proof) {
            Ok(())
        } else {
            Err(HandshakeError::ServerNotMember { node: self.peer })
        }
    }
}

/// The accepting side after sending its challenge, waiting for the client's proof.
#[derive(Debug)]
pub struct ServerHandshake {
    secret: ClusterSecret,
    client: NodeId,
    client_first: Vec<u8>,
    server_first: Vec<u8>,
}

impl ServerHandshake {
    /// Node `me` answers client-first with its challenge (server-first).
    pub fn start(
        secret: &ClusterSecret,
        me: NodeId,
        client_first: &[u8],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let client = parse_hello("client-first", CLIENT_TAG, client_first)?;
        let server_first = hello(SERVER_TAG, me, &nonce()?);
        let state = Self {
            secret: secret.clone(),
            client,
            client_first: client_first.to_vec(),
            server_first: server_first.clone(),
        };
        Ok((state, server_first))
    }

    /// The node id the client claims (proven only once [`ServerHandshake::finish`] succeeds).
    pub fn claimed_node(&self) -> NodeId {
        self.client
    }

    /// Checks the client's proof; on success returns the node it proved to be and the server's
    /// own proof (server-proof) to send back.
    pub fn finish(self, client_proof: &[u8]) -> Result<(NodeId, Vec<u8>), HandshakeError> {
        check_proof_length("client-proof", client_proof)?;
        let transcript: [&[u8]; 2] = [&self.client_first, &self.server_first];
        let client_parts = [CLIENT_LABEL, transcript[0], transcript[1]];
        if !self.secret.verify(&client_parts, client_proof) {
            return Err(HandshakeError::ClientNotMember { node: self.client });
        }
        let proof = self
            .secret
            .mac(&[SERVER_LABEL, transcript[0], transcript[1]]);
        Ok((self.client, proof.to_vec()))
    }
}

/// Lets one warning through per `every` at a call site, so a peer that keeps retrying with the
/// wrong secret (or an attacker) cannot flood the log; the others are counted and reported with
/// the next one that gets through.
#[derive(Debug, Default)]
pub struct WarnLimiter {
    /// Milliseconds since the Unix epoch of the last warning let through (0: none yet).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    pub const fn new() -> Self {
        Self {
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(count of warnings suppressed since the last one)` when a warning may be logged now.
    pub fn allow(&self, every: Duration) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let last = self.last_ms.load(Ordering::Relaxed);
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (ClusterSecret, ClusterSecret) {
        (
            ClusterSecret::generate().unwrap(),
            ClusterSecret::generate().unwrap(),
        )
    }

    /// Runs a whole exchange; `Err` names the side that refused.
    fn exchange(
        client_secret: &ClusterSecret,
        server_secret: &ClusterSecret,
    ) -> Result<NodeId, HandshakeError> {
        let (client, client_first) = ClientHandshake::start(client_secret, NodeId(2), NodeId(1))?;
        let (server, server_first) =
            ServerHandshake::start(server_secret, NodeId(1), &client_first)?;
        assert_eq!(server.claimed_node(), NodeId(2));
        let (client, client_proof) = client.respond(&server_first)?;
        let (node, server_proof) = server.finish(&client_proof)?;
        client.finish(&server_proof)?;
        Ok(node)
    }

    #[test]
    fn members_prove_themselves_to_each_other() {
        let (secret, _) = pair();
        assert_eq!(exchange(&secret, &secret), Ok(NodeId(2)));
    }

    #[test]
    fn a_different_secret_is_refused_by_the_server() {
        let (ours, theirs) = pair();
        assert_eq!(
            exchange(&theirs, &ours),
            Err(HandshakeError::ClientNotMember { node: NodeId(2) })
        );
    }

    #[test]
    fn an_impostor_server_is_found_out_by_the_client() {
        let (ours, theirs) = pair();
        let (client, client_first) = ClientHandshake::start(&ours, NodeId(2), NodeId(1)).unwrap();
        let (server, server_first) =
            ServerHandshake::start(&theirs, NodeId(1), &client_first).unwrap();
        let (client, _proof) = client.respond(&server_first).unwrap();
        // The impostor cannot check the proof; it answers with what it can compute.
        let forged = server
            .secret
            .mac(&[SERVER_LABEL, &client_first, &server_first]);
        assert_eq!(
            client.finish(&forged),
            Err(HandshakeError::ServerNotMember { node: NodeId(1) })
        );
    }

    #[test]
    fn a_recorded_proof_does_not_pass_in_a_later_exchange() {
        let (secret, _) = pair();
        let (client, client_first) = ClientHandshake::start(&secret, NodeId(2), NodeId(1)).unwrap();
        let (_, server_first) = ServerHandshake::start(&secret, NodeId(1), &client_first).unwrap();
        let (_, recorded_proof) = client.respond(&server_first).unwrap();
        // An attacker replays the same client-first and proof; the server's nonce is new.
        let (server, _) = ServerHandshake::start(&secret, NodeId(1), &client_first).unwrap();
        assert_eq!(
            server.finish(&recorded_proof),
            Err(HandshakeError::ClientNotMember { node: NodeId(2) })
        );
    }

    #[test]
    fn the_server_proof_cannot_serve_as_a_client_proof() {
        // Reflection: the attacker sends the server's own challenge back as its client-first
        // and hopes to turn the server's answer into a proof. The labels and tags differ.
        let (secret, _) = pair();
        let (_, client_first) = ClientHandshake::start(&secret, NodeId(9), NodeId(1)).unwrap();
        let (server, server_first) =
            ServerHandshake::start(&secret, NodeId(1), &client_first).unwrap();
        let reflected = secret.mac(&[SERVER_LABEL, &client_first, &server_first]);
        assert!(server.finish(&reflected).is_err());
    }

    #[test]
    fn garbage_and_other_versions_are_refused_with_reasons() {
        let (secret, _) = pair();
        let short = ServerHandshake::start(&secret, NodeId(1), b"C\x01abc").unwrap_err();
        assert!(short.to_string().contains("client-first"), "{short}");
        let mut wrong_version = hello(CLIENT_TAG, NodeId(2), &[0; NONCE_BYTES]);
        wrong_version[1] = 9;
        assert_eq!(
            ServerHandshake::start(&secret, NodeId(1), &wrong_version).unwrap_err(),
            HandshakeError::UnsupportedVersion(9)
        );
        let server_first = hello(SERVER_TAG, NodeId(1), &[0; NONCE_BYTES]);
        assert!(ServerHandshake::start(&secret, NodeId(1), &server_first).is_err());
        let (server, _) = ServerHandshake::start(
            &secret,
            NodeId(1),
            &hello(CLIENT_TAG, NodeId(2), &[0; NONCE_BYTES]),
        )
        .unwrap();
        assert!(matches!(
            server.finish(&[0; 5]),
            Err(HandshakeError::Malformed { .. })
        ));
        let (client, _) = ClientHandshake::start(&secret, NodeId(2), NodeId(1)).unwrap();
        assert_eq!(
            client
                .respond(&hello(SERVER_TAG, NodeId(3), &[0; NONCE_BYTES]))
                .unwrap_err(),
            HandshakeError::WrongPeer {
                expected: NodeId(1),
                actual: NodeId(3)
            }
        );
    }

    #[test]
    fn secret_files_are_created_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster-secret");
        let created = ClusterSecret::create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = ClusterSecret::load(&path).unwrap();
        assert_eq!(loaded.to_hex(), created.to_hex());
        assert_eq!(loaded.fingerprint(), created.fingerprint());
        assert!(matches!(
            ClusterSecret::create(&path),
            Err(SecretError::Write { .. })
        ));
        // Debug never shows the secret.
        assert!(!format!("{loaded:?}").contains(&loaded.to_hex()));
    }

    #[test]
    fn malformed_secret_files_say_what_is_expected() {
        let path = Path::new("/etc/sluice/secret");
        let short = ClusterSecret::parse(path, "abcd\n")
            .unwrap_err()
            .to_string();
        assert!(short.contains("64 hexadecimal characters"), "{short}");
        let not_hex = ClusterSecret::parse(path, &"zz".repeat(32)).unwrap_err();
        assert!(not_hex.to_string().contains("not hexadecimal"), "{not_hex}");
        let ok = ClusterSecret::parse(path, &format!("  {}\n", "0f".repeat(32))).unwrap();
        assert_eq!(ok.to_hex(), "0f".repeat(32));
    }

    #[test]
    fn warnings_are_rate_limited() {
        let limiter = WarnLimiter::new();
        assert_eq!(limiter.allow(Duration::from_secs(60)), Some(0));
        assert_eq!(limiter.allow(Duration::from_secs(60)), None);
        assert_eq!(limiter.allow(Duration::from_secs(60)), None);
        assert_eq!(limiter.allow(Duration::ZERO), Some(2));
    }
}
