//! Length-prefixed frames on a byte stream (inside TLS).
//!
//! Wire format: `u32` big-endian length `L` (1 ≤ L ≤ [`MAX_FRAME_LEN`]), then `L` bytes: a
//! one-byte [`MsgType`] followed by `L − 1` payload bytes. The cap keeps a broken or hostile peer
//! from making us allocate gigabytes (shares are ~260 bytes; an abort reason is at most
//! [`MAX_ABORT_REASON`] bytes). A larger payload (a roster) travels as [`MsgType::Data`] frames
//! after a reply that announces its total size, which its reader bounds.
//!
//! Every read and write takes the session deadline and fails with [`Error::Timeout`] when it
//! passes; every error names the peer.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Largest accepted frame body (type byte + payload), in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Longest abort reason sent or shown, in bytes (longer reasons are cut at a char boundary).
pub const MAX_ABORT_REASON: usize = 1024;

/// The message types of the native protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgType {
    /// Session binding, first frame both ways (see `transport::mesh`).
    Hello = 1,
    /// A Shamir share of the sender's key, for the receiver's evaluation point.
    Share = 2,
    /// A node's sum of received shares, sent to the researcher.
    Sum = 3,
    /// The researcher verified and computed its key: the node stores its key (unconfirmed).
    Finish = 4,
    /// A node acknowledges `Finish`: its key is durably stored.
    Ack = 5,
    /// The sender gives up; payload is a UTF-8 reason.
    Abort = 6,
    /// The researcher stored the server key: the node marks its key confirmed.
    Confirm = 7,
    /// To a party agent: a request (JSON), the first frame of a control connection.
    Request = 8,
    /// From a party agent: its answer to a request, or a session's result (JSON).
    Reply = 9,
    /// Between two party agents: the sender's session succeeded and it sends nothing more on
    /// this connection for it; once both sides sent it, the connection may carry a later
    /// session (`transport::pool`). Empty payload.
    End = 10,
    /// From a party agent: one piece of a payload too large for one frame, announced by the
    /// reply before it with its total size (a roster, `roster pull`).
    Data = 11,
    /// LOM sessions, node to node: the sender's fresh P-256 public key for this context (SEC1
    /// uncompressed), sent only over the two nodes' own pinned connection.
    DhPublic = 12,
    /// LOM sessions, node to researcher: the key confirmation tag of every pair this node is in
    /// ([`crate::lom::pairwise::pair_tag`]), in party order.
    PairTags = 13,
}

impl MsgType {
    /// The type for a wire byte, if known.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => MsgType::Hello,
            2 => MsgType::Share,
            3 => MsgType::Sum,
            4 => MsgType::Finish,
            5 => MsgType::Ack,
            6 => MsgType::Abort,
            7 => MsgType::Confirm,
            8 => MsgType::Request,
            9 => MsgType::Reply,
            10 => MsgType::End,
            11 => MsgType::Data,
            12 => MsgType::DhPublic,
            13 => MsgType::PairTags,
            _ => return None,
        })
    }

    /// Lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            MsgType::Hello => "hello",
            MsgType::Share => "share",
            MsgType::Sum => "share sum",
            MsgType::Finish => "finish",
            MsgType::Ack => "acknowledgement",
            MsgType::Abort => "abort",
            MsgType::Confirm => "confirmation",
            MsgType::Request => "agent request",
            MsgType::Reply => "agent reply",
            MsgType::End => "end of session",
            MsgType::Data => "data",
            MsgType::DhPublic => "DH public key",
            MsgType::PairTags => "pair confirmation tags",
        }
    }
}

/// One decoded frame. The payload is wiped on drop because shares and sums travel in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type.
    pub kind: MsgType,
    /// The payload (without the type byte).
    pub payload: Zeroizing<Vec<u8>>,
}

impl Frame {
    /// A frame of `kind` with `payload`.
    pub fn new(kind: MsgType, payload: Vec<u8>) -> Self {
        Frame {
            kind,
            payload: Zeroizing::new(payload),
        }
    }

    /// An abort frame carrying `reason`, truncated to [`MAX_ABORT_REASON`] bytes.
    pub fn abort(reason: &str) -> Self {
        Frame::new(
            MsgType::Abort,
            truncate_utf8(reason, MAX_ABORT_REASON).as_bytes().to_vec(),
        )
    }

    /// The whole encoded frame (length, type, payload); refuses a payload over the cap.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        let body = 1 + self.payload.len();
        if body > MAX_FRAME_LEN {
            return Err(Error::Internal(format!(
                "refusing to send a {body}-byte frame, the limit is {MAX_FRAME_LEN}"
            )));
        }
        let mut out = Zeroizing::new(Vec::with_capacity(4 + body));
        out.extend_from_slice(&(body as u32).to_be_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.payload);
        Ok(out)
    }
}

/// Cuts `s` to at most `max` bytes at a char boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn protocol_violation(peer: &str, what: impl std::fmt::Display) -> Error {
    Error::peer(format!("protocol violation by {peer}: {what}")).with_hint(format!(
        "check that {peer} runs a compatible secagg version; the session was aborted"
    ))
}

/// Writes `frame` to `w` and flushes, bounded by `deadline`. `peer` names the other side in
/// errors.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
    deadline: Instant,
    peer: &str,
) -> Result<()> {
    let bytes = frame.encode()?;
    let io = async {
        w.write_all(&bytes).await?;
        w.flush().await
    };
    match timeout_at(deadline, io).await {
        Err(_) => Err(Error::timeout(format!(
            "timed out sending a {} message to {peer}",
            frame.kind.name()
        ))),
        Ok(Err(e)) => Err(super::tls::io_error(
            peer,
            &format!("sending a {} message", frame.kind.name()),
            e,
        )),
        Ok(Ok(())) => Ok(()),
    }
}

/// Reads one frame from `r`, bounded by `deadline`.
///
/// Returns `Ok(None)` on end of stream at a frame boundary (the peer closed the connection,
/// with or without TLS close_notify). A truncated frame, a length of 0 or above
/// [`MAX_FRAME_LEN`], or an unknown type byte is a protocol violation ([`Error::PeerFailure`]);
/// nothing beyond the 4-byte header is read or allocated for an oversized length.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    deadline: Instant,
    peer: &str,
) -> Result<Option<Frame>> {
    let io = async {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match r.read(&mut header[got..]).await {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(protocol_violation(
                        peer,
                        "connection closed inside a frame header",
                    ))
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && got == 0 => {
                    // rustls reports a TCP close without close_notify this way.
                    return Ok(None);
                }
                Err(e) => return Err(super::tls::io_error(peer, "receiving", e)),
            }
        }
        let len = u32::from_be_bytes(header) as usize;
        if len == 0 {
            return Err(protocol_violation(peer, "empty frame"));
        }
        if len > MAX_FRAME_LEN {
            return Err(protocol_violation(
                peer,
                format!("frame of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit"),
            ));
        }
        let mut body = Zeroizing::new(vec![0u8; len]);
        if let Err(e) = r.read_exact(&mut body).await {
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                protocol_violation(peer, format!("connection closed inside a {len}-byte frame"))
            } else {
                super::tls::io_error(peer, "receiving", e)
            });
        }
        let kind = MsgType::from_byte(body[0])
            .ok_or_else(|| protocol_violation(peer, format!("unknown message type {}", body[0])))?;
        Ok(Some(Frame {
            kind,
            payload: Zeroizing::new(body[1..].to_vec()),
        }))
    };
    match timeout_at(deadline, io).await {
        Err(_) => Err(Error::timeout(format!(
            "timed out waiting for a message from {peer}"
        ))),
        Ok(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(2)
    }

    #[tokio::test]
    async fn round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let f = Frame::new(MsgType::Share, vec![7; 257]);
        write_frame(&mut a, &f, soon(), "node_a").await.unwrap();
        write_frame(&mut a, &Frame::new(MsgType::Ack, vec![]), soon(), "node_a")
            .await
            .unwrap();
        drop(a);
        assert_eq!(read_frame(&mut b, soon(), "node_a").await.unwrap(), Some(f));
        let ack = read_frame(&mut b, soon(), "node_a").await.unwrap().unwrap();
        assert_eq!(ack.kind, MsgType::Ack);
        assert!(ack.payload.is_empty());
        assert_eq!(read_frame(&mut b, soon(), "node_a").await.unwrap(), None);
    }

    async fn read_raw(bytes: &[u8]) -> Error {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(bytes).await.unwrap();
        drop(a);
        read_frame(&mut b, soon(), "node_x").await.unwrap_err()
    }

    #[tokio::test]
    async fn malformed_frames_are_refused_naming_the_peer() {
        let e = read_raw(&[0xff, 0xff, 0xff, 0xff]).await;
        assert_eq!(e.kind(), crate::ErrorKind::PeerFailure);
        assert_eq!(
            e.to_string(),
            "protocol violation by node_x: frame of 4294967295 bytes exceeds the 65536-byte limit"
        );
        let e = read_raw(&[0, 0, 0, 0]).await;
        assert!(e.to_string().contains("empty frame"), "{e}");
        let e = read_raw(&[0, 0, 0, 2, 99, 0]).await;
        assert!(e.to_string().contains("unknown message type 99"), "{e}");
        let e = read_raw(&[0, 0, 0, 9, 2, 0]).await;
        assert!(
            e.to_string().contains("closed inside a 9-byte frame"),
            "{e}"
        );
        let e = read_raw(&[0, 0]).await;
        assert!(e.to_string().contains("inside a frame header"), "{e}");
        assert_eq!(e.kind(), crate::ErrorKind::PeerFailure);
    }

    #[tokio::test]
    async fn reads_and_writes_respect_the_deadline() {
        let (mut a, mut b) = tokio::io::duplex(16);
        let start = std::time::Instant::now();
        let e = read_frame(&mut b, Instant::now() + Duration::from_millis(50), "node_y")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Timeout);
        assert!(e.to_string().contains("node_y"));
        // A writer blocked by a full pipe also gives up at the deadline.
        let e = write_frame(
            &mut a,
            &Frame::new(MsgType::Share, vec![0; 1000]),
            Instant::now() + Duration::from_millis(50),
            "node_y",
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Timeout);
        assert!(start.elapsed() < Duration::from_secs(1));
        let big = Frame::new(MsgType::Abort, vec![b'x'; MAX_FRAME_LEN]);
        assert!(big.encode().is_err());
        assert_eq!(Frame::abort(&"é".repeat(600)).payload.len(), 1024);
    }
}
