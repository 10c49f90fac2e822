//! This party's identity: party id, role, MPC endpoint, private key and certificate.
//!
//! [`init`] creates it, [`load`] reads and checks it, [`renew`] replaces the key and certificate
//! while keeping the party id. Replaced keys and certificates are moved to `identity/previous/`,
//! never deleted: losing a key a federation still trusts must take a deliberate act.

use std::fs;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::certificate::{self, Certificate, Fingerprint, GeneratedKeyType, KeyType};
use crate::error::{Error, Result};
use crate::fs_secure::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
use crate::home::Home;
use crate::party::{Endpoint, Host, PartyId, Role};
use crate::store::Store;

mod adopt;

pub use adopt::{import, Adoption, FedbiomedComponent, ImportOptions};

/// The environment variable that overrides the stored MPC host at run time (Fed-BioMed's).
pub const IP_ENV: &str = "MPSPDZ_IP";
/// The environment variable that overrides the stored MPC port at run time (Fed-BioMed's).
pub const PORT_ENV: &str = "MPSPDZ_PORT";

/// Default MPC host when neither `--ip` nor `MPSPDZ_IP` is given.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default MPC port of a researcher (Fed-BioMed's).
pub const DEFAULT_RESEARCHER_PORT: u16 = 14000;
/// Default MPC port of a node (Fed-BioMed's VPN setup).
pub const DEFAULT_NODE_PORT: u16 = 14001;

/// The on-disk `config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    party_id: String,
    role: Role,
    endpoint: EndpointFile,
    /// The display name (`init --name`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointFile {
    host: String,
    port: u32,
}

/// What `secagg init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Role of the new party.
    pub role: Role,
    /// Party id to use; `None` makes `<role>_<uuid4>`.
    pub id: Option<String>,
    /// MPC host (IP literal or host name); `None` is [`DEFAULT_HOST`].
    pub host: Option<String>,
    /// MPC port; `None` is the role's default.
    pub port: Option<u32>,
    /// Key algorithm.
    pub key_type: GeneratedKeyType,
    /// Certificate validity in days.
    pub validity_days: u32,
    /// Replace an existing identity (the old one is kept in `identity/previous/`).
    pub force: bool,
    /// Accept an id without the `researcher_`/`node_` prefix ([`PartyId::parse_custom`]), as a
    /// Fed-BioMed deployment with custom ids needs; its role must then be the one Fed-BioMed's
    /// rule gives (a node id starts with `node_`).
    pub allow_custom_id: bool,
    /// A display name (`--name "CHU Lyon"`), shown to peers, never used for identity.
    pub name: Option<String>,
}

/// A loaded identity. The private key stays on disk until [`Identity::private_key_der`] is called.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The home this identity lives in.
    pub home: Home,
    /// Party id.
    pub party_id: PartyId,
    /// Role (always the one the id's prefix names).
    pub role: Role,
    /// MPC endpoint.
    pub endpoint: Endpoint,
    /// The certificate.
    pub certificate: Certificate,
    /// The display name (`init --name`), if any: shown to peers, never used for identity.
    pub name: Option<String>,
}

impl Identity {
    /// Reads the private key (PKCS#8 DER), checking it matches the certificate.
    pub fn private_key_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        let path = self.home.key_path();
        // Checked again here, not only in `load`: the key is what must not be used if exposed.
        fs_secure::check_private_file(&path, "private key")?;
        let bytes = Zeroizing::new(fs_secure::read_limited(&path, 64 * 1024, "private key")?);
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::invalid(format!("private key `{}` is not PEM text", path.display()))
        })?;
        certificate::private_key_der_matching(text, &self.certificate)
            .map_err(|e| e.context(format!("while reading private key `{}`", path.display())))
    }

    /// A summary that is safe to print.
    pub fn summary(&self, now: OffsetDateTime) -> IdentitySummary {
        let c = &self.certificate;
        IdentitySummary {
            party_id: self.party_id.to_string(),
            role: self.role,
            ip: self.endpoint.host.to_string(),
            port: self.endpoint.port,
            key_type: c.key_type,
            fingerprint: c.fingerprint,
            fingerprint_readable: c.fingerprint.readable(),
            name: self.name.clone(),
            not_before: certificate::format_time(c.not_before),
            not_after: certificate::format_time(c.not_after),
            days_left: c.days_left(now),
            status: c.status_at(now).to_string(),
            home: self.home.root().display().to_string(),
        }
    }
}

/// A run-time override of this party's MPC endpoint: Fed-BioMed's `MPSPDZ_IP` / `MPSPDZ_PORT`,
/// which Fed-BioMed reads at every start and which take precedence over its configuration. Each
/// may be given alone; an empty value counts as unset. The caller reads the environment (see
/// [`EndpointOverride::from_env`]); the library never does on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointOverride {
    /// `MPSPDZ_IP`: the host to use instead of the stored one.
    pub ip: Option<String>,
    /// `MPSPDZ_PORT`: the port to use instead of the stored one (text, as in the environment).
    pub port: Option<String>,
}

impl EndpointOverride {
    /// Reads [`IP_ENV`] and [`PORT_ENV`] from this process's environment.
    pub fn from_env() -> Self {
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        EndpointOverride {
            ip: var(IP_ENV),
            port: var(PORT_ENV),
        }
    }

    /// Whether neither variable is set.
    pub fn is_empty(&self) -> bool {
        self.ip.is_none() && self.port.is_none()
    }

    /// The variables in effect, as `MPSPDZ_IP=… MPSPDZ_PORT=…`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ip) = &self.ip {
            parts.push(format!("{IP_ENV}={ip}"));
        }
        if let Some(port) = &self.port {
            parts.push(format!("{PORT_ENV}={port}"));
        }
        parts.join(" ")
    }

    /// `stored` with the overridden parts replaced; `None` when nothing is overridden. A value
    /// that is not a host or a port is an error naming the variable.
    pub fn apply(&self, stored: &Endpoint) -> Result<Option<Endpoint>> {
        if self.is_empty() {
            return Ok(None);
        }
        let host = match &self.ip {
            Some(ip) => Host::parse(ip).map_err(|e| e.context(format!("in {IP_ENV}")))?,
            None => stored.host.clone(),
        };
        let port = match &self.port {
            Some(p) => {
                crate::party::parse_port(p).map_err(|e| e.context(format!("in {PORT_ENV}")))?
            }
            None => stored.port,
        };
        Ok(Some(Endpoint { host, port }))
    }
}

/// An endpoint overridden at run time: the stored one and the one in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverriddenEndpoint {
    /// The endpoint in `config.toml`.
    pub stored: Endpoint,
    /// The endpoint in effect for this command.
    pub effective: Endpoint,
    /// The variables that made it.
    pub by: EndpointOverride,
}

impl OverriddenEndpoint {
    /// What a command that prints or uses the endpoint says on stderr: that the override is in
    /// effect, and how to make it permanent.
    pub fn notice(&self) -> String {
        let e = &self.effective;
        let ip = match &e.host {
            Host::Ip(std::net::IpAddr::V6(v6)) => v6.to_string(),
            h => h.to_string(),
        };
        if self.stored == self.effective {
            format!(
                "{} is set and equals the stored endpoint {}",
                self.by.describe(),
                self.stored
            )
        } else {
            format!(
                "{} overrides the stored endpoint {}: using {} for this command (make it permanent with `secagg identity set-endpoint --ip {ip} --port {}`, then have every peer register it with --upsert)",
                self.by.describe(),
                self.stored,
                e,
                e.port
            )
        }
    }
}

impl Identity {
    /// Applies a run-time endpoint override ([`EndpointOverride`]) to this loaded identity: its
    /// `endpoint` becomes the effective one. Returns what changed, for the caller to report;
    /// `None` when nothing is overridden. Nothing is written.
    pub fn apply_endpoint_override(
        &mut self,
        ov: &EndpointOverride,
    ) -> Result<Option<OverriddenEndpoint>> {
        let Some(effective) = ov.apply(&self.endpoint)? else {
            return Ok(None);
        };
        let stored = std::mem::replace(&mut self.endpoint, effective.clone());
        Ok(Some(OverriddenEndpoint {
            stored,
            effective,
            by: ov.clone(),
        }))
    }
}

/// What `secagg identity show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct IdentitySummary {
    /// Party id.
    pub party_id: String,
    /// Role.
    pub role: Role,
    /// MPC host.
    pub ip: String,
    /// MPC port.
    pub port: u16,
    /// Key algorithm.
    pub key_type: Option<KeyType>,
    /// Certificate fingerprint.
    pub fingerprint: Fingerprint,
    /// The same, in the 43-character form to read out ([`Fingerprint::readable`]).
    pub fingerprint_readable: String,
    /// The display name, if any.
    pub name: Option<String>,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Days until expiry.
    pub days_left: i64,
    /// valid / expiring / expired / not yet valid.
    pub status: String,
    /// The home directory.
    pub home: String,
}

/// Refuses to replace the identity `home` holds unless `force` (then the caller archives it);
/// `consequence` completes the hint with what replacing it means for the peers.
fn refuse_existing_identity(home: &Home, force: bool, consequence: &str) -> Result<()> {
    if !identity_exists(home) || force {
        return Ok(());
    }
    let who = read_config(home)
        .map(|c| format!(" ({})", c.party_id))
        .unwrap_or_default();
    Err(Error::conflict(format!(
        "`{}` already holds an identity{who}",
        home.root().display()
    ))
    .with_hint(format!(
        "use another --home, or --force to replace it (the old key is kept in identity/previous/{consequence})"
    )))
}

fn identity_exists(home: &Home) -> bool {
    home.config_path().exists() || home.key_path().exists() || home.cert_path().exists()
}

/// Creates this party's identity in `home`: directories (0700), key (0600), certificate,
/// `config.toml`, and an empty store.
///
/// Refuses to replace an existing identity unless `opts.force`; with it, the previous key and
/// certificate are moved to `identity/previous/<time>/`. Registered peers are kept.
pub fn init(home: &Home, opts: &InitOptions, now: OffsetDateTime) -> Result<Identity> {
    // Validate every input before touching the disk.
    let party_id = match &opts.id {
        Some(id) => PartyId::parse_entry(id, opts.allow_custom_id)?,
        None => PartyId::generate(opts.role),
    };
    if party_id.role() != opts.role {
        return Err(Error::invalid(format!(
            "party id `{party_id}` names a {} but the role is {}",
            party_id.role(),
            opts.role
        ))
        .with_hint(format!(
            "a {} id starts with `{}`",
            opts.role,
            opts.role.id_prefix()
        )));
    }
    let host = opts.host.as_deref().unwrap_or(DEFAULT_HOST);
    let port = opts.port.unwrap_or(match opts.role {
        Role::Researcher => DEFAULT_RESEARCHER_PORT,
        Role::Node => DEFAULT_NODE_PORT,
    } as u32);
    let endpoint = Endpoint::new(host, port)?;
    let name = opts
        .name
        .as_deref()
        .map(crate::party::check_display_name)
        .transpose()
        .map_err(|e| e.context("in --name"))?;
    refuse_existing_identity(
        home,
        opts.force,
        " and every peer must register the new certificate",
    )?;
    let generated = certificate::generate(&party_id, opts.key_type, opts.validity_days, now)?;
    discard_interrupted_init(home)?;
    let before = HomeBefore::observe(home);
    let mut archived = None;
    let written = write_home(
        home,
        &generated,
        (&party_id, opts.role, &endpoint, name.as_deref()),
        now,
        &mut archived,
    );
    if let Err(e) = written {
        before.roll_back(home, archived.as_deref());
        return Err(e);
    }
    Ok(Identity {
        home: home.clone(),
        party_id,
        role: opts.role,
        endpoint,
        certificate: generated.certificate,
        name,
    })
}

/// The steps of `init` that write: directories, the store (created and migrated before the
/// identity files, so that an existing store (`--force`) is checked like any other first), the
/// archive of the current identity (only if there is one; its directory is left in `archived`
/// for a roll-back), the key and certificate, the configuration.
fn write_home(
    home: &Home,
    generated: &certificate::GeneratedIdentity,
    (party_id, role, endpoint, name): (&PartyId, Role, &Endpoint, Option<&str>),
    now: OffsetDateTime,
    archived: &mut Option<std::path::PathBuf>,
) -> Result<()> {
    home.create_dirs()?;
    Store::create(&home.store_path())?;
    if identity_exists(home) {
        *archived = Some(archive_current(home, now)?);
    }
    write_key_and_certificate(home, generated)?;
    write_config(home, party_id, role, endpoint, name)
}

/// What of a home existed before `init` wrote anything, so that a failed `init` (a full disk)
/// can take back what it made: a new home is left as it was found, and a replaced identity
/// (`--force`) is the one in use again. A crash leaves what it leaves; see
/// [`discard_interrupted_init`] for what a retry does with it.
struct HomeBefore {
    identity: bool,
    root: bool,
    identity_dir: bool,
    previous_dir: bool,
    store: bool,
}

impl HomeBefore {
    fn observe(home: &Home) -> Self {
        HomeBefore {
            identity: identity_exists(home),
            root: home.root().exists(),
            identity_dir: home.identity_dir().exists(),
            previous_dir: home.previous_dir().exists(),
            store: home.store_path().exists(),
        }
    }

    /// Best effort: the error that stopped `init` is what it reports. Renames and removals
    /// need no free space, so they succeed on the full disk that failed the writes.
    fn roll_back(&self, home: &Home, archived: Option<&std::path::Path>) {
        let files = [home.key_path(), home.cert_path(), home.config_path()];
        match archived {
            // The archive holds copies of the identity that was in use: put them back, and
            // remove what the old identity did not have.
            Some(dir) => {
                for file in &files {
                    let copy = dir.join(file.file_name().expect("fixed file names"));
                    if copy.exists() {
                        let _ = fs::rename(&copy, file);
                    } else {
                        let _ = fs::remove_file(file);
                    }
                }
                let _ = fs::remove_dir(dir);
            }
            // There was no identity: whatever is there now was written by this init. (With one
            // and no archive, the archive failed, before anything of the identity was written.)
            None if !self.identity => {
                for file in &files {
                    let _ = fs::remove_file(file);
                }
            }
            None => {}
        }
        if !self.store {
            crate::store::remove_unfinished_store(&home.store_path());
        }
        for (existed, dir) in [
            (self.previous_dir, home.previous_dir()),
            (self.identity_dir, home.identity_dir()),
            (self.root, home.root().to_path_buf()),
        ] {
            if !existed {
                // Only if empty: `remove_dir` refuses a directory with anything in it.
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// A home with no identity and a 0-byte store is what an `init` interrupted by a crash or a full
/// disk leaves (SQLite creates the file before it can write the schema): it holds no peer and no
/// key, so `init` removes the empty file and makes the store again, instead of refusing it as
/// damaged forever. Any other store is checked as usual.
fn discard_interrupted_init(home: &Home) -> Result<()> {
    let store = home.store_path();
    let leftover = !identity_exists(home)
        && fs::symlink_metadata(&store).is_ok_and(|m| m.is_file() && m.len() == 0)
        && !crate::store::has_side_files(&store);
    if leftover {
        fs::remove_file(&store)
            .map_err(|e| Error::io_path("removing the empty store", &store, e))?;
    }
    Ok(())
}

/// Writes the key (0600) before the certificate: a crash in between leaves a key that does not
/// match the certificate, which loading reports, rather than a certificate without its key.
fn write_key_and_certificate(
    home: &Home,
    generated: &certificate::GeneratedIdentity,
) -> Result<()> {
    fs_secure::write_atomic(
        &home.key_path(),
        generated.key_pem.as_bytes(),
        SECRET_FILE_MODE,
    )?;
    fs_secure::write_atomic(
        &home.cert_path(),
        generated.certificate.pem.as_bytes(),
        PUBLIC_FILE_MODE,
    )
}

fn write_config(
    home: &Home,
    party_id: &PartyId,
    role: Role,
    endpoint: &Endpoint,
    name: Option<&str>,
) -> Result<()> {
    let cfg = ConfigFile {
        party_id: party_id.to_string(),
        role,
        endpoint: EndpointFile {
            host: endpoint.host.to_string(),
            port: u32::from(endpoint.port),
        },
        name: name.map(str::to_owned),
    };
    let body =
        toml::to_string(&cfg).map_err(|e| Error::Internal(format!("cannot encode config: {e}")))?;
    let text = format!("# secagg party configuration, written by `secagg init`.\n{body}");
    fs_secure::write_atomic(&home.config_path(), text.as_bytes(), SECRET_FILE_MODE)
}

fn read_config(home: &Home) -> Result<ConfigFile> {
    let path = home.config_path();
    fs_secure::check_not_writable_by_others(&path, "configuration")?;
    let bytes =
        fs_secure::read_limited(&path, 64 * 1024, "configuration").map_err(|e| match e {
            Error::NotFound(_) => home.no_identity(),
            other => other,
        })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::invalid(format!(
            "configuration `{}` is not UTF-8 text",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        Error::invalid(format!(
            "configuration `{}` is malformed: {}",
            path.display(),
            e.message()
        ))
    })
}

/// Loads and checks the identity in `home` (permissions of the home, as ssh checks them; config;
/// certificate; the key itself is parsed on use).
pub fn load(home: &Home) -> Result<Identity> {
    home.check_permissions()?;
    let cfg = read_config(home)?;
    let ctx = || format!("in configuration `{}`", home.config_path().display());
    let party_id = PartyId::parse_custom(&cfg.party_id).map_err(|e| e.context(ctx()))?;
    if party_id.role() != cfg.role {
        return Err(Error::invalid(format!(
            "party id `{party_id}` does not match role {}",
            cfg.role
        ))
        .context(ctx()));
    }
    let endpoint =
        Endpoint::new(&cfg.endpoint.host, cfg.endpoint.port).map_err(|e| e.context(ctx()))?;
    let cert_path = home.cert_path();
    fs_secure::check_not_writable_by_others(&cert_path, "certificate")?;
    let bytes = fs_secure::read_limited(
        &cert_path,
        certificate::MAX_CERTIFICATE_FILE_BYTES,
        "certificate",
    )?;
    let certificate = Certificate::parse(&bytes, &format!("`{}`", cert_path.display()))?;
    let name = cfg
        .name
        .as_deref()
        .map(crate::party::check_display_name)
        .transpose()
        .map_err(|e| e.context(ctx()))?;
    Ok(Identity {
        home: home.clone(),
        party_id,
        role: cfg.role,
        endpoint,
        certificate,
        name,
    })
}

/// Updates the MPC endpoint of the identity in `home`.
pub fn set_endpoint(home: &Home, host: &str, port: u32) -> Result<Identity> {
    let mut identity = load(home)?;
    let endpoint = Endpoint::new(host, port)?;
    write_config(
        home,
        &identity.party_id,
        identity.role,
        &endpoint,
        identity.name.as_deref(),
    )?;
    identity.endpoint = endpoint;
    Ok(identity)
}

/// The outcome of [`renew`].
#[derive(Debug, Clone, Serialize)]
pub struct Renewal {
    /// Party id (unchanged).
    pub party_id: String,
    /// Fingerprint of the replaced certificate.
    pub old_fingerprint: Fingerprint,
    /// Fingerprint of the new certificate.
    pub new_fingerprint: Fingerprint,
    /// End of validity of the new certificate (RFC 3339).
    pub not_after: String,
    /// Where the old key and certificate were moved.
    pub archived_to: String,
}

/// Replaces this party's key pair and certificate (same party id and endpoint). The old ones are
/// moved to `identity/previous/<time>/`. Every peer must register the new certificate.
///
/// Renewing replaces the certificate every peer registered, so it must be asked for explicitly:
/// without `force` it is a [`Error::Conflict`] naming the current certificate.
pub fn renew(
    home: &Home,
    key_type: GeneratedKeyType,
    validity_days: u32,
    force: bool,
    now: OffsetDateTime,
) -> Result<Renewal> {
    let old = load(home)?;
    if !force {
        return Err(Error::conflict(format!(
            "{} already has a certificate ({})",
            old.party_id, old.certificate.fingerprint
        ))
        .with_hint(
            "renewing replaces it and every peer must register the new one: run again with --force",
        ));
    }
    let generated = certificate::generate(&old.party_id, key_type, validity_days, now)?;
    let archived = archive_current(home, now)?;
    write_key_and_certificate(home, &generated)?;
    Ok(Renewal {
        party_id: old.party_id.to_string(),
        old_fingerprint: old.certificate.fingerprint,
        new_fingerprint: generated.certificate.fingerprint,
        not_after: certificate::format_time(generated.certificate.not_after),
        archived_to: archived.display().to_string(),
    })
}

/// Copies the current key, certificate and config into `identity/previous/<time>/` (0700). The
/// current files are then replaced atomically by the caller, so a crash in between leaves the old
/// identity in place and a copy in `previous/`.
fn archive_current(home: &Home, now: OffsetDateTime) -> Result<std::path::PathBuf> {
    let stamp = format!(
        "{}-{}",
        now.unix_timestamp(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let dir = home.previous_dir().join(stamp);
    fs_secure::create_private_dir(&dir)?;
    copy_identity_to(home, &dir).inspect_err(|_| {
        // Only copies are in it: a failed archive (a full disk) leaves none behind.
        let _ = fs::remove_dir_all(&dir);
    })?;
    Ok(dir)
}

fn copy_identity_to(home: &Home, dir: &std::path::Path) -> Result<()> {
    for (src, mode) in [
        (home.key_path(), SECRET_FILE_MODE),
        (home.cert_path(), PUBLIC_FILE_MODE),
        (home.config_path(), SECRET_FILE_MODE),
    ] {
        if src.exists() {
            let bytes =
                Zeroizing::new(fs::read(&src).map_err(|e| Error::io_path("reading", &src, e))?);
            let name = src.file_name().expect("fixed file names");
            fs_secure::write_atomic(&dir.join(name), &bytes, mode)?;
        }
    }
    Ok(())
}

/// Whether `host` is this machine's loopback (used to warn that peers elsewhere cannot reach it).
pub fn is_loopback(endpoint: &Endpoint) -> bool {
    match &endpoint.host {
        Host::Ip(ip) => ip.is_loopback(),
        Host::Name(n) => n == "localhost",
    }
}
