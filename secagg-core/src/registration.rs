//! Registration: telling other parties how to register this party, and registering them.
//!
//! A party publishes its **registration instructions** (Fed-BioMed's text layout, with the exact
//! `secagg certificate register` command and its certificate's SHA-256 fingerprint) or a
//! machine-readable **bundle**. Receivers [`register`] it after checking, in order: the party id,
//! the endpoint, the certificate (see [`Certificate::validate_for_registration`]), the fingerprint
//! received out of band, that it is not this party itself, that the certificate's `O=` matches the
//! id, and, inside the store's transaction, that the id is new (or `upsert`) and the certificate is
//! not already registered under another id. Nothing is written unless every check passes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::certificate::{Certificate, Fingerprint, MAX_CERTIFICATE_FILE_BYTES};
use crate::error::{Error, Result};
use crate::fs_secure;
use crate::home::Home;
use crate::identity::{self, Identity};
use crate::party::{Endpoint, PartyId, Role};
use crate::peers::PeerRecord;
use crate::store::peers;
use crate::store::Store;

/// Value of the `format` field of a registration bundle.
pub const BUNDLE_FORMAT: &str = "secagg-registration-bundle";
/// Bundle version this build writes and reads.
pub const BUNDLE_VERSION: u32 = 1;
/// Largest bundle file accepted.
pub const MAX_BUNDLE_BYTES: u64 = 256 * 1024;

/// A machine-readable registration bundle (`registration-instructions --format json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Always [`BUNDLE_VERSION`].
    pub version: u32,
    /// The party's id.
    pub party_id: String,
    /// The party's role.
    pub role: Role,
    /// MPC host.
    pub ip: String,
    /// MPC port.
    pub port: u16,
    /// The certificate, PEM.
    pub certificate: String,
    /// SHA-256 fingerprint of the certificate (integrity check of the bundle itself; authenticity
    /// comes from comparing it with the one received out of band).
    pub fingerprint: Fingerprint,
    /// The party's display name (`init --name`), if it has one: shown in lists, never trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The bundle describing `identity`.
pub fn bundle(identity: &Identity) -> Bundle {
    Bundle {
        format: BUNDLE_FORMAT.to_owned(),
        version: BUNDLE_VERSION,
        party_id: identity.party_id.to_string(),
        role: identity.role,
        ip: identity.endpoint.host.to_string(),
        port: identity.endpoint.port,
        certificate: identity.certificate.pem.clone(),
        fingerprint: identity.certificate.fingerprint,
        name: identity.name.clone(),
    }
}

/// The human instructions for registering `identity`, in Fed-BioMed's layout (greeting, the
/// certificate, numbered steps), with the `secagg` command to run.
///
/// The fingerprint is deliberately absent: whoever could alter this message on its way (an
/// e-mail, a chat) could alter a fingerprint in it too, and a ready `--expect-fingerprint FP`
/// pasted from it checks the certificate against itself (regression, issue 23, item 1). The
/// command carries a placeholder that cannot pass (the shell refuses `<…>`), and the operator
/// reads the fingerprint out separately ([`fingerprint_to_read_out`]).
pub fn instructions_text(identity: &Identity) -> String {
    let id = &identity.party_id;
    let ip = identity.endpoint.host.to_string();
    let port = identity.endpoint.port;
    let placeholder = format!("<FINGERPRINT READ OUT BY THE OPERATOR OF {id}>");
    format!(
        "Hi There!\n\n\nPlease find following certificate to register\n\n{pem}\n\
Please follow the instructions below to register this certificate:\n\n\n \
1- Copy certificate content into a file e.g 'Hospital1.pem'\n \
2- Ask the operator of {id} to read you its certificate's fingerprint by phone or in person, not by\n    \
e-mail or chat: whoever could alter this message could alter a fingerprint in it too. secagg checks\n    \
the certificate against the fingerprint you give it.\n \
3- Run: \"secagg certificate register -pk [PATH WHERE CERTIFICATE IS SAVED] -pi {id} --ip {ip} --port {port} --expect-fingerprint {placeholder}\"\n    \
Example:\n      secagg certificate register -pk ./Hospital1.pem -pi {id} --ip {ip} --port {port} --expect-fingerprint {placeholder}\n",
        pem = identity.certificate.pem,
    )
}

/// What the operator of `identity` reads out to each party that registers it (not sent with the
/// instructions: see [`instructions_text`]).
pub fn fingerprint_to_read_out(identity: &Identity) -> String {
    format!(
        "read this fingerprint out to each party that registers {} (by phone or in person; they give it to --expect-fingerprint):\n  {}",
        identity.party_id,
        identity.certificate.fingerprint.readable()
    )
}

/// Where the certificate of a registration comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// A PEM or DER file.
    File(PathBuf),
    /// Bytes already read, with a name for errors ("document 3 of `db.json`").
    Bytes {
        /// The certificate (PEM or DER).
        bytes: Vec<u8>,
        /// How to name it in errors.
        name: String,
    },
}

/// One registration to perform, its party id and endpoint already parsed (the caller turns text
/// into them with [`PartyId::parse`] and [`Endpoint::new`]).
#[derive(Debug, Clone)]
pub struct RegisterRequest {
    /// The party's id.
    pub party_id: PartyId,
    /// The party's MPC endpoint.
    pub endpoint: Endpoint,
    /// The certificate.
    pub certificate: CertificateSource,
    /// Fingerprint received out of band, if any.
    pub expect_fingerprint: Option<String>,
    /// Replace an existing registration of the same id.
    pub upsert: bool,
    /// Recorded origin (`file …`, `bundle …`).
    pub source: String,
    /// The party's display name, from its bundle or a roster (checked like `init --name`).
    pub name: Option<String>,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new peer.
    Created,
    /// An existing peer's certificate or endpoint was replaced, or what a roster brought in was
    /// registered by hand (same certificate and endpoint: its origin becomes the manual one).
    Updated,
    /// `--upsert` with identical data: nothing changed.
    Unchanged,
}

/// The outcome of one registration.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    /// Party id.
    pub party_id: String,
    /// `NODE` / `RESEARCHER`.
    pub component: &'static str,
    /// MPC host.
    pub ip: String,
    /// MPC port.
    pub port: u16,
    /// Fingerprint of the registered certificate.
    pub fingerprint: Fingerprint,
    /// Fingerprint of the certificate it replaced (upsert).
    pub previous_fingerprint: Option<Fingerprint>,
    /// What happened.
    pub action: Action,
    /// Whether the fingerprint was checked against one received out of band.
    pub fingerprint_checked: bool,
    /// Non-fatal remarks (certificate expiring soon, EKU MP-SPDZ would refuse, loopback address).
    pub warnings: Vec<String>,
}

/// A registration validated against everything that does not need the store.
#[derive(Debug, Clone)]
pub struct PreparedRegistration {
    record: PeerRecord,
    upsert: bool,
    fingerprint_checked: bool,
    warnings: Vec<String>,
}

impl PreparedRegistration {
    /// The same registration recorded with another origin (a roster keeps the origin of a
    /// registration by hand whose endpoint it only moves).
    pub(crate) fn with_source(mut self, source: String) -> Self {
        self.record.source = source;
        self
    }
}

/// Validates `req` for a store owned by `own` (checks that need no store access).
pub fn prepare(
    req: &RegisterRequest,
    own: &Identity,
    now: OffsetDateTime,
) -> Result<PreparedRegistration> {
    let (party_id, endpoint) = (req.party_id.clone(), req.endpoint.clone());
    let cert = match &req.certificate {
        CertificateSource::File(path) => {
            let bytes = fs_secure::read_limited(path, MAX_CERTIFICATE_FILE_BYTES, "certificate")?;
            Certificate::parse(&bytes, &format!("`{}`", path.display()))?
        }
        CertificateSource::Bytes { bytes, name } => Certificate::parse(bytes, name)?,
    };
    let mut warnings = cert.validate_for_registration(now)?;
    let fingerprint_checked = match &req.expect_fingerprint {
        Some(expected) => {
            let (expected, form) = Fingerprint::parse_with_form(expected)?;
            if !expected.ct_eq(&cert.fingerprint) {
                return Err(Error::authentication(format!(
                    "the certificate's fingerprint is not the expected one:\n{}",
                    Fingerprint::mismatch(&expected, &cert.fingerprint, form)
                ))
                .with_hint(format!(
                    "do not register it: the certificate is not the one `{party_id}` vouched for; ask the party to send it again"
                )));
            }
            true
        }
        None => false,
    };
    if party_id == own.party_id {
        return Err(Error::invalid(format!(
            "`{party_id}` is this party's own id: a party does not register itself"
        )));
    }
    if cert.fingerprint.ct_eq(&own.certificate.fingerprint) {
        return Err(Error::invalid(format!(
            "this is this party's own certificate ({}), it cannot be registered as `{party_id}`",
            cert.fingerprint
        )));
    }
    if let Some(o) = &cert.organization {
        if o != party_id.as_str() {
            return Err(Error::invalid(format!(
                "the certificate belongs to `{o}` (its subject says O={o}), not to `{party_id}`"
            ))
            .with_hint(
                "check the party id: Fed-BioMed and secagg certificates name their party in O=",
            ));
        }
    }
    if identity::is_loopback(&endpoint) {
        warnings.push(format!(
            "endpoint {endpoint} is a loopback address: only parties on this machine can reach it"
        ));
    }
    let mut record = PeerRecord::new(party_id, endpoint, &cert, req.source.clone(), now)?;
    record.name = req
        .name
        .as_deref()
        .map(crate::party::check_display_name)
        .transpose()?;
    Ok(PreparedRegistration {
        record,
        upsert: req.upsert,
        fingerprint_checked,
        warnings,
    })
}

/// Applies a prepared registration inside an open transaction (checks that need the store).
pub fn apply(conn: &rusqlite::Connection, p: &PreparedRegistration) -> Result<Registered> {
    let rec = &p.record;
    let existing = peers::get(conn, &rec.party_id)?;
    if let Some(other) = peers::find_by_fingerprint(conn, &rec.fingerprint)? {
        if other != rec.party_id.as_str() {
            return Err(Error::conflict(format!(
                "this certificate ({}) is already registered for `{other}`",
                rec.fingerprint
            ))
            .with_hint("a certificate identifies one party; delete the other registration first if it was wrong"));
        }
    }
    let (action, previous_fingerprint) = match existing {
        None => {
            peers::insert(conn, rec)?;
            (Action::Created, None)
        }
        Some(old) if !p.upsert => {
            return Err(Error::conflict(format!(
                "party `{}` is already registered (certificate {})",
                rec.party_id, old.fingerprint
            ))
            .with_hint("use --upsert to replace its certificate and endpoint"));
        }
        Some(old) => {
            // Registering by hand what a roster brought in makes it a registration by hand (a
            // researcher's rights depend on it), even with the same certificate and endpoint.
            let adopted = !old.registered_by_hand() && rec.registered_by_hand();
            if old.fingerprint == rec.fingerprint && old.endpoint == rec.endpoint && !adopted {
                (Action::Unchanged, Some(old.fingerprint))
            } else {
                peers::update(conn, rec)?;
                (Action::Updated, Some(old.fingerprint))
            }
        }
    };
    Ok(Registered {
        party_id: rec.party_id.to_string(),
        component: rec.role.component(),
        ip: rec.endpoint.host.to_string(),
        port: rec.endpoint.port,
        fingerprint: rec.fingerprint,
        previous_fingerprint,
        action,
        fingerprint_checked: p.fingerprint_checked,
        warnings: p.warnings.clone(),
    })
}

/// Registers one peer in the store of `home`: validates everything, then writes in one transaction.
pub fn register(home: &Home, req: &RegisterRequest, now: OffsetDateTime) -> Result<Registered> {
    let own = identity::load(home)?;
    let prepared = prepare(req, &own, now)?;
    let mut store = Store::open_party(home)?;
    store.write(|tx| apply(tx, &prepared))
}

/// Registers several peers in the store of `home` in one transaction: every request is validated
/// first, then all are written, or none (the first refusal names its request).
pub fn register_all(
    home: &Home,
    reqs: &[RegisterRequest],
    now: OffsetDateTime,
) -> Result<Vec<Registered>> {
    let own = identity::load(home)?;
    let prepared = reqs
        .iter()
        .map(|r| {
            prepare(r, &own, now).map_err(|e| {
                e.context(format!("while registering `{}` ({})", r.party_id, r.source))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut store = Store::open_party(home)?;
    store.write(|tx| {
        prepared
            .iter()
            .zip(reqs)
            .map(|(p, r)| {
                apply(tx, p).map_err(|e| {
                    e.context(format!("while registering `{}` ({})", r.party_id, r.source))
                })
            })
            .collect()
    })
}

/// Reads and checks a registration bundle file, turning it into a request. With
/// `allow_custom_id`, the bundle's party id may lack the `researcher_`/`node_` prefix
/// ([`PartyId::parse_custom`]); the role it states must still be the one the id names.
pub fn request_from_bundle(
    path: &Path,
    expect_fingerprint: Option<String>,
    upsert: bool,
    allow_custom_id: bool,
) -> Result<RegisterRequest> {
    let bytes = fs_secure::read_limited(path, MAX_BUNDLE_BYTES, "registration bundle")?;
    request_from_bundle_bytes(
        &bytes,
        &format!("`{}`", path.display()),
        expect_fingerprint,
        upsert,
        allow_custom_id,
    )
}

/// [`request_from_bundle`] for a bundle already in memory (e.g. the JSON a program received),
/// named by `name` in errors and in the recorded source (`bundle <name>`).
pub fn request_from_bundle_bytes(
    bytes: &[u8],
    name: &str,
    expect_fingerprint: Option<String>,
    upsert: bool,
    allow_custom_id: bool,
) -> Result<RegisterRequest> {
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(Error::invalid(format!(
            "registration bundle {name} is larger than {MAX_BUNDLE_BYTES} bytes"
        )));
    }
    let ctx = format!("while reading registration bundle {name}");
    let b: Bundle = serde_json::from_slice(bytes).map_err(|e| {
        Error::invalid(format!("not a registration bundle ({e})"))
            .with_hint("a bundle is the JSON written by `secagg certificate registration-instructions --format json`")
            .context(&ctx)
    })?;
    check_file_kind(
        "bundle",
        (&b.format, BUNDLE_FORMAT),
        (b.version, BUNDLE_VERSION),
    )
    .map_err(|e| e.context(&ctx))?;
    let id = PartyId::parse_entry(&b.party_id, allow_custom_id).map_err(|e| e.context(&ctx))?;
    if id.role() != b.role {
        return Err(Error::invalid(format!(
            "party `{id}` is a {} but the bundle says {}",
            id.role(),
            b.role
        ))
        .context(&ctx));
    }
    let cert = Certificate::parse(b.certificate.as_bytes(), "in the bundle")
        .map_err(|e| e.context(&ctx))?;
    if !cert.fingerprint.ct_eq(&b.fingerprint) {
        return Err(Error::invalid(format!(
            "the bundle is damaged: its fingerprint {} does not match its certificate ({})",
            b.fingerprint, cert.fingerprint
        ))
        .context(&ctx));
    }
    let endpoint = Endpoint::new(&b.ip, u32::from(b.port))?;
    let display_name = b
        .name
        .as_deref()
        .map(crate::party::check_display_name)
        .transpose()
        .map_err(|e| e.context(&ctx))?;
    Ok(RegisterRequest {
        party_id: id,
        endpoint,
        certificate: CertificateSource::Bytes {
            bytes: b.certificate.into_bytes(),
            name: format!("in bundle {name}"),
        },
        expect_fingerprint,
        upsert,
        source: format!("bundle {}", name.trim_matches('`')),
        name: display_name,
    })
}

/// Deletes the registration of `id`; not-found is an error.
pub fn delete(home: &Home, id: &PartyId) -> Result<PeerRecord> {
    let mut store = Store::open_party(home)?;
    store.write(|tx| {
        let rec = peers::get(tx, id)?.ok_or_else(|| not_registered(id))?;
        peers::delete(tx, id)?;
        Ok(rec)
    })
}

/// The registration of `id`.
pub fn show(home: &Home, id: &PartyId) -> Result<PeerRecord> {
    let mut store = Store::open_party_read_only(home)?;
    store.read(|tx| peers::get(tx, id)?.ok_or_else(|| not_registered(id)))
}

/// Every registration, ordered by party id.
pub fn list(home: &Home) -> Result<Vec<PeerRecord>> {
    let mut store = Store::open_party_read_only(home)?;
    store.read(|tx| peers::list(tx))
}

/// The error for an unregistered party.
pub fn not_registered(id: &PartyId) -> Error {
    Error::not_found(format!("party `{id}` is not registered"))
        .with_hint("see `secagg certificate list`; register it with `secagg certificate register`")
}

/// The `format` and `version` fields every secagg JSON file starts with (bundles, rosters):
/// `(found, expected)` each; `kind` names the file in the version error.
pub(crate) fn check_file_kind(kind: &str, format: (&str, &str), version: (u32, u32)) -> Result<()> {
    if format.0 != format.1 {
        return Err(Error::invalid(format!(
            "format is `{}`, expected `{}`",
            format.0, format.1
        )));
    }
    if version.0 != version.1 {
        return Err(Error::invalid(format!(
            "{kind} version {} is not supported (this secagg reads version {})",
            version.0, version.1
        )));
    }
    Ok(())
}

#[cfg(test)]
mod file_kind_tests {
    use super::*;

    /// A bundle of another format or a newer version is refused by name, with both values (the
    /// check bundles and rosters share).
    #[test]
    fn a_bundle_of_another_format_or_version_is_refused() {
        let mut v = serde_json::json!({
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION + 1, "party_id": "node_x",
            "role": "node", "ip": "127.0.0.1", "port": 1,
            "certificate": "", "fingerprint": format!("SHA256:{}", "0".repeat(64)),
        });
        let bytes = serde_json::to_vec(&v).unwrap();
        let e = request_from_bundle_bytes(&bytes, "b.json", None, false, false).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(
            e.to_string().contains(&format!(
                "bundle version {} is not supported (this secagg reads version {BUNDLE_VERSION})",
                BUNDLE_VERSION + 1
            )),
            "{e}"
        );
        assert!(e.to_string().contains("b.json"), "{e}");
        v["format"] = "something-else".into();
        let bytes = serde_json::to_vec(&v).unwrap();
        let e = request_from_bundle_bytes(&bytes, "b.json", None, false, false).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "format is `something-else`, expected `{BUNDLE_FORMAT}`"
            )),
            "{e}"
        );
    }

    #[test]
    fn a_roster_of_a_newer_version_is_refused() {
        use crate::roster::{UnverifiedRoster, ROSTER_FORMAT, ROSTER_VERSION};
        let v = serde_json::json!({
            "format": ROSTER_FORMAT, "version": ROSTER_VERSION + 1, "issuer": "researcher_x",
            "payload": "", "signature_scheme": "", "signature": "",
        });
        let e = UnverifiedRoster::parse(&serde_json::to_vec(&v).unwrap(), "r.json").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(
            e.to_string().contains(&format!(
                "roster version {} is not supported (this secagg reads version {ROSTER_VERSION})",
                ROSTER_VERSION + 1
            )),
            "{e}"
        );
    }
}
