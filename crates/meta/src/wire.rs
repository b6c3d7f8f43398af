//! The controller RPC wire format: what voters (and proposers) send each other over TCP.
//!
//! A frame is a big-endian `u32` length followed by that many bytes of JSON. A connection carries
//! one request at a time: the client writes a [`Request`], the server answers with one
//! [`Response`], and the next request may follow on the same connection. A frame longer than
//! [`FRAME_BYTES_MAX`] or one that does not parse closes the connection; nothing else.
//!
//! Before its first request, a connection proves cluster membership ([`crate::membership`]):
//! the client sends [`Hello::ClientFirst`], the server answers [`HelloAnswer::ServerFirst`], the
//! client sends [`Hello::ClientProof`], and the server answers [`HelloAnswer::ServerProof`] — or
//! [`HelloAnswer::Refused`] at either step, and closes the connection.

use std::io;
use std::time::Duration;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::raft_types::{LogIndex, NodeId, SnapshotMeta, TypeConfig, Vote};
use crate::record::{MetadataRecord, Outcome};
use crate::state::MetadataState;

/// The largest frame either side accepts (a whole-state snapshot must fit).
pub(crate) const FRAME_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// How long the rest of a frame may take to arrive once its length has been read.
pub(crate) const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the whole membership exchange may take on either side.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's frames of the membership exchange (the payloads are [`crate::membership`]'s).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Hello {
    ClientFirst(Vec<u8>),
    ClientProof(Vec<u8>),
}

/// The server's frames of the membership exchange.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HelloAnswer {
    ServerFirst(Vec<u8>),
    ServerProof(Vec<u8>),
    /// Why the server refuses the connection (it closes it after this frame).
    Refused(String),
}

/// A request, addressed to one node: a server refuses one meant for another id (a stale
/// address after a node moved must not reach the wrong voter).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) target: NodeId,
    pub(crate) body: RequestBody,
}

/// One variant per RPC.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RequestBody {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// The leader's whole snapshot (the metadata state is small).
    FullSnapshot {
        vote: Vote,
        meta: SnapshotMeta,
        state: MetadataState,
    },
    /// A follower forwards a proposal to the leader, which runs `client_write`.
    Propose(MetadataRecord),
    /// Broker `from` is alive (recorded by the leader only).
    Heartbeat {
        from: NodeId,
    },
    /// Asks the leader for a read index: the log index a linearizable read must wait for.
    ReadIndex,
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    Proposed {
        index: LogIndex,
        outcome: Outcome,
    },
    HeartbeatRecorded,
    ReadIndex {
        index: Option<LogIndex>,
    },
    /// This node does not lead; `leader` is who it thinks does.
    NotLeader {
        leader: Option<NodeId>,
    },
    /// A leader change dropped the proposal; it may still commit.
    Discarded {
        leader: Option<NodeId>,
    },
    /// The request was addressed to `target` but reached `actual`.
    WrongNode {
        target: NodeId,
        actual: NodeId,
    },
    /// The server's Raft refused or failed the request (stopped, fatal error, ...).
    Failed(String),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("frame of {0} bytes exceeds the {FRAME_BYTES_MAX}-byte limit")]
    TooLarge(u32),
    #[error("frame body did not arrive within {FRAME_READ_TIMEOUT:?}")]
    Timeout,
    #[error("malformed frame: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

/// Writes one frame holding `message`.
pub(crate) async fn write_frame<W, T>(writer: &mut W, message: &T) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    let length = u32::try_from(body.len())
        .ok()
        .filter(|&length| length <= FRAME_BYTES_MAX)
        .ok_or_else(|| {
            io::Error::other(format!(
                "frame of {} bytes exceeds the {FRAME_BYTES_MAX}-byte limit",
                body.len()
            ))
        })?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await?;
    writer.flush().await
}

/// Reads one frame. Waits as long as it takes for the length (the caller bounds idle time), then
/// at most [`FRAME_READ_TIMEOUT`] for the body.
pub(crate) async fn read_frame<R, T>(reader: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let length = u32::from_be_bytes(length);
    if length > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(length));
    }
    // Grows with what actually arrives: a lying length prefix cannot make us allocate 64 MiB.
    let mut body = Vec::new();
    let mut limited = (&mut *reader).take(u64::from(length));
    match tokio::time::timeout(FRAME_READ_TIMEOUT, limited.read_to_end(&mut body)).await {
        Ok(Ok(n)) if n == length as usize => {}
        Ok(Ok(_)) => return Err(FrameError::Closed),
        Ok(Err(e)) => return Err(FrameError::Io(e)),
        Err(_elapsed) => return Err(FrameError::Timeout),
    }
    serde_json::from_slice(&body).map_err(FrameError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_ones_are_refused() {
        let request = Request {
            target: NodeId(3),
            body: RequestBody::Heartbeat { from: NodeId(1) },
        };
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &request).await.unwrap();
        let read: Request = read_frame(&mut buffer.as_slice()).await.unwrap();
        assert_eq!(read.target, NodeId(3));
        assert!(matches!(
            read.body,
            RequestBody::Heartbeat { from: NodeId(1) }
        ));

        let too_large = (FRAME_BYTES_MAX + 1).to_be_bytes();
        assert!(matches!(
            read_frame::<_, Request>(&mut too_large.as_slice()).await,
            Err(FrameError::TooLarge(_))
        ));
        let mut garbage = 5u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(b"hello");
        assert!(matches!(
            read_frame::<_, Request>(&mut garbage.as_slice()).await,
            Err(FrameError::Malformed(_))
        ));
        let truncated = [0u8, 0, 0, 9, b'{'];
        assert!(matches!(
            read_frame::<_, Request>(&mut truncated.as_slice()).await,
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_frame::<_, Request>(&mut [0u8, 0].as_slice()).await,
            Err(FrameError::Closed)
        ));
    }
}
