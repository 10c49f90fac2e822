//! The `lom_shares` table: the shares a node received for each round of a dropout-tolerant LOM
//! context, one row per (round, label, node that drew the secret, what the secret is about): that
//! node's self-mask seed (`about` = the node itself; a node also keeps its own share of its own
//! seed) or its round seed with another node (`about` = that node). Secret: read only to answer
//! the researcher's reveal of that round, which erases them; erased with the context (the store
//! runs with `secure_delete`).

use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::lom_rounds::to_sql;
use crate::error::{Error, Result};

/// What storing a share did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The share is new and now stored.
    New,
    /// The very same share was stored before (a retried send): nothing changed.
    Again,
    /// Another share from the same node about the same secret of the same round was stored
    /// before: nothing changed.
    Different,
}

/// One stored share.
pub struct Share {
    /// The node that drew the secret and sent the share.
    pub from: String,
    /// Whose secret: `from` itself (its self-mask seed) or the other node of a pair (their round
    /// seed).
    pub about: String,
    /// The share (an element of the seed field, fixed length).
    pub share: Zeroizing<Vec<u8>>,
}

/// Stores `share` from `from_id` about `about_id` for (`round`, `label`) of `session_id`, unless
/// one is there.
pub fn insert(
    conn: &Connection,
    session_id: &str,
    (round, label): (u64, u64),
    (from_id, about_id): (&str, &str),
    share: &[u8],
    at: OffsetDateTime,
) -> Result<Stored> {
    let (r, l) = (to_sql(round, "round")?, to_sql(label, "label")?);
    let old: Option<Zeroizing<Vec<u8>>> = conn
        .prepare_cached(
            "SELECT share FROM lom_shares WHERE session_id = ?1 AND round = ?2 AND label = ?3 AND from_id = ?4 AND about_id = ?5",
        )
        .and_then(|mut st| {
            st.query_row(params![session_id, r, l, from_id, about_id], |row| {
                row.get(0).map(Zeroizing::new)
            })
            .optional()
        })
        .map_err(|e| Error::store("while reading a share", e))?;
    if let Some(old) = old {
        let same: bool = subtle::ConstantTimeEq::ct_eq(old.as_slice(), share).into();
        return Ok(if same {
            Stored::Again
        } else {
            Stored::Different
        });
    }
    conn.prepare_cached(
        "INSERT INTO lom_shares (session_id, round, label, from_id, about_id, share, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut st| {
        st.execute(params![
            session_id,
            r,
            l,
            from_id,
            about_id,
            share,
            at.unix_timestamp()
        ])
    })
    .map_err(|e| Error::store("while storing a share", e))?;
    Ok(Stored::New)
}

/// Keeps the `keep` most recently received shares from `from_id` under `session_id` and deletes
/// the rest: a registered node that sends shares for ever more rounds cannot fill this store.
/// Returns how many were deleted. Cheap below the cap (one count on the sender's index), which
/// is where a federation that reveals its rounds stays.
pub fn keep_latest(
    conn: &Connection,
    session_id: &str,
    from_id: &str,
    keep: usize,
) -> Result<usize> {
    let fail = |e| Error::store("while deleting old shares", e);
    let held: i64 = conn
        .prepare_cached("SELECT count(*) FROM lom_shares WHERE session_id = ?1 AND from_id = ?2")
        .and_then(|mut st| st.query_row(params![session_id, from_id], |r| r.get(0)))
        .map_err(fail)?;
    if held as usize <= keep {
        return Ok(0);
    }
    conn.prepare_cached(
        "DELETE FROM lom_shares WHERE rowid IN (
            SELECT rowid FROM lom_shares WHERE session_id = ?1 AND from_id = ?2
            ORDER BY received_at, rowid LIMIT ?3)",
    )
    .and_then(|mut st| st.execute(params![session_id, from_id, held - keep as i64]))
    .map_err(fail)
}

/// The shares stored for (`round`, `label`) of `session_id`.
pub fn get(conn: &Connection, session_id: &str, (round, label): (u64, u64)) -> Result<Vec<Share>> {
    let (r, l) = (to_sql(round, "round")?, to_sql(label, "label")?);
    let mut st = conn
        .prepare_cached(
            "SELECT from_id, about_id, share FROM lom_shares WHERE session_id = ?1 AND round = ?2 AND label = ?3 ORDER BY from_id, about_id",
        )
        .map_err(|e| Error::store("while reading shares", e))?;
    let rows = st
        .query_map(params![session_id, r, l], |row| {
            Ok(Share {
                from: row.get(0)?,
                about: row.get(1)?,
                share: Zeroizing::new(row.get(2)?),
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| Error::store("while reading shares", e))?;
    Ok(rows)
}

/// Deletes the shares of (`round`, `label`) of `session_id` (once revealed, they serve nothing).
pub fn delete_round(conn: &Connection, session_id: &str, (round, label): (u64, u64)) -> Result<()> {
    let (r, l) = (to_sql(round, "round")?, to_sql(label, "label")?);
    conn.execute(
        "DELETE FROM lom_shares WHERE session_id = ?1 AND round = ?2 AND label = ?3",
        params![session_id, r, l],
    )
    .map_err(|e| Error::store("while deleting shares", e))?;
    Ok(())
}

/// Deletes the shares of `session_id`.
pub fn delete(conn: &Connection, session_id: &str) -> Result<()> {
    conn.execute("DELETE FROM lom_shares WHERE session_id = ?1", [session_id])
        .map_err(|e| Error::store("while deleting shares", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_node_flooding_shares_keeps_only_its_latest_and_another_share_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("store.sqlite")).unwrap();
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let a = ("node_a", "node_a");
        store
            .write(|tx| {
                for r in 0..20u64 {
                    let at = t0 + time::Duration::seconds(r as i64);
                    assert_eq!(insert(tx, "s", (r, 0), a, &[r as u8; 66], at)?, Stored::New);
                    keep_latest(tx, "s", "node_a", 5)?;
                }
                // Another node's shares are not its to evict.
                insert(tx, "s", (0, 0), ("node_b", "node_a"), &[9; 66], t0)?;
                assert_eq!(keep_latest(tx, "s", "node_a", 5)?, 0);
                Ok(())
            })
            .unwrap();
        let kept: Vec<u64> = (0..20)
            .filter(|r| {
                let held = store.read(|tx| get(tx, "s", (*r, 0))).unwrap();
                held.iter().any(|s| s.from == "node_a")
            })
            .collect();
        assert_eq!(kept, vec![15, 16, 17, 18, 19]);
        let held = store.read(|tx| get(tx, "s", (0, 0))).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(
            (held[0].from.as_str(), held[0].about.as_str()),
            ("node_b", "node_a")
        );
        // The same share again is a retry; another one for the same secret is told apart, and a
        // share about another secret of the same node and round is a new one.
        store
            .write(|tx| {
                assert_eq!(insert(tx, "s", (19, 0), a, &[19; 66], t0)?, Stored::Again);
                assert_eq!(
                    insert(tx, "s", (19, 0), a, &[7; 66], t0)?,
                    Stored::Different
                );
                let other = ("node_a", "node_c");
                assert_eq!(insert(tx, "s", (19, 0), other, &[7; 66], t0)?, Stored::New);
                Ok(())
            })
            .unwrap();
    }
}
