//! Store connections kept open between uses, for a long-running process (the party agent).
//!
//! Opening a SQLite connection parses the schema, and closing the last one checkpoints the WAL
//! into the main file (with an fsync) and deletes the `-wal` and `-shm` files: with one open and
//! one close per session request, that was most of an agent's CPU time per session. A
//! [`StorePool`] hands out [`PooledStore`]s and takes them back when they are dropped, so a
//! running agent keeps a few connections (and their prepared statements) open.
//!
//! A kept connection is only handed out again while it still refers to the file at the store's
//! path: a store moved away or restored from a backup while the agent runs is opened afresh. It
//! is taken back only outside a transaction and with the store's default settings restored (lock
//! timeout, full durability); otherwise it is closed.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Store;
use crate::error::Result;
use crate::home::Home;

/// Idle connections kept at most; more are closed when returned.
const MAX_IDLE: usize = 4;

/// Open connections to one party's store, reused between uses.
#[derive(Debug)]
pub(crate) struct StorePool {
    home: Home,
    idle: Mutex<Vec<Store>>,
}

impl StorePool {
    pub(crate) fn new(home: Home) -> Arc<Self> {
        Arc::new(StorePool {
            home,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A connection for writing, which waits for other processes' locks at most until
    /// `deadline` (as [`Store::open_party_until`]): a kept one that still refers to the store's
    /// file, or a new one.
    pub(crate) fn take_until(self: &Arc<Self>, deadline: Instant) -> Result<PooledStore> {
        loop {
            let kept = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(store) = kept else { break };
            if store.is_current_file() && store.set_busy_timeout_until(deadline).is_ok() {
                return Ok(PooledStore {
                    store: Some(store),
                    pool: Some(self.clone()),
                });
            }
            // Replaced or unusable: closed here, and the next one is tried.
        }
        let store = Store::open_party_until(&self.home, deadline)?;
        Ok(PooledStore {
            store: Some(store),
            pool: Some(self.clone()),
        })
    }

    fn give_back(&self, store: Store) {
        if store.reset_for_reuse().is_err() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(store);
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// A store connection from a [`StorePool`] (returned to it when dropped), or one of its own
/// ([`PooledStore::unpooled`], closed when dropped).
#[derive(Debug)]
pub(crate) struct PooledStore {
    /// `Some` until dropped.
    store: Option<Store>,
    pool: Option<Arc<StorePool>>,
}

impl PooledStore {
    /// A connection that belongs to no pool: closed when dropped.
    pub(crate) fn unpooled(store: Store) -> Self {
        PooledStore {
            store: Some(store),
            pool: None,
        }
    }
}

impl Deref for PooledStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.store.as_ref().expect("present until dropped")
    }
}

impl DerefMut for PooledStore {
    fn deref_mut(&mut self) -> &mut Store {
        self.store.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledStore {
    fn drop(&mut self) {
        if let (Some(store), Some(pool)) = (self.store.take(), &self.pool) {
            pool.give_back(store);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let opts = crate::identity::InitOptions {
            role: crate::party::Role::Node,
            id: None,
            host: Some("127.0.0.1".into()),
            port: Some(7001),
            key_type: crate::certificate::GeneratedKeyType::P256,
            validity_days: 30,
            force: false,
            allow_custom_id: false,
            name: None,
        };
        crate::identity::init(&home, &opts, time::OffsetDateTime::now_utc()).unwrap();
        (dir, home)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// Rows of the `roster_serials` table (a small table to write through raw SQL).
    fn serials(s: &mut Store) -> i64 {
        s.read(|tx| {
            Ok(tx
                .query_row("SELECT count(*) FROM roster_serials", [], |r| r.get(0))
                .unwrap())
        })
        .unwrap()
    }

    fn add_serial(s: &mut Store, issuer: &str) {
        s.write(|tx| {
            tx.execute(
                "INSERT INTO roster_serials (issuer, last_serial, updated_at) VALUES (?1, 1, 0)",
                [issuer],
            )
            .unwrap();
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_returned_connection_is_reused_and_sees_other_connections_writes() {
        let (_d, home) = home();
        let pool = StorePool::new(home.clone());
        {
            let mut s = pool.take_until(soon()).unwrap();
            assert_eq!(serials(&mut s), 0);
        }
        assert_eq!(pool.idle_count(), 1);
        // Another process's write (here: another connection) is seen by the kept one.
        add_serial(&mut Store::open_party(&home).unwrap(), "researcher_a");
        let mut s = pool.take_until(soon()).unwrap();
        assert_eq!(pool.idle_count(), 0, "the kept connection was handed out");
        assert_eq!(serials(&mut s), 1);
    }

    #[test]
    fn a_store_file_replaced_while_kept_is_opened_afresh() {
        let (_d, home) = home();
        let pool = StorePool::new(home.clone());
        drop(pool.take_until(soon()).unwrap());
        assert_eq!(pool.idle_count(), 1);
        // The operator restores the store from a backup copy that holds one more row.
        let backup = home.root().join("backup.sqlite");
        std::fs::copy(home.store_path(), &backup).unwrap();
        add_serial(&mut Store::open(&backup).unwrap(), "researcher_a");
        std::fs::rename(&backup, home.store_path()).unwrap();
        let mut s = pool.take_until(soon()).unwrap();
        assert_eq!(
            serials(&mut s),
            1,
            "the connection to the replaced file must not be reused"
        );
    }

    #[test]
    fn a_connection_is_given_back_with_its_default_settings_or_not_at_all() {
        let (_d, home) = home();
        let pool = StorePool::new(home.clone());
        {
            let s = pool.take_until(soon()).unwrap();
            // A session bound its lock wait to a deadline that then passed.
            s.set_busy_timeout(Duration::ZERO).unwrap();
        }
        {
            let s = pool.take_until(soon()).unwrap();
            assert!(
                s.busy_timeout_ms().unwrap() > 1000,
                "the lock wait follows the new deadline"
            );
        }
        {
            let mut s = pool.take_until(soon()).unwrap();
            s.begin_for_tests();
        }
        assert_eq!(
            pool.idle_count(),
            0,
            "a connection inside a transaction is closed"
        );
        // And the store is still usable, with nothing half-written.
        let mut s = pool.take_until(soon()).unwrap();
        assert_eq!(serials(&mut s), 0);
    }
}
