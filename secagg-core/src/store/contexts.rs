//! The `contexts` table: keys from key negotiations, as [`ContextRecord`]s (see
//! [`crate::contexts`] for what a context is and its states).

use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::contexts::{ContextRecord, KeyState};
use crate::engine::ContextScheme;
use crate::error::{Error, Result};

const COLUMNS: &str = "session_id, role, party_index, parties, engine, key_bits, key_decimal, key_fingerprint, created_at, state, confirmed_at, scheme, dropout_threshold";

fn from_row(row: &Row<'_>) -> rusqlite::Result<ContextRecord> {
    let conv = |col: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, e)
    };
    let role: String = row.get(1)?;
    let parties: String = row.get(3)?;
    let created: i64 = row.get(8)?;
    let state: String = row.get(9)?;
    let confirmed: Option<i64> = row.get(10)?;
    let scheme: String = row.get(11)?;
    Ok(ContextRecord {
        session_id: row.get(0)?,
        role: role.parse().map_err(|e: Error| conv(1, Box::new(e)))?,
        party_index: row.get(2)?,
        parties: serde_json::from_str(&parties).map_err(|e| conv(3, Box::new(e)))?,
        engine: row.get(4)?,
        key_bits: row.get(5)?,
        key_decimal: Zeroizing::new(row.get(6)?),
        key_fingerprint: row.get(7)?,
        created_at: OffsetDateTime::from_unix_timestamp(created)
            .map_err(|e| conv(8, Box::new(e)))?,
        state: KeyState::parse(&state).map_err(|e| conv(9, Box::new(e)))?,
        confirmed_at: confirmed
            .map(OffsetDateTime::from_unix_timestamp)
            .transpose()
            .map_err(|e| conv(10, Box::new(e)))?,
        scheme: ContextScheme::parse(&scheme).map_err(|e| conv(11, Box::new(e)))?,
        dropout_threshold: row.get(12)?,
    })
}

/// Stores a context; a context with the same session id is a conflict.
pub fn insert(conn: &Connection, c: &ContextRecord) -> Result<()> {
    if get(conn, &c.session_id)?.is_some() {
        return Err(Error::conflict(format!(
            "a context for session `{}` is already stored",
            c.session_id
        ))
        .with_hint(
            "use a new session id, or delete the old context with `secagg context delete`",
        ));
    }
    let parties = serde_json::to_string(&c.parties).map_err(|e| Error::Internal(e.to_string()))?;
    // Cached statements: a party agent's store connection stays open between sessions, and
    // rusqlite clears their bindings (the key) when they go back to the cache.
    conn.prepare_cached(&format!(
        "INSERT INTO contexts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))
    .and_then(|mut st| {
        st.execute(params![
            c.session_id,
            c.role.as_str(),
            c.party_index,
            parties,
            c.engine,
            c.key_bits,
            c.key_decimal.as_str(),
            c.key_fingerprint,
            c.created_at.unix_timestamp(),
            c.state.as_str(),
            c.confirmed_at.map(|t| t.unix_timestamp()),
            c.scheme.as_str(),
            c.dropout_threshold,
        ])
    })
    .map_err(|e| Error::store("while storing a context", e))?;
    Ok(())
}

/// The session ids of every stored context (no key read).
pub fn session_ids(conn: &Connection) -> Result<Vec<String>> {
    let mut st = conn
        .prepare("SELECT session_id FROM contexts")
        .map_err(|e| Error::store("while listing contexts", e))?;
    let ids = st
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
        .map_err(|e| Error::store("while listing contexts", e))?;
    Ok(ids)
}

/// The context of `session_id`, if stored.
pub fn get(conn: &Connection, session_id: &str) -> Result<Option<ContextRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM contexts WHERE session_id = ?1"
    ))
    .and_then(|mut st| st.query_row([session_id], from_row))
    .optional()
    .map_err(|e| Error::store("while reading a context", e))
}

/// Every stored context, newest first.
pub fn list(conn: &Connection) -> Result<Vec<ContextRecord>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM contexts ORDER BY created_at DESC, session_id"
        ))
        .map_err(|e| Error::store("while listing contexts", e))?;
    let rows = stmt
        .query_map([], from_row)
        .map_err(|e| Error::store("while listing contexts", e))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| Error::store("while listing contexts", e))
}

/// Deletes the context of `session_id`, with a LOM context's secrets and rounds; returns whether
/// it existed.
pub fn delete(conn: &Connection, session_id: &str) -> Result<bool> {
    super::lom_secrets::delete(conn, session_id)?;
    super::lom_rounds::delete(conn, session_id)?;
    super::lom_shares::delete(conn, session_id)?;
    super::lom_announcements::delete(conn, session_id)?;
    super::lom_reveals::delete(conn, session_id)?;
    let n = conn
        .execute("DELETE FROM contexts WHERE session_id = ?1", [session_id])
        .map_err(|e| Error::store("while deleting a context", e))?;
    Ok(n > 0)
}

/// Marks the context of `session_id` confirmed at `at`; returns whether it was unconfirmed.
pub fn confirm(conn: &Connection, session_id: &str, at: OffsetDateTime) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE contexts SET state = 'confirmed', confirmed_at = ?2 WHERE session_id = ?1 AND state = 'unconfirmed'",
        )
        .and_then(|mut st| st.execute(params![session_id, at.unix_timestamp()]))
        .map_err(|e| Error::store("while confirming a context", e))?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contexts::UNCONFIRMED_EXPIRY;
    use crate::party::Role;
    use crate::store::Store;

    fn record(id: &str, state: KeyState, created_at: OffsetDateTime) -> ContextRecord {
        ContextRecord {
            session_id: id.to_owned(),
            role: Role::Node,
            party_index: 1,
            parties: vec!["researcher_r".into(), "node_a".into(), "node_b".into()],
            engine: "native".into(),
            key_bits: 2040,
            key_decimal: Zeroizing::new("12345".into()),
            key_fingerprint: "SHA256:00".into(),
            created_at,
            state,
            confirmed_at: None,
            scheme: ContextScheme::Jl,
            dropout_threshold: None,
        }
    }

    #[test]
    fn states_round_trip_and_confirm_only_moves_unconfirmed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(&dir.path().join("store.sqlite")).unwrap();
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        store
            .write(|tx| insert(tx, &record("s1", KeyState::Unconfirmed, t0)))
            .unwrap();
        let got = store.read(|tx| get(tx, "s1")).unwrap().unwrap();
        assert_eq!(got.state, KeyState::Unconfirmed);
        assert_eq!(got.confirmed_at, None);
        assert_eq!(got.expires_at(), Some(t0 + UNCONFIRMED_EXPIRY));
        assert!(!got.is_expired_at(t0 + time::Duration::days(6)));
        assert!(got.is_expired_at(t0 + time::Duration::days(7)));
        let summary = got.summary(false);
        assert_eq!(summary.state, KeyState::Unconfirmed);
        assert_eq!(summary.expired, Some(true)); // 2023 is long past
        let t1 = t0 + time::Duration::hours(1);
        assert!(store.write(|tx| confirm(tx, "s1", t1)).unwrap());
        assert!(
            !store.write(|tx| confirm(tx, "s1", t1)).unwrap(),
            "only once"
        );
        assert!(!store.write(|tx| confirm(tx, "nope", t1)).unwrap());
        let got = store.read(|tx| get(tx, "s1")).unwrap().unwrap();
        assert_eq!(got.state, KeyState::Confirmed);
        assert_eq!(got.confirmed_at, Some(t1));
        assert_eq!(got.expires_at(), None);
        assert!(!got.is_expired_at(t0 + time::Duration::days(365)));
        let summary = serde_json::to_value(got.summary(false)).unwrap();
        assert_eq!(summary["state"], "confirmed");
        assert!(summary.get("expires_at").is_none());
    }

    #[test]
    fn contexts_of_a_version_3_store_read_as_confirmed_after_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &crate::store::MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute(
                "INSERT INTO contexts VALUES ('old', 'node', 1, '[\"researcher_r\",\"node_a\",\"node_b\"]', 'native', 2040, '42', 'SHA256:00', 1700000000)",
                [],
            )
            .unwrap();
        }
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mut store = Store::open(&path).unwrap();
        let got = store.read(|tx| get(tx, "old")).unwrap().unwrap();
        assert_eq!(got.state, KeyState::Confirmed);
        assert_eq!(got.key_decimal.as_str(), "42");
        assert_eq!(got.confirmed_at, None);
    }
}
