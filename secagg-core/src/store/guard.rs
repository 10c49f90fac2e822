//! The one rule of the store's files, and the guard that keeps this process to it.
//!
//! **The rule.** No code of a process that may hold an SQLite connection to a store opens
//! `store.sqlite`, `store.sqlite-wal`, `store.sqlite-shm` or `store.sqlite-journal` by any other
//! means than SQLite, not even to read a byte. SQLite coordinates processes with POSIX advisory
//! locks, and closing *any* descriptor of a file drops *every* lock the process holds on it,
//! including those of its open SQLite connections (SQLite's "How To Corrupt An SQLite Database
//! File", §2.2). The next process to close its last connection then believes it is alone,
//! checkpoints and deletes the `-wal` and `-shm` files, and the first process goes on committing
//! into a deleted WAL: its writes report success and are lost. A party agent lost every key it
//! stored that way (issue 20), because opening a store checked the file's header with `std::fs`
//! while the agent's pooled connections were open. Checks before a connection exists use `stat`
//! (which opens no descriptor); everything else goes through a connection.
//!
//! **Who holds the store.** Any secagg process of the party: the agent (`secagg serve`, which
//! keeps a few connections open between sessions), every command, and a Python process using
//! `secagg.Home`, often at the same moment. SQLite serialises them; nothing else may touch the
//! files. Outside secagg, only SQLite itself (the `sqlite3` shell, a backup made with `.backup`)
//! may open a store that is in use.
//!
//! **The guard.** Inside secagg the rule is kept by construction (only [`super::Store`] names the
//! files), but a path given by the user can still name one: `certificate register -pk
//! .secagg/store.sqlite`, or an input file that is a hard link to the WAL. Every
//! [`super::Store`] registers its file here while it is open, and
//! [`refuse_if_open_store_file`] (called by [`crate::fs_secure::read_limited`], through which
//! every input file is read) refuses such a path before it is opened.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// The suffixes SQLite gives a database's companion files.
const COMPANIONS: [&str; 4] = ["", "-wal", "-shm", "-journal"];

/// Store files with open connections in this process: canonical path → number of connections.
static OPEN: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

/// Registration of one open connection to the store at `path`; removed when dropped.
#[derive(Debug)]
pub(crate) struct OpenStore {
    path: Option<PathBuf>,
}

impl OpenStore {
    /// Registers a connection to the store at `path` (an existing file).
    pub(crate) fn register(path: &Path) -> Self {
        let Ok(canonical) = path.canonicalize() else {
            return OpenStore { path: None };
        };
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        *open
            .get_or_insert_with(HashMap::new)
            .entry(canonical.clone())
            .or_insert(0) += 1;
        OpenStore {
            path: Some(canonical),
        }
    }
}

impl Drop for OpenStore {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else { return };
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(map) = open.as_mut() {
            if let Some(n) = map.get_mut(&path) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&path);
                }
            }
        }
    }
}

/// Refuses `path` when it names one of the files of a store this process has open (the database,
/// its WAL, shared memory or journal, by path or through a hard link or symbolic link), before
/// anything opens it. Uses `stat` only.
pub fn refuse_if_open_store_file(path: &Path) -> Result<()> {
    let stores: Vec<PathBuf> = {
        let open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        match open.as_ref() {
            Some(map) if !map.is_empty() => map.keys().cloned().collect(),
            _ => return Ok(()),
        }
    };
    let Ok(target) = std::fs::metadata(path) else {
        return Ok(()); // the caller reports a missing file in its own words
    };
    let target = (target.dev(), target.ino());
    for store in stores {
        for suffix in COMPANIONS {
            let mut name = store.clone().into_os_string();
            name.push(suffix);
            let file = PathBuf::from(name);
            let same = std::fs::metadata(&file).is_ok_and(|m| (m.dev(), m.ino()) == target);
            if same {
                return Err(Error::invalid(format!(
                    "`{}` is the secagg store `{}` in use by this process: it is not an input file",
                    path.display(),
                    file.display()
                ))
                .with_hint(
                    "give the file you meant; the store is read and written only through secagg",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_store_and_its_companions_are_refused_as_input_and_released_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.sqlite");
        let other = dir.path().join("input.pem");
        std::fs::write(&other, "x").unwrap();
        let store = super::super::Store::create(&p).unwrap();
        let link = dir.path().join("wal-link");
        std::fs::hard_link(format!("{}-wal", p.display()), &link).unwrap();
        for named in [
            p.clone(),
            PathBuf::from(format!("{}-wal", p.display())),
            PathBuf::from(format!("{}-shm", p.display())),
            link.clone(),
        ] {
            let e = refuse_if_open_store_file(&named).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("is the secagg store"), "{e}");
        }
        refuse_if_open_store_file(&other).unwrap();
        drop(store);
        refuse_if_open_store_file(&p).unwrap();
    }
}
