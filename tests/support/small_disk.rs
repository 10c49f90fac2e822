//! A real full disk: a small tmpfs mounted on a temporary directory, and a filler file that takes
//! its space, to run commands on a file system that answers ENOSPC exactly as a full disk does.
//!
//! Needs root (`mount`); [`SmallDisk::mount`] says why not otherwise, and the tests print
//! `skipped: <reason>` and pass, as the WireGuard tests do. The mount is undone on drop (lazily,
//! so a process still inside cannot keep it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted on drop.
pub struct SmallDisk {
    at: PathBuf,
    /// The mount point this module made (removed after the unmount), if any.
    _dir: Option<tempfile::TempDir>,
    filler: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `kib` KiB on a new temporary directory, or says why it cannot.
    pub fn mount(kib: u64) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut disk = SmallDisk::mount_at(dir.path(), kib)?;
        disk._dir = Some(dir);
        Ok(disk)
    }

    /// Moves the directory `at` (a secagg home) onto a tmpfs of `kib` KiB mounted in its place,
    /// contents and modes kept, or says why it cannot. The filler lives beside the home's files.
    pub fn mount_at(at: &Path, kib: u64) -> Result<SmallDisk, String> {
        if !nix_is_root() {
            return Err("not running as root (mounting a tmpfs needs it)".into());
        }
        let saved = at.with_extension("before-small-disk");
        if at.exists() {
            std::fs::rename(at, &saved).map_err(|e| e.to_string())?;
        }
        std::fs::create_dir(at).map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0700")])
            .arg("secagg-small-disk")
            .arg(at)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed ({status})"));
        }
        if saved.exists() {
            let copied = Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", saved.display()))
                .arg(at)
                .status()
                .map_err(|e| e.to_string())?;
            if !copied.success() {
                return Err("copying the directory onto the tmpfs failed".into());
            }
        }
        Ok(SmallDisk {
            at: at.to_owned(),
            _dir: None,
            filler: at.join("filler"),
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.at
    }

    /// Fills the disk, then frees `free` bytes (whole pages on tmpfs): the next write beyond
    /// that fails with ENOSPC.
    pub fn fill_leaving(&self, free: u64) {
        let mut f = std::fs::File::create(&self.filler).unwrap();
        let chunk = vec![0xa5u8; 4096];
        let mut len = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => len += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the small disk: {e}"),
            }
        }
        f.set_len(len.saturating_sub(free)).unwrap();
        f.sync_all().unwrap();
    }

    /// Frees the whole disk (removes the filler).
    pub fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn nix_is_root() -> bool {
    // /proc/self/status: "Uid:\t<real>\t<effective>…"
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
