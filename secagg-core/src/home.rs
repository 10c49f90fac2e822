//! A party's home directory and the paths inside it.
//!
//! ```text
//! <home>/                          0700
//!   config.toml                    party id, role, endpoint
//!   identity/cert.pem              this party's certificate
//!   identity/key.pem               its private key (0600)
//!   identity/previous/<time>/      certificates and keys replaced by renewals (0700), never deleted by secagg
//!   store.sqlite                   peers, negotiated keys and their states, VPN registry (0600)
//!   runs/<session>/, <session>.lock  MP-SPDZ run directories and their locks
//!   mpspdz-cache/                  compiled MP-SPDZ programs
//!   vpn/                           WireGuard key pair (peer side), peers' config.env (server side)
//!   deploy/                        docker compose project
//! ```
//!
//! The README's "Files" section is the user's version of this list.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::fs_secure;

/// Environment variable naming the home directory when `--home` is not given.
pub const HOME_ENV: &str = "SECAGG_HOME";
/// Home directory used when neither `--home` nor `SECAGG_HOME` is given (relative to the working directory).
pub const DEFAULT_HOME: &str = ".secagg";

/// The file modes [`Home::write_output`] takes: [`PUBLIC_FILE_MODE`] (0644) for what may be read
/// by anyone (certificates, instructions), [`SECRET_FILE_MODE`] (0600) for what holds a secret
/// (VPN configurations).
pub use crate::fs_secure::{PUBLIC_FILE_MODE, SECRET_FILE_MODE};

/// The home directory of one party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Writes a command's output file (`-o FILE`): refuses any of this home's own files (see
    /// [`Home::is_secret_path`]), then writes it with `mode` (never over a
    /// non-regular file, over an existing file only with `force`, atomically).
    pub fn write_output(&self, path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<()> {
        self.check_output(path, force)?;
        fs_secure::write_output(path, bytes, mode, force)
    }

    /// The checks of [`Home::write_output`] without writing: for commands that should refuse a
    /// bad `-o FILE` before long work.
    pub fn check_output(&self, path: &Path, force: bool) -> Result<()> {
        if self.is_secret_path(path) {
            return Err(crate::error::Error::invalid(format!(
                "`{}` is one of the secagg home's own files (`{}`): refusing to write output there",
                path.display(),
                self.root().display()
            ))
            .with_hint("choose a file outside the home's store, configuration and identity"));
        }
        fs_secure::check_output(path, force).map(|_| ())
    }

    /// Checks that this home holds a party identity (its `config.toml`), so that a mistyped
    /// `--home` gets "no secagg identity" instead of a confusing error about a missing store, and
    /// that its permissions do not expose it ([`Home::check_permissions`]).
    pub fn require_identity(&self) -> Result<()> {
        self.check_permissions()?;
        match std::fs::symlink_metadata(self.config_path()) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.no_identity()),
            Err(e) => Err(crate::error::Error::io_path(
                "while looking for the identity in",
                &self.config_path(),
                e,
            )),
        }
    }

    /// The error for a home without an identity.
    ///
    /// The path is absolute: the default home `./.secagg` depends on the current directory, and
    /// from the wrong one a bare `init` would make a second identity, which the hint says.
    pub fn no_identity(&self) -> crate::error::Error {
        let looked_in = std::path::absolute(self.root()).unwrap_or_else(|_| self.root.clone());
        crate::error::Error::not_found(format!(
            "no secagg identity in `{}`",
            looked_in.display()
        ))
        .with_hint("if this party already has an identity elsewhere, point --home or SECAGG_HOME at that home (the default, ./.secagg, depends on the current directory); `secagg init --role node` (or --role researcher) makes a NEW identity, which every peer must then register")
    }

    /// A home rooted at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `identity/`.
    pub fn identity_dir(&self) -> PathBuf {
        self.root.join("identity")
    }
    /// `identity/cert.pem`.
    pub fn cert_path(&self) -> PathBuf {
        self.identity_dir().join("cert.pem")
    }
    /// `identity/key.pem`.
    pub fn key_path(&self) -> PathBuf {
        self.identity_dir().join("key.pem")
    }
    /// `identity/previous/`.
    pub fn previous_dir(&self) -> PathBuf {
        self.identity_dir().join("previous")
    }
    /// `store.sqlite`.
    pub fn store_path(&self) -> PathBuf {
        self.root.join("store.sqlite")
    }
    /// `runs/`.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// The home's own secret files: the store and its SQLite companions, the configuration, the
    /// identity directory (key, certificate, archived keys) and the WireGuard private key. Output
    /// files (`-o FILE`) may not be written over any of them.
    fn secret_paths(&self) -> Vec<PathBuf> {
        let mut v = vec![
            self.config_path(),
            self.identity_dir(),
            self.root.join("vpn").join("wg.key"),
        ];
        for suffix in ["", "-wal", "-shm", "-journal"] {
            v.push(self.root.join(format!("store.sqlite{suffix}")));
        }
        v
    }

    /// Whether writing to `target` would write into one of the home's secret files (its
    /// configuration, identity and store): the same file by canonical path, or a hard link to one, or anything
    /// under `identity/`, or any `store.sqlite*` file. `target` need not exist.
    pub fn is_secret_path(&self, target: &Path) -> bool {
        let canon_target = canonical_target(target);
        let Ok(root) = self.root.canonicalize() else {
            return false;
        };
        if let Some(t) = &canon_target {
            if t.parent() == Some(root.as_path())
                && t.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("store.sqlite"))
            {
                return true;
            }
        }
        let target_id = file_id(target);
        self.secret_paths().iter().any(|secret| {
            let canon_secret = secret
                .canonicalize()
                .ok()
                .or_else(|| canonical_target(secret));
            let by_path =
                matches!((&canon_target, &canon_secret), (Some(t), Some(s)) if t.starts_with(s));
            let by_inode = target_id.is_some() && target_id == file_id(secret);
            by_path || by_inode
        })
    }

    /// Refuses a home whose permissions expose it, as ssh does for `~/.ssh`: the root and
    /// `identity/` writable by group or others, or `identity/key.pem` accessible by them. Each
    /// error names the file, its mode and the `chmod` that fixes it. Missing files pass (the
    /// callers report absence with their own words).
    pub fn check_permissions(&self) -> Result<()> {
        fs_secure::check_private_dir(&self.root, "home directory")?;
        fs_secure::check_private_dir(&self.identity_dir(), "identity directory")?;
        fs_secure::check_private_file(&self.key_path(), "private key")
    }

    /// Creates the root and `identity/` with mode 0700.
    pub fn create_dirs(&self) -> Result<()> {
        fs_secure::create_private_dir(&self.root)?;
        fs_secure::create_private_dir(&self.identity_dir())
    }
}

/// The canonical form of `p` when it exists, else of its parent joined with its name (a file about
/// to be created); `None` when not even the parent resolves.
fn canonical_target(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let name = p.file_name()?;
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(name))
}

/// (device, inode) of an existing file, to catch hard links to a secret file.
fn file_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}
