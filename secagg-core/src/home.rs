//! A party's home directory and the paths inside it.
//!
//! ```text
//! <home>/                 0700
//!   config.toml           party id, role, endpoint
//!   identity/cert.pem     this party's certificate
//!   identity/key.pem      its private key (0600)
//!   identity/previous/    certificates and keys replaced by renewals (0700), never deleted by secagg
//!   store.sqlite          registered peers and negotiated contexts (0600)
//!   runs/<session>/       per-session working files (MP-SPDZ)
//! ```

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::fs_secure;

/// Environment variable naming the home directory when `--home` is not given.
pub const HOME_ENV: &str = "SECAGG_HOME";
/// Home directory used when neither `--home` nor `SECAGG_HOME` is given (relative to the working directory).
pub const DEFAULT_HOME: &str = ".secagg";

/// The home directory of one party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
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

    /// Creates the root and `identity/` with mode 0700.
    pub fn create_dirs(&self) -> Result<()> {
        fs_secure::create_private_dir(&self.root)?;
        fs_secure::create_private_dir(&self.identity_dir())
    }
}
