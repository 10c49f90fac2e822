//! Signed rosters: a federation in O(N) out-of-band checks instead of N(N−1).
//!
//! **Trust model.** Each node checks the researcher's fingerprint out of band once and registers
//! it; the researcher checks each node's fingerprint once and registers it. The researcher then
//! vouches for the federation: [`export`] writes a roster of itself and every party it registered
//! (party id, role, endpoint, certificate, fingerprint), signed with its identity key. A node that
//! [`import`]s it trusts the researcher to vouch for the other nodes, as NVFlare's central
//! provisioning does: a dishonest researcher could slip in parties it controls. The safeguards: a
//! party registered by hand is never replaced by a roster entry with another certificate unless
//! the importer allows it, `expect_fingerprints` pins chosen entries to fingerprints received out
//! of band, every change is shown before it is written, and the manual path stays for federations
//! that want every pair checked.
//!
//! **A roster vouches for nodes, not for researchers.** A researcher registered here may request
//! sessions of this party's agent and issue rosters it imports; a roster that could register one
//! would hand those rights on. So an import refuses a roster that registers or changes a
//! researcher other than its issuer unless the importer names it
//! ([`ImportOptions::allow_researchers`]), and refuses a roster whose issuer was itself brought in
//! by a roster unless it is named too; [`show`] lists such researchers apart. Even a named one
//! stays roster-registered ([`PeerRecord::registered_by_hand`]): the agent takes its session
//! requests only when its operator names it as well.
//!
//! **The file.** A JSON document with the signed payload as base64 (the exact bytes that were
//! signed) and the signature (see [`signature`]), so verification never depends on how JSON is
//! re-serialised. The payload names the issuer and its certificate's fingerprint, a serial number
//! that grows with every export, the issue and expiry times, and the parties.
//!
//! **Import**, all in one store transaction (a refused roster changes nothing): the issuer must be
//! a researcher registered here (by hand, or named by the importer) and the signature must verify
//! with that registered certificate;
//! the serial must be higher than the last one imported from that issuer and the roster must not
//! have expired; every entry passes exactly the checks of `certificate register`
//! ([`registration::prepare`] and [`registration::apply`]); an entry for this party must carry
//! this party's own certificate and endpoint; `prune` removes parties that came from this issuer's
//! rosters and are no longer listed (never those registered by hand).

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::certificate::{self, Certificate, Fingerprint};
use crate::error::{Error, Result};
use crate::fs_secure;
use crate::identity::Identity;
use crate::party::{Endpoint, PartyId, Role};
use crate::peers::{origin, PeerRecord, ROSTER_SOURCE_PREFIX};
use crate::registration::{self, CertificateSource, PreparedRegistration, RegisterRequest};
use crate::signing;
use crate::store::{peers, roster_serials, Store};

/// `format` of a roster file.
pub const ROSTER_FORMAT: &str = "secagg-roster";

/// The roster file version this secagg writes and reads.
pub const ROSTER_VERSION: u32 = 1;

/// Largest roster file accepted (1000 parties with 4096-bit RSA certificates fit in 8 MiB).
pub const MAX_ROSTER_BYTES: u64 = 16 * 1024 * 1024;

/// Default validity of an exported roster.
pub const DEFAULT_VALIDITY_DAYS: u32 = 30;

/// Longest validity [`export`] accepts.
pub const MAX_VALIDITY_DAYS: u32 = 366;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Where a researcher keeps a copy of its latest exported roster, which its agent serves to the
/// nodes (`secagg roster pull`).
pub fn latest_path(home: &crate::home::Home) -> std::path::PathBuf {
    home.root().join("roster.json")
}

/// The roster a party holds, as its agent reports it to `asker` (`secagg federation check`): a
/// researcher, the last roster it exported (its own serial); a node asked by a researcher, the
/// last roster it imported from that researcher (none if none); a node asked by another party,
/// the roster it imported last, whoever issued it. Returns the issuer and the serial.
pub fn held_serial(
    home: &crate::home::Home,
    me: &PartyId,
    asker: &PartyId,
) -> Result<Option<(PartyId, u64)>> {
    let mut store = Store::open_party_read_only(home)?;
    store.read(|tx| {
        let issuer = if me.role() == Role::Researcher {
            Some(me)
        } else if asker.role() == Role::Researcher {
            Some(asker)
        } else {
            None
        };
        match issuer {
            Some(i) => Ok(roster_serials::get(tx, i)?.map(|s| (i.clone(), s))),
            None => match roster_serials::latest(tx)? {
                // A row that does not name a party id cannot have been written by an import.
                Some((i, s)) => Ok(PartyId::parse(&i).ok().map(|i| (i, s))),
                None => Ok(None),
            },
        }
    })
}

impl RosterFile {
    /// The file's text as written to disk (pretty JSON and a final newline).
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// A roster file as written to disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RosterFile {
    /// Always [`ROSTER_FORMAT`].
    pub format: String,
    /// Always [`ROSTER_VERSION`].
    pub version: u32,
    /// The issuer's party id (repeated inside the payload; the two must agree).
    pub issuer: String,
    /// The signed payload (JSON), base64.
    pub payload: String,
    /// The signature scheme ([`crate::signing::scheme_name`]).
    pub signature_scheme: String,
    /// The signature over the domain label and the payload bytes, base64.
    pub signature: String,
}

/// The signed content of a roster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Payload {
    format: String,
    version: u32,
    issuer: String,
    issuer_fingerprint: Fingerprint,
    serial: u64,
    issued_at: String,
    expires_at: String,
    parties: Vec<RosterEntry>,
}

/// One party of a roster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RosterEntry {
    /// The party's id.
    pub party_id: String,
    /// Its role.
    pub role: Role,
    /// MPC host.
    pub ip: String,
    /// MPC port.
    pub port: u16,
    /// Its certificate, PEM.
    pub certificate: String,
    /// SHA-256 fingerprint of the certificate.
    pub fingerprint: Fingerprint,
    /// Its display name, if it has one (checked as `init --name` on import; never identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A roster whose signature has been verified.
#[derive(Debug, Clone, Serialize)]
pub struct Roster {
    /// The researcher that signed it.
    pub issuer: String,
    /// Fingerprint of the issuer's certificate (the one that verified the signature).
    pub issuer_fingerprint: Fingerprint,
    /// Serial number.
    pub serial: u64,
    /// When it was issued (RFC 3339).
    pub issued_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// The parties, the issuer first.
    pub parties: Vec<RosterEntry>,
}

impl Roster {
    /// The researchers it lists besides its issuer, which importers refuse unless they name
    /// them (see the module documentation).
    pub fn other_researchers(&self) -> impl Iterator<Item = &RosterEntry> {
        self.parties
            .iter()
            .filter(|e| e.role == Role::Researcher && e.party_id != self.issuer)
    }
}

/// What [`export`] produced.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The file to write.
    pub file: RosterFile,
    /// Its content.
    pub roster: Roster,
    /// Registered parties left out (expired certificates), one line each.
    pub omitted: Vec<String>,
}

/// Options of [`export`].
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Days until the roster expires (1 to [`MAX_VALIDITY_DAYS`]).
    pub validity_days: u32,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            validity_days: DEFAULT_VALIDITY_DAYS,
        }
    }
}

/// Signs a roster of `researcher` (its identity as loaded, endpoint override applied) and every
/// party registered in its store. The serial is one more than the last export's (1 for the
/// first), recorded in the same transaction; a copy goes to [`latest_path`] for the agent to
/// serve. Registered parties whose certificate has expired are left out (a node would
/// refuse the whole roster for them) and named in [`Exported::omitted`].
pub fn export(
    researcher: &Identity,
    opts: &ExportOptions,
    now: OffsetDateTime,
) -> Result<Exported> {
    if researcher.role != Role::Researcher {
        return Err(Error::invalid(format!(
            "`{}` is a node: only the researcher issues rosters",
            researcher.party_id
        ))
        .with_hint("nodes import the researcher's roster with `secagg roster import FILE`"));
    }
    if opts.validity_days == 0 || opts.validity_days > MAX_VALIDITY_DAYS {
        return Err(Error::invalid(format!(
            "a roster validity of {} days is out of range (1 to {MAX_VALIDITY_DAYS})",
            opts.validity_days
        )));
    }
    let key = researcher.private_key_der()?;
    let key_type = researcher.certificate.key_type.ok_or_else(|| {
        Error::invalid("this party's certificate has an unsupported key type: it cannot sign")
    })?;
    let expires = now + time::Duration::days(i64::from(opts.validity_days));
    let mut store = Store::open_party(&researcher.home)?;
    store.write(|tx| {
        let registered = peers::list(tx)?;
        let mut omitted = Vec::new();
        let mut parties = vec![RosterEntry {
            party_id: researcher.party_id.to_string(),
            role: Role::Researcher,
            ip: researcher.endpoint.host.to_string(),
            port: researcher.endpoint.port,
            certificate: researcher.certificate.pem.clone(),
            fingerprint: researcher.certificate.fingerprint,
            name: researcher.name.clone(),
        }];
        for p in &registered {
            if p.not_after <= now {
                omitted.push(format!(
                    "`{}` is left out: its certificate expired on {}",
                    p.party_id,
                    certificate::format_time(p.not_after)
                ));
                continue;
            }
            parties.push(entry_of(p));
        }
        let serial = roster_serials::get(tx, &researcher.party_id)?.unwrap_or(0) + 1;
        roster_serials::set(tx, &researcher.party_id, serial, now)?;
        let payload = Payload {
            format: format!("{ROSTER_FORMAT}-payload"),
            version: ROSTER_VERSION,
            issuer: researcher.party_id.to_string(),
            issuer_fingerprint: researcher.certificate.fingerprint,
            serial,
            issued_at: certificate::format_time(now),
            expires_at: certificate::format_time(expires),
            parties,
        };
        let bytes = serde_json::to_vec(&payload).map_err(|e| Error::Internal(e.to_string()))?;
        let (scheme, sig) = signing::sign(signing::Purpose::Roster, &bytes, &key, key_type)?;
        let exported = Exported {
            file: RosterFile {
                format: ROSTER_FORMAT.to_owned(),
                version: ROSTER_VERSION,
                issuer: payload.issuer.clone(),
                payload: B64.encode(&bytes),
                signature_scheme: scheme.to_owned(),
                signature: B64.encode(sig),
            },
            roster: roster_of(payload),
            omitted,
        };
        // Written before the serial commits: a failure here leaves no gap in what was served.
        fs_secure::write_atomic(
            &latest_path(&researcher.home),
            exported.file.to_text().as_bytes(),
            crate::home::PUBLIC_FILE_MODE,
        )?;
        Ok(exported)
    })
}

fn entry_of(p: &PeerRecord) -> RosterEntry {
    RosterEntry {
        party_id: p.party_id.to_string(),
        role: p.role,
        ip: p.endpoint.host.to_string(),
        port: p.endpoint.port,
        certificate: p.certificate_pem(),
        fingerprint: p.fingerprint,
        name: p.name.clone(),
    }
}

fn roster_of(p: Payload) -> Roster {
    Roster {
        issuer: p.issuer,
        issuer_fingerprint: p.issuer_fingerprint,
        serial: p.serial,
        issued_at: p.issued_at,
        expires_at: p.expires_at,
        parties: p.parties,
    }
}

/// A roster file read from disk, not yet verified.
#[derive(Debug, Clone)]
pub struct UnverifiedRoster {
    name: String,
    issuer: String,
    scheme: String,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl UnverifiedRoster {
    /// Reads and decodes a roster file (size-limited; format and version checked).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs_secure::read_limited(path, MAX_ROSTER_BYTES, "roster")?;
        Self::parse(&bytes, &format!("`{}`", path.display()))
    }

    /// Decodes roster file bytes; `name` names them in errors.
    pub fn parse(bytes: &[u8], name: &str) -> Result<Self> {
        let ctx = format!("while reading roster {name}");
        let file: RosterFile = serde_json::from_slice(bytes).map_err(|e| {
            Error::invalid(format!("not a roster ({})", quoted_error(&e)))
                .with_hint("a roster is the JSON written by `secagg roster export`")
                .context(&ctx)
        })?;
        crate::registration::check_file_kind(
            "roster",
            (&file.format, ROSTER_FORMAT),
            (file.version, ROSTER_VERSION),
        )
        .map_err(|e| e.context(&ctx))?;
        let decode = |what: &str, text: &str| {
            B64.decode(text.as_bytes()).map_err(|e| {
                Error::invalid(format!("its {what} is not valid base64 ({e})")).context(&ctx)
            })
        };
        Ok(UnverifiedRoster {
            name: name.to_owned(),
            payload: decode("payload", &file.payload)?,
            signature: decode("signature", &file.signature)?,
            issuer: file.issuer,
            scheme: file.signature_scheme,
        })
    }

    /// Verifies the signature with `certificate_der` (the certificate of `issuer` known here) and
    /// decodes the payload, checking it names the same issuer and certificate.
    fn verify(&self, issuer: &PartyId, certificate_der: &[u8]) -> Result<Payload> {
        let ctx = format!("while verifying roster {}", self.name);
        signing::verify(
            signing::Purpose::Roster,
            &self.payload,
            &self.scheme,
            &self.signature,
            certificate_der,
            issuer.as_str(),
        )
        .map_err(|e| e.context(&ctx))?;
        // Only signed bytes are parsed from here on.
        let payload: Payload = serde_json::from_slice(&self.payload).map_err(|e| {
            Error::invalid(format!(
                "its signed payload is not a roster ({})",
                quoted_error(&e)
            ))
            .context(&ctx)
        })?;
        if payload.format != format!("{ROSTER_FORMAT}-payload") || payload.version != ROSTER_VERSION
        {
            return Err(Error::invalid(format!(
                "its payload is `{}` version {}, expected `{ROSTER_FORMAT}-payload` version {ROSTER_VERSION}",
                payload.format, payload.version
            ))
            .context(&ctx));
        }
        if payload.issuer != issuer.as_str() {
            return Err(Error::authentication(format!(
                "the file names issuer `{}` but its signed payload names `{}`",
                issuer, payload.issuer
            ))
            .context(&ctx));
        }
        let fingerprint = Fingerprint::of_der(certificate_der);
        if !payload.issuer_fingerprint.ct_eq(&fingerprint) {
            return Err(Error::authentication(format!(
                "the roster names issuer certificate {} but `{issuer}`'s registered certificate is {fingerprint}",
                payload.issuer_fingerprint
            ))
            .context(&ctx));
        }
        Ok(payload)
    }
}

/// Options of [`plan_import`] and [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Remove parties that came from this issuer's rosters and are no longer listed.
    pub prune: bool,
    /// Let a roster entry replace the certificate of a party registered by hand (or vouched for
    /// by another issuer). A party named in `expect_fingerprints` may be replaced without it.
    pub allow_replace: bool,
    /// Accept roster entries whose party ids lack the `researcher_`/`node_` prefix.
    pub allow_custom_ids: bool,
    /// Fingerprints received out of band for chosen parties (`ID=FP`): each must be listed with
    /// exactly that certificate.
    pub expect_fingerprints: Vec<(PartyId, String)>,
    /// Researchers the importer accepts from this roster (`--allow-researcher`): listed besides
    /// the issuer, they may be registered or changed; as the issuer, their roster is accepted
    /// although a roster brought them in. Every id must be a researcher's.
    pub allow_researchers: Vec<PartyId>,
}

impl ImportOptions {
    fn allows(&self, id: &str) -> bool {
        self.allow_researchers.iter().any(|a| a.as_str() == id)
    }
}

/// What importing a roster does (or would do) to one party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// This party itself: its entry matches its own certificate and endpoint.
    ThisParty,
    /// A party not registered here: registered.
    New,
    /// Registered with the same certificate and endpoint: nothing changes.
    Unchanged,
    /// Registered with the same certificate at another endpoint: the endpoint is updated.
    EndpointChanged,
    /// Registered with another certificate: replaced (a party from this issuer's rosters, or any
    /// party with `allow_replace`).
    Replaced,
    /// From this issuer's rosters and no longer listed: deleted (`prune`).
    Removed,
}

impl Change {
    /// Whether this change writes to the store.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Change::New | Change::EndpointChanged | Change::Replaced | Change::Removed
        )
    }
}

/// One line of an import plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedChange {
    /// Party id.
    pub party_id: String,
    /// `RESEARCHER` / `NODE`.
    pub component: &'static str,
    /// What happens.
    pub change: Change,
    /// The endpoint after the import (`ip:port`).
    pub endpoint: String,
    /// The certificate's fingerprint after the import.
    pub fingerprint: Fingerprint,
    /// The endpoint before, when it changes.
    pub previous_endpoint: Option<String>,
    /// The certificate before, when it changes.
    pub previous_fingerprint: Option<Fingerprint>,
    /// Where the registration came from before (`manual` or `roster <issuer> #<serial>`), for
    /// parties already registered.
    pub previous_origin: Option<String>,
}

/// A researcher a roster lists besides its issuer (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedResearcher {
    /// Its party id.
    pub party_id: String,
    /// Its endpoint in the roster.
    pub endpoint: String,
    /// Its certificate's fingerprint in the roster.
    pub fingerprint: Fingerprint,
    /// What importing does to it.
    pub change: Change,
    /// Named by the importer (`--allow-researcher`).
    pub named: bool,
    /// The import refuses the roster for it: it would register or change it, unnamed.
    pub refused: bool,
}

/// What importing a roster does, or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportPlan {
    /// The verified roster's issuer.
    pub issuer: String,
    /// Its serial number.
    pub serial: u64,
    /// The last serial imported from this issuer before, if any.
    pub previous_serial: Option<u64>,
    /// When it expires.
    pub expires_at: String,
    /// One line per listed party, then one per pruned party.
    pub changes: Vec<PlannedChange>,
    /// Remarks that do not refuse the roster (loopback endpoints, this party not listed).
    pub warnings: Vec<String>,
    /// The researchers listed besides the issuer (also in `changes`), shown apart.
    pub other_researchers: Vec<ListedResearcher>,
    /// True once written ([`import`]); false for a plan ([`plan_import`]).
    pub applied: bool,
}

impl ImportPlan {
    /// Number of parties with `change`.
    pub fn count(&self, change: Change) -> usize {
        self.changes.iter().filter(|c| c.change == change).count()
    }

    /// Whether importing writes registrations (the serial is recorded in any case).
    pub fn writes(&self) -> bool {
        self.changes.iter().any(|c| c.change.writes())
    }
}

fn roster_source(issuer: &str, serial: u64) -> String {
    format!("{ROSTER_SOURCE_PREFIX}{issuer} #{serial}")
}

fn from_issuer(source: &str, issuer: &str) -> bool {
    source
        .strip_prefix(ROSTER_SOURCE_PREFIX)
        .and_then(|rest| rest.strip_prefix(issuer))
        .is_some_and(|rest| rest.starts_with(" #"))
}

/// Verifies `roster` as issued by a party registered in `own`'s store (or by `own` itself) and
/// says what importing it would change, writing nothing (the import is rehearsed in a
/// transaction that is rolled back). For a roster `own` issued, the plan is `None`.
pub fn show(
    own: &Identity,
    roster: &UnverifiedRoster,
    opts: &ImportOptions,
    now: OffsetDateTime,
) -> Result<(Roster, Option<ImportPlan>)> {
    if roster.issuer == own.party_id.as_str() {
        let payload = roster.verify(&own.party_id, &own.certificate.der)?;
        return Ok((roster_of(payload), None));
    }
    let mut store = Store::open_party(&own.home)?;
    let (roster, plan) = store.rehearse(|tx| apply(tx, own, roster, opts, Rehearsal::Show, now))?;
    Ok((roster, Some(plan)))
}

/// Whether [`apply`] refuses a roster for the researchers it lists besides its issuer: an import
/// and its plan do; [`show`] lists them (with `refused`) so that they can be reviewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rehearsal {
    Show,
    Import,
}

/// [`show`] for a party that is not the issuer: the plan of an import, written nowhere.
pub fn plan_import(
    own: &Identity,
    roster: &UnverifiedRoster,
    opts: &ImportOptions,
    now: OffsetDateTime,
) -> Result<ImportPlan> {
    let mut store = Store::open_party(&own.home)?;
    store
        .rehearse(|tx| apply(tx, own, roster, opts, Rehearsal::Import, now))
        .map(|(_, plan)| plan)
}

/// Imports `roster` into `own`'s store in one transaction (see the module documentation for the
/// checks). With `confirmed`, the plan the user agreed to: if the store changed since and the
/// import would now do something else, nothing is written and the error says so.
pub fn import(
    own: &Identity,
    roster: &UnverifiedRoster,
    opts: &ImportOptions,
    confirmed: Option<&ImportPlan>,
    now: OffsetDateTime,
) -> Result<ImportPlan> {
    let mut store = Store::open_party(&own.home)?;
    store.write(|tx| {
        let (_, mut plan) = apply(tx, own, roster, opts, Rehearsal::Import, now)?;
        if let Some(c) = confirmed {
            if c.changes != plan.changes || c.serial != plan.serial {
                return Err(Error::conflict(
                    "the store changed while the roster's changes were shown: nothing was imported",
                )
                .with_hint("run the import again and review the changes it shows"));
            }
        }
        plan.applied = true;
        Ok(plan)
    })
}

/// Verifies, checks and applies `roster` inside `tx`; the caller commits or rolls back.
fn apply(
    tx: &rusqlite::Connection,
    own: &Identity,
    roster: &UnverifiedRoster,
    opts: &ImportOptions,
    rehearsal: Rehearsal,
    now: OffsetDateTime,
) -> Result<(Roster, ImportPlan)> {
    let ctx = format!("while importing roster {}", roster.name);
    let issuer = PartyId::parse_custom(&roster.issuer).map_err(|e| e.context(&ctx))?;
    if let Some(node) = opts
        .allow_researchers
        .iter()
        .find(|a| a.role() != Role::Researcher)
    {
        return Err(Error::invalid(format!(
            "`{node}` is a node: --allow-researcher names researchers"
        )));
    }
    if issuer == own.party_id {
        return Err(Error::invalid(format!(
            "roster {} was issued by this party: there is nothing to import",
            roster.name
        ))
        .with_hint("send it to the nodes; they import it"));
    }
    let Some(issuer_record) = peers::get(tx, &issuer)? else {
        return Err(Error::not_found(format!(
            "the roster's issuer `{issuer}` is not registered here"
        ))
        .with_hint("register the researcher first (its bundle, with --expect-fingerprint checked out of band), then import its roster")
        .context(&ctx));
    };
    if issuer_record.role != Role::Researcher {
        return Err(Error::authentication(format!(
            "the roster is issued by `{issuer}`, a node: only a researcher vouches for a federation"
        ))
        .context(&ctx));
    }
    if !issuer_record.registered_by_hand() && !opts.allows(issuer.as_str()) {
        return Err(Error::authentication(format!(
            "the roster's issuer `{issuer}` was registered here by a roster ({}), not by hand: a roster vouches for nodes, not for researchers that issue rosters",
            origin(&issuer_record.source)
        ))
        .with_hint(format!(
            "check `{issuer}`'s fingerprint out of band and register it by hand (`secagg certificate register --bundle FILE --upsert --expect-fingerprint FP`), or import with --allow-researcher {issuer}"
        ))
        .context(&ctx));
    }
    let payload = roster.verify(&issuer, &issuer_record.certificate_der)?;
    let previous_serial = roster_serials::get(tx, &issuer)?;
    if let Some(last) = previous_serial {
        if payload.serial <= last {
            let what = if payload.serial == last {
                format!("roster #{last} of `{issuer}` is already imported here")
            } else {
                format!(
                    "roster #{} of `{issuer}` is older than #{last}, already imported here",
                    payload.serial
                )
            };
            return Err(Error::conflict(what)
            .with_hint("an older roster cannot be imported again (it may be a replay); ask the researcher for its latest export")
            .context(&ctx));
        }
    }
    let expires = parse_time(&payload.expires_at, "expires_at").map_err(|e| e.context(&ctx))?;
    if expires <= now {
        return Err(Error::invalid(format!(
            "roster #{} of `{issuer}` expired on {}",
            payload.serial, payload.expires_at
        ))
        .with_hint("ask the researcher for a fresh export (`secagg roster export`)")
        .context(&ctx));
    }
    let source = roster_source(issuer.as_str(), payload.serial);
    let mut plan = ImportPlan {
        issuer: issuer.to_string(),
        serial: payload.serial,
        previous_serial,
        expires_at: payload.expires_at.clone(),
        changes: Vec::with_capacity(payload.parties.len()),
        warnings: Vec::new(),
        other_researchers: Vec::new(),
        applied: false,
    };
    // Everything that needs no store (certificate parsing and signature checks dominate) runs
    // on all cores; the store is then consulted and written entry by entry.
    let entry_context = |i: usize| {
        format!(
            "{ctx}: entry {i} (`{}`)",
            payload.parties[i].party_id.escape_debug()
        )
    };
    let checked = crate::parallel::map_indexed(payload.parties.len(), |i| {
        check_entry(&payload.parties[i], own, &source, opts, now)
            .map_err(|e| e.context(entry_context(i)))
    })?;
    let mut listed = BTreeSet::new();
    for (i, entry) in checked.into_iter().enumerate() {
        let (line, warnings) = apply_entry(tx, &issuer_record, entry, opts, &mut listed)
            .map_err(|e| e.context(entry_context(i)))?;
        plan.warnings.extend(warnings);
        if payload.parties[i].role == Role::Researcher && line.change != Change::ThisParty {
            if let Some(r) = other_researcher(&line, &issuer, opts) {
                plan.other_researchers.push(r);
            }
        }
        plan.changes.push(line);
    }
    check_other_researchers(&mut plan, &issuer, &payload.parties, opts, rehearsal)
        .map_err(|e| e.context(&ctx))?;
    for (id, fp) in &opts.expect_fingerprints {
        let Some(entry) = payload.parties.iter().find(|e| e.party_id == id.as_str()) else {
            return Err(Error::not_found(format!(
                "`{id}` (given with --expect-fingerprint) is not in the roster"
            ))
            .context(&ctx));
        };
        let expected = Fingerprint::parse(fp)?;
        if !expected.ct_eq(&entry.fingerprint) {
            return Err(Error::authentication(format!(
                "the roster gives `{id}` certificate {}, not the expected {expected}",
                entry.fingerprint
            ))
            .with_hint("do not import it: the researcher vouches for a certificate that is not the one this party received out of band")
            .context(&ctx));
        }
    }
    if !listed.contains(&own.party_id) {
        plan.warnings.push(format!(
            "this party (`{}`) is not in the roster: the researcher has not registered it",
            own.party_id
        ));
    }
    if opts.prune {
        for p in peers::list(tx)? {
            if from_issuer(&p.source, issuer.as_str()) && !listed.contains(&p.party_id) {
                peers::delete(tx, &p.party_id)?;
                plan.changes.push(PlannedChange {
                    party_id: p.party_id.to_string(),
                    component: p.role.component(),
                    change: Change::Removed,
                    endpoint: p.endpoint.to_string(),
                    fingerprint: p.fingerprint,
                    previous_endpoint: None,
                    previous_fingerprint: None,
                    previous_origin: Some(origin(&p.source)),
                });
            }
        }
    }
    roster_serials::set(tx, &issuer, payload.serial, now)?;
    Ok((roster_of(payload), plan))
}

/// `line`'s researcher, if it is not the roster's issuer: refused when the import would register
/// or change it and the importer did not name it.
fn other_researcher(
    line: &PlannedChange,
    issuer: &PartyId,
    opts: &ImportOptions,
) -> Option<ListedResearcher> {
    if line.party_id == issuer.as_str() {
        return None;
    }
    let named = opts.allows(&line.party_id);
    Some(ListedResearcher {
        party_id: line.party_id.clone(),
        endpoint: line.endpoint.clone(),
        fingerprint: line.fingerprint,
        change: line.change,
        named,
        refused: line.change.writes() && !named,
    })
}

/// Refuses a roster that would register or change researchers besides its issuer that the
/// importer did not name (a [`Rehearsal::Show`] only lists them), and notes what a named one
/// still cannot do here.
fn check_other_researchers(
    plan: &mut ImportPlan,
    issuer: &PartyId,
    parties: &[RosterEntry],
    opts: &ImportOptions,
    rehearsal: Rehearsal,
) -> Result<()> {
    let refused: Vec<String> = plan
        .other_researchers
        .iter()
        .filter(|r| r.refused)
        .map(|r| format!("`{}`", r.party_id))
        .collect();
    if !refused.is_empty() && rehearsal == Rehearsal::Import {
        return Err(Error::authentication(format!(
            "the roster registers or changes researcher{} {} besides its issuer `{issuer}`: a roster vouches for nodes, and a researcher registered here could request sessions and issue rosters",
            if refused.len() > 1 { "s" } else { "" },
            refused.join(", ")
        ))
        .with_hint("if this party should know them, check each fingerprint out of band, then import with --allow-researcher ID for each (`secagg roster show FILE`, or `secagg roster pull --dry-run`, lists them); otherwise ask the researcher for a roster without them"));
    }
    for r in plan
        .other_researchers
        .iter()
        .filter(|r| r.named && r.change.writes())
    {
        plan.warnings.push(format!(
            "researcher `{}` comes from the roster (--allow-researcher): this party's agent takes its session requests only when started with `secagg serve --allow-researcher {}`",
            r.party_id, r.party_id
        ));
    }
    for a in &opts.allow_researchers {
        if *a != *issuer && !parties.iter().any(|e| e.party_id == a.as_str()) {
            plan.warnings.push(format!(
                "--allow-researcher `{a}`: the roster does not list it"
            ));
        }
    }
    Ok(())
}

/// A roster entry after the checks that need no store.
struct CheckedEntry {
    id: PartyId,
    endpoint: Endpoint,
    fingerprint: Fingerprint,
    /// The registration to apply; `None` for this party's own entry (checked against its own
    /// certificate and endpoint, never registered).
    prepared: Option<PreparedRegistration>,
}

/// Checks one entry as `certificate register` checks a registration, without the store.
fn check_entry(
    entry: &RosterEntry,
    own: &Identity,
    source: &str,
    opts: &ImportOptions,
    now: OffsetDateTime,
) -> Result<CheckedEntry> {
    let id = PartyId::parse_entry(&entry.party_id, opts.allow_custom_ids)?;
    if id.role() != entry.role {
        return Err(Error::invalid(format!(
            "party `{id}` is a {} but the roster says {}",
            id.role(),
            entry.role
        )));
    }
    let endpoint = Endpoint::new(&entry.ip, u32::from(entry.port))?;
    let cert = Certificate::parse(entry.certificate.as_bytes(), "in the roster")?;
    if !cert.fingerprint.ct_eq(&entry.fingerprint) {
        return Err(Error::invalid(format!(
            "its fingerprint {} does not match its certificate ({})",
            entry.fingerprint, cert.fingerprint
        )));
    }
    if id == own.party_id {
        if !cert.fingerprint.ct_eq(&own.certificate.fingerprint) {
            return Err(Error::authentication(format!(
                "the roster gives this party certificate {}, but its own is {}",
                cert.fingerprint, own.certificate.fingerprint
            ))
            .with_hint("the researcher holds a wrong certificate for this party: do not import; send it this party's registration bundle again"));
        }
        if endpoint != own.endpoint {
            return Err(Error::conflict(format!(
                "the roster gives this party endpoint {endpoint}, but its own is {}",
                own.endpoint
            ))
            .with_hint("the researcher holds an old endpoint for this party: send it this party's registration bundle again"));
        }
        return Ok(CheckedEntry {
            id,
            endpoint,
            fingerprint: cert.fingerprint,
            prepared: None,
        });
    }
    let req = RegisterRequest {
        party_id: id.clone(),
        endpoint: endpoint.clone(),
        certificate: CertificateSource::Bytes {
            bytes: entry.certificate.clone().into_bytes(),
            name: "in the roster".to_owned(),
        },
        expect_fingerprint: None,
        upsert: true,
        source: source.to_owned(),
        name: entry.name.clone(),
    };
    Ok(CheckedEntry {
        prepared: Some(registration::prepare(&req, own, now)?),
        id,
        endpoint,
        fingerprint: cert.fingerprint,
    })
}

/// Applies one checked entry inside the import's transaction; returns its line of the plan and
/// its warnings.
fn apply_entry(
    tx: &rusqlite::Connection,
    issuer: &PeerRecord,
    entry: CheckedEntry,
    opts: &ImportOptions,
    listed: &mut BTreeSet<PartyId>,
) -> Result<(PlannedChange, Vec<String>)> {
    let CheckedEntry {
        id,
        endpoint,
        fingerprint,
        prepared,
    } = entry;
    if !listed.insert(id.clone()) {
        return Err(Error::invalid(format!("party `{id}` is listed twice")));
    }
    let line = |change, previous: Option<&PeerRecord>| PlannedChange {
        party_id: id.to_string(),
        component: id.role().component(),
        change,
        endpoint: endpoint.to_string(),
        fingerprint,
        previous_endpoint: previous
            .filter(|p| p.endpoint != endpoint)
            .map(|p| p.endpoint.to_string()),
        previous_fingerprint: previous
            .filter(|p| p.fingerprint != fingerprint)
            .map(|p| p.fingerprint),
        previous_origin: previous.map(|p| origin(&p.source)),
    };
    let Some(prepared) = prepared else {
        return Ok((line(Change::ThisParty, None), Vec::new()));
    };
    if id == issuer.party_id && !fingerprint.ct_eq(&issuer.fingerprint) {
        return Err(Error::authentication(format!(
            "the roster gives its own issuer certificate {fingerprint}, but the one registered here is {}",
            issuer.fingerprint
        )));
    }
    let existing = peers::get(tx, &id)?;
    let change = match &existing {
        None => Change::New,
        Some(old) if old.fingerprint == fingerprint && old.endpoint == endpoint => {
            Change::Unchanged
        }
        Some(old) if old.fingerprint == fingerprint => Change::EndpointChanged,
        Some(old) => {
            // A fingerprint given for this party out of band (checked against the roster below)
            // is as good as --allow-replace for it.
            let vouched_here = opts.expect_fingerprints.iter().any(|(e, _)| *e == id);
            if !(opts.allow_replace
                || vouched_here
                || from_issuer(&old.source, issuer.party_id.as_str()))
            {
                return Err(Error::conflict(format!(
                    "`{id}` is registered here ({}) with certificate {}, and the roster gives {fingerprint}",
                    origin(&old.source),
                    old.fingerprint,
                ))
                .with_hint("check the new certificate's fingerprint with the party out of band; then import with --allow-replace (or --expect-fingerprint ID=FP)"));
            }
            Change::Replaced
        }
    };
    if change == Change::Unchanged {
        return Ok((line(change, existing.as_ref()), Vec::new()));
    }
    // A registration by hand keeps its origin when only its endpoint moves; everything the roster
    // brings in or replaces is recorded as coming from it (and can be pruned with it).
    let prepared = match &existing {
        Some(old) if change == Change::EndpointChanged => prepared.with_source(old.source.clone()),
        _ => prepared,
    };
    let done = registration::apply(tx, &prepared)?;
    Ok((line(change, existing.as_ref()), done.warnings))
}

fn parse_time(text: &str, field: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|e| {
        Error::invalid(format!(
            "its `{field}` `{text}` is not an RFC 3339 time ({e})"
        ))
    })
}

/// A JSON error about a roster, whose message may quote the file's bytes (which came from
/// another party): escaped and bounded, so it can neither forge lines nor carry terminal escapes.
fn quoted_error(e: &serde_json::Error) -> String {
    crate::untrusted_text::escape_bounded(&e.to_string(), crate::untrusted_text::LOG_TEXT_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::GeneratedKeyType;
    use crate::home::Home;
    use crate::identity::{self, InitOptions};
    use crate::registration::{self, Action};

    /// A demo federation (researcher, two nodes, roster #1 imported) whose researcher then
    /// registers another researcher and exports roster #2. Returns the directory, the first
    /// node's identity, the other researcher's registration request and roster #2.
    fn with_another_researcher() -> (
        tempfile::TempDir,
        Identity,
        RegisterRequest,
        UnverifiedRoster,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let fed = crate::demo::prepare(&dir.path().join("fed"), 2).unwrap();
        let now = OffsetDateTime::now_utc();
        let opts = InitOptions {
            role: Role::Researcher,
            id: Some("researcher_other".into()),
            host: Some("127.0.0.1".into()),
            port: Some(9),
            key_type: GeneratedKeyType::P256,
            validity_days: 30,
            force: false,
            allow_custom_id: false,
            name: None,
        };
        let other = identity::init(&Home::new(dir.path().join("other")), &opts, now).unwrap();
        let bundle = dir.path().join("other.json");
        let text = serde_json::to_vec(&registration::bundle(&other)).unwrap();
        std::fs::write(&bundle, text).unwrap();
        let request = registration::request_from_bundle(&bundle, None, true, false).unwrap();
        registration::register(&fed.parties[0].home, &request, now).unwrap();
        let researcher = identity::load(&fed.parties[0].home).unwrap();
        let exported = export(&researcher, &ExportOptions::default(), now).unwrap();
        let roster = UnverifiedRoster::parse(exported.file.to_text().as_bytes(), "#2").unwrap();
        let node = identity::load(&fed.parties[1].home).unwrap();
        (dir, node, request, roster)
    }

    fn other_record(node: &Identity) -> Option<PeerRecord> {
        let id = PartyId::parse("researcher_other").unwrap();
        Store::open_party(&node.home)
            .unwrap()
            .read(|tx| peers::get(tx, &id))
            .unwrap()
    }

    #[test]
    fn a_roster_registers_another_researcher_only_when_named_and_never_as_by_hand() {
        let (_dir, node, request, roster) = with_another_researcher();
        let now = OffsetDateTime::now_utc();
        let none = ImportOptions::default();
        let e = import(&node, &roster, &none, None, now).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Authentication, "{e}");
        assert!(
            e.to_string()
                .contains("researcher `researcher_other` besides its issuer"),
            "{e}"
        );
        assert!(e.hint().unwrap().contains("--allow-researcher ID"), "{e:?}");
        assert!(other_record(&node).is_none());
        // `show` lists it apart, refused, instead of failing.
        let (_, plan) = show(&node, &roster, &none, now).unwrap();
        let listed = &plan.unwrap().other_researchers;
        assert_eq!(listed.len(), 1);
        assert!(listed[0].refused && !listed[0].named);

        let named = ImportOptions {
            allow_researchers: vec![PartyId::parse("researcher_other").unwrap()],
            ..ImportOptions::default()
        };
        let plan = import(&node, &roster, &named, None, now).unwrap();
        assert!(plan
            .warnings
            .iter()
            .any(|w| w.contains("serve --allow-researcher")));
        let record = other_record(&node).unwrap();
        assert!(!record.registered_by_hand(), "{}", record.source);

        // Registering it by hand, same certificate and endpoint, makes it manual.
        let done = registration::register(&node.home, &request, now).unwrap();
        assert_eq!(done.action, Action::Updated);
        assert!(other_record(&node).unwrap().registered_by_hand());
    }

    #[test]
    fn allow_researcher_names_only_researchers() {
        let (_dir, node, _, roster) = with_another_researcher();
        let opts = ImportOptions {
            allow_researchers: vec![PartyId::parse("node_x").unwrap()],
            ..ImportOptions::default()
        };
        let e = plan_import(&node, &roster, &opts, OffsetDateTime::now_utc()).unwrap_err();
        assert!(e.to_string().contains("`node_x` is a node"), "{e}");
    }
}
