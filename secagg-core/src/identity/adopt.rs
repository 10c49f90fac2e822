//! Adopting an existing identity: a Fed-BioMed v4 component's (its `etc/config_*.ini` and the
//! certificate and key files it names) or any key and certificate given as files.
//!
//! Adopting keeps the party id, the key and the certificate, so every peer that registered the
//! certificate before the migration goes on accepting this party with no new registration.
//! Everything is checked before anything is written: the key matches the certificate (their
//! SubjectPublicKeyInfo are compared), the certificate's `O=` is the party id, the certificate is
//! one a peer would register (see [`Certificate::validate_for_registration`]).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{archive_current, identity_exists, refuse_existing_identity, write_config, Identity};
use crate::certificate::{self, Certificate};
use crate::error::{Error, Result};
use crate::fs_secure::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
use crate::home::Home;
use crate::party::{parse_port, Endpoint, PartyId};
use crate::store::Store;

/// Largest Fed-BioMed configuration file read, in bytes.
const MAX_INI_BYTES: u64 = 256 * 1024;
/// Largest private key file read, in bytes.
const MAX_KEY_BYTES: u64 = 64 * 1024;

/// What to adopt: a party id, its key and certificate files and its MPC endpoint.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The party id (`researcher_…` / `node_…`); the certificate's `O=` must equal it.
    pub id: String,
    /// The private key file (PEM, PKCS#8 `BEGIN PRIVATE KEY`, as Fed-BioMed writes it).
    pub key: PathBuf,
    /// The certificate file (PEM or DER).
    pub cert: PathBuf,
    /// MPC host (IP literal or host name).
    pub host: String,
    /// MPC port.
    pub port: u32,
    /// Replace an existing identity (the old one is kept in `identity/previous/`).
    pub force: bool,
    /// Accept an id without the `researcher_`/`node_` prefix ([`PartyId::parse_custom`]); its
    /// role follows Fed-BioMed's rule (a node iff it starts with `node_`).
    pub allow_custom_id: bool,
}

/// A Fed-BioMed v4 component's identity as its configuration file names it.
#[derive(Debug, Clone)]
pub struct FedbiomedComponent {
    /// The configuration file read (`etc/config_node.ini`, `etc/config_researcher.ini`, …).
    pub config_file: PathBuf,
    /// `[default] id`.
    pub id: String,
    /// `[mpspdz] private_key`, resolved against the configuration directory.
    pub key: PathBuf,
    /// `[mpspdz] public_key` (the certificate), resolved against the configuration directory.
    pub cert: PathBuf,
    /// `[mpspdz] mpspdz_ip`.
    pub host: String,
    /// `[mpspdz] mpspdz_port`.
    pub port: u32,
}

impl FedbiomedComponent {
    /// Reads a Fed-BioMed v4 component: `path` is its configuration file, its `etc/` directory or
    /// its root directory (which must then hold exactly one `etc/config_*.ini`). The key and
    /// certificate paths of `[mpspdz]` are relative to the configuration directory, as Fed-BioMed
    /// resolves them.
    pub fn read(path: &Path) -> Result<Self> {
        let config_file = find_config(path)?;
        let bytes = fs_secure::read_limited(&config_file, MAX_INI_BYTES, "configuration")?;
        let text = String::from_utf8(bytes).map_err(|_| {
            Error::invalid(format!(
                "configuration `{}` is not UTF-8 text",
                config_file.display()
            ))
        })?;
        let ini = parse_ini(&text)
            .map_err(|e| e.context(format!("in configuration `{}`", config_file.display())))?;
        let get = |section: &str, key: &str| -> Result<String> {
            ini.get(&(section.to_owned(), key.to_owned()))
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "configuration `{}` has no `{key}` in section [{section}]",
                        config_file.display()
                    ))
                    .with_hint("give a Fed-BioMed v4.2 or later component's etc/config_*.ini (earlier versions have no [mpspdz] section), or use `secagg identity import --id ID --key KEY --cert CERT`")
                })
        };
        let dir = config_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let port_text = get("mpspdz", "mpspdz_port")?;
        let port = parse_port(&port_text).map_err(|e| {
            e.context(format!(
                "in [mpspdz] mpspdz_port of `{}`",
                config_file.display()
            ))
        })?;
        Ok(FedbiomedComponent {
            id: get("default", "id")?,
            key: dir.join(get("mpspdz", "private_key")?),
            cert: dir.join(get("mpspdz", "public_key")?),
            host: get("mpspdz", "mpspdz_ip")?,
            port: u32::from(port),
            config_file,
        })
    }
}

/// The configuration file of the component at `path` (a file, an `etc/` directory or a root).
fn find_config(path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found(format!(
            "Fed-BioMed component `{}` does not exist",
            path.display()
        )),
        _ => Error::io_path("inspecting", path, e),
    })?;
    if meta.is_file() {
        return Ok(path.to_path_buf());
    }
    let etc = if path.join("etc").is_dir() {
        path.join("etc")
    } else {
        path.to_path_buf()
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(&etc)
        .map_err(|e| Error::io_path("listing", &etc, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("config_") && n.ends_with(".ini"))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::not_found(format!(
            "`{}` holds no Fed-BioMed configuration (etc/config_*.ini)",
            path.display()
        ))
        .with_hint(
            "give the component's root directory (the one holding etc/) or its configuration file",
        )),
        _ => Err(Error::invalid(format!(
            "`{}` holds {} Fed-BioMed configurations: {}",
            etc.display(),
            found.len(),
            found
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_hint("give the configuration file of the component to adopt")),
    }
}

/// A minimal reading of Python's `configparser` format as Fed-BioMed writes it: `[section]`
/// headers, `key = value` (or `key: value`) lines, `#`/`;` comment lines. Keys are lowercased
/// as configparser does; values are trimmed.
fn parse_ini(text: &str) -> Result<HashMap<(String, String), String>> {
    let mut out = HashMap::new();
    let mut section: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_owned());
            continue;
        }
        let split = line.find(['=', ':']).ok_or_else(|| {
            Error::invalid(format!(
                "line {} is neither `[section]` nor `key = value`",
                n + 1
            ))
        })?;
        let Some(sec) = &section else {
            return Err(Error::invalid(format!(
                "line {} comes before any [section]",
                n + 1
            )));
        };
        let key = line[..split].trim().to_ascii_lowercase();
        let value = line[split + 1..].trim().to_owned();
        out.insert((sec.clone(), key), value);
    }
    Ok(out)
}

/// The outcome of [`import`].
#[derive(Debug, Clone)]
pub struct Adoption {
    /// The adopted identity as it now is in the home.
    pub identity: Identity,
    /// Where the replaced identity was archived (`--force`), if there was one.
    pub archived_to: Option<PathBuf>,
    /// Things to tell the user (a group/world-readable source key, an expiring certificate).
    pub warnings: Vec<String>,
}

/// Adopts an existing key and certificate as this party's identity in `home`.
///
/// Checks, before anything is written: the party id; the certificate parses and would be
/// registered by a peer (v3, valid now, supported key, self-signature); its `O=` is the party id;
/// the key parses and matches the certificate (same SubjectPublicKeyInfo); the endpoint. An
/// existing identity is refused unless `opts.force`, with which it is archived to
/// `identity/previous/` as `init --force` does. The key is written 0600; a source key file that
/// group or others can read is reported in [`Adoption::warnings`] (it is adopted nonetheless: it
/// may have been exposed, which only a new key would fix).
pub fn import(home: &Home, opts: &ImportOptions, now: OffsetDateTime) -> Result<Adoption> {
    let party_id = PartyId::parse_entry(&opts.id, opts.allow_custom_id)?;
    let role = party_id.role();
    let endpoint = Endpoint::new(&opts.host, opts.port)?;
    let cert_bytes = fs_secure::read_limited(
        &opts.cert,
        certificate::MAX_CERTIFICATE_FILE_BYTES,
        "certificate",
    )?;
    let cert_name = format!("`{}`", opts.cert.display());
    let cert = Certificate::parse(&cert_bytes, &cert_name)?;
    let mut warnings = cert
        .validate_for_registration(now)
        .map_err(|e| e.context(format!("in certificate {cert_name}")))?;
    match cert.organization.as_deref() {
        Some(o) if o == party_id.as_str() => {}
        Some(o) => {
            return Err(Error::invalid(format!(
                "certificate {cert_name} is for `{}` (O={o}), not `{party_id}`",
                o.escape_debug()
            ))
            .with_hint("give the id the certificate was made for, or the certificate of this party"))
        }
        None => {
            return Err(Error::invalid(format!(
                "certificate {cert_name} has no O= in its subject: it cannot be checked against `{party_id}`"
            ))
            .with_hint("Fed-BioMed and secagg put the party id in O=; adopt a certificate made for this party"))
        }
    }
    let key_bytes = Zeroizing::new(fs_secure::read_limited(
        &opts.key,
        MAX_KEY_BYTES,
        "private key",
    )?);
    let key_text = std::str::from_utf8(&key_bytes).map_err(|_| {
        Error::invalid(format!(
            "private key `{}` is not PEM text",
            opts.key.display()
        ))
        .with_hint(
            "give the PEM key file (`BEGIN PRIVATE KEY`) Fed-BioMed wrote next to the certificate",
        )
    })?;
    certificate::private_key_der_matching(key_text, &cert).map_err(|e| {
        e.context(format!(
            "while matching private key `{}` with certificate {cert_name}",
            opts.key.display()
        ))
        .with_hint("give the key file that sits next to the certificate (Fed-BioMed: MPSPDZ_certificate.key beside MPSPDZ_certificate.pem)")
    })?;
    let source_mode = std::fs::metadata(&opts.key)
        .map_err(|e| Error::io_path("inspecting", &opts.key, e))?
        .mode()
        & 0o7777;
    if source_mode & 0o077 != 0 {
        warnings.push(format!(
            "the source key `{}` is readable by group or others (mode {source_mode:04o}): the adopted copy is 0600, but consider the key exposed; if others could read it, make a new one with `secagg certificate generate --force` and have every peer register it",
            opts.key.display()
        ));
    }
    refuse_existing_identity(home, opts.force, "")?;
    home.create_dirs()?;
    Store::create(&home.store_path())?;
    let archived_to = if identity_exists(home) {
        Some(archive_current(home, now)?)
    } else {
        None
    };
    // The key first (see `write_key_and_certificate`); the source text is kept as it is: it is
    // what `Identity::private_key_der` parsed above.
    fs_secure::write_atomic(&home.key_path(), key_text.as_bytes(), SECRET_FILE_MODE)?;
    fs_secure::write_atomic(&home.cert_path(), cert.pem.as_bytes(), PUBLIC_FILE_MODE)?;
    write_config(home, &party_id, role, &endpoint, None)?;
    Ok(Adoption {
        identity: Identity {
            home: home.clone(),
            party_id,
            role,
            endpoint,
            certificate: cert,
            name: None,
        },
        archived_to,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_as_fedbiomed_writes_it() {
        let ini = parse_ini(
            "[default]\nid = node_1\ncomponent = NODE\nversion = 1\n\n[mpspdz]\nprivate_key = certs/cert_node_1/MPSPDZ_certificate.key\nMPSPDZ_PORT: 14001\n# comment\n",
        )
        .unwrap();
        assert_eq!(ini[&("default".into(), "id".into())], "node_1");
        assert_eq!(ini[&("mpspdz".into(), "mpspdz_port".into())], "14001");
        assert!(parse_ini("id = x\n").is_err());
        assert!(parse_ini("[a]\njunk\n").is_err());
    }
}
