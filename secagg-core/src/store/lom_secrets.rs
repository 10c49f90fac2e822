//! The `lom_secrets` table: a node's pairwise secrets of each LOM context, one row per other
//! node. Secret: written only in the transaction that stores the context
//! ([`crate::session`]'s sink), read only to mask, erased with the context (the store runs with
//! `secure_delete`).

use rusqlite::{params, Connection};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::lom::prf::Key32;

/// Stores `secrets` (peer id, secret) for `session_id`.
pub fn insert(
    conn: &Connection,
    session_id: &str,
    secrets: &[(String, Zeroizing<Key32>)],
) -> Result<()> {
    let mut st = conn
        .prepare_cached("INSERT INTO lom_secrets (session_id, peer_id, secret) VALUES (?1, ?2, ?3)")
        .map_err(|e| Error::store("while storing pairwise secrets", e))?;
    for (peer, secret) in secrets {
        st.execute(params![session_id, peer, secret.as_slice()])
            .map_err(|e| Error::store("while storing pairwise secrets", e))?;
    }
    Ok(())
}

/// The secrets of `session_id`, by peer id (in the order of `peers`); fails if one is missing.
pub fn get(
    conn: &Connection,
    session_id: &str,
    peers: &[String],
) -> Result<Vec<(String, Zeroizing<Key32>)>> {
    let mut st = conn
        .prepare_cached("SELECT secret FROM lom_secrets WHERE session_id = ?1 AND peer_id = ?2")
        .map_err(|e| Error::store("while reading pairwise secrets", e))?;
    let mut out = Vec::with_capacity(peers.len());
    for peer in peers {
        let blob: Zeroizing<Vec<u8>> = Zeroizing::new(
            st.query_row(params![session_id, peer], |r| r.get(0))
                .map_err(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Error::Internal(format!(
                        "the LOM context of session `{session_id}` has no secret with `{peer}`"
                    )),
                    e => Error::store("while reading pairwise secrets", e),
                })?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if blob.len() != key.len() {
            return Err(Error::Internal(format!(
                "the LOM secret of session `{session_id}` with `{peer}` is {} bytes",
                blob.len()
            )));
        }
        key.copy_from_slice(&blob);
        out.push((peer.clone(), key));
    }
    Ok(out)
}

/// Deletes the secrets of `session_id`.
pub fn delete(conn: &Connection, session_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM lom_secrets WHERE session_id = ?1",
        [session_id],
    )
    .map_err(|e| Error::store("while deleting pairwise secrets", e))?;
    Ok(())
}
