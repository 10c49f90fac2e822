//! The local SQLite store: registered peers ([`peers`]) and negotiated contexts ([`contexts`]).
//!
//! One module per table. The schema is versioned with `PRAGMA user_version` and migrated forward
//! when the store is opened; a store written by a newer secagg is refused rather than guessed at.
//! The file is created 0600 (SQLite gives its `-wal` and `-shm` files the same mode), runs in WAL
//! mode with a busy timeout, and every command runs in one `BEGIN IMMEDIATE` transaction, so
//! several processes registering at once serialize instead of failing or losing writes.

pub mod contexts;
pub mod peers;
pub mod vpn_peers;
pub mod vpn_server;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result};
use crate::fs_secure::SECRET_FILE_MODE;

/// How long a command waits for another process holding the store before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Schema migrations; entry `i` takes the store from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // v1: registered peers.
    "CREATE TABLE peers (
        party_id        TEXT PRIMARY KEY NOT NULL,
        role            TEXT NOT NULL CHECK (role IN ('researcher', 'node')),
        host            TEXT NOT NULL,
        port            INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
        certificate_der BLOB NOT NULL,
        fingerprint     TEXT NOT NULL UNIQUE,
        key_type        TEXT NOT NULL,
        subject         TEXT NOT NULL,
        not_before      INTEGER NOT NULL,
        not_after       INTEGER NOT NULL,
        registered_at   INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        source          TEXT NOT NULL
    ) STRICT;",
    // v2: negotiated contexts (the outcome of key negotiation).
    "CREATE TABLE contexts (
        session_id      TEXT PRIMARY KEY NOT NULL,
        role            TEXT NOT NULL CHECK (role IN ('researcher', 'node')),
        party_index     INTEGER NOT NULL,
        parties         TEXT NOT NULL,
        engine          TEXT NOT NULL,
        key_bits        INTEGER NOT NULL,
        key_decimal     TEXT NOT NULL,
        key_fingerprint TEXT NOT NULL,
        created_at      INTEGER NOT NULL
    ) STRICT;",
    // v3: the VPN server's settings (one row) and its peer registry (`secagg vpn`).
    "CREATE TABLE vpn_server (
        id              INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
        private_key     TEXT NOT NULL,
        public_key      TEXT NOT NULL,
        public_host     TEXT NOT NULL,
        port            INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
        network         TEXT NOT NULL,
        created_at      INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE vpn_peers (
        peer_type       TEXT NOT NULL CHECK (peer_type IN ('management', 'node', 'researcher')),
        peer_id         TEXT NOT NULL,
        address         INTEGER NOT NULL UNIQUE,
        preshared_key   TEXT NOT NULL,
        public_key      TEXT UNIQUE,
        config_path     TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        PRIMARY KEY (peer_type, peer_id)
    ) STRICT;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating with mode 0600 if missing) and migrates the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let ctx = format!("while opening store `{}`", path.display());
        // Create the file ourselves so it is 0600 from the start; SQLite would use the umask.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(SECRET_FILE_MODE)
            .open(path)
            .map_err(|e| Error::io(ctx.clone(), e))?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::store(ctx.clone(), e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| Error::store(ctx.clone(), e))?;
        let not_a_store = |e: rusqlite::Error| {
            if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::NotADatabase)
            ) {
                Error::invalid(format!(
                    "`{}` is not a secagg store (not an SQLite database)",
                    path.display()
                ))
                .with_hint("move the file away or point --home at the right directory")
            } else {
                Error::store(ctx.clone(), e)
            }
        };
        // Switching to WAL needs a moment of exclusive access; retry while another process has it.
        let mut attempts = 0;
        loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
                Ok(_) => break,
                Err(e) if is_busy(&e) && attempts < 300 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(not_a_store(e)),
            }
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(not_a_store)?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
        };
        store.migrate().map_err(|e| e.context(ctx))?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::store("while locking the store for migration", e))?;
        let version: u32 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| Error::store("while reading the schema version", e))?;
        if version > SCHEMA_VERSION {
            return Err(Error::invalid(format!(
                "the store has schema version {version}, this secagg knows up to {SCHEMA_VERSION}"
            ))
            .with_hint("it was written by a newer secagg: upgrade secagg"));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql).map_err(|e| {
                Error::store(format!("while migrating the store to version {}", i + 1), e)
            })?;
        }
        if version < SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(|e| Error::store("while recording the schema version", e))?;
        }
        tx.commit()
            .map_err(|e| Error::store("while committing the migration", e))
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one immediate (write-locking) transaction; commits if it returns `Ok`, rolls
    /// back otherwise, so a failed command changes nothing.
    pub fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::store("while locking the store", e))?;
        let value = f(&tx)?;
        tx.commit()
            .map_err(|e| Error::store("while committing to the store", e))?;
        Ok(value)
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    pub fn read<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| Error::store("while reading the store", e))?;
        f(&tx)
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs_secure::mode_of;

    #[test]
    fn open_creates_0600_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        let mut s = Store::open(&p).unwrap();
        assert_eq!(mode_of(&p).unwrap(), 0o600);
        let v: u32 = s
            .read(|tx| {
                Ok(tx
                    .query_row("PRAGMA user_version", [], |r| r.get(0))
                    .unwrap())
            })
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        drop(s);
        Store::open(&p).unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        let s = Store::open(&p).unwrap();
        s.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(s);
        let e = Store::open(&p).unwrap_err();
        assert!(
            e.to_string().contains("newer") || e.hint().unwrap_or("").contains("newer"),
            "{e}"
        );
    }

    #[test]
    fn garbage_file_is_named_as_not_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        std::fs::write(&p, vec![0x42u8; 4096]).unwrap();
        let e = Store::open(&p).unwrap_err();
        assert!(e.to_string().contains("not a secagg store"), "{e}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            vec![0x42u8; 4096],
            "file untouched"
        );
    }
}
