//! The local SQLite store, one module per table: registered peers ([`peers`]), negotiated keys and
//! their states ([`contexts`]), a LOM context's pairwise secrets ([`lom_secrets`]) and the rounds
//! masked under it ([`lom_rounds`]), the serial numbers of signed rosters ([`roster_serials`]), and on a VPN server its settings ([`vpn_server`]) and peer registry
//! ([`vpn_peers`]). Party commands open it with [`Store::open_party`] and its read-only and
//! deadline-bounded variants.
//!
//! One module per table. The schema is versioned with `PRAGMA user_version` and migrated forward
//! when the store is opened for writing; a store written by a newer secagg is refused rather than
//! guessed at. The file is created 0600 (SQLite gives its `-wal` and `-shm` files the same mode)
//! and only by [`Store::create`] (`secagg init`, `secagg vpn init`): every other command opens an
//! existing store and refuses a missing, empty or truncated file instead of starting afresh, which
//! would silently lose the stored keys. It runs in WAL mode with `secure_delete` on; writing
//! commands run in one `BEGIN IMMEDIATE` transaction, so several processes registering at once
//! serialize instead of failing or losing writes, while read-only commands
//! ([`Store::open_read_only`]) never take the write lock and work beside a writer.
//!
//! No code opens the store's files other than through SQLite, not even to read a byte: closing
//! any descriptor of a file drops all of the process's locks on it, those of its open connections
//! included, and the next writer then deletes the WAL under them. [`guard`] says why in full,
//! which processes hold the store, and how input paths naming it are refused.

pub mod contexts;
pub mod fedbiomed_elements;
pub mod guard;
pub mod lom_announcements;
pub mod lom_reveals;
pub mod lom_rounds;
pub mod lom_secrets;
pub mod lom_shares;
pub mod peers;
pub(crate) mod pool;
pub mod roster_serials;
pub mod vpn_peers;
pub mod vpn_server;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result};
use crate::fs_secure::{self, SECRET_FILE_MODE};
use crate::home::Home;

/// How long a command waits for another process holding the store before giving up, unless the
/// caller chooses otherwise with [`StoreOptions::busy_timeout`].
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
    // v4: the state of a stored key. A node stores its key `unconfirmed` before acknowledging the
    // researcher's finish and marks it `confirmed` when the researcher's confirmation arrives.
    // Contexts stored before v4 were stored at the end of a successful session: `confirmed`.
    "ALTER TABLE contexts ADD COLUMN state TEXT NOT NULL DEFAULT 'confirmed'
        CHECK (state IN ('unconfirmed', 'confirmed'));
    ALTER TABLE contexts ADD COLUMN confirmed_at INTEGER;",
    // v5: the serial numbers of signed rosters: on a researcher, the last one it exported (under
    // its own id); on any party, the last one imported from each issuer (no rollback).
    "CREATE TABLE roster_serials (
        issuer          TEXT PRIMARY KEY NOT NULL,
        last_serial     INTEGER NOT NULL CHECK (last_serial >= 1),
        updated_at      INTEGER NOT NULL
    ) STRICT;",
    // v6: Fed-BioMed's secagg element tables, for `secagg.fedbiomed` (which kept them in JSON
    // side files that lost concurrent updates). A server-key entry names the negotiated context
    // holding its key (the key itself stays in `contexts`); biprimes are Fed-BioMed's default
    // ones (from its biprime files) and the dynamic ones its code adds. `fedbiomed_settings`
    // says whether the default biprimes were ever set (until then secagg offers
    // `default_biprime0`).
    "CREATE TABLE fedbiomed_servkeys (
        secagg_id       TEXT PRIMARY KEY NOT NULL,
        session_id      TEXT NOT NULL UNIQUE,
        parties         TEXT NOT NULL,
        job_id          TEXT,
        created_at      INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE fedbiomed_biprimes (
        secagg_id       TEXT PRIMARY KEY NOT NULL,
        kind            TEXT NOT NULL CHECK (kind IN ('default', 'dynamic')),
        parties         TEXT,
        biprime         TEXT NOT NULL,
        max_keysize     INTEGER NOT NULL,
        created_at      INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE fedbiomed_settings (
        id                   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
        default_biprimes_set INTEGER NOT NULL CHECK (default_biprimes_set IN (0, 1))
    ) STRICT;",
    // v7: a peer's display name (`init --name`, carried in bundles and rosters).
    "ALTER TABLE peers ADD COLUMN name TEXT;",
    // v8: LOM contexts. A context's scheme (`jl`: a Joye–Libert key in `key_decimal`; `lom`:
    // `key_decimal` empty, a node's pairwise secrets in `lom_secrets`), and the rounds a node
    // masked under a LOM context (secagg's profile masks a (round, label) once).
    "ALTER TABLE contexts ADD COLUMN scheme TEXT NOT NULL DEFAULT 'jl'
        CHECK (scheme IN ('jl', 'lom'));
    CREATE TABLE lom_secrets (
        session_id      TEXT NOT NULL,
        peer_id         TEXT NOT NULL,
        secret          BLOB NOT NULL CHECK (length(secret) = 32),
        PRIMARY KEY (session_id, peer_id)
    ) STRICT;
    CREATE TABLE lom_rounds (
        session_id      TEXT NOT NULL,
        round           INTEGER NOT NULL CHECK (round >= 0),
        label           INTEGER NOT NULL CHECK (label >= 0),
        used_at         INTEGER NOT NULL,
        PRIMARY KEY (session_id, round, label)
    ) STRICT;",
    // v9: LOM rounds that survive dropouts (issue 24). A context's dropout threshold t (NULL: no
    // dropout tolerance); the shares a node received per round from each node, of that node's
    // self-mask seed (`about_id` = `from_id`) and of its round seed with another node
    // (`about_id` = that node);
    // the survivor set the researcher announced to this node per round (fixed once recorded);
    // and what this node revealed per round and party (a share of its self-mask or the round's
    // pairwise seed with it, never both).
    "ALTER TABLE contexts ADD COLUMN dropout_threshold INTEGER
        CHECK (dropout_threshold IS NULL OR dropout_threshold >= 2);
    CREATE TABLE lom_shares (
        session_id      TEXT NOT NULL,
        round           INTEGER NOT NULL CHECK (round >= 0),
        label           INTEGER NOT NULL CHECK (label >= 0),
        from_id         TEXT NOT NULL,
        about_id        TEXT NOT NULL,
        share           BLOB NOT NULL,
        received_at     INTEGER NOT NULL,
        PRIMARY KEY (session_id, round, label, from_id, about_id)
    ) STRICT;
    CREATE INDEX lom_shares_by_sender ON lom_shares (session_id, from_id, received_at);
    CREATE TABLE lom_announcements (
        session_id      TEXT NOT NULL,
        round           INTEGER NOT NULL CHECK (round >= 0),
        label           INTEGER NOT NULL CHECK (label >= 0),
        survivors       TEXT NOT NULL,
        announced_at    INTEGER NOT NULL,
        PRIMARY KEY (session_id, round, label)
    ) STRICT;
    CREATE TABLE lom_reveals (
        session_id      TEXT NOT NULL,
        round           INTEGER NOT NULL CHECK (round >= 0),
        label           INTEGER NOT NULL CHECK (label >= 0),
        party_id        TEXT NOT NULL,
        kind            TEXT NOT NULL CHECK (kind IN ('share', 'seed')),
        revealed_at     INTEGER NOT NULL,
        PRIMARY KEY (session_id, round, label, party_id)
    ) STRICT;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How to open the store; see [`Store::open_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Open with `SQLITE_OPEN_READ_ONLY`: no journal-mode switch, no migration, no write lock, and
    /// [`Store::write`] fails. Works beside a process holding the write lock (WAL readers do not
    /// wait for writers) and on a file the process may not write.
    pub read_only: bool,
    /// Create the file (0600) when it is missing. Only the commands that make a home do this.
    pub create: bool,
    /// How long to wait for another process's lock (SQLite's busy handler) before failing.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            read_only: false,
            create: false,
            busy_timeout: BUSY_TIMEOUT,
        }
    }
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
    /// The opened file's device and inode, to tell whether `path` still names it
    /// ([`Store::is_current_file`]).
    file_id: Option<(u64, u64)>,
    /// Registers the file as open in this process while the connection lives ([`guard`]).
    _open: guard::OpenStore,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating it (0600) and migrating it if it is missing. Only for
    /// the commands that make a home (`init`, `vpn init`); an existing empty or damaged file is
    /// still an error.
    pub fn create(path: &Path) -> Result<Self> {
        Self::open_with(
            path,
            &StoreOptions {
                create: true,
                ..StoreOptions::default()
            },
        )
    }

    /// Opens the existing store at `path` for writing (migrating it if needed), waiting up to
    /// [`BUSY_TIMEOUT`] for other processes' locks.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &StoreOptions::default())
    }

    /// Opens the existing store at `path` read-only (see [`StoreOptions::read_only`]). A store whose
    /// schema is older than this secagg's (which a read-only connection cannot migrate) is upgraded
    /// first by a short write-open, if this process can write it.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let ro = StoreOptions {
            read_only: true,
            ..StoreOptions::default()
        };
        let store = Self::open_unversioned(path, &ro)?;
        match store.read_only_version_check() {
            Ok(()) => Ok(store),
            Err(e) if store.version_is_old() => {
                drop(store);
                Self::open(path).map_err(|w| e.context(format!("upgrading failed ({w})")))?;
                Self::open_with(path, &ro)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the existing store at `path` with `opts`: the one place that checks the file
    /// (permissions, not empty, not truncated) before SQLite sees it.
    ///
    /// A missing file is [`Error::NotFound`] unless `opts.create`; an empty (0-byte) or truncated
    /// file is [`Error::InvalidInput`] and left untouched; a file or home that group or others can
    /// access is refused with the `chmod` that fixes it.
    pub fn open_with(path: &Path, opts: &StoreOptions) -> Result<Self> {
        let store = Self::open_unversioned(path, opts)?;
        if opts.read_only {
            store.read_only_version_check()?;
        }
        Ok(store)
    }

    /// [`Store::open_with`] except that a read-only store's schema version is not checked.
    fn open_unversioned(path: &Path, opts: &StoreOptions) -> Result<Self> {
        let ctx = format!("while opening store `{}`", path.display());
        let home_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        fs_secure::check_private_dir(home_dir, "home directory")?;
        let created = match std::fs::metadata(path) {
            Ok(_) => false,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && opts.create && !opts.read_only =>
            {
                // Create the file ourselves so it is 0600 from the start; SQLite would use the
                // umask. `create_new`: if another process made it meanwhile, it is checked below
                // like any existing file rather than taken over.
                match OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(SECRET_FILE_MODE)
                    .open(path)
                {
                    Ok(_) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                    Err(e) => return Err(Error::io(ctx, e)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "store `{}` does not exist: this home is not initialised or its store was removed",
                    path.display()
                ))
                .with_hint("run `secagg init` to make a new home, or restore store.sqlite from a backup (it holds the registered peers and negotiated keys)"));
            }
            Err(e) => return Err(Error::io(ctx, e)),
        };
        if !created {
            check_store_file(path)?;
        }
        Self::connect_and_migrate(path, opts, &ctx).inspect_err(|_| {
            if created {
                // A store this call created and could not finish (a full disk) is removed, so
                // that it is not left as an empty file that every later open refuses as damaged.
                remove_unfinished_store(path);
            }
        })
    }

    /// The connection of [`Store::open_unversioned`], once the file is checked: WAL mode, full
    /// synchronous writes, the schema migrated (writers only).
    fn connect_and_migrate(path: &Path, opts: &StoreOptions, ctx: &str) -> Result<Self> {
        let conn = match connect(path, opts, false) {
            // A reader of a WAL store needs its `-shm`; in a directory it may not write, with no
            // writer around (no `-wal`), SQLite cannot make one. Nobody can be writing then, so
            // the file is read as immutable (no locks, no `-shm`).
            Err(e) if opts.read_only && cannot_make_shm(&e) && !sibling(path, "-wal").exists() => {
                connect(path, opts, true)
            }
            other => other,
        }
        .map_err(|e| damaged_or(path, ctx, e))?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
            read_only: opts.read_only,
            file_id: file_id(path),
            _open: guard::OpenStore::register(path),
        };
        if opts.read_only {
            // The journal mode (WAL) is persistent in the file; a reader neither needs nor may
            // switch it, and migrating is a write: the caller checks the schema version.
            return Ok(store);
        }
        store
            .ensure_wal(opts.busy_timeout)
            .map_err(|e| damaged_or(path, ctx, e))?;
        store
            .conn
            .execute_batch("PRAGMA synchronous = FULL;")
            .map_err(|e| damaged_or(path, ctx, e))?;
        store.migrate().map_err(|e| e.context(ctx))?;
        Ok(store)
    }

    /// Refuses a schema this read-only connection cannot use: newer (unknown) or older (it would
    /// need migrating, which is a write).
    fn read_only_version_check(&self) -> Result<()> {
        let ctx = format!("while opening store `{}`", self.path.display());
        let version = self
            .schema_version()
            .map_err(|e| damaged_or(&self.path, &ctx, e))?;
        check_not_newer(version)?;
        if version < SCHEMA_VERSION {
            return Err(Error::invalid(format!(
                "store `{}` has schema version {version} and needs upgrading to version {SCHEMA_VERSION}, which a read-only open cannot do",
                self.path.display()
            ))
            .with_hint("run the command once as a user who can write the store (it upgrades it), then retry"));
        }
        Ok(())
    }

    fn version_is_old(&self) -> bool {
        matches!(self.schema_version(), Ok(v) if v < SCHEMA_VERSION)
    }

    fn schema_version(&self) -> rusqlite::Result<u32> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))
    }

    /// Switches to WAL unless the file already is (the mode is persistent, and reading it takes
    /// no lock, so an established store never needs the exclusive moment the switch takes).
    fn ensure_wal(&self, timeout: Duration) -> rusqlite::Result<()> {
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        // Switching needs a moment of exclusive access, which the busy handler does not always
        // wait for; retry while another process has it, within the caller's timeout.
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            {
                Ok(_) => return Ok(()),
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn migrate(&mut self) -> Result<()> {
        // Checking the version first takes no lock: a current store (the usual case) is opened
        // without waiting for, or blocking, a process that holds the write lock.
        let version = self
            .schema_version()
            .map_err(|e| Error::store("while reading the schema version", e))?;
        check_not_newer(version)?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::store("while locking the store for migration", e))?;
        // Another process may have migrated it while this one waited for the lock.
        let version: u32 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| Error::store("while reading the schema version", e))?;
        check_not_newer(version)?;
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

    /// Opens the store of a party's home for writing, waiting up to [`BUSY_TIMEOUT`] for other
    /// processes' locks. A home without an identity is "no secagg identity" (not found).
    pub fn open_party(home: &Home) -> Result<Self> {
        home.require_identity()?;
        Self::open(&home.store_path())
    }

    /// Opens the store of a party's home read-only (see [`StoreOptions::read_only`]): for commands
    /// that only show data. It takes no write lock, so it answers at once while another process
    /// holds the store for writing, and works on a store this process may not write.
    pub fn open_party_read_only(home: &Home) -> Result<Self> {
        home.require_identity()?;
        Self::open_read_only(&home.store_path())
    }

    /// Opens the store of a party's home for writing, waiting for other processes' locks at most
    /// until `deadline` (an expired deadline still gets one try without waiting): every later
    /// `BEGIN IMMEDIATE` on it waits no longer either, and a lock still held then fails with
    /// SQLite's "database is locked" (a storage error). For `negotiate --timeout`.
    pub fn open_party_until(home: &Home, deadline: std::time::Instant) -> Result<Self> {
        home.require_identity()?;
        Self::open_with(
            &home.store_path(),
            &StoreOptions {
                busy_timeout: deadline.saturating_duration_since(std::time::Instant::now()),
                ..StoreOptions::default()
            },
        )
    }

    /// Whether the store's path still names the file this connection opened (not moved away,
    /// deleted, or replaced by a restored backup since).
    pub(crate) fn is_current_file(&self) -> bool {
        self.file_id.is_some() && file_id(&self.path) == self.file_id
    }

    /// [`Store::set_busy_timeout`] with what is left until `deadline` (none once it passed).
    pub(crate) fn set_busy_timeout_until(&self, deadline: std::time::Instant) -> Result<()> {
        self.set_busy_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    }

    /// Restores what a use may have changed before the connection is used again: fails (and the
    /// connection must be closed) inside a transaction left open.
    pub(crate) fn reset_for_reuse(&self) -> Result<()> {
        if !self.conn.is_autocommit() {
            return Err(Error::Internal(
                "a store connection was given back inside a transaction".into(),
            ));
        }
        self.set_busy_timeout(BUSY_TIMEOUT)?;
        if !self.read_only {
            self.conn
                .execute_batch("PRAGMA synchronous = FULL;")
                .map_err(|e| Error::store("while restoring the store's durability", e))?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn busy_timeout_ms(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0))
    }

    #[cfg(test)]
    pub(crate) fn begin_for_tests(&mut self) {
        self.conn.execute_batch("BEGIN").unwrap();
    }

    /// Whether this store was opened read-only.
    #[cfg(test)] // only the tests need it
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// From now on, waits for other processes' locks at most `timeout` (for a session whose every
    /// wait must fit in its deadline).
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<()> {
        self.conn
            .busy_timeout(timeout)
            .map_err(|e| Error::store("while setting the store's lock timeout", e))
    }

    /// Like [`Store::write`], but the commit is not flushed to disk before returning (SQLite's
    /// `synchronous = NORMAL` for this transaction: still atomic, and durable once the write-ahead
    /// log is next synced). Only for changes whose loss in a power cut is harmless, such as
    /// marking a key confirmed (losing it leaves the key unconfirmed: the safe side).
    pub fn write_unsynced<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.conn
            .execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(|e| Error::store("while relaxing the store's durability", e))?;
        let result = self.write(f);
        let restored = self
            .conn
            .execute_batch("PRAGMA synchronous = FULL;")
            .map_err(|e| Error::store("while restoring the store's durability", e));
        let value = result?;
        restored?;
        Ok(value)
    }

    /// Runs `f` in one immediate (write-locking) transaction; commits if it returns `Ok`, rolls
    /// back otherwise, so a failed command changes nothing.
    pub fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        if self.read_only {
            return Err(Error::Internal(format!(
                "store `{}` was opened read-only and cannot be written",
                self.path.display()
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::store("while locking the store", e))?;
        let value = f(&tx)?;
        tx.commit()
            .map_err(|e| Error::store("while committing to the store", e))?;
        Ok(value)
    }

    /// Runs `f` in one immediate (write-locking) transaction that is always rolled back: a
    /// rehearsal (`--dry-run`) sees the checks and effects a write would, and changes nothing.
    pub fn rehearse<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::store("while locking the store", e))?;
        let value = f(&tx);
        tx.rollback()
            .map_err(|e| Error::store("while rolling back a rehearsal", e))?;
        value
    }

    /// Like [`Store::write`], for transactions that delete secrets: after the commit the WAL is
    /// checkpointed into the main file and truncated to zero bytes, so the pages that held the
    /// secret before the delete survive neither in `store.sqlite` (zeroed by `secure_delete`) nor
    /// in `store.sqlite-wal`. If another process reading the store keeps the checkpoint from
    /// completing within the busy timeout, the delete stays committed and the error says so.
    pub fn write_erasing<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let value = self.write(f)?;
        self.erase_wal()?;
        Ok(value)
    }

    /// Checkpoints the WAL into the main file and truncates it (`wal_checkpoint(TRUNCATE)`).
    fn erase_wal(&self) -> Result<()> {
        let (busy, log, done): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| Error::store("while erasing the deleted data from the WAL", e))?;
        if busy != 0 || log != done {
            return Err(Error::store(
                format!(
                    "the data was deleted, but another process reading `{}` kept its old copy in the WAL from being erased (it is erased when that process ends)",
                    self.path.display()
                ),
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    None,
                ),
            ));
        }
        Ok(())
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

fn check_not_newer(version: u32) -> Result<()> {
    if version > SCHEMA_VERSION {
        return Err(Error::invalid(format!(
            "the store has schema version {version}, this secagg knows up to {SCHEMA_VERSION}"
        ))
        .with_hint("it was written by a newer secagg: upgrade secagg"));
    }
    Ok(())
}

fn damaged_hint(path: &Path) -> String {
    format!(
        "restore it from a backup, or move it away (`mv {p} {p}.damaged`) and run `secagg init` again (registered peers and negotiated keys are then lost)",
        p = fs_secure::shell_quote(path)
    )
}

/// Checks an existing store file before SQLite opens it, by `stat` alone (see "The one rule" in
/// [`guard`]: this process may already hold connections to the file, and opening and closing it
/// here would drop their locks): private permissions (its `-wal` and `-shm` hold the same data),
/// a regular file, not empty, and not cut short of a whole 512-byte unit (every SQLite page size
/// is a multiple of 512). SQLite would take an empty file for a new database; what `stat` cannot
/// tell (a bad magic, a header counting more pages than the file holds) SQLite itself refuses
/// when [`connect`] reads the schema, consistently with a concurrent checkpoint because it reads
/// under its WAL locks, and [`damaged_or`] names it.
fn check_store_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io_path("inspecting store", path, e))?;
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "store `{}` is not a regular file",
            path.display()
        )));
    }
    fs_secure::check_private_file(path, "store")?;
    for extra in [sibling(path, "-wal"), sibling(path, "-shm")] {
        fs_secure::check_private_file(&extra, "store file")?;
    }
    let damaged = |e: Error| Err(e.with_hint(damaged_hint(path)));
    let len = meta.len();
    if len == 0 {
        return damaged(Error::invalid(format!(
            "store `{}` is empty (0 bytes): it is damaged, not a new store",
            path.display()
        )));
    }
    // Pages are written whole, also by a checkpoint in progress: no moment of a healthy store has
    // a length that is not a whole number of pages.
    if len < 100 || len % 512 != 0 {
        let why = if len < 100 {
            "shorter than its header"
        } else {
            "not a whole number of pages"
        };
        return damaged(Error::invalid(format!(
            "store `{}` is truncated ({len} bytes, {why}): it is damaged",
            path.display()
        )));
    }
    Ok(())
}

/// Whether SQLite's `-wal` or `-journal` of the store at `path` exists (then a 0-byte main file
/// may still have content to recover, and is not what an interrupted `init` left).
pub(crate) fn has_side_files(path: &Path) -> bool {
    sibling(path, "-wal").exists() || sibling(path, "-journal").exists()
}

/// Removes a store file this process created and could not finish, with SQLite's side files
/// (best effort: the error that stopped it is what the caller reports).
pub(crate) fn remove_unfinished_store(path: &Path) {
    for p in [
        path.to_owned(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
        sibling(path, "-journal"),
    ] {
        let _ = std::fs::remove_file(p);
    }
}

/// Opens a connection with the settings every connection gets, and reads the schema once so that
/// a file SQLite cannot use fails here. `immutable`: read-only, through a URI with `immutable=1`.
fn connect(path: &Path, opts: &StoreOptions, immutable: bool) -> rusqlite::Result<Connection> {
    let conn = if opts.read_only {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if immutable {
            let mut uri = String::from("file:");
            for c in path.to_string_lossy().chars() {
                match c {
                    '%' | '?' | '#' => uri.push_str(&format!("%{:02X}", c as u32)),
                    c => uri.push(c),
                }
            }
            uri.push_str("?immutable=1");
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?
        } else {
            Connection::open_with_flags(path, flags)?
        }
    } else {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?
    };
    conn.busy_timeout(opts.busy_timeout)?;
    // Deleted rows (a context's key, a replaced VPN key) are overwritten with zeros instead of
    // lingering in free space; a per-connection setting, so set on every connection.
    conn.execute_batch("PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON;")?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(conn)
}

/// SQLite's answers when a read-only connection cannot create or open the `-shm` of a WAL store.
fn cannot_make_shm(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    )
}

/// The device and inode of the file at `path`, if it can be read.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Names SQLite's "not a database" and "malformed" answers as a damaged store; other errors keep
/// SQLite's words under `ctx`.
fn damaged_or(path: &Path, ctx: &str, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => Error::invalid(format!(
            "`{}` is not a secagg store (not an SQLite database)",
            path.display()
        ))
        .with_hint("move the file away or point --home at the right directory"),
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => Error::invalid(format!(
            "store `{}` is damaged: SQLite cannot read it ({e}; a truncated copy or a disk error does this)",
            path.display()
        ))
        .with_hint(damaged_hint(path)),
        _ => Error::store(ctx.to_owned(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs_secure::mode_of;

    #[test]
    fn open_creates_0600_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        let mut s = Store::create(&p).unwrap();
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
        let s = Store::create(&p).unwrap();
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
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let e = Store::open(&p).unwrap_err();
        assert!(e.to_string().contains("not a secagg store"), "{e}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            vec![0x42u8; 4096],
            "file untouched"
        );
    }

    /// A store with one secret row in a scratch table, for the tests below.
    fn store_with_secret(p: &Path, secret: &str) -> Store {
        let mut s = Store::create(p).unwrap();
        s.write(|tx| {
            tx.execute_batch("CREATE TABLE scratch (id INTEGER PRIMARY KEY, secret TEXT NOT NULL)")
                .unwrap();
            tx.execute("INSERT INTO scratch (id, secret) VALUES (1, ?1)", [secret])
                .unwrap();
            Ok(())
        })
        .unwrap();
        s
    }

    fn all_store_bytes(p: &Path) -> Vec<(String, Vec<u8>)> {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let f = sibling(p, suffix);
                std::fs::read(&f).ok().map(|b| (f.display().to_string(), b))
            })
            .collect()
    }

    /// Fails if any 16 consecutive characters of `secret` are in any of the store's files.
    fn assert_no_trace(p: &Path, secret: &str) {
        for (name, bytes) in all_store_bytes(p) {
            for w in secret.as_bytes().windows(16) {
                assert!(
                    !bytes.windows(16).any(|b| b == w),
                    "`{name}` still holds {:?}",
                    std::str::from_utf8(w).unwrap()
                );
            }
        }
    }

    fn secret_digits() -> String {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        (0..620)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect()
    }

    #[test]
    fn erasing_delete_leaves_no_trace_in_store_wal_or_shm_even_with_another_connection_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        let secret = secret_digits();
        let mut s = store_with_secret(&p, &secret);
        // Another open connection keeps SQLite from checkpointing and deleting the WAL on close,
        // as a concurrent `secagg context list` would.
        let other = Store::open_read_only(&p).unwrap();
        assert!(
            all_store_bytes(&p)
                .iter()
                .any(|(_, b)| b.windows(secret.len()).any(|w| w == secret.as_bytes())),
            "the secret should be on disk before the delete"
        );
        s.write_erasing(|tx| {
            tx.execute("DELETE FROM scratch WHERE id = 1", []).unwrap();
            Ok(())
        })
        .unwrap();
        assert_no_trace(&p, &secret);
        drop(other);
        drop(s);
        assert_no_trace(&p, &secret);
    }

    #[test]
    fn missing_store_is_not_created_by_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        let e = Store::open(&p).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = Store::open_read_only(&p).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(!p.exists(), "open must not create the store");
    }

    #[test]
    fn empty_store_is_damaged_not_new_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .unwrap();
        for e in [
            Store::open(&p).unwrap_err(),
            Store::create(&p).unwrap_err(),
            Store::open_read_only(&p).unwrap_err(),
        ] {
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
            assert_eq!(
                e.to_string(),
                format!(
                    "store `{}` is empty (0 bytes): it is damaged, not a new store",
                    p.display()
                )
            );
            assert!(
                e.hint().unwrap().contains("restore it from a backup"),
                "{e:?}"
            );
        }
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0, "file untouched");
        assert!(!sibling(&p, "-wal").exists() && !sibling(&p, "-shm").exists());
    }

    #[test]
    fn truncated_store_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        drop(store_with_secret(&p, "x"));
        let full = std::fs::read(&p).unwrap();
        assert!(full.len() >= 3 * 4096, "{}", full.len());
        // Cut short of its header, or of a whole page: seen by `stat` alone. Cut at a page
        // boundary, with the header counting more pages: SQLite's own check when it reads the
        // schema.
        for (cut, says) in [
            (50, "is truncated (50 bytes, shorter than its header)"),
            (full.len() - 100, "is truncated"),
            (4096, "is damaged: SQLite cannot read it"),
        ] {
            std::fs::write(&p, &full[..cut]).unwrap();
            for e in [
                Store::open(&p).unwrap_err(),
                Store::open_read_only(&p).unwrap_err(),
            ] {
                assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
                assert!(e.to_string().contains(says), "cut {cut}: {e}");
                assert!(
                    e.hint().unwrap().contains("restore it from a backup"),
                    "{e:?}"
                );
            }
            assert_eq!(std::fs::read(&p).unwrap(), &full[..cut], "file untouched");
        }
    }

    /// Regression: a process opening the store while another checkpointed its WAL saw the new
    /// header (more pages) before the file had grown to match, and refused the store as
    /// damaged; concurrent `certificate register` commands failed that way under load. The
    /// header is now read by SQLite, under its WAL locks: opens beside a writer that checkpoints
    /// and truncates its WAL after every commit never see a damaged store.
    #[test]
    fn a_store_opened_while_another_connection_checkpoints_is_never_called_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        drop(store_with_secret(&p, "x"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut s = Store::open(&p).unwrap();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    // Grows the file by pages, then erases (checkpoint + truncate).
                    s.write_erasing(|tx| {
                        tx.execute(
                            "INSERT INTO scratch (secret) VALUES (?1)",
                            [format!("{i:0>3000}")],
                        )
                        .unwrap();
                        Ok(())
                    })
                    .unwrap();
                }
                i
            })
        };
        let until = Instant::now() + Duration::from_millis(1500);
        let mut opens = 0;
        while Instant::now() < until {
            let mut s = Store::open_read_only(&p).unwrap();
            s.read(|tx| {
                Ok(tx
                    .query_row("SELECT count(*) FROM scratch", [], |r| r.get::<_, i64>(0))
                    .unwrap())
            })
            .unwrap();
            drop(s);
            drop(Store::open(&p).unwrap());
            opens += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let commits = writer.join().unwrap();
        assert!(
            opens > 10 && commits > 10,
            "{opens} opens, {commits} commits"
        );
    }

    /// The environment variable that makes the test below play the other process.
    const OTHER_PROCESS: &str = "SECAGG_STORE_TEST_OTHER_PROCESS";

    /// Regression (issue 20): opening the store checked its header through a plain file
    /// descriptor, and closing it dropped every POSIX lock this process held on the file, those
    /// of its open connections included. Another process that then closed its last connection
    /// thought it was alone, checkpointed and deleted the WAL, and the first process's later
    /// commits went into the deleted WAL: a party agent (which keeps connections open) reported
    /// keys stored that no other process could ever read.
    #[test]
    fn a_kept_connection_stays_durable_when_the_process_opens_the_store_again() {
        if let Some(spec) = std::env::var_os(OTHER_PROCESS) {
            // The other process: `write:PATH` commits one row and closes; `has:PATH:VALUE` exits 0
            // if VALUE is stored.
            let spec = spec.into_string().unwrap();
            let (op, rest) = spec.split_once(':').unwrap();
            match op {
                "write" => {
                    let mut s = Store::open(Path::new(rest)).unwrap();
                    s.write(|tx| {
                        tx.execute("INSERT INTO scratch (secret) VALUES ('other')", [])
                            .unwrap();
                        Ok(())
                    })
                    .unwrap();
                }
                _ => {
                    let (path, value) = rest.rsplit_once(':').unwrap();
                    let mut s = Store::open_read_only(Path::new(path)).unwrap();
                    let n: i64 = s
                        .read(|tx| {
                            Ok(tx
                                .query_row(
                                    "SELECT count(*) FROM scratch WHERE secret = ?1",
                                    [value],
                                    |r| r.get(0),
                                )
                                .unwrap())
                        })
                        .unwrap();
                    std::process::exit(if n == 1 { 0 } else { 3 });
                }
            }
            return;
        }
        let other = |spec: String| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store::tests::a_kept_connection_stays_durable_when_the_process_opens_the_store_again",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(OTHER_PROCESS, spec)
                .output()
                .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        drop(store_with_secret(&p, "x"));
        // The agent's kept connection, then a second open in the same process (a session).
        let mut kept = Store::open(&p).unwrap();
        drop(Store::open(&p).unwrap());
        drop(Store::open_read_only(&p).unwrap());
        // Another process writes and closes its last connection.
        let out = other(format!("write:{}", p.display()));
        assert!(out.status.success(), "{out:?}");
        // The kept connection commits a key.
        kept.write(|tx| {
            tx.execute("INSERT INTO scratch (secret) VALUES ('kept')", [])
                .unwrap();
            Ok(())
        })
        .unwrap();
        assert!(
            sibling(&p, "-wal").exists(),
            "the WAL the kept connection wrote into was deleted"
        );
        // A fresh process sees it, while the connection is open and after it closed.
        let out = other(format!("has:{}:kept", p.display()));
        assert_eq!(
            out.status.code(),
            Some(0),
            "a fresh process lacks the commit: {out:?}"
        );
        drop(kept);
        let out = other(format!("has:{}:kept", p.display()));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }

    #[test]
    fn store_and_home_accessible_by_others_are_refused_with_the_chmod() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        crate::fs_secure::create_private_dir(&home).unwrap();
        let p = home.join("store.sqlite");
        drop(Store::create(&p).unwrap());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        for e in [
            Store::open(&p).unwrap_err(),
            Store::open_read_only(&p).unwrap_err(),
        ] {
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
            assert_eq!(
                e.to_string(),
                format!(
                    "store `{}` is accessible by group or others (mode 0644): refusing to use it",
                    p.display()
                )
            );
            assert!(
                e.hint()
                    .unwrap()
                    .starts_with(&format!("run `chmod 600 {}`", p.display())),
                "{:?}",
                e.hint()
            );
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Store::open(&p).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "home directory `{}` is writable by group or others (mode 0777): refusing to use it",
                home.display()
            )
        );
        assert_eq!(
            e.hint(),
            Some(format!("run `chmod 700 {}`", home.display()).as_str())
        );
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        Store::open(&p).unwrap();
    }

    /// Holds the write lock of `p` (an open `BEGIN IMMEDIATE`) from another connection until the
    /// returned sender is dropped or sent to.
    fn hold_write_lock(p: &Path) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let p = p.to_owned();
        let h = std::thread::spawn(move || {
            let conn = Connection::open(&p).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
            conn.execute_batch("ROLLBACK").unwrap();
        });
        locked_rx.recv().unwrap();
        (release_tx, h)
    }

    #[test]
    fn read_only_open_neither_waits_for_nor_takes_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        drop(store_with_secret(&p, "visible"));
        let (release, h) = hold_write_lock(&p);
        let t = Instant::now();
        let mut ro = Store::open_read_only(&p).unwrap();
        let got: String = ro
            .read(|tx| {
                Ok(tx
                    .query_row("SELECT secret FROM scratch WHERE id = 1", [], |r| r.get(0))
                    .unwrap())
            })
            .unwrap();
        assert_eq!(got, "visible");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(ro.is_read_only());
        let e = ro.write(|_| Ok(())).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Internal);
        // And a read-only connection holds nothing a writer would wait for.
        drop(release);
        h.join().unwrap();
        let _reader = Store::open_read_only(&p).unwrap();
        let mut w = Store::open_with(
            &p,
            &StoreOptions {
                busy_timeout: Duration::from_millis(100),
                ..StoreOptions::default()
            },
        )
        .unwrap();
        w.write(|tx| {
            tx.execute("UPDATE scratch SET secret = 'new' WHERE id = 1", [])
                .unwrap();
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn busy_timeout_of_open_with_bounds_the_lock_wait() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        drop(store_with_secret(&p, "x"));
        let (release, h) = hold_write_lock(&p);
        let t = Instant::now();
        // Opening a current store takes no lock; the write is what waits, for 300 ms, not 30 s.
        let mut s = Store::open_with(
            &p,
            &StoreOptions {
                busy_timeout: Duration::from_millis(300),
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let e = s.write(|_| Ok(())).unwrap_err();
        let waited = t.elapsed();
        assert_eq!(e.kind(), crate::ErrorKind::Storage, "{e}");
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        drop(release);
        h.join().unwrap();
    }

    #[test]
    fn read_only_open_of_an_old_schema_upgrades_it_first_when_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        {
            // A version-1 store, as an older secagg left it.
            let conn = Connection::open(&p).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
                .unwrap();
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let ro = StoreOptions {
            read_only: true,
            ..StoreOptions::default()
        };
        let e = Store::open_with(&p, &ro).unwrap_err();
        assert!(
            e.to_string()
                .contains("has schema version 1 and needs upgrading"),
            "{e}"
        );
        let s = Store::open_read_only(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    }
}
