//! A roster over an agent connection (`secagg roster pull`).
//!
//! One frame carries at most [`MAX_FRAME_LEN`] bytes, and a roster of about 64 parties is
//! already larger. So the researcher's agent answers a `chunked` roster request with
//! [`Reply::RosterFollows`] (the file's size), then the file in [`MsgType::Data`] frames of at
//! most [`CHUNK_BYTES`]; the client refuses a size over what `roster import` accepts
//! ([`MAX_ROSTER_BYTES`]) before it reads a byte, and every frame that would overrun it. A client
//! older than this reads one reply only: it gets the roster in one frame when it fits, else a
//! refusal that says why (not a silent close).
//!
//! Every failure to send is returned, for the agent to log as a failure: a send that fails is
//! never reported as sent.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::{Reply, WireError};
use crate::error::{Error, ErrorKind, Result};
use crate::roster::MAX_ROSTER_BYTES;
use crate::transport::frame::{read_frame, write_frame, Frame, MsgType, MAX_FRAME_LEN};
use crate::transport::mesh::escape_peer_text;

/// Largest data frame payload of a roster transfer (well below the frame cap).
pub(crate) const CHUNK_BYTES: usize = 32 * 1024;

/// How long one frame of a transfer may take, either way.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// The slowest transfer a client waits for (bytes per second): with [`FRAME_TIMEOUT`], it bounds
/// the whole transfer, so a peer that trickles bytes cannot hold the client for ever.
const MIN_BYTES_PER_SECOND: u64 = 64 * 1024;

/// What the agent sent for a roster request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// This party exported no roster: the reply said so.
    NoneExported,
    /// The roster in one reply (a client without chunked transfer).
    Whole { bytes: usize },
    /// The roster in data frames.
    Chunked { bytes: usize, frames: usize },
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sent::NoneExported => write!(f, "none exported"),
            Sent::Whole { bytes } => write!(f, "sent ({bytes} bytes in one reply)"),
            Sent::Chunked { bytes, frames } => {
                write!(f, "sent ({bytes} bytes in {frames} data frames)")
            }
        }
    }
}

/// The latest exported roster file at `path` (bounded by [`MAX_ROSTER_BYTES`]), `None` if there
/// is none. Blocking: the agent calls it off its async workers.
pub(crate) fn load(path: &Path) -> Result<Option<Vec<u8>>> {
    match crate::fs_secure::read_limited(path, MAX_ROSTER_BYTES, "roster") {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Answers a roster request of `peer` with `latest` ([`load`]'s result). Returns what was sent,
/// or why it was not (a roster that could not be read is refused to the peer without the local
/// details, which the returned error keeps for the log).
pub(crate) async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    peer: &str,
    latest: Result<Option<Vec<u8>>>,
    chunked: bool,
) -> Result<Sent> {
    let bytes = match latest {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            reply(w, peer, &Reply::Roster { roster: None }).await?;
            return Ok(Sent::NoneExported);
        }
        Err(e) => {
            let told = super::error_of_kind(e.kind(), "its latest roster cannot be read".into());
            refuse(w, peer, &told.with_hint("its agent's log says why")).await;
            return Err(e.context("cannot read the latest exported roster"));
        }
    };
    if chunked {
        send_chunks(w, peer, &bytes).await
    } else {
        send_whole(w, peer, bytes).await
    }
}

async fn send_chunks<W: AsyncWrite + Unpin>(w: &mut W, peer: &str, bytes: &[u8]) -> Result<Sent> {
    let total = bytes.len();
    reply(
        w,
        peer,
        &Reply::RosterFollows {
            bytes: total as u64,
        },
    )
    .await?;
    let (mut done, mut frames) = (0, 0);
    for chunk in bytes.chunks(CHUNK_BYTES) {
        let frame = Frame::new(MsgType::Data, chunk.to_vec());
        write_frame(w, &frame, Instant::now() + FRAME_TIMEOUT, peer)
            .await
            .map_err(|e| e.context(format!("after {done} of {total} bytes of the roster")))?;
        done += chunk.len();
        frames += 1;
    }
    Ok(Sent::Chunked {
        bytes: total,
        frames,
    })
}

/// One reply, for a client that reads no data frames: refused, saying why, when it does not fit.
async fn send_whole<W: AsyncWrite + Unpin>(w: &mut W, peer: &str, bytes: Vec<u8>) -> Result<Sent> {
    let size = bytes.len();
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => {
            let e = Error::invalid("the latest exported roster is not UTF-8 text");
            refuse(w, peer, &e).await;
            return Err(e);
        }
    };
    let r = Reply::Roster { roster: Some(text) };
    let payload = serde_json::to_vec(&r).map_err(|e| Error::Internal(e.to_string()))?;
    if payload.len() >= MAX_FRAME_LEN {
        let e = Error::invalid(format!(
            "the roster is {size} bytes, more than one agent reply carries ({MAX_FRAME_LEN} bytes), and the secagg of {peer} reads no larger one"
        ))
        .with_hint(format!(
            "upgrade secagg at {peer}, or send it the roster file to import with `secagg roster import FILE`"
        ));
        refuse(w, peer, &e).await;
        return Err(e);
    }
    write_reply_bytes(w, peer, payload).await?;
    Ok(Sent::Whole { bytes: size })
}

async fn reply<W: AsyncWrite + Unpin>(w: &mut W, peer: &str, r: &Reply) -> Result<()> {
    let payload = serde_json::to_vec(r).map_err(|e| Error::Internal(e.to_string()))?;
    write_reply_bytes(w, peer, payload).await
}

async fn write_reply_bytes<W: AsyncWrite + Unpin>(
    w: &mut W,
    peer: &str,
    payload: Vec<u8>,
) -> Result<()> {
    let frame = Frame::new(MsgType::Reply, payload);
    write_frame(w, &frame, Instant::now() + FRAME_TIMEOUT, peer).await
}

/// Best effort: the refusal is what the peer should see, the caller logs the cause anyway.
async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, peer: &str, e: &Error) {
    let error = WireError::of(e);
    let _ = reply(w, peer, &Reply::Refused { error }).await;
}

/// Reads the `total` bytes of roster that `label`'s agent announced, from its data frames.
/// Refuses a size over [`MAX_ROSTER_BYTES`] before reading, and an empty, surplus or foreign
/// frame; a transfer slower than [`MIN_BYTES_PER_SECOND`] (or a frame later than
/// [`FRAME_TIMEOUT`]) times out.
pub(crate) async fn receive<R: AsyncRead + Unpin>(
    r: &mut R,
    label: &str,
    total: u64,
) -> Result<Vec<u8>> {
    if total > MAX_ROSTER_BYTES {
        return Err(Error::invalid(format!(
            "{label} offers a roster of {total} bytes, more than the {MAX_ROSTER_BYTES} bytes `secagg roster import` accepts"
        )));
    }
    let whole = Instant::now() + FRAME_TIMEOUT + Duration::from_secs(total / MIN_BYTES_PER_SECOND);
    let total = total as usize;
    let mut out = Vec::with_capacity(total.min(4 * CHUNK_BYTES));
    while out.len() < total {
        let at = || format!("after {} of {total} bytes of its roster", out.len());
        let until = whole.min(Instant::now() + FRAME_TIMEOUT);
        let frame = read_frame(r, until, label)
            .await
            .map_err(|e| e.context(at()))?;
        let Some(frame) = frame else {
            return Err(
                Error::peer(format!("{label} closed the connection {}", at()))
                    .with_hint(format!("the log of {label}'s agent says why; pull again")),
            );
        };
        match frame.kind {
            MsgType::Data
                if !frame.payload.is_empty() && frame.payload.len() <= total - out.len() =>
            {
                out.extend_from_slice(&frame.payload);
            }
            MsgType::Data => {
                return Err(Error::peer(format!(
                "protocol violation by {label}: a data frame of {} bytes {} (announced: {total})",
                frame.payload.len(),
                at()
            )))
            }
            MsgType::Abort => {
                return Err(Error::peer(format!(
                    "{label} gave up sending its roster {}: {}",
                    at(),
                    escape_peer_text(&String::from_utf8_lossy(&frame.payload))
                )))
            }
            other => {
                return Err(Error::peer(format!(
                    "protocol violation by {label}: a {} message {}",
                    other.name(),
                    at()
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncWriteExt};

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    async fn next_reply<R: AsyncRead + Unpin>(r: &mut R) -> Reply {
        let f = read_frame(r, soon(), "researcher_x")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.kind, MsgType::Reply);
        serde_json::from_slice(&f.payload).unwrap()
    }

    /// A roster of 200 parties is about 300 KB: ten frames' worth.
    fn big_roster() -> Vec<u8> {
        (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect()
    }

    #[tokio::test]
    async fn a_roster_over_the_frame_cap_arrives_whole_in_data_frames() {
        let roster = big_roster();
        let (mut a, mut b) = duplex(1 << 16);
        let sending = tokio::spawn({
            let roster = roster.clone();
            async move { send(&mut a, "node_n", Ok(Some(roster)), true).await }
        });
        let Reply::RosterFollows { bytes } = next_reply(&mut b).await else {
            panic!("no announcement")
        };
        assert_eq!(bytes, roster.len() as u64);
        let got = receive(&mut b, "researcher_x", bytes).await.unwrap();
        assert_eq!(got, roster);
        let sent = sending.await.unwrap().unwrap();
        assert_eq!(
            sent,
            Sent::Chunked {
                bytes: roster.len(),
                frames: roster.len().div_ceil(CHUNK_BYTES)
            }
        );
        assert!(sent.to_string().starts_with("sent (300000 bytes"), "{sent}");
    }

    #[tokio::test]
    async fn a_client_that_went_away_is_a_failure_to_send_not_sent() {
        let (mut a, b) = duplex(1024);
        drop(b);
        let e = send(&mut a, "node_n", Ok(Some(big_roster())), true)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PeerFailure, "{e}");
        // Gone after the announcement: the error says how far it got.
        let (mut a, mut b) = duplex(1 << 16);
        let sending =
            tokio::spawn(async move { send(&mut a, "node_n", Ok(Some(big_roster())), true).await });
        let _ = next_reply(&mut b).await;
        drop(b);
        let e = sending.await.unwrap().unwrap_err();
        assert!(
            e.to_string().contains("of 300000 bytes of the roster"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_older_client_gets_a_small_roster_whole_and_a_large_one_refused_saying_why() {
        let (mut a, mut b) = duplex(1 << 20);
        let sent = send(&mut a, "node_n", Ok(Some(b"{}".to_vec())), false).await;
        assert_eq!(sent.unwrap(), Sent::Whole { bytes: 2 });
        let Reply::Roster { roster: Some(text) } = next_reply(&mut b).await else {
            panic!("not the roster")
        };
        assert_eq!(text, "{}");
        let e = send(&mut a, "node_n", Ok(Some(big_roster())), false)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("more than one agent reply carries"),
            "{e}"
        );
        let Reply::Refused { error } = next_reply(&mut b).await else {
            panic!("not refused")
        };
        assert!(error.hint.unwrap().contains("upgrade secagg at node_n"));
    }

    #[tokio::test]
    async fn none_exported_and_an_unreadable_roster_are_told_apart() {
        let (mut a, mut b) = duplex(1 << 16);
        assert_eq!(
            send(&mut a, "node_n", Ok(None), true).await.unwrap(),
            Sent::NoneExported
        );
        assert!(matches!(
            next_reply(&mut b).await,
            Reply::Roster { roster: None }
        ));
        let unreadable = Err(Error::invalid(
            "roster file `/home/r/roster.json` is 99999999 bytes, more than allowed",
        ));
        let e = send(&mut a, "node_n", unreadable, true).await.unwrap_err();
        assert!(e.to_string().contains("/home/r/roster.json"), "{e}");
        let Reply::Refused { error } = next_reply(&mut b).await else {
            panic!("not refused")
        };
        // The peer learns that it failed, not the local paths.
        assert_eq!(error.message, "its latest roster cannot be read");
        assert_eq!(error.kind, ErrorKind::InvalidInput);
    }

    async fn receive_raw(frames: &[Frame], total: u64) -> Error {
        let (mut a, mut b) = duplex(1 << 20);
        for f in frames {
            write_frame(&mut a, f, soon(), "node_n").await.unwrap();
        }
        a.shutdown().await.unwrap();
        receive(&mut b, "researcher_x", total).await.unwrap_err()
    }

    #[tokio::test]
    async fn the_client_bounds_what_it_reads() {
        let e = receive_raw(&[], MAX_ROSTER_BYTES + 1).await;
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(
            e.to_string().contains("more than the 16777216 bytes"),
            "{e}"
        );
        let data = |n: usize| Frame::new(MsgType::Data, vec![b'x'; n]);
        let e = receive_raw(&[data(10), data(11)], 20).await;
        assert!(
            e.to_string()
                .contains("a data frame of 11 bytes after 10 of 20 bytes"),
            "{e}"
        );
        let e = receive_raw(&[data(0)], 20).await;
        assert!(e.to_string().contains("a data frame of 0 bytes"), "{e}");
        let e = receive_raw(&[data(10)], 20).await;
        assert!(
            e.to_string()
                .contains("closed the connection after 10 of 20 bytes"),
            "{e}"
        );
        let e = receive_raw(&[data(5), Frame::abort("disk\x1b[2J gone")], 20).await;
        assert!(e.to_string().contains("gave up sending its roster"), "{e}");
        assert!(!e.to_string().contains('\x1b'), "{e}");
        let e = receive_raw(&[Frame::new(MsgType::Share, vec![1])], 20).await;
        assert!(e.to_string().contains("a share message after 0"), "{e}");
    }
}
