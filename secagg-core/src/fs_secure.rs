//! File-system helpers that keep secrets private and writes atomic.
//!
//! Directories secagg creates are 0700 and secret files 0600 from the moment they exist (the mode is
//! given to `open(2)`, never fixed up afterwards), and every file is replaced by write-to-temporary +
//! `rename(2)`, so a crash or a failed command leaves either the old or the new content, never half.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Mode of files holding secrets (private keys, negotiated keys, the store).
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode of files that may be read by anyone (certificates, bundles).
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode of directories secagg creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `path` and its missing parents with mode 0700, and tightens `path` itself to 0700 if it
/// already existed with a looser mode.
pub fn create_private_dir(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(|e| Error::io_path("creating directory", path, e))?;
    let meta = fs::metadata(path).map_err(|e| Error::io_path("inspecting directory", path, e))?;
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
            .map_err(|e| Error::io_path("restricting permissions of", path, e))?;
    }
    Ok(())
}

/// Atomically replaces `path` with `bytes`, creating it with `mode`.
///
/// The data goes to a temporary file in the same directory (created with `mode`, so a secret is
/// never readable by others even briefly), is flushed to disk, and is renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("`{}` is not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let tmp: PathBuf = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io_path("creating", &tmp, e))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io_path("writing", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io_path("replacing", path, e))?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole regular file of at most `limit` bytes; `what` names it in errors
/// ("certificate", "registration bundle").
pub fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let ctx = || format!("while reading {what} `{}`", path.display());
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::not_found(format!("{what} file `{}` does not exist", path.display()))
        }
        _ => Error::io(ctx(), e),
    })?;
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "{what} path `{}` is not a regular file",
            path.display()
        )));
    }
    if meta.len() > limit {
        return Err(Error::invalid(format!(
            "{what} file `{}` is {} bytes, more than the {limit} bytes allowed",
            path.display(),
            meta.len()
        )));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut buf))
        .map_err(|e| Error::io(ctx(), e))?;
    if buf.len() as u64 > limit {
        return Err(Error::invalid(format!(
            "{what} file `{}` is larger than the {limit} bytes allowed",
            path.display()
        )));
    }
    Ok(buf)
}

/// The permission bits of `path` (`mode & 0o777`).
pub fn mode_of(path: &Path) -> Result<u32> {
    let meta = fs::metadata(path).map_err(|e| Error::io_path("inspecting", path, e))?;
    Ok(meta.mode() & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_creates_with_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.pem");
        write_atomic(&p, b"one", SECRET_FILE_MODE).unwrap();
        assert_eq!(mode_of(&p).unwrap(), 0o600);
        write_atomic(&p, b"two", SECRET_FILE_MODE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // No temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_dir_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b");
        create_private_dir(&p).unwrap();
        assert_eq!(mode_of(&p).unwrap(), 0o700);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&p).unwrap();
        assert_eq!(mode_of(&p).unwrap(), 0o700);
    }

    #[test]
    fn read_limited_refuses_large_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        fs::write(&p, vec![0u8; 100]).unwrap();
        assert!(read_limited(&p, 99, "certificate")
            .unwrap_err()
            .to_string()
            .contains("100 bytes"));
        assert_eq!(read_limited(&p, 100, "certificate").unwrap().len(), 100);
        let e = read_limited(dir.path(), 100, "certificate").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_limited(&dir.path().join("nope"), 100, "certificate").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    }
}
