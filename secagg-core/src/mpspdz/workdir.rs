//! The per-run working directory of `shamir-party.x`.
//!
//! ```text
//! <home>/runs/<session>/              0700, the cwd of shamir-party.x
//!   Programs/Schedules/server_key.sch  copied from the compile cache
//!   Programs/Bytecode/server_key-0.bc
//!   Player-Data/                       0700, writable (MP-SPDZ dumps Memory-* here)
//!     P0.pem … P<n-1>.pem              every party's certificate, in party order
//!     P<i>.key                         this party's private key (PKCS#8 PEM, 0600)
//!     <subject-hash>.N -> P<j>.pem     OpenSSL hash links (the trust store)
//!   ip-addresses                       `host:port` per party, in party order
//!   Input-P<i>-0                       node: its fresh key, decimal + `\n` (0600)
//!   Output-P0-0                        researcher: written by shamir-party.x (-OF <run>/Output)
//!   mpspdz.log                         stdout + stderr of shamir-party.x (0600)
//! ```
//!
//! [`PreparedRun::remove_secrets`] deletes every file that holds a secret (own key, input, output,
//! MP-SPDZ's memory dumps with key shares); [`PreparedRun::remove`] deletes the whole directory.
//!
//! Every path is absolute: shamir-party.x runs in the run directory, so a path relative to
//! secagg's own working directory (a relative `--home`, or the default `./.secagg`) would name a
//! file that does not exist from there.
//!
//! One run per session and home at a time: a run holds an exclusive `flock` on
//! `<home>/runs/<session>.lock` from before it touches `runs/<session>/` until it has removed it, so
//! a second run of the same session is refused instead of deleting the first one's directory.
//! The kernel releases the lock when its holder dies, so a directory left by a crash is never
//! mistaken for an active run.

use std::ffi::OsString;
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use num_bigint::BigUint;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::engine::key::SecretKey;
use crate::engine::plan::NegotiationPlan;
use crate::error::{Error, Result};
use crate::fs_secure::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
use crate::mpspdz::hashlink;
use crate::mpspdz::locate::MpSpdzRoot;
use crate::mpspdz::program::{CompiledProgram, BYTECODE_PATH, PROGRAM_NAME, SCHEDULE_PATH};
use crate::party::{Endpoint, Host};

/// Name of the ip file in the run directory.
pub const IP_FILE: &str = "ip-addresses";
/// Name of the log file in the run directory.
pub const LOG_FILE: &str = "mpspdz.log";
/// Holds the pid of the secagg process using a run directory, until its secrets are removed. A
/// directory whose owner is gone was abandoned by a killed secagg and still holds secrets.
pub const OWNER_FILE: &str = "owner.pid";
/// Suffix of the lock file next to a run directory (`runs/<session>.lock`).
pub const LOCK_SUFFIX: &str = ".lock";
/// How long a run waits for a run directory's lock held only briefly (by another run's sweep of
/// abandoned directories) before concluding that another run of the session is active.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(300);
/// Prefix (inside the run directory) of the node's input file (`-IF`).
pub const INPUT_PREFIX: &str = "Input";
/// Prefix (inside the run directory) of the researcher's output file (`-OF`).
pub const OUTPUT_PREFIX: &str = "Output";

/// A prepared run directory.
#[derive(Debug)]
pub struct PreparedRun {
    /// The run directory (absolute).
    pub dir: PathBuf,
    /// This party's index.
    pub my_index: usize,
    /// Number of parties.
    pub n: usize,
    /// `host:port` of each party, as in the ip file.
    pub endpoints: Vec<String>,
    /// Hash link names, in party order.
    pub hash_links: Vec<String>,
    /// A node's key (the value written to its input file); `None` for the researcher.
    pub node_key: Option<SecretKey>,
    /// This run's hold on the session's run directory, released when the run is dropped (after
    /// the engine removed or scrubbed the directory).
    _lock: RunLock,
}

/// An exclusive `flock` on `runs/<session>.lock`: whoever holds it owns `runs/<session>/`.
///
/// Dropping it deletes the lock file, then releases the lock. Deleting a lock file others may open
/// is safe because a new holder checks, after locking, that the path still names the file it
/// locked (and starts over otherwise).
#[derive(Debug)]
struct RunLock {
    path: PathBuf,
    _file: Flock<File>,
}

/// Why [`RunLock::try_acquire`] did not get the lock.
enum LockRefusal {
    /// Another open file description holds it.
    Held,
    /// Opening or locking failed otherwise.
    Failed(Error),
}

impl RunLock {
    /// Takes the lock of `dir` (a run directory) without waiting.
    fn try_acquire(dir: &Path) -> std::result::Result<RunLock, LockRefusal> {
        let mut name = dir.file_name().unwrap_or_default().to_owned();
        name.push(LOCK_SUFFIX);
        let path = dir.with_file_name(name);
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(SECRET_FILE_MODE)
                .open(&path)
                .map_err(|e| {
                    LockRefusal::Failed(Error::io_path("opening the lock file", &path, e))
                })?;
            let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, Errno::EWOULDBLOCK)) => return Err(LockRefusal::Held),
                Err((_, e)) => {
                    return Err(LockRefusal::Failed(Error::io_path(
                        "locking",
                        &path,
                        std::io::Error::from(e),
                    )))
                }
            };
            // The previous holder may have deleted the file between our open and our lock: then
            // we hold a lock nobody else will ever look at. Start again with the current file.
            let ours = locked.metadata().map(|m| (m.dev(), m.ino()));
            let current = std::fs::metadata(&path).map(|m| (m.dev(), m.ino()));
            match (ours, current) {
                (Ok(a), Ok(b)) if a == b => {
                    return Ok(RunLock {
                        path,
                        _file: locked,
                    })
                }
                _ => continue,
            }
        }
    }

    /// Takes the lock of `dir`, waiting up to [`LOCK_PATIENCE`] while it is held (another run's
    /// sweep holds it for the moment it takes to delete an abandoned directory).
    fn acquire(dir: &Path) -> std::result::Result<RunLock, LockRefusal> {
        let end = std::time::Instant::now() + LOCK_PATIENCE;
        loop {
            match Self::try_acquire(dir) {
                Err(LockRefusal::Held) if std::time::Instant::now() < end => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Deleted before the lock is released (by the field's drop), never after: see the type.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `host:port` for the ip file. MP-SPDZ splits at the first `:` and resolves IPv4 only, so IPv6
/// literals are refused (IPv4-mapped ones are written as IPv4).
pub fn ip_file_line(ep: &Endpoint) -> Result<String> {
    match &ep.host {
        Host::Ip(IpAddr::V4(v4)) => Ok(format!("{v4}:{}", ep.port)),
        Host::Ip(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => Ok(format!("{v4}:{}", ep.port)),
            None => Err(Error::invalid(format!(
                "endpoint `{ep}` is an IPv6 address, which MP-SPDZ cannot use (it splits `host:port` at the first `:` and resolves IPv4 only)"
            ))
            .with_hint("register an IPv4 address or a host name for this party, or use the native engine")),
        },
        Host::Name(name) => Ok(format!("{name}:{}", ep.port)),
    }
}

/// The content of the ip file for `endpoints` (party order, LF line ends).
pub fn ip_file_content(endpoints: &[Endpoint]) -> Result<String> {
    let mut s = String::new();
    for ep in endpoints {
        s.push_str(&ip_file_line(ep)?);
        s.push('\n');
    }
    Ok(s)
}

/// A uniformly random key in `[0, 2^key_bits)` from the OS CSPRNG.
pub fn random_key(key_bits: u32) -> BigUint {
    let nbytes = key_bits.div_ceil(8) as usize;
    let mut bytes = Zeroizing::new(vec![0u8; nbytes]);
    OsRng.fill_bytes(&mut bytes);
    let excess = nbytes as u32 * 8 - key_bits;
    if excess > 0 {
        bytes[0] &= 0xffu8 >> excess;
    }
    BigUint::from_bytes_be(&bytes)
}

/// Creates `path` (which must not exist) with `mode` from the first byte and writes `bytes`.
///
/// Run files are scratch data deleted after the run, so unlike [`fs_secure::write_atomic`] there is
/// no temporary file, rename or fsync (those made preparation several times slower).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| Error::io_path("writing", path, e))
}

fn pem_encode(tag: &str, der: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ))
}

/// Writes the run directory for `plan` under `runs_dir/<session>` with `program`'s compiled files.
///
/// `runs_dir` is made absolute (see the module documentation). While another run of the same
/// session holds the directory, this is a conflict error; a directory no run holds (kept with
/// `--keep-run-dir`, or left by a crash) is replaced. On any error, whatever was written is
/// removed.
pub fn prepare(
    runs_dir: &Path,
    plan: &NegotiationPlan,
    program: &CompiledProgram,
) -> Result<PreparedRun> {
    let endpoints: Vec<Endpoint> = plan.parties().iter().map(|p| p.endpoint.clone()).collect();
    let ip_content = ip_file_content(&endpoints).map_err(|e| {
        // Name the party whose endpoint is unusable.
        match endpoints.iter().position(|ep| ip_file_line(ep).is_err()) {
            Some(j) => e.context(format!("party {j} (`{}`)", plan.parties()[j].id)),
            None => e,
        }
    })?;
    fs_secure::create_private_dir(runs_dir)?;
    // Once, here: every path derived from it and handed to shamir-party.x is then absolute.
    let runs_dir = &std::fs::canonicalize(runs_dir)
        .map_err(|e| Error::io_path("resolving the run directory path", runs_dir, e))?;
    let dir = runs_dir.join(plan.session_id().to_string());
    let lock = match RunLock::acquire(&dir) {
        Ok(l) => l,
        Err(LockRefusal::Held) => return Err(active_run_conflict(&dir)),
        Err(LockRefusal::Failed(e)) => return Err(e),
    };
    sweep_abandoned(runs_dir);
    if dir.exists() {
        // Nobody holds it (we do now): kept with --keep-run-dir, or left by a crashed run.
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::io_path("removing the old run directory", &dir, e))?;
    }
    fs_secure::create_private_dir(&dir)?;
    write_new(
        &dir.join(OWNER_FILE),
        std::process::id().to_string().as_bytes(),
        SECRET_FILE_MODE,
    )?;
    let mut run = PreparedRun {
        dir,
        my_index: plan.my_index(),
        n: plan.n(),
        endpoints: ip_content.lines().map(str::to_owned).collect(),
        hash_links: Vec::new(),
        node_key: None,
        _lock: lock,
    };
    match fill(&mut run, plan, program, &ip_content) {
        Ok(()) => Ok(run),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&run.dir);
            Err(e)
        }
    }
}

/// The error for a run directory another run holds, naming its pid when it recorded one.
fn active_run_conflict(dir: &Path) -> Error {
    let owner = std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(|pid| format!(" (secagg process {pid})"))
        .unwrap_or_default();
    Error::conflict(format!(
        "another run of this session seems active in this home{owner}: its run directory `{}` is locked",
        dir.display()
    ))
    .with_hint(
        "wait until it ends, or run the session again with a new session id; a run directory left by a crashed run is not locked and is replaced automatically",
    )
}

fn fill(
    run: &mut PreparedRun,
    plan: &NegotiationPlan,
    program: &CompiledProgram,
    ip_content: &str,
) -> Result<()> {
    let dir = run.dir.clone();
    for (rel, bytes) in [
        (SCHEDULE_PATH, &program.schedule),
        (BYTECODE_PATH, &program.bytecode),
    ] {
        let path = dir.join(rel);
        fs_secure::create_private_dir(path.parent().expect("has a parent"))?;
        write_new(&path, bytes, PUBLIC_FILE_MODE)?;
    }
    let pd = run.player_data();
    fs_secure::create_private_dir(&pd)?;
    for (j, party) in plan.parties().iter().enumerate() {
        let pem = pem_encode("CERTIFICATE", &party.certificate_der);
        write_new(
            &pd.join(format!("P{j}.pem")),
            pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
    }
    let key_pem = pem_encode("PRIVATE KEY", plan.my_key_pkcs8_der());
    write_new(&run.key_path(), key_pem.as_bytes(), SECRET_FILE_MODE)?;
    let certs: Vec<&[u8]> = plan
        .parties()
        .iter()
        .map(|p| p.certificate_der.as_slice())
        .collect();
    run.hash_links = hashlink::make_links(&pd, &certs)?;
    write_new(&dir.join(IP_FILE), ip_content.as_bytes(), PUBLIC_FILE_MODE)?;
    if plan.my_index() != 0 {
        let mut key = random_key(plan.key_bits());
        let mut text = Zeroizing::new(key.to_str_radix(10));
        text.push('\n');
        write_new(&run.input_file(), text.as_bytes(), SECRET_FILE_MODE)?;
        run.node_key = Some(SecretKey::from_biguint(&key));
        crate::field::wipe(&mut key);
        text.zeroize();
    }
    Ok(())
}

impl PreparedRun {
    /// `Player-Data/`.
    pub fn player_data(&self) -> PathBuf {
        self.dir.join("Player-Data")
    }
    /// `Player-Data/P<i>.key`.
    pub fn key_path(&self) -> PathBuf {
        self.player_data().join(format!("P{}.key", self.my_index))
    }
    /// The ip file.
    pub fn ip_file(&self) -> PathBuf {
        self.dir.join(IP_FILE)
    }
    /// The log of shamir-party.x.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }
    /// A node's input file `Input-P<i>-0`.
    pub fn input_file(&self) -> PathBuf {
        self.dir
            .join(format!("{INPUT_PREFIX}-P{}-0", self.my_index))
    }
    /// The researcher's output file `Output-P0-0`.
    pub fn output_file(&self) -> PathBuf {
        self.dir.join(format!("{OUTPUT_PREFIX}-P0-0"))
    }

    /// The arguments of shamir-party.x, in Fed-BioMed's pattern:
    /// `<i> -ip <ipfile> (-OF <dir>/Output | -IF <dir>/Input) server_key -N <n>`.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            self.my_index.to_string().into(),
            "-ip".into(),
            self.ip_file().into(),
        ];
        if self.my_index == 0 {
            a.push("-OF".into());
            a.push(self.dir.join(OUTPUT_PREFIX).into());
        } else {
            a.push("-IF".into());
            a.push(self.dir.join(INPUT_PREFIX).into());
        }
        a.push(PROGRAM_NAME.into());
        a.push("-N".into());
        a.push(self.n.to_string().into());
        a
    }

    /// The command: `<root>/shamir-party.x <args>` with the run directory as cwd.
    pub fn command(&self, root: &MpSpdzRoot) -> Command {
        let mut c = Command::new(root.party_binary());
        c.args(self.args()).current_dir(&self.dir);
        c
    }

    /// Deletes every file that holds a secret: this party's key, its input, the output, MP-SPDZ's
    /// memory dumps (`Memory-*`, which hold key shares), its other output files and preprocessing
    /// directories. Returns the paths removed (relative to the run directory).
    pub fn remove_secrets(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let mut first_err = None;
        for dir in [self.dir.clone(), self.player_data()] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                let in_pd = dir != self.dir;
                let secret = name.starts_with("Memory-")
                    || name.starts_with("Input-")
                    || name.starts_with("Output-")
                    || name.starts_with("Private-")
                    || name.starts_with("Binary-Output-")
                    || name.starts_with("Public-Output-")
                    || (in_pd && name.ends_with(".key"))
                    || (in_pd && is_prep_dir(&name) && path.is_dir());
                if !secret {
                    continue;
                }
                let r = if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match r {
                    Ok(()) => removed.push(
                        path.strip_prefix(&self.dir)
                            .unwrap_or(&path)
                            .display()
                            .to_string(),
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        first_err.get_or_insert(Error::io_path("removing secret file", &path, e));
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => {
                // No secret left: the directory no longer needs its owner to clean it up.
                let _ = std::fs::remove_file(self.dir.join(OWNER_FILE));
                removed.sort();
                Ok(removed)
            }
        }
    }

    /// Deletes the whole run directory.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io_path("removing run directory", &self.dir, e)),
        }
    }
}

/// Deletes the run directories under `runs_dir` whose owner process is gone: a secagg killed
/// mid-run (SIGKILL, power loss) cannot clean up, and its directory holds that run's input and a
/// copy of the party's key. Directories without an owner file (kept with `--keep-run-dir`, secrets
/// already removed) are left alone, and so are those whose lock some run holds (its recorded pid
/// may be from another pid namespace). Best effort: a directory that cannot be removed is skipped.
pub fn sweep_abandoned(runs_dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return removed;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(owner) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let Ok(pid) = owner.trim().parse::<u32>() else {
            continue;
        };
        if pid == me || crate::supervise::process_alive(pid) {
            continue;
        }
        // Held while deleting, so that no new run of that session starts in the middle of it.
        let Ok(_lock) = RunLock::try_acquire(&dir) else {
            continue;
        };
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

/// MP-SPDZ's preprocessing directories, e.g. `3-Sp-2050`, `3-S2-128`.
fn is_prep_dir(name: &str) -> bool {
    let mut parts = name.splitn(2, '-');
    matches!(parts.next(), Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts.next().is_some()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::{PartyEntry, PlanParts};
    use crate::field::fedbiomed_prime;
    use crate::PartyId;
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;
    use time::OffsetDateTime;

    /// A plan for party `my_index` of `n` parties with freshly generated P-256 certificates, plus
    /// every party's key PEM.
    pub(crate) fn plan_for(n: usize, my_index: usize) -> (NegotiationPlan, Vec<Vec<u8>>) {
        let now = OffsetDateTime::now_utc();
        let mut parties = Vec::new();
        let mut keys = Vec::new();
        for j in 0..n {
            let id = if j == 0 {
                PartyId::parse("researcher_r").unwrap()
            } else {
                PartyId::parse(&format!("node_{j}")).unwrap()
            };
            let g = crate::certificate::generate(
                &id,
                crate::certificate::GeneratedKeyType::P256,
                10,
                now,
            )
            .unwrap();
            let key =
                crate::certificate::private_key_der_matching(&g.key_pem, &g.certificate).unwrap();
            keys.push(key.to_vec());
            parties.push(PartyEntry {
                id,
                endpoint: Endpoint::new("127.0.0.1", 15000 + j as u32).unwrap(),
                certificate_der: g.certificate.der.clone(),
            });
        }
        let plan = NegotiationPlan::new(PlanParts {
            session_id: crate::SessionId::generate(),
            parties,
            my_index,
            my_key_pkcs8_der: Zeroizing::new(keys[my_index].clone()),
            listen: None,
            key_bits: crate::field::DEFAULT_KEY_BITS,
            prime: fedbiomed_prime(),
            timeout: Duration::from_secs(10),
            scheme: crate::engine::ContextScheme::Jl,
            dropout_threshold: None,
        })
        .unwrap();
        (plan, keys)
    }

    fn program() -> CompiledProgram {
        CompiledProgram {
            entry: PathBuf::from("/nonexistent"),
            schedule: b"schedule".to_vec(),
            bytecode: b"bytecode".to_vec(),
            compiled_now: false,
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn node_run_directory_layout() {
        let t = tempfile::tempdir().unwrap();
        let (plan, keys) = plan_for(4, 2);
        let run = prepare(&t.path().join("runs"), &plan, &program()).unwrap();
        let d = &run.dir;
        assert_eq!(
            d,
            &t.path().join("runs").join(plan.session_id().to_string())
        );
        assert_eq!(mode(d), 0o700);
        assert_eq!(mode(&t.path().join("runs")), 0o700);
        assert_eq!(std::fs::read(d.join(SCHEDULE_PATH)).unwrap(), b"schedule");
        assert_eq!(std::fs::read(d.join(BYTECODE_PATH)).unwrap(), b"bytecode");
        let pd = run.player_data();
        assert_eq!(mode(&pd), 0o700);
        for j in 0..4 {
            let pem = std::fs::read(pd.join(format!("P{j}.pem"))).unwrap();
            let c = crate::certificate::Certificate::parse(&pem, "P.pem").unwrap();
            assert_eq!(c.der, plan.parties()[j].certificate_der, "P{j}.pem");
        }
        // Own key only, 0600, PKCS#8 PEM of the plan's key.
        assert!(!pd.join("P0.key").exists() && !pd.join("P1.key").exists());
        let key = pd.join("P2.key");
        assert_eq!(mode(&key), 0o600);
        let parsed = pem::parse(std::fs::read(&key).unwrap()).unwrap();
        assert_eq!(parsed.tag(), "PRIVATE KEY");
        assert_eq!(parsed.contents(), keys[2].as_slice());
        // ip file.
        assert_eq!(
            std::fs::read_to_string(run.ip_file()).unwrap(),
            "127.0.0.1:15000\n127.0.0.1:15001\n127.0.0.1:15002\n127.0.0.1:15003\n"
        );
        // Input: a 2040-bit-bounded decimal key + newline, 0600, equal to the node key.
        let input = std::fs::read_to_string(d.join("Input-P2-0")).unwrap();
        assert_eq!(mode(&d.join("Input-P2-0")), 0o600);
        assert!(input.ends_with('\n') && !input[..input.len() - 1].contains('\n'));
        let v: BigUint = input.trim_end().parse().unwrap();
        assert!(v.bits() <= 2040);
        assert_eq!(
            run.node_key.as_ref().unwrap().to_bigint(),
            num_bigint::BigInt::from(v)
        );
        // Hash links: one per party, each pointing at its PEM.
        assert_eq!(run.hash_links.len(), 4);
        for (j, name) in run.hash_links.iter().enumerate() {
            let target = std::fs::read_link(pd.join(name)).unwrap();
            assert_eq!(target, PathBuf::from(format!("P{j}.pem")));
            assert!(name.ends_with(".0"), "{name}");
        }
        // Arguments.
        let args: Vec<String> = run
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            vec![
                "2".to_owned(),
                "-ip".into(),
                run.ip_file().display().to_string(),
                "-IF".into(),
                d.join("Input").display().to_string(),
                "server_key".into(),
                "-N".into(),
                "4".into()
            ]
        );
    }

    #[test]
    fn researcher_gets_output_args_and_no_input() {
        let t = tempfile::tempdir().unwrap();
        let (plan, _) = plan_for(3, 0);
        let run = prepare(t.path(), &plan, &program()).unwrap();
        assert!(run.node_key.is_none());
        assert!(!run.dir.join("Input-P0-0").exists());
        let args: Vec<String> = run
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[3], "-OF");
        assert_eq!(args[4], run.dir.join("Output").display().to_string());
        // The -OF directory exists (MP-SPDZ silently loses the output otherwise).
        assert!(Path::new(&args[4]).parent().unwrap().is_dir());
        assert_eq!(run.output_file(), run.dir.join("Output-P0-0"));
    }

    #[test]
    fn hash_links_equal_openssl_rehash() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("skipped: openssl is not installed");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (plan, _) = plan_for(3, 1);
        let mut parts = plan.into_parts();
        // Add the Fed-BioMed RSA fixtures (CN=*, O=<id>) and others with varied subjects.
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/certs");
        for (k, name) in [
            "fedbiomed_rsa2048.pem",
            "ecdsa_p384.pem",
            "ed25519.pem",
            "rsa3072.pem",
            "no_o.pem",
            "x509_v1.pem",
        ]
        .iter()
        .enumerate()
        {
            let bytes = std::fs::read(fixtures.join(name)).unwrap();
            let c = crate::certificate::Certificate::parse(&bytes, name).unwrap();
            parts.parties.push(PartyEntry {
                id: PartyId::parse(&format!("node_f{k}")).unwrap(),
                endpoint: Endpoint::new("127.0.0.1", 16000 + k as u32).unwrap(),
                certificate_der: c.der,
            });
        }
        let plan = NegotiationPlan::new(parts).unwrap();
        let run = prepare(t.path(), &plan, &program()).unwrap();
        let ours = links_in(&run.player_data());
        // The same PEMs in a fresh directory, linked by openssl.
        let other = t.path().join("openssl");
        std::fs::create_dir(&other).unwrap();
        for j in 0..plan.parties().len() {
            std::fs::copy(
                run.player_data().join(format!("P{j}.pem")),
                other.join(format!("P{j}.pem")),
            )
            .unwrap();
        }
        let st = std::process::Command::new("openssl")
            .arg("rehash")
            .arg(&other)
            .status()
            .unwrap();
        assert!(st.success());
        let theirs = links_in(&other);
        assert_eq!(theirs.len(), plan.parties().len());
        assert_eq!(ours, theirs);
        // And each equals `openssl x509 -subject_hash`.
        for j in 0..plan.parties().len() {
            let out = std::process::Command::new("openssl")
                .args(["x509", "-noout", "-subject_hash", "-in"])
                .arg(run.player_data().join(format!("P{j}.pem")))
                .output()
                .unwrap();
            let h = String::from_utf8(out.stdout).unwrap();
            assert_eq!(format!("{}.0", h.trim()), run.hash_links[j], "P{j}");
        }
    }

    /// (link name, target) of every symlink in `dir`, sorted.
    fn links_in(dir: &Path) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_symlink())
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read_link(e.path()).unwrap().display().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn ipv6_is_refused_and_names_are_kept() {
        let ep = |h: &str| Endpoint::new(h, 14000).unwrap();
        assert_eq!(ip_file_line(&ep("10.0.0.2")).unwrap(), "10.0.0.2:14000");
        assert_eq!(
            ip_file_line(&ep("node1.example.org")).unwrap(),
            "node1.example.org:14000"
        );
        assert_eq!(
            ip_file_line(&ep("::ffff:10.0.0.3")).unwrap(),
            "10.0.0.3:14000"
        );
        let e = ip_file_line(&ep("fd00::2")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("IPv6"), "{e}");

        let t = tempfile::tempdir().unwrap();
        let (plan, _) = plan_for(3, 0);
        let mut parts = plan.into_parts();
        parts.parties[2].endpoint = ep("fd00::2");
        let plan = NegotiationPlan::new(parts).unwrap();
        let e = prepare(t.path(), &plan, &program()).unwrap_err();
        assert!(e.to_string().contains("party 2 (`node_2`)"), "{e}");
        assert!(!t.path().join(plan.session_id().to_string()).exists());
    }

    #[test]
    fn run_directories_abandoned_by_a_killed_secagg_are_swept() {
        // Regression: a SIGKILLed secagg left runs/<session>/ with its input and key copy forever.
        let t = tempfile::tempdir().unwrap();
        let mut dead = Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let abandoned = t.path().join("abandoned");
        std::fs::create_dir(&abandoned).unwrap();
        std::fs::write(abandoned.join(OWNER_FILE), dead_pid.to_string()).unwrap();
        std::fs::write(abandoned.join("Input-P1-0"), b"123").unwrap();
        let live = t.path().join("live");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join(OWNER_FILE), std::process::id().to_string()).unwrap();
        let kept = t.path().join("kept");
        std::fs::create_dir(&kept).unwrap();
        std::fs::write(kept.join(LOG_FILE), b"log").unwrap();

        let (plan, _) = plan_for(3, 1);
        let run = prepare(t.path(), &plan, &program()).unwrap();
        assert!(!abandoned.exists(), "abandoned run directory not swept");
        assert!(live.exists() && kept.exists());
        assert_eq!(
            std::fs::read_to_string(run.dir.join(OWNER_FILE)).unwrap(),
            std::process::id().to_string()
        );
        run.remove_secrets().unwrap();
        assert!(
            !run.dir.join(OWNER_FILE).exists(),
            "a scrubbed directory must not be swept"
        );
    }

    #[test]
    fn a_second_run_of_an_active_session_is_a_conflict_and_leaves_the_first_alone() {
        // Regression: the second run deleted the first one's run directory (input, key, program).
        let t = tempfile::tempdir().unwrap();
        let (plan, _) = plan_for(3, 1);
        let first = prepare(t.path(), &plan, &program()).unwrap();
        let e = prepare(t.path(), &plan, &program()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("another run of this session seems active"),
            "{msg}"
        );
        assert!(msg.contains(&first.dir.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        assert!(e.hint().unwrap().contains("crashed"), "{:?}", e.hint());
        assert!(first.input_file().is_file() && first.key_path().is_file());

        // Once the first run is over, its kept directory is replaced and no lock file is left.
        first.remove_secrets().unwrap();
        drop(first);
        let lock = t.path().join(format!("{}{LOCK_SUFFIX}", plan.session_id()));
        assert!(!lock.exists(), "lock file left behind");
        let second = prepare(t.path(), &plan, &program()).unwrap();
        assert!(second.input_file().is_file());
        assert!(lock.is_file());
        second.remove().unwrap();
        drop(second);
        assert!(!lock.exists());
    }

    #[test]
    fn a_crashed_runs_directory_is_not_mistaken_for_an_active_run() {
        // A directory whose lock nobody holds (its owner died) is replaced, as before.
        let t = tempfile::tempdir().unwrap();
        let (plan, _) = plan_for(3, 2);
        let dir = t.path().join(plan.session_id().to_string());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(OWNER_FILE), b"999999999").unwrap();
        std::fs::write(dir.join("Input-P2-0"), b"old").unwrap();
        std::fs::write(
            t.path().join(format!("{}{LOCK_SUFFIX}", plan.session_id())),
            b"",
        )
        .unwrap();
        let run = prepare(t.path(), &plan, &program()).unwrap();
        assert_ne!(std::fs::read(run.input_file()).unwrap(), b"old");
    }

    #[test]
    fn run_paths_are_absolute_even_for_a_relative_runs_directory() {
        // Regression: with a relative home, shamir-party.x (running in the run directory) was
        // given `.secagg/runs/<session>/ip-addresses`, which does not exist from there.
        let t = tempfile::tempdir().unwrap();
        let (plan, _) = plan_for(3, 1);
        // A relative path that names `t` from the test process's working directory.
        let cwd = std::env::current_dir().unwrap();
        let depth = cwd.components().count() - 1;
        let mut rel = PathBuf::new();
        for _ in 0..depth {
            rel.push("..");
        }
        rel.push(t.path().strip_prefix("/").unwrap());
        rel.push("runs");
        assert!(rel.is_relative());
        let run = prepare(&rel, &plan, &program()).unwrap();
        assert!(run.dir.is_absolute(), "{}", run.dir.display());
        let args = run.args();
        for i in [2, 4] {
            assert!(Path::new(&args[i]).is_absolute(), "{:?}", args[i]);
        }
        assert!(run.ip_file().is_file());
    }

    #[test]
    fn secrets_are_removed_and_the_rest_kept() {
        let t = tempfile::tempdir().unwrap();
        let (plan, _) = plan_for(3, 1);
        let run = prepare(t.path(), &plan, &program()).unwrap();
        let pd = run.player_data();
        // What MP-SPDZ leaves behind.
        std::fs::write(pd.join("Memory-Sp-P1"), b"shares").unwrap();
        std::fs::write(pd.join("Memory-B-P1"), b"x").unwrap();
        std::fs::write(pd.join("Public-Output-1"), b"").unwrap();
        std::fs::write(pd.join("Binary-Output-P1-0"), b"").unwrap();
        std::fs::create_dir(pd.join("3-Sp-2050")).unwrap();
        std::fs::write(run.dir.join("Output-P1-0"), b"").unwrap();
        let removed = run.remove_secrets().unwrap();
        assert!(
            removed.contains(&"Player-Data/Memory-Sp-P1".to_owned()),
            "{removed:?}"
        );
        assert!(
            removed.contains(&"Player-Data/P1.key".to_owned()),
            "{removed:?}"
        );
        assert!(removed.contains(&"Input-P1-0".to_owned()), "{removed:?}");
        let mut left: Vec<String> = std::fs::read_dir(&pd)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.contains('.') || n.ends_with(".pem"))
            .collect();
        left.sort();
        assert_eq!(left, vec!["P0.pem", "P1.pem", "P2.pem"]);
        assert!(!run.dir.join("Input-P1-0").exists());
        assert!(!run.dir.join("Output-P1-0").exists());
        assert!(run.ip_file().exists());
        run.remove().unwrap();
        assert!(!run.dir.exists());
    }

    #[test]
    fn random_keys_respect_the_bit_length() {
        for bits in [1u32, 7, 8, 9, 2040] {
            for _ in 0..20 {
                assert!(random_key(bits).bits() <= u64::from(bits));
            }
        }
        assert!((0..50).any(|_| random_key(2040).bits() == 2040));
    }
}
