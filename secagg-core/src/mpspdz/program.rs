//! The `server_key` MP-SPDZ program and its compile cache.
//!
//! The program (written for secagg from the documented computation, see [`SOURCE`]): parties
//! 1..n−1 each input one field element, their key; party 0 inputs nothing and learns minus the sum,
//! printed as one line. MP-SPDZ's compiler turns it into `Programs/Schedules/server_key.sch` and
//! `Programs/Bytecode/server_key-0.bc`, which depend only on `n` and the prime, so they are
//! compiled **once per (n, prime)** into a cache in the party's home:
//!
//! ```text
//! <home>/mpspdz-cache/                       0700
//!   <n>-<hash>/                              hash: SHA-256 of the prime and the program source, 16 hex
//!     Programs/Source/server_key.mpc
//!     Programs/Schedules/server_key.sch
//!     Programs/Bytecode/server_key-0.bc
//!     compile.log
//!     manifest.json                          written last: n, prime and source hashes, file hashes
//! ```
//!
//! An entry is used only if its manifest exists, matches (n, prime, source) and the SHA-256 of both
//! compiled files; anything else (an interrupted build, a truncated or edited file) is a stale
//! entry and is rebuilt. Builds happen in a private temporary directory next to the entries and are
//! moved into place with one `rename(2)`, so a concurrent run sees either no entry or a complete
//! one; when two runs build the same entry at once, the loser discards its copy and uses the
//! winner's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use num_bigint::BigUint;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fs_secure::{self, PUBLIC_FILE_MODE};
use crate::home::Home;
use crate::mpspdz::locate::MpSpdzRoot;
use crate::supervise::{self, Ending, Supervised};

/// The program name given to `shamir-party.x`.
pub const PROGRAM_NAME: &str = "server_key";
/// Environment variable through which the compiler passes `n` to the program source. (Positional
/// compiler arguments would be appended to the program name, `server_key-3`, which the runtime
/// would then have to be told.)
pub const PARTIES_ENV: &str = "SECAGG_MPSPDZ_PARTIES";
/// Schedule path relative to a working directory.
pub const SCHEDULE_PATH: &str = "Programs/Schedules/server_key.sch";
/// Bytecode path relative to a working directory.
pub const BYTECODE_PATH: &str = "Programs/Bytecode/server_key-0.bc";
/// Deadline of one compilation.
pub const COMPILE_DEADLINE: Duration = Duration::from_secs(120);
/// Manifest format version.
const MANIFEST_FORMAT: u32 = 1;
/// Largest compiled file accepted in the cache.
const MAX_COMPILED_BYTES: u64 = 16 * 1024 * 1024;

/// The `server_key` program source (MP-SPDZ's Python-based language), written for secagg.
pub const SOURCE: &str = r#"# server_key: secagg's MP-SPDZ program for the server-key negotiation.
#
# Parties 1..n-1 (the nodes) each input one field element, their user key sk_i; party 0 (the
# researcher) inputs nothing. Party 0 alone learns -(sk_1 + ... + sk_(n-1)) mod p, printed as one
# signed decimal line; secagg lifts it to the integer server key. n comes from the environment
# because positional compiler arguments would be appended to the program name.
import os

n_parties = int(os.environ['SECAGG_MPSPDZ_PARTIES'])
if n_parties < 3:
    raise CompilerError('server_key needs at least 3 parties, got %d' % n_parties)

key_sum = sint(0)
for node in range(1, n_parties):
    key_sum = key_sum + sint.get_input_from(node)

print_ln_to(0, '%s', (-key_sum).reveal_to(0))
"#;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Manifest {
    format: u32,
    parties: usize,
    prime_sha256: String,
    source_sha256: String,
    schedule_sha256: String,
    bytecode_sha256: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A verified compiled program: the two files' contents, read from a valid cache entry.
#[derive(Debug, Clone)]
pub struct CompiledProgram {
    /// The cache entry it came from.
    pub entry: PathBuf,
    /// `server_key.sch`.
    pub schedule: Vec<u8>,
    /// `server_key-0.bc`.
    pub bytecode: Vec<u8>,
    /// Whether this call compiled it (false: taken from the cache).
    pub compiled_now: bool,
}

/// The compile cache of one home (`<home>/mpspdz-cache`).
#[derive(Debug, Clone)]
pub struct ProgramCache {
    dir: PathBuf,
}

impl ProgramCache {
    /// A cache in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ProgramCache { dir: dir.into() }
    }

    /// The cache of `home`: `<home>/mpspdz-cache`.
    pub fn in_home(home: &Home) -> Self {
        Self::new(home.root().join("mpspdz-cache"))
    }

    /// The cache directory.
    #[cfg(test)] // only the tests need it
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry directory for (n, prime).
    pub fn entry_dir(&self, n: usize, prime: &BigUint) -> PathBuf {
        let mut h = Sha256::new();
        h.update(prime.to_str_radix(10).as_bytes());
        h.update(b"\n");
        h.update(SOURCE.as_bytes());
        let key = hex::encode(&h.finalize()[..8]);
        self.dir.join(format!("{n}-{key}"))
    }

    fn expected(_n: usize, prime: &BigUint) -> (String, String) {
        (
            sha256_hex(prime.to_str_radix(10).as_bytes()),
            sha256_hex(SOURCE.as_bytes()),
        )
    }

    /// The compiled program for (n, prime) if a complete, intact entry exists.
    #[cfg(test)] // get_or_compile looks entries up itself
    pub fn lookup(&self, n: usize, prime: &BigUint) -> Option<CompiledProgram> {
        read_entry(&self.entry_dir(n, prime), n, prime).ok()
    }

    /// The compiled program for (n, prime): from the cache, or compiled with `root`'s compiler
    /// (and cached) when the entry is missing or stale.
    pub fn get_or_compile(
        &self,
        root: &MpSpdzRoot,
        n: usize,
        prime: &BigUint,
    ) -> Result<CompiledProgram> {
        let entry = self.entry_dir(n, prime);
        if let Ok(p) = read_entry(&entry, n, prime) {
            return Ok(p);
        }
        fs_secure::create_private_dir(&self.dir)?;
        let build = self
            .dir
            .join(format!(".build-{}", uuid::Uuid::new_v4().simple()));
        let result = compile_into(root, &build, n, prime).and_then(|()| {
            install(&build, &entry, n, prime)?;
            let mut p = read_entry(&entry, n, prime).map_err(|e| {
                e.context(format!("the freshly compiled entry `{}`", entry.display()))
            })?;
            p.compiled_now = true;
            Ok(p)
        });
        let _ = std::fs::remove_dir_all(&build);
        result
    }
}

/// Reads and verifies a cache entry.
fn read_entry(entry: &Path, n: usize, prime: &BigUint) -> Result<CompiledProgram> {
    let manifest_path = entry.join("manifest.json");
    let raw = fs_secure::read_limited(&manifest_path, 64 * 1024, "cache manifest")?;
    let m: Manifest = serde_json::from_slice(&raw)
        .map_err(|e| Error::invalid(format!("unreadable cache manifest: {e}")))?;
    let (prime_sha, source_sha) = ProgramCache::expected(n, prime);
    if m.format != MANIFEST_FORMAT
        || m.parties != n
        || m.prime_sha256 != prime_sha
        || m.source_sha256 != source_sha
    {
        return Err(Error::invalid("cache entry made for another program"));
    }
    let schedule = fs_secure::read_limited(
        &entry.join(SCHEDULE_PATH),
        MAX_COMPILED_BYTES,
        "compiled schedule",
    )?;
    let bytecode = fs_secure::read_limited(
        &entry.join(BYTECODE_PATH),
        MAX_COMPILED_BYTES,
        "compiled bytecode",
    )?;
    if sha256_hex(&schedule) != m.schedule_sha256 || sha256_hex(&bytecode) != m.bytecode_sha256 {
        return Err(Error::invalid(
            "cache entry files do not match their manifest",
        ));
    }
    Ok(CompiledProgram {
        entry: entry.to_owned(),
        schedule,
        bytecode,
        compiled_now: false,
    })
}

/// Compiles the program into `build` (created here) and writes the manifest last.
fn compile_into(root: &MpSpdzRoot, build: &Path, n: usize, prime: &BigUint) -> Result<()> {
    let script = root.check_compiler()?;
    let source_dir = build.join("Programs/Source");
    fs_secure::create_private_dir(&source_dir)?;
    fs_secure::write_atomic(
        &source_dir.join(format!("{PROGRAM_NAME}.mpc")),
        SOURCE.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    let log = build.join("compile.log");
    let mut cmd = Command::new(root.python());
    cmd.arg(&script)
        .arg(format!("--prime={}", prime.to_str_radix(10)))
        .arg(PROGRAM_NAME)
        .current_dir(build)
        .env(PARTIES_ENV, n.to_string());
    let child = Supervised::spawn(cmd, &log, "the MP-SPDZ compiler")?;
    let finished = child.wait(COMPILE_DEADLINE, None)?;
    let tail = || super::errors::last_lines(&supervise::log_tail(&log, 8), 4);
    match finished.ending {
        Ending::Exited(st) if st.success() => {}
        Ending::Exited(st) => {
            return Err(Error::external(format!(
                "the MP-SPDZ compiler failed ({}): {}",
                supervise::describe_status(st),
                tail()
            ))
            .with_hint("run `secagg mpspdz doctor` to check the MP-SPDZ root and python3"))
        }
        Ending::TimedOut | Ending::Cancelled => {
            return Err(Error::timeout(format!(
                "the MP-SPDZ compiler did not finish within {} s",
                COMPILE_DEADLINE.as_secs()
            )))
        }
    }
    let read = |rel: &str| -> Result<Vec<u8>> {
        let p = build.join(rel);
        let bytes = fs_secure::read_limited(&p, MAX_COMPILED_BYTES, "compiled program file")
            .map_err(|_| {
                Error::external(format!(
                    "the MP-SPDZ compiler exited successfully but did not write `{rel}`: {}",
                    tail()
                ))
            })?;
        if bytes.is_empty() {
            return Err(Error::external(format!(
                "the MP-SPDZ compiler wrote an empty `{rel}`"
            )));
        }
        Ok(bytes)
    };
    let schedule = read(SCHEDULE_PATH)?;
    let bytecode = read(BYTECODE_PATH)?;
    let (prime_sha256, source_sha256) = ProgramCache::expected(n, prime);
    let m = Manifest {
        format: MANIFEST_FORMAT,
        parties: n,
        prime_sha256,
        source_sha256,
        schedule_sha256: sha256_hex(&schedule),
        bytecode_sha256: sha256_hex(&bytecode),
    };
    let text = serde_json::to_vec_pretty(&m).map_err(|e| Error::Internal(e.to_string()))?;
    fs_secure::write_atomic(&build.join("manifest.json"), &text, PUBLIC_FILE_MODE)
}

/// Moves a finished build to `entry`, replacing a stale entry; if a concurrent run installed a
/// valid entry first, keeps that one.
fn install(build: &Path, entry: &Path, n: usize, prime: &BigUint) -> Result<()> {
    for _ in 0..3 {
        match std::fs::rename(build, entry) {
            Ok(()) => return Ok(()),
            Err(e) if entry.exists() => {
                if read_entry(entry, n, prime).is_ok() {
                    return Ok(()); // someone else won the race with a good entry
                }
                // Stale: move it aside atomically, then delete it.
                let stale =
                    entry.with_file_name(format!(".stale-{}", uuid::Uuid::new_v4().simple()));
                if std::fs::rename(entry, &stale).is_ok() {
                    let _ = std::fs::remove_dir_all(&stale);
                }
                let _ = e;
            }
            Err(e) => return Err(Error::io_path("installing cache entry", entry, e)),
        }
    }
    Err(Error::io(
        format!("while installing cache entry `{}`", entry.display()),
        std::io::Error::other("the entry kept changing under concurrent runs"),
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::field::fedbiomed_prime;
    use std::os::unix::fs::PermissionsExt;

    /// A test double for MP-SPDZ's `compile.py`: counts its invocations in `<root>/compile-count`
    /// and writes a recognisable schedule and bytecode, so tests can tell compiling from reusing.
    pub(crate) fn fake_root(dir: &Path) -> MpSpdzRoot {
        std::fs::create_dir_all(dir.join("Compiler")).unwrap();
        let script = format!(
            r#"import os, sys
count = os.path.join({root:?}, 'compile-count')
with open(count, 'a') as f:
    f.write('x')
n = os.environ['{env}']
prime = [a for a in sys.argv[1:] if a.startswith('--prime=')][0]
assert sys.argv[-1] == 'server_key', sys.argv
assert os.path.exists('Programs/Source/server_key.mpc')
os.makedirs('Programs/Schedules', exist_ok=True)
os.makedirs('Programs/Bytecode', exist_ok=True)
with open('Programs/Schedules/server_key.sch', 'w') as f:
    f.write('fake schedule n=%s %s\n' % (n, prime[:20]))
with open('Programs/Bytecode/server_key-0.bc', 'wb') as f:
    f.write(b'fake bytecode ' + n.encode())
"#,
            root = dir.display().to_string(),
            env = PARTIES_ENV
        );
        std::fs::write(dir.join("compile.py"), script).unwrap();
        let bin = dir.join("shamir-party.x");
        std::fs::write(&bin, "#!/bin/sh\necho fake >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        MpSpdzRoot::new(dir).unwrap()
    }

    pub(crate) fn compile_count(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("compile-count"))
            .map(|s| s.len())
            .unwrap_or(0)
    }

    #[test]
    fn second_run_reuses_the_cache() {
        let t = tempfile::tempdir().unwrap();
        let root = fake_root(&t.path().join("mpspdz"));
        let cache = ProgramCache::new(t.path().join("home/mpspdz-cache"));
        let p = fedbiomed_prime();
        let a = cache.get_or_compile(&root, 3, &p).unwrap();
        assert!(a.compiled_now);
        assert_eq!(compile_count(root.path()), 1);
        assert!(String::from_utf8_lossy(&a.schedule).contains("n=3"));
        let b = cache.get_or_compile(&root, 3, &p).unwrap();
        assert!(!b.compiled_now);
        assert_eq!(compile_count(root.path()), 1, "second run recompiled");
        assert_eq!(a.schedule, b.schedule);
        // Another n is another entry.
        let c = cache.get_or_compile(&root, 5, &p).unwrap();
        assert!(c.compiled_now);
        assert_eq!(compile_count(root.path()), 2);
        assert_ne!(a.entry, c.entry);
        assert!(a
            .entry
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("3-"));
        assert_eq!(crate::fs_secure::mode_of(cache.dir()).unwrap(), 0o700);
        // No build directories left.
        let names: Vec<String> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(cache.entry_dir(3, &p).join("manifest.json").is_file());
    }

    #[test]
    fn stale_or_partial_entries_are_rebuilt() {
        let t = tempfile::tempdir().unwrap();
        let root = fake_root(&t.path().join("mpspdz"));
        let cache = ProgramCache::new(t.path().join("cache"));
        let p = fedbiomed_prime();
        cache.get_or_compile(&root, 3, &p).unwrap();
        let entry = cache.entry_dir(3, &p);

        // A truncated bytecode file.
        std::fs::write(entry.join(BYTECODE_PATH), b"fake").unwrap();
        assert!(cache.lookup(3, &p).is_none());
        let r = cache.get_or_compile(&root, 3, &p).unwrap();
        assert!(r.compiled_now);
        assert_eq!(compile_count(root.path()), 2);
        assert_eq!(r.bytecode, b"fake bytecode 3");

        // An interrupted build: files but no manifest.
        std::fs::remove_file(entry.join("manifest.json")).unwrap();
        assert!(cache.get_or_compile(&root, 3, &p).unwrap().compiled_now);
        assert_eq!(compile_count(root.path()), 3);

        // A manifest for another n (copied entry).
        let m = std::fs::read_to_string(entry.join("manifest.json")).unwrap();
        std::fs::write(
            entry.join("manifest.json"),
            m.replace("\"parties\": 3", "\"parties\": 4"),
        )
        .unwrap();
        assert!(cache.get_or_compile(&root, 3, &p).unwrap().compiled_now);
        assert_eq!(compile_count(root.path()), 4);
        // And it is good again.
        assert!(!cache.get_or_compile(&root, 3, &p).unwrap().compiled_now);
        assert_eq!(compile_count(root.path()), 4);
    }

    #[test]
    fn concurrent_runs_leave_one_good_entry() {
        let t = tempfile::tempdir().unwrap();
        let root = fake_root(&t.path().join("mpspdz"));
        let cache = ProgramCache::new(t.path().join("cache"));
        let p = fedbiomed_prime();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (root, cache, p) = (root.clone(), cache.clone(), p.clone());
                std::thread::spawn(move || cache.get_or_compile(&root, 3, &p).unwrap())
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().bytecode, b"fake bytecode 3");
        }
        assert!(cache.lookup(3, &p).is_some());
        let leftovers: Vec<_> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_failing_compiler_is_an_external_tool_error_and_caches_nothing() {
        let t = tempfile::tempdir().unwrap();
        let root = fake_root(&t.path().join("mpspdz"));
        std::fs::write(
            root.compiler_script(),
            "import sys\nprint('CompilerError: boom', file=sys.stderr)\nsys.exit(1)\n",
        )
        .unwrap();
        let cache = ProgramCache::new(t.path().join("cache"));
        let e = cache
            .get_or_compile(&root, 3, &fedbiomed_prime())
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ExternalTool, "{e}");
        assert!(e.to_string().contains("CompilerError: boom"), "{e}");
        assert!(cache.lookup(3, &fedbiomed_prime()).is_none());
        assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 0);
    }
}
