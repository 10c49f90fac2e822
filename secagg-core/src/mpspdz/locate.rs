//! Finding an MP-SPDZ build: `--mpspdz-root DIR` or `MPSPDZ_ROOT`.
//!
//! A root is a directory holding `shamir-party.x` (the runtime) and, to compile the `server_key`
//! program, `compile.py` with the `Compiler/` package beside it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Environment variable naming the MP-SPDZ root when `--mpspdz-root` is not given.
pub const ROOT_ENV: &str = "MPSPDZ_ROOT";
/// The runtime binary used for the negotiation.
pub const PARTY_BINARY: &str = "shamir-party.x";
/// The program compiler script.
pub const COMPILER_SCRIPT: &str = "compile.py";
/// Python interpreter used to run the compiler (overridable with `SECAGG_PYTHON`).
pub const PYTHON_ENV: &str = "SECAGG_PYTHON";

/// A located MP-SPDZ build (absolute path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpSpdzRoot {
    root: PathBuf,
}

fn root_hint() -> &'static str {
    "give the directory of an MP-SPDZ v0.3.4 build (holding shamir-party.x and compile.py) with --mpspdz-root or MPSPDZ_ROOT"
}

impl MpSpdzRoot {
    /// `explicit` if given, else `$MPSPDZ_ROOT`; checks that the directory exists (not its
    /// content: see [`Self::check_binary`] and `secagg mpspdz doctor`).
    pub fn locate(explicit: Option<&Path>) -> Result<Self> {
        let dir = match explicit {
            Some(p) => p.to_owned(),
            None => match std::env::var_os(ROOT_ENV) {
                Some(v) if !v.is_empty() => PathBuf::from(v),
                _ => {
                    return Err(Error::external("no MP-SPDZ root given").with_hint(root_hint()));
                }
            },
        };
        Self::new(&dir)
    }

    /// A root at `dir`, which must be an existing directory (made absolute).
    pub fn new(dir: &Path) -> Result<Self> {
        let meta = std::fs::metadata(dir).map_err(|e| {
            Error::external(format!(
                "MP-SPDZ root `{}` cannot be used: {e}",
                dir.display()
            ))
            .with_hint(root_hint())
        })?;
        if !meta.is_dir() {
            return Err(Error::external(format!(
                "MP-SPDZ root `{}` is not a directory",
                dir.display()
            ))
            .with_hint(root_hint()));
        }
        let root = std::fs::canonicalize(dir)
            .map_err(|e| Error::io_path("resolving MP-SPDZ root", dir, e))?;
        Ok(MpSpdzRoot { root })
    }

    /// The root directory (absolute).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `<root>/shamir-party.x`.
    pub fn party_binary(&self) -> PathBuf {
        self.root.join(PARTY_BINARY)
    }

    /// `<root>/compile.py`.
    pub fn compiler_script(&self) -> PathBuf {
        self.root.join(COMPILER_SCRIPT)
    }

    /// `<root>/Compiler` (the Python package the compiler and programs import).
    pub fn compiler_package(&self) -> PathBuf {
        self.root.join("Compiler")
    }

    /// The Python interpreter: `$SECAGG_PYTHON`, else `python3` from `PATH`.
    pub fn python(&self) -> PathBuf {
        std::env::var_os(PYTHON_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("python3"))
    }

    /// Checks that `shamir-party.x` exists and is an executable file.
    pub fn check_binary(&self) -> Result<PathBuf> {
        let bin = self.party_binary();
        let meta = std::fs::metadata(&bin).map_err(|_| {
            Error::external(format!(
                "`{}` does not exist: no shamir-party.x in the MP-SPDZ root",
                bin.display()
            ))
            .with_hint("build it in the MP-SPDZ tree with `make shamir-party.x` (with MOD = -DGFP_MOD_SZ=33 in CONFIG.mine)")
        })?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(Error::external(format!(
                "`{}` is not an executable file",
                bin.display()
            )));
        }
        Ok(bin)
    }

    /// Checks that `compile.py` and the `Compiler/` package exist.
    pub fn check_compiler(&self) -> Result<PathBuf> {
        let script = self.compiler_script();
        if !script.is_file() {
            return Err(Error::external(format!(
                "`{}` does not exist: the MP-SPDZ root has no program compiler",
                script.display()
            ))
            .with_hint(
                "use the root of an MP-SPDZ source tree, where compile.py and Compiler/ are",
            ));
        }
        if !self.compiler_package().is_dir() {
            return Err(Error::external(format!(
                "`{}` does not exist: compile.py needs the Compiler package beside it",
                self.compiler_package().display()
            )));
        }
        Ok(script)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_root_and_missing_items() {
        let dir = tempfile::tempdir().unwrap();
        let r = MpSpdzRoot::locate(Some(dir.path())).unwrap();
        assert!(r.path().is_absolute());
        let e = r.check_binary().unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ExternalTool);
        assert!(e.to_string().contains("shamir-party.x"), "{e}");
        let e = r.check_compiler().unwrap_err();
        assert!(e.to_string().contains("compile.py"), "{e}");
        std::fs::write(r.party_binary(), "x").unwrap();
        let e = r.check_binary().unwrap_err();
        assert!(e.to_string().contains("not an executable"), "{e}");
        let e = MpSpdzRoot::new(&dir.path().join("nope")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ExternalTool);
        assert!(e.hint().unwrap().contains("MPSPDZ_ROOT"));
    }
}
