//! `secagg mpspdz doctor`: is this MP-SPDZ build usable for secagg's sessions?
//!
//! Checks, each reported as ok / failed / skipped / info: the root, the `shamir-party.x` binary
//! (exists, starts), the program compiler (compiles `server_key` into the home's cache), the
//! prime's size (a real 3-party loopback run on throwaway certificates, which fails with
//! `Not compiled for <b>-bit primes` on a build without enough limbs), `openssl rehash`/`c_rehash`
//! (informational: secagg makes the hash links itself), and the certificate of each listed party
//! against MP-SPDZ v0.3.4's TLS checks.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use num_bigint::{BigInt, BigUint};
use num_traits::Zero;
use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::certificate::GeneratedKeyType;
use crate::engine::{Engine, MpSpdzEngine, NegotiationPlan, PartyEntry, PlanParts};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::identity;
use crate::mpspdz::certcheck;
use crate::mpspdz::locate::MpSpdzRoot;
use crate::mpspdz::program::ProgramCache;
use crate::party::{Endpoint, PartyId};
use crate::store::peers;
use crate::supervise::{self, Ending, Supervised};

/// Status of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Passed.
    Ok,
    /// Failed: MP-SPDZ sessions will not work until it is fixed.
    Failed,
    /// Not run because an earlier check failed or nothing was asked.
    Skipped,
    /// For information only.
    Info,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    /// What was checked.
    pub check: String,
    /// Result.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// What to do, for a failed check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The MP-SPDZ root, when one was found.
    pub root: Option<String>,
    /// Whether no check failed.
    pub ok: bool,
    /// The checks in order.
    pub items: Vec<CheckItem>,
}

impl DoctorReport {
    /// The verdict: `Ok` when no check failed, else [`Error::ExternalTool`] naming the failed
    /// checks (the report itself says why each failed).
    pub fn verdict(&self) -> Result<()> {
        if self.ok {
            return Ok(());
        }
        let failed: Vec<&str> = self
            .items
            .iter()
            .filter(|i| i.status == CheckStatus::Failed)
            .map(|i| i.check.as_str())
            .collect();
        Err(Error::external(format!(
            "MP-SPDZ is not usable for secagg sessions: failed {}",
            failed.join(", ")
        ))
        .with_hint(
            "fix the failed items above; `--mpspdz-root DIR` or MPSPDZ_ROOT selects the build",
        ))
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// `--mpspdz-root`, else `MPSPDZ_ROOT`.
    pub root: Option<PathBuf>,
    /// Party ids whose certificates to check, in session order (index j is checked as `P<j>`).
    pub parties: Vec<String>,
    /// The session prime.
    pub prime: BigUint,
    /// Key bits for the self-test.
    pub key_bits: u32,
    /// Whether to run the 3-party loopback self-test.
    pub self_test: bool,
}

fn item(check: impl Into<String>, status: CheckStatus, detail: impl Into<String>) -> CheckItem {
    CheckItem {
        check: check.into(),
        status,
        detail: detail.into(),
        hint: None,
    }
}

fn failed(check: impl Into<String>, e: &Error) -> CheckItem {
    CheckItem {
        check: check.into(),
        status: CheckStatus::Failed,
        detail: e.to_string(),
        hint: e.hint().map(str::to_owned),
    }
}

/// Looks `name` up in `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs every check. Never fails as a whole: problems are items of the report.
pub fn doctor(home: &Home, opts: &DoctorOptions) -> DoctorReport {
    let mut items = Vec::new();
    let root = match MpSpdzRoot::locate(opts.root.as_deref()) {
        Ok(r) => {
            items.push(item(
                "root",
                CheckStatus::Ok,
                format!("MP-SPDZ root `{}`", r.path().display()),
            ));
            Some(r)
        }
        Err(e) => {
            items.push(failed("root", &e));
            None
        }
    };
    let binary_ok = match &root {
        None => {
            items.push(item("binary", CheckStatus::Skipped, "no MP-SPDZ root"));
            false
        }
        Some(r) => match check_binary_starts(r) {
            Ok(detail) => {
                items.push(item("binary", CheckStatus::Ok, detail));
                true
            }
            Err(e) => {
                items.push(failed("binary", &e));
                false
            }
        },
    };
    // The home's cache when there is a home (the compile then also warms it), else a throwaway one.
    let scratch = match home.root().is_dir() {
        true => None,
        false => TempDir::new().ok(),
    };
    let cache = match &scratch {
        Some(s) => ProgramCache::new(s.path().join("mpspdz-cache")),
        None => ProgramCache::in_home(home),
    };
    let compiler_ok = match &root {
        None => {
            items.push(item("compiler", CheckStatus::Skipped, "no MP-SPDZ root"));
            false
        }
        Some(r) => {
            let started = Instant::now();
            match cache.get_or_compile(r, 3, &opts.prime) {
                Ok(p) => {
                    items.push(item(
                        "compiler",
                        CheckStatus::Ok,
                        if p.compiled_now && scratch.is_some() {
                            // A throwaway cache (no home here): naming it would point at a
                            // directory that is gone once the doctor ends.
                            format!(
                                "compiled server_key for 3 parties in {} ms (no home here, so not cached)",
                                started.elapsed().as_millis()
                            )
                        } else if p.compiled_now {
                            format!(
                                "compiled server_key for 3 parties in {} ms (cached in `{}`)",
                                started.elapsed().as_millis(),
                                p.entry.display()
                            )
                        } else {
                            format!(
                                "server_key for 3 parties is compiled (cache `{}`); the compiler was not run",
                                p.entry.display()
                            )
                        },
                    ));
                    true
                }
                Err(e) => {
                    items.push(failed("compiler", &e));
                    false
                }
            }
        }
    };
    let prime_check = format!("prime ({} bits)", opts.prime.bits());
    match (&root, binary_ok && compiler_ok, opts.self_test) {
        (Some(r), true, true) => match self_test(r, &cache, &opts.prime, opts.key_bits) {
            Ok(ms) => items.push(item(
                prime_check,
                CheckStatus::Ok,
                format!("a 3-party loopback run of shamir-party.x with this prime succeeded in {ms} ms and its keys cancel (sk0 + Σ sk_i = 0)"),
            )),
            Err(e) => items.push(failed(prime_check, &e)),
        },
        (_, _, false) => items.push(item(
            prime_check,
            CheckStatus::Skipped,
            "self-test not requested",
        )),
        _ => items.push(item(
            prime_check,
            CheckStatus::Skipped,
            "needs a working binary and compiler",
        )),
    }
    let rehash: Vec<String> = ["openssl", "c_rehash"]
        .iter()
        .filter_map(|n| find_in_path(n).map(|p| p.display().to_string()))
        .collect();
    items.push(item(
        "rehash",
        CheckStatus::Info,
        if rehash.is_empty() {
            "neither openssl nor c_rehash is installed; not needed: secagg makes the OpenSSL hash links itself".to_owned()
        } else {
            format!(
                "found {}; not needed: secagg makes the OpenSSL hash links itself",
                rehash.join(", ")
            )
        },
    ));
    items.extend(certificate_items(home, &opts.parties));
    DoctorReport {
        root: root.map(|r| r.path().display().to_string()),
        ok: !items.iter().any(|i| i.status == CheckStatus::Failed),
        items,
    }
}

/// A private temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let p =
            std::env::temp_dir().join(format!("secagg-doctor-{}", uuid::Uuid::new_v4().simple()));
        crate::fs_secure::create_private_dir(&p)?;
        Ok(TempDir(p))
    }
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `shamir-party.x` without arguments (it prints its usage) to see that it loads.
fn check_binary_starts(root: &MpSpdzRoot) -> Result<String> {
    let bin = root.check_binary()?;
    let tmp = TempDir::new()?;
    let log = tmp.path().join("start.log");
    let mut cmd = Command::new(&bin);
    cmd.current_dir(tmp.path());
    let f = Supervised::spawn(cmd, &log, "shamir-party.x")?.wait(Duration::from_secs(10), None)?;
    let lines = supervise::log_tail(&log, 400);
    let text = lines.join("\n");
    if text.contains("incorrect number of arguments") || text.contains("Using security parameter") {
        return Ok(format!("`{}` starts", bin.display()));
    }
    let how = match f.ending {
        Ending::Exited(st) => supervise::describe_status(st),
        _ => "did not stop within 10 s".to_owned(),
    };
    Err(Error::external(format!(
        "`{}` did not start normally ({how}): {}",
        bin.display(),
        super::errors::last_lines(&lines, 3)
    ))
    .with_hint("run it by hand in the MP-SPDZ root to see what is missing (shared libraries, CPU features)"))
}

/// A real 3-party run on loopback with throwaway identities; returns its wall time in ms.
fn self_test(
    root: &MpSpdzRoot,
    cache: &ProgramCache,
    prime: &BigUint,
    key_bits: u32,
) -> Result<u128> {
    let now = OffsetDateTime::now_utc();
    let ports = crate::loopback::free_ports(3)?;
    let mut parties = Vec::new();
    let mut keys = Vec::new();
    for (j, port) in ports.iter().enumerate() {
        let id = if j == 0 {
            PartyId::parse("researcher_selftest")?
        } else {
            PartyId::parse(&format!("node_selftest{j}"))?
        };
        let g = crate::certificate::generate(&id, GeneratedKeyType::P256, 1, now)?;
        keys.push(crate::certificate::private_key_der_matching(
            &g.key_pem,
            &g.certificate,
        )?);
        parties.push(PartyEntry {
            id,
            endpoint: Endpoint::new("127.0.0.1", u32::from(*port))?,
            certificate_der: g.certificate.der.clone(),
        });
    }
    let tmp = TempDir::new()?;
    let session_id = crate::SessionId::generate();
    let plans = (0..3)
        .map(|j| {
            NegotiationPlan::new(PlanParts {
                session_id,
                parties: parties.clone(),
                my_index: j,
                my_key_pkcs8_der: Zeroizing::new(keys[j].to_vec()),
                listen: None,
                key_bits,
                prime: prime.clone(),
                timeout: Duration::from_secs(30),
                scheme: crate::engine::ContextScheme::Jl,
                dropout_threshold: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    let handles: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(j, plan)| {
            let engine =
                MpSpdzEngine::new(root.clone(), &Home::new(tmp.path().join(format!("p{j}"))))
                    .with_cache(cache.clone());
            std::thread::spawn(move || {
                engine.negotiate(plan, &mut crate::engine::MemorySink::default())
            })
        })
        .collect();
    let mut sum = BigInt::zero();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(o)) => sum += o.material.key().expect("a key session").to_bigint(),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(Error::Internal("self-test thread panicked".into()));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e.context("3-party loopback self-test"));
    }
    if !sum.is_zero() {
        return Err(Error::verification(
            "3-party loopback self-test: the keys do not cancel (sk0 + Σ sk_i ≠ 0)",
        ));
    }
    Ok(started.elapsed().as_millis())
}

fn certificate_items(home: &Home, parties: &[String]) -> Vec<CheckItem> {
    let now = OffsetDateTime::now_utc();
    let own = identity::load(home).ok();
    let mut out = Vec::new();
    if parties.is_empty() {
        match &own {
            Some(id) => {
                // Without a session order, check it as P1 (CN=* and CN=P<j> differ only here).
                out.push(cert_item(
                    &format!("certificate of `{}` (this party)", id.party_id),
                    &id.certificate.der,
                    None,
                    now,
                ));
            }
            None => out.push(item(
                "certificates",
                CheckStatus::Skipped,
                "no identity in this home and no --parties given",
            )),
        }
        return out;
    }
    let store = crate::store::Store::open_party(home);
    let mut store = match store {
        Ok(s) => Some(s),
        Err(e) => {
            if own.is_none() {
                out.push(failed("certificates", &e));
                return out;
            }
            None
        }
    };
    for (j, raw) in parties.iter().enumerate() {
        let label = format!("certificate of `{}` as P{j}", raw.trim());
        let id = match PartyId::parse_custom(raw.trim()) {
            Ok(id) => id,
            Err(e) => {
                out.push(failed(label, &e));
                continue;
            }
        };
        if let Some(o) = own.as_ref().filter(|o| o.party_id == id) {
            out.push(cert_item(&label, &o.certificate.der, Some(j), now));
            continue;
        }
        let rec = match store.as_mut() {
            Some(s) => s.read(|tx| peers::get(tx, &id)),
            None => Ok(None),
        };
        match rec {
            Ok(Some(p)) => out.push(cert_item(&label, &p.certificate_der, Some(j), now)),
            Ok(None) => out.push(failed(label, &crate::registration::not_registered(&id))),
            Err(e) => out.push(failed(label, &e)),
        }
    }
    out
}

fn cert_item(label: &str, der: &[u8], index: Option<usize>, now: OffsetDateTime) -> CheckItem {
    let findings = certcheck::check(der, index.unwrap_or(1), now);
    let fatal: Vec<String> = findings
        .iter()
        .filter(|f| f.fatal)
        .map(|f| f.message.clone())
        .collect();
    if fatal.is_empty() {
        item(
            label,
            CheckStatus::Ok,
            "X.509 v3, valid now, name matches, key usage fits MP-SPDZ v0.3.4".to_owned(),
        )
    } else {
        CheckItem {
            check: label.to_owned(),
            status: CheckStatus::Failed,
            detail: fatal.join("; "),
            hint: Some("renew with `secagg certificate generate --force` (CN=*, EKU serverAuth+clientAuth) and register it again".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::fedbiomed_prime;

    #[test]
    fn empty_root_reports_each_missing_item() {
        let t = tempfile::tempdir().unwrap();
        let home = Home::new(t.path().join("home"));
        let r = doctor(
            &home,
            &DoctorOptions {
                root: Some(t.path().to_owned()),
                parties: vec![],
                prime: fedbiomed_prime(),
                key_bits: 2040,
                self_test: true,
            },
        );
        assert!(!r.ok);
        let by = |c: &str| r.items.iter().find(|i| i.check.starts_with(c)).unwrap();
        assert_eq!(by("root").status, CheckStatus::Ok);
        assert_eq!(by("binary").status, CheckStatus::Failed);
        assert!(by("binary").detail.contains("shamir-party.x"));
        assert_eq!(by("compiler").status, CheckStatus::Failed);
        assert!(by("compiler").detail.contains("compile.py"));
        assert_eq!(by("prime").status, CheckStatus::Skipped);
        assert_eq!(by("rehash").status, CheckStatus::Info);
    }
}
