//! Registered peers: what this party's store holds of each party it registered (pinned
//! certificate, endpoint, origin), and what `secagg certificate list` shows of it.
//!
//! A leaf of types: the store's `peers` table and [`crate::registration`] both build on it.

use serde::Serialize;
use time::OffsetDateTime;

use crate::certificate::{self, Certificate, Fingerprint, KeyType, ValidityStatus};
use crate::error::{Error, Result};
use crate::party::{Endpoint, PartyId, Role};

/// One registered peer.
#[derive(Debug, Clone)]
pub struct PeerRecord {
    /// Party id.
    pub party_id: PartyId,
    /// Role (from the id prefix).
    pub role: Role,
    /// MPC endpoint.
    pub endpoint: Endpoint,
    /// The pinned certificate, DER.
    pub certificate_der: Vec<u8>,
    /// SHA-256 of `certificate_der`.
    pub fingerprint: Fingerprint,
    /// Key algorithm.
    pub key_type: KeyType,
    /// Subject line.
    pub subject: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// First registration.
    pub registered_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// Where the registration came from (`file <path>`, `bundle <path>`, `fedbiomed <path>#<doc>`).
    pub source: String,
    /// Its display name, from its bundle or a roster, if any (never used for identity).
    pub name: Option<String>,
}

impl PeerRecord {
    /// Builds a record for a validated certificate (`key_type` must be supported).
    pub fn new(
        party_id: PartyId,
        endpoint: Endpoint,
        cert: &Certificate,
        source: String,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let key_type = cert
            .key_type
            .ok_or_else(|| Error::Internal("unsupported key type reached the store".into()))?;
        Ok(PeerRecord {
            role: party_id.role(),
            party_id,
            endpoint,
            certificate_der: cert.der.clone(),
            fingerprint: cert.fingerprint,
            key_type,
            subject: cert.subject.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            registered_at: now,
            updated_at: now,
            source,
            name: None,
        })
    }

    /// The pinned certificate, parsed.
    pub fn certificate(&self) -> Result<Certificate> {
        Certificate::from_der(self.certificate_der.clone())
            .map_err(|e| e.context(format!("in the store, certificate of `{}`", self.party_id)))
    }

    /// The certificate as PEM.
    pub fn certificate_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("CERTIFICATE", self.certificate_der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// Whether this party was registered by hand (`certificate register`, a bundle, a
    /// Fed-BioMed store) rather than brought in by a roster. A roster vouches for nodes: a
    /// researcher it brought in may, by default, neither request sessions nor issue rosters here
    /// ([`crate::roster`], [`crate::agent`]).
    pub fn registered_by_hand(&self) -> bool {
        !self.source.starts_with(ROSTER_SOURCE_PREFIX)
    }

    /// Status of the certificate at `now`.
    pub fn status_at(&self, now: OffsetDateTime) -> ValidityStatus {
        ValidityStatus::of(self.not_before, self.not_after, now)
    }

    /// A printable, serializable summary at `now`.
    pub fn summary(&self, now: OffsetDateTime) -> PeerSummary {
        PeerSummary {
            party_id: self.party_id.to_string(),
            component: self.role.component(),
            ip: self.endpoint.host.to_string(),
            port: self.endpoint.port,
            key_type: self.key_type,
            fingerprint: self.fingerprint,
            not_after: certificate::format_time(self.not_after),
            days_left: (self.not_after - now).whole_days(),
            status: self.status_at(now),
            registered_at: certificate::format_time(self.registered_at),
            updated_at: certificate::format_time(self.updated_at),
            source: self.source.clone(),
            origin: origin(&self.source),
            name: self.name.clone(),
        }
    }
}

/// Prefix of the `source` of a registration that came from a signed roster
/// (`roster <issuer> #<serial>`, see [`crate::roster`]).
pub const ROSTER_SOURCE_PREFIX: &str = "roster ";

/// Where a registration came from, as `certificate list` shows it: `roster <issuer> #<serial>`
/// for one a roster brought in, `manual` for every other (registered by hand, from a bundle or
/// from a Fed-BioMed store).
pub fn origin(source: &str) -> String {
    if source.starts_with(ROSTER_SOURCE_PREFIX) {
        source.to_owned()
    } else {
        "manual".to_owned()
    }
}

/// What `certificate list` shows of a peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerSummary {
    /// Party id.
    pub party_id: String,
    /// `NODE` or `RESEARCHER` (Fed-BioMed's column).
    pub component: &'static str,
    /// MPC host.
    pub ip: String,
    /// MPC port.
    pub port: u16,
    /// Key algorithm.
    pub key_type: KeyType,
    /// Full fingerprint.
    pub fingerprint: Fingerprint,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Days until expiry (negative once expired).
    pub days_left: i64,
    /// valid / expiring / expired / not_yet_valid.
    pub status: ValidityStatus,
    /// First registration (RFC 3339).
    pub registered_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Origin of the registration (`file <path>`, `bundle <path>`, `roster <issuer> #<serial>`…).
    pub source: String,
    /// `manual` or `roster <issuer> #<serial>` ([`origin`]).
    pub origin: String,
    /// Its display name, if any.
    pub name: Option<String>,
}
