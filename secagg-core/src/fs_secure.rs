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
    write_via_temp(path, bytes, mode, |tmp| {
        fs::rename(tmp, path).map_err(|e| Error::io_path("replacing", path, e))
    })
}

/// Writes `bytes` to a fresh temporary file next to `path` (created with `mode`, fsynced), lets
/// `place` put it at `path`, makes that durable (fsync of the directory) and removes whatever is
/// left of the temporary file, whether `place` succeeded or not.
fn write_via_temp(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    place: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
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
        place(&tmp)?;
        // Make the new directory entry itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    // After a rename there is nothing left; after a hard link or a failure, the temporary name.
    let _ = fs::remove_file(&tmp);
    result
}

/// Writes a command's output file (`-o FILE`) atomically, never over something it must not
/// replace (commands call it through [`crate::home::Home::write_output`], which also refuses the
/// home's own files).
///
/// Refused: an existing target that is not a regular file (directory, FIFO, device, socket), even
/// with `force`; and an existing regular file without `force`. The bytes go to a temporary file in
/// the target's directory (created with `mode`), which is then linked into place (without
/// `force`: fails rather than replace a file that appeared meanwhile) or renamed over the target
/// (with `force`). A failure leaves the old file as it was.
pub fn write_output(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<()> {
    if check_output(path, force)? {
        write_atomic(path, bytes, mode)
    } else {
        write_new(path, bytes, mode)
    }
}

/// The checks of [`write_output`] without writing, so that a command can refuse a bad `-o FILE`
/// before long work. Returns whether the target exists (and may be replaced: `force`).
pub fn check_output(path: &Path, force: bool) -> Result<bool> {
    let exists = match fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io_path("inspecting", path, e)),
    };
    if exists {
        // Follow a symbolic link: what matters is what writing would have hit. A dangling link
        // counts as an existing file (replacing it replaces the link, not its target).
        if let Ok(meta) = fs::metadata(path) {
            if !meta.is_file() {
                let what = file_kind(&meta);
                return Err(Error::invalid(format!(
                    "`{}` is {what}, not a regular file: refusing to write output there",
                    path.display()
                ))
                .with_hint("give the path of a regular file (to print, leave out -o)"));
            }
        }
        if !force {
            return Err(
                Error::conflict(format!("`{}` already exists", path.display()))
                    .with_hint("use --force to replace it, or choose another file"),
            );
        }
    }
    Ok(exists)
}

fn file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Like [`write_atomic`] for a file that must not exist: the complete temporary file is
/// hard-linked to `path`, which fails if `path` appeared meanwhile, instead of renamed over it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_via_temp(path, bytes, mode, |tmp| match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::conflict(format!(
            "`{}` already exists",
            path.display()
        ))
        .with_hint("use --force to replace it, or choose another file")),
        // A file system without hard links (some FUSE and FAT mounts): rename, after checking
        // again that nothing appeared.
        Err(_) if fs::symlink_metadata(path).is_err() => {
            fs::rename(tmp, path).map_err(|e| Error::io_path("creating", path, e))
        }
        Err(e) => Err(Error::io_path("creating", path, e)),
    })
}

/// Reads a whole regular file of at most `limit` bytes; `what` names it in errors
/// ("certificate", "registration bundle"). A file of a store this process has open is refused
/// unopened (see [`crate::store::guard`]).
pub fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let ctx = || format!("while reading {what} `{}`", path.display());
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::not_found(format!("{what} file `{}` does not exist", path.display()))
        }
        _ => Error::io(ctx(), e),
    })?;
    crate::store::guard::refuse_if_open_store_file(path)?;
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

/// Quotes `path` for a POSIX shell when it holds anything but plain characters, so a printed
/// `chmod` command can be pasted as is.
pub fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Refuses a file holding secrets that group or others may access (`mode & 0o077 != 0`), as ssh
/// refuses a private key others can read: a key or store that others could read must be assumed
/// copied, and one they could write must be assumed tampered with. `what` names the file in the
/// error ("private key", "store"). A missing file passes: the caller reports absence its own way.
pub fn check_private_file(path: &Path, what: &str) -> Result<()> {
    refuse_mode(path, 0o077, |mode| {
        Error::invalid(format!(
            "{what} `{}` is accessible by group or others (mode {mode:04o}): refusing to use it",
            path.display()
        ))
        .with_hint(format!(
            "run `chmod 600 {}` (and consider its content exposed if others could read it)",
            shell_quote(path)
        ))
    })
}

/// The error `refused(mode)` if `path` has any permission bit of `mask`; a missing file passes.
fn refuse_mode(path: &Path, mask: u32, refused: impl FnOnce(u32) -> Error) -> Result<()> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io_path("inspecting", path, e)),
    };
    let mode = meta.mode() & 0o7777;
    if mode & mask != 0 {
        return Err(refused(mode));
    }
    Ok(())
}

/// Refuses a file of the identity that group or others may write (`mode & 0o022 != 0`): the
/// configuration (whoever writes it can rename the party or redirect its endpoint) and the
/// certificate (whoever writes it can swap the identity peers are told to pin). Reading them is
/// fine: neither is secret. A missing file passes: the caller reports absence its own way.
pub fn check_not_writable_by_others(path: &Path, what: &str) -> Result<()> {
    refuse_mode(path, 0o022, |mode| {
        Error::invalid(format!(
            "{what} `{}` is writable by group or others (mode {mode:04o}): refusing to use it",
            path.display()
        ))
        .with_hint(format!(
            "run `chmod go-w {}` (and check its content: whoever could write it may have changed it)",
            shell_quote(path)
        ))
    })
}

/// Refuses a directory of the home that group or others may write (`mode & 0o022 != 0`): whoever
/// can write it can replace the key, the certificate or the store inside it.
pub fn check_private_dir(path: &Path, what: &str) -> Result<()> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io_path("inspecting", path, e)),
    };
    let mode = meta.mode() & 0o7777;
    if meta.is_dir() && mode & 0o022 != 0 {
        return Err(Error::invalid(format!(
            "{what} `{}` is writable by group or others (mode {mode:04o}): refusing to use it",
            path.display()
        ))
        .with_hint(format!("run `chmod 700 {}`", shell_quote(path))));
    }
    Ok(())
}

/// The permission bits of `path` (`mode & 0o777`).
#[cfg(test)] // only the tests need it
pub fn mode_of(path: &Path) -> Result<u32> {
    let meta = fs::metadata(path).map_err(|e| Error::io_path("inspecting", path, e))?;
    Ok(meta.mode() & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::Home;

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

    #[test]
    fn loose_secret_files_and_writable_dirs_are_refused_with_the_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("my key.pem");
        write_atomic(&p, b"k", SECRET_FILE_MODE).unwrap();
        check_private_file(&p, "private key").unwrap();
        for loose in [0o640, 0o604, 0o660, 0o601] {
            fs::set_permissions(&p, fs::Permissions::from_mode(loose)).unwrap();
            let e = check_private_file(&p, "private key").unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
            assert!(
                e.to_string().contains(&format!("(mode {loose:04o})")),
                "{e}"
            );
            assert!(
                e.hint()
                    .unwrap()
                    .starts_with(&format!("run `chmod 600 '{}'`", p.display())),
                "{:?}",
                e.hint()
            );
        }
        check_private_file(&dir.path().join("missing"), "private key").unwrap();
        let d = dir.path().join("home");
        create_private_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
        check_private_dir(&d, "home directory").unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o770)).unwrap();
        let e = check_private_dir(&d, "home directory").unwrap_err();
        assert!(e.to_string().contains("(mode 0770)"), "{e}");
        assert_eq!(
            shell_quote(Path::new("/a/it's")),
            r"'/a/it'\''s'",
            "quoted for sh"
        );
    }

    #[test]
    fn write_output_refuses_home_files_non_regular_and_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        home.create_dirs().unwrap();
        let store = home.store_path();
        fs::write(&store, b"store").unwrap();
        let rel = home.root().join("identity/../store.sqlite");
        for target in [&store, &rel, &home.key_path(), &home.config_path()] {
            let e = home
                .write_output(target, b"x", PUBLIC_FILE_MODE, true)
                .unwrap_err();
            assert!(e.to_string().contains("secagg home's own files"), "{e}");
        }
        // A hard link to the store elsewhere is the store.
        let hard = dir.path().join("hard");
        fs::hard_link(&store, &hard).unwrap();
        assert!(home
            .write_output(&hard, b"x", PUBLIC_FILE_MODE, true)
            .is_err());
        assert_eq!(fs::read(&store).unwrap(), b"store");

        let out = dir.path().join("out.json");
        write_output(&out, b"one", PUBLIC_FILE_MODE, false).unwrap();
        assert_eq!(mode_of(&out).unwrap(), 0o644);
        let e = write_output(&out, b"two", PUBLIC_FILE_MODE, false).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        assert_eq!(fs::read(&out).unwrap(), b"one");
        write_output(&out, b"two", SECRET_FILE_MODE, true).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"two");
        assert_eq!(mode_of(&out).unwrap(), 0o600);
        let e = write_output(dir.path(), b"x", PUBLIC_FILE_MODE, true).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = write_output(Path::new("/dev/null"), b"x", PUBLIC_FILE_MODE, true).unwrap_err();
        assert!(e.to_string().contains("is a device"), "{e}");
        // Only the written files remain: no temporary file.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
