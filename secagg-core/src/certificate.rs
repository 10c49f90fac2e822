//! X.509 certificates: parsing what a user hands us, validating it for registration, fingerprints,
//! and generating this party's own certificate.
//!
//! Certificates here are pinned, not chained: a party trusts exactly the certificate it registered
//! for a peer, so validation checks what matters for pinning and for MP-SPDZ (one parseable
//! certificate, X.509 v3, inside its validity period, a supported and strong key, a self-signature
//! that verifies) rather than a path to a CA.

use std::fmt;
use std::str::FromStr;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::party::PartyId;

/// Largest certificate file accepted, in bytes (real ones are 0.5–2 KiB).
pub const MAX_CERTIFICATE_FILE_BYTES: u64 = 64 * 1024;

/// Smallest RSA modulus accepted, in bits (registration and the pinned TLS verifier alike).
pub const MIN_RSA_BITS: usize = 2048;

/// The supported keys, as said in errors and hints.
pub const SUPPORTED_KEYS: &str = "ECDSA P-256/P-384, Ed25519 or RSA ≥ 2048 bits";

/// Days before expiry from which a certificate is reported as expiring.
pub const EXPIRING_SOON_DAYS: i64 = 30;

/// Default validity of certificates secagg generates: five years, as Fed-BioMed's.
pub const DEFAULT_VALIDITY_DAYS: u32 = 5 * 365;

/// How far back `notBefore` is set, so peers whose clocks run behind accept a new certificate.
const BACKDATE: Duration = Duration::hours(1);

/// The public-key algorithm of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum KeyType {
    /// RSA with a modulus of this many bits.
    Rsa(usize),
    /// ECDSA on NIST P-256.
    P256,
    /// ECDSA on NIST P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    /// Why a supported key type is still refused, if it is: an RSA modulus below
    /// [`MIN_RSA_BITS`] (e.g. `a 1024-bit RSA key, the minimum is 2048 bits`).
    pub fn weakness(self) -> Option<String> {
        match self {
            KeyType::Rsa(bits) if bits < MIN_RSA_BITS => Some(format!(
                "a {bits}-bit RSA key, the minimum is {MIN_RSA_BITS} bits"
            )),
            _ => None,
        }
    }
}

/// The extended key usages of a certificate that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedKeyUsage {
    /// `serverAuth` (TLS server).
    pub server_auth: bool,
    /// `clientAuth` (TLS client).
    pub client_auth: bool,
    /// `anyExtendedKeyUsage`.
    pub any: bool,
}

impl ExtendedKeyUsage {
    /// The usages of a parsed certificate, if it has the extension.
    pub fn of(x509: &X509Certificate<'_>) -> Option<Self> {
        match x509.extended_key_usage() {
            Ok(Some(eku)) => Some(ExtendedKeyUsage {
                server_auth: eku.value.server_auth,
                client_auth: eku.value.client_auth,
                any: eku.value.any,
            }),
            _ => None,
        }
    }

    /// Whether the certificate may act as both TLS server and client, as every party of a
    /// session does (MP-SPDZ refuses a certificate that lacks either).
    pub fn allows_mutual_tls(self) -> bool {
        self.any || (self.server_auth && self.client_auth)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa(bits) => write!(f, "rsa{bits}"),
            KeyType::P256 => f.write_str("p256"),
            KeyType::P384 => f.write_str("p384"),
            KeyType::Ed25519 => f.write_str("ed25519"),
        }
    }
}

impl FromStr for KeyType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "p256" => Ok(KeyType::P256),
            "p384" => Ok(KeyType::P384),
            "ed25519" => Ok(KeyType::Ed25519),
            other => other
                .strip_prefix("rsa")
                .and_then(|b| b.parse().ok())
                .map(KeyType::Rsa)
                .ok_or_else(|| Error::invalid(format!("unknown key type `{other}`"))),
        }
    }
}

impl From<KeyType> for String {
    fn from(k: KeyType) -> String {
        k.to_string()
    }
}

impl TryFrom<String> for KeyType {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// Key types secagg can generate for its own identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeneratedKeyType {
    /// ECDSA P-256 (default: fast, accepted by rustls and MP-SPDZ).
    #[default]
    P256,
    /// ECDSA P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl GeneratedKeyType {
    fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            GeneratedKeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            GeneratedKeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            GeneratedKeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl FromStr for GeneratedKeyType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "p256" => Ok(GeneratedKeyType::P256),
            "p384" => Ok(GeneratedKeyType::P384),
            "ed25519" => Ok(GeneratedKeyType::Ed25519),
            other => Err(Error::invalid(format!(
                "secagg cannot generate `{other}` keys: choose p256, p384 or ed25519"
            ))),
        }
    }
}

/// How a fingerprint was written: 32 bytes in hex (`SHA256:AB:CD:…`, this type's `Display`) or
/// OpenSSH's base64 form ([`Fingerprint::readable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FingerprintForm {
    /// Hex, with or without colons.
    Hex,
    /// Base64, 43 characters.
    Base64,
}

/// SHA-256 of a certificate's DER encoding, shown as `SHA256:AB:CD:…` (uppercase, colon-separated).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of `der`.
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short form for tables: `SHA256:AB:CD:EF:01…` (first 4 bytes).
    pub fn short(&self) -> String {
        let full = self.to_string();
        format!("{}…", &full[..7 + 4 * 3 - 1])
    }

    /// The form to read out: OpenSSH's, `SHA256:` and the digest in base64 without padding
    /// (43 characters, against 95 for [`fmt::Display`]'s hex form). [`Fingerprint::parse`] takes
    /// both.
    pub fn readable(&self) -> String {
        use base64::Engine as _;
        format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.0)
        )
    }

    /// Parses a fingerprint as users paste it: `SHA256:AB:CD:…`, `sha256=ab:cd…`, OpenSSL's
    /// `sha256 Fingerprint=AB:CD…`, 64 hex digits with or without colons (any case), or the
    /// readable form `SHA256:` + 43 base64 characters (OpenSSH's; case matters there).
    pub fn parse(s: &str) -> Result<Self> {
        Self::parse_with_form(s).map(|(f, _)| f)
    }

    /// [`Fingerprint::parse`], also saying which form was given (to show a mismatch in it).
    pub fn parse_with_form(s: &str) -> Result<(Self, FingerprintForm)> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let prefix_len = ["sha256 fingerprint=", "sha256:", "sha256=", "sha2-256:"]
            .iter()
            .find(|p| lower.starts_with(*p))
            .map_or(0, |p| p.len());
        let body = &t[prefix_len..];
        let hex_digits: String = body.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
        let mut out = [0u8; 32];
        if hex::decode_to_slice(&hex_digits, &mut out).is_ok() {
            return Ok((Fingerprint(out), FingerprintForm::Hex));
        }
        use base64::Engine as _;
        let b64 = body.trim_end_matches('=');
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64) {
            if let Ok(digest) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok((Fingerprint(digest), FingerprintForm::Base64));
            }
        }
        Err(Error::invalid(format!(
            "`{}` is not a SHA-256 fingerprint",
            s.escape_debug()
        ))
        .with_hint("a fingerprint looks like SHA256:Ojf… (43 characters, as `secagg identity show` prints it to read out) or SHA256:3A:0F:… (32 bytes in hex)"))
    }

    /// This fingerprint in `form`.
    pub fn in_form(&self, form: FingerprintForm) -> String {
        match form {
            FingerprintForm::Hex => self.to_string(),
            FingerprintForm::Base64 => self.readable(),
        }
    }

    /// Two lines and a marker showing where `actual` differs from the `expected` fingerprint
    /// given in `form`: `expected …`, `actual …`, then `^` under the first differing character.
    pub fn mismatch(expected: &Fingerprint, actual: &Fingerprint, form: FingerprintForm) -> String {
        let (e, a) = (expected.in_form(form), actual.in_form(form));
        let first = e
            .chars()
            .zip(a.chars())
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        let differing = e.chars().zip(a.chars()).filter(|(x, y)| x != y).count();
        format!(
            "  expected  {e}\n  actual    {a}\n            {}^ first difference at character {} ({differing} differ)",
            " ".repeat(first),
            first + 1
        )
    }

    /// Compares in constant time (fingerprints guard trust decisions).
    pub fn ct_eq(&self, other: &Fingerprint) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SHA256:")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Fingerprint::parse(s)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Fingerprint::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where a certificate stands in time at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidityStatus {
    /// Valid, and for more than [`EXPIRING_SOON_DAYS`] days.
    Valid,
    /// Valid, but expires within [`EXPIRING_SOON_DAYS`] days.
    Expiring,
    /// Past its `notAfter`.
    Expired,
    /// Before its `notBefore`.
    NotYetValid,
}

impl ValidityStatus {
    /// Where a validity period `[not_before, not_after]` stands at `now`.
    pub fn of(not_before: OffsetDateTime, not_after: OffsetDateTime, now: OffsetDateTime) -> Self {
        if now < not_before {
            ValidityStatus::NotYetValid
        } else if now > not_after {
            ValidityStatus::Expired
        } else if not_after - now <= Duration::days(EXPIRING_SOON_DAYS) {
            ValidityStatus::Expiring
        } else {
            ValidityStatus::Valid
        }
    }
}

impl fmt::Display for ValidityStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValidityStatus::Valid => "valid",
            ValidityStatus::Expiring => "expiring",
            ValidityStatus::Expired => "expired",
            ValidityStatus::NotYetValid => "not yet valid",
        })
    }
}

/// A parsed certificate and the facts secagg shows and checks about it.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The DER encoding.
    pub der: Vec<u8>,
    /// The PEM encoding (re-encoded from the DER, so a DER input gets a PEM too).
    pub pem: String,
    /// SHA-256 of `der`.
    pub fingerprint: Fingerprint,
    /// Public-key algorithm, `None` when secagg does not support it.
    pub key_type: Option<KeyType>,
    /// A description of an unsupported key algorithm (its OID), when `key_type` is `None`.
    pub unsupported_key: Option<String>,
    /// X.509 version number as people write it (1 or 3).
    pub version: u32,
    /// The subject as one line (`CN=*, O=node_…`).
    pub subject: String,
    /// The subject's first organisation (O) attribute; Fed-BioMed puts the party id there.
    pub organization: Option<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Serial number in hex.
    pub serial_hex: String,
    /// Whether subject and issuer are equal.
    pub self_issued: bool,
    /// Whether the self-signature verifies (`None` when the certificate is not self-issued or the
    /// signature algorithm is one ring cannot verify).
    pub self_signature_ok: Option<bool>,
    /// Extended key usages, when the extension is present.
    pub extended_key_usage: Option<ExtendedKeyUsage>,
    /// The SubjectPublicKeyInfo DER (to match a private key against the certificate).
    pub spki_der: Vec<u8>,
}

impl Certificate {
    /// Parses a certificate file's content: PEM (exactly one `CERTIFICATE` block) or DER.
    ///
    /// `source` names the input in errors (a file path or "document 3").
    pub fn parse(bytes: &[u8], source: &str) -> Result<Self> {
        let ctx = format!("while reading certificate {source}");
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(Error::invalid("the file is empty").context(ctx));
        }
        let der = if bytes.starts_with(&[0x30]) {
            bytes.to_vec()
        } else {
            pem_certificate_der(bytes).map_err(|e| e.context(&ctx))?
        };
        Self::from_der(der).map_err(|e| e.context(ctx))
    }

    /// Parses a DER-encoded certificate.
    pub fn from_der(der: Vec<u8>) -> Result<Self> {
        let (rest, x509) = X509Certificate::from_der(&der).map_err(|e| {
            Error::invalid(format!("not an X.509 certificate ({e})")).with_hint(
                "give the party's certificate (`-----BEGIN CERTIFICATE-----` PEM or DER)",
            )
        })?;
        if !rest.is_empty() {
            return Err(Error::invalid(format!(
                "{} bytes of trailing data after the certificate",
                rest.len()
            )));
        }
        let spki = x509.public_key();
        let (key_type, unsupported_key) = match key_type_of(spki) {
            Ok(k) => (Some(k), None),
            Err(what) => (None, Some(what)),
        };
        let version = match x509.version() {
            X509Version::V1 => 1,
            X509Version::V2 => 2,
            X509Version::V3 => 3,
            X509Version(v) => v + 1,
        };
        let organization = x509
            .subject()
            .iter_organization()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned);
        let self_issued = x509.subject().as_raw() == x509.issuer().as_raw();
        let self_signature_ok = if self_issued {
            match x509.verify_signature(None) {
                Ok(()) => Some(true),
                Err(x509_parser::error::X509Error::SignatureVerificationError) => Some(false),
                Err(_) => None,
            }
        } else {
            None
        };
        let extended_key_usage = ExtendedKeyUsage::of(&x509);
        let ts = |t: i64| {
            OffsetDateTime::from_unix_timestamp(t)
                .map_err(|_| Error::invalid("certificate validity date is out of range"))
        };
        let not_before = ts(x509.validity().not_before.timestamp())?;
        let not_after = ts(x509.validity().not_after.timestamp())?;
        let cert = Certificate {
            pem: pem::encode_config(
                &pem::Pem::new("CERTIFICATE", der.clone()),
                pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
            ),
            fingerprint: Fingerprint::of_der(&der),
            key_type,
            unsupported_key,
            version,
            subject: x509.subject().to_string(),
            organization,
            not_before,
            not_after,
            serial_hex: hex::encode(x509.raw_serial()),
            self_issued,
            self_signature_ok,
            extended_key_usage,
            spki_der: spki.raw.to_vec(),
            der,
        };
        Ok(cert)
    }

    /// Where this certificate stands in time at `now`.
    pub fn status_at(&self, now: OffsetDateTime) -> ValidityStatus {
        ValidityStatus::of(self.not_before, self.not_after, now)
    }

    /// Whole days from `now` to `notAfter` (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }

    /// Checks everything registration requires of a peer's certificate at `now`: X.509 v3,
    /// inside its validity period, a supported key of adequate strength, and a self-signature that
    /// verifies. Returns warnings that do not prevent registration (for example, an extended key
    /// usage that MP-SPDZ would refuse, or expiry within 30 days).
    pub fn validate_for_registration(&self, now: OffsetDateTime) -> Result<Vec<String>> {
        if self.version != 3 {
            return Err(Error::invalid(format!(
                "certificate is X.509 version {}, secagg needs version 3",
                self.version
            ))
            .with_hint("ask the party to generate a new certificate (`secagg certificate generate --force`)"));
        }
        match self.status_at(now) {
            ValidityStatus::Expired => {
                return Err(Error::invalid(format!(
                    "certificate expired on {}",
                    format_time(self.not_after)
                ))
                .with_hint("ask the party for a renewed certificate"))
            }
            ValidityStatus::NotYetValid => {
                return Err(Error::invalid(format!(
                    "certificate is not valid before {}",
                    format_time(self.not_before)
                ))
                .with_hint("check the clocks of both machines, or ask the party for a certificate that is valid now"))
            }
            _ => {}
        }
        match self.key_type {
            None => {
                return Err(Error::invalid(format!(
                    "certificate key type {} is not supported",
                    self.unsupported_key.as_deref().unwrap_or("unknown")
                ))
                .with_hint(format!("supported keys: {SUPPORTED_KEYS}")))
            }
            Some(k) => {
                if let Some(weakness) = k.weakness() {
                    return Err(Error::invalid(format!("certificate has {weakness}"))
                        .with_hint("ask the party to generate a stronger key"));
                }
            }
        }
        if self.self_signature_ok == Some(false) {
            return Err(Error::invalid(
                "certificate signature does not verify: the file is damaged or was altered",
            )
            .with_hint("ask the party to send its certificate again and compare fingerprints"));
        }
        let mut warnings = Vec::new();
        if let Some(eku) = self.extended_key_usage {
            if !eku.allows_mutual_tls() {
                warnings.push("certificate's extended key usage lacks serverAuth or clientAuth: MP-SPDZ will refuse it (the native engine accepts it)".to_owned());
            }
        }
        if self.status_at(now) == ValidityStatus::Expiring {
            warnings.push(format!(
                "certificate expires in {} days, on {}",
                self.days_left(now),
                format_time(self.not_after)
            ));
        }
        Ok(warnings)
    }
}

/// The type of a certificate's public key: the one definition of which keys secagg supports,
/// used by registration ([`Certificate::parse`]) and by the pinned TLS verifier. `Err` describes
/// an unsupported key (e.g. `DSA`, `ECDSA on curve …`). A supported type may still be too weak:
/// see [`KeyType::weakness`].
pub fn key_type_of(spki: &SubjectPublicKeyInfo<'_>) -> std::result::Result<KeyType, String> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                // The exact modulus length (leading zero bytes and bits do not count).
                let m = rsa.modulus;
                let m = &m[m.iter().position(|&b| b != 0).unwrap_or(m.len())..];
                let bits = m
                    .first()
                    .map_or(0, |b| m.len() * 8 - b.leading_zeros() as usize);
                Ok(KeyType::Rsa(bits))
            }
            _ => Err("RSA (unparseable key)".into()),
        }
    } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyType::P256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyType::P384),
            Some(c) => Err(format!("ECDSA on curve {c}")),
            None => Err("ECDSA with unnamed curve".into()),
        }
    } else if *alg == OID_SIG_ED25519 {
        Ok(KeyType::Ed25519)
    } else {
        Err(match alg.to_id_string().as_str() {
            "1.2.840.10040.4.1" => "DSA".to_owned(),
            "1.3.101.113" => "Ed448".to_owned(),
            other => format!("with OID {other}"),
        })
    }
}

/// Extracts the DER of the single certificate in a PEM text, naming what else was found.
fn pem_certificate_der(bytes: &[u8]) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Error::invalid("neither a PEM nor a DER certificate (the file is binary but not DER)")
            .with_hint("give the party's certificate file (`-----BEGIN CERTIFICATE-----`)")
    })?;
    let begins = text.matches("-----BEGIN ").count();
    let blocks = pem::parse_many(text).map_err(|e| {
        Error::invalid(format!("damaged PEM ({e})"))
            .with_hint("the file may be truncated; copy the whole block from `-----BEGIN CERTIFICATE-----` to `-----END CERTIFICATE-----`")
    })?;
    if blocks.is_empty() {
        let msg = if begins > 0 {
            "damaged or truncated PEM block (no matching `-----END` line)"
        } else {
            "no PEM block found: not a certificate"
        };
        return Err(Error::invalid(msg).with_hint(
            "copy the whole block from `-----BEGIN CERTIFICATE-----` to `-----END CERTIFICATE-----`",
        ));
    }
    if begins > blocks.len() {
        return Err(Error::invalid(
            "damaged or truncated PEM block (a `-----BEGIN` line has no matching `-----END` line)",
        ));
    }
    if let Some(k) = blocks.iter().find(|b| b.tag().contains("PRIVATE KEY")) {
        return Err(Error::invalid(format!(
            "the file holds a private key (`{}`), not a certificate",
            k.tag()
        ))
        .with_hint("never send private keys; register the party's certificate (`-----BEGIN CERTIFICATE-----`) instead"));
    }
    let certs: Vec<_> = blocks.iter().filter(|b| b.tag() == "CERTIFICATE").collect();
    match certs.len() {
        0 => Err(Error::invalid(format!(
            "the file holds a `{}` block, not a certificate",
            blocks[0].tag()
        ))),
        1 => Ok(certs[0].contents().to_vec()),
        n => Err(Error::invalid(format!(
            "the file holds {n} certificates, secagg registers exactly one per party"
        ))
        .with_hint("split the file and register each party's certificate under its own party id")),
    }
}

/// Formats a time as RFC 3339 in UTC, to the second.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// A newly generated key pair and self-signed certificate.
pub struct GeneratedIdentity {
    /// The certificate.
    pub certificate: Certificate,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
}

/// Generates a key pair and a self-signed certificate for `party_id`: subject `CN=*, O=<party id>`,
/// X.509 v3, random 128-bit serial, KeyUsage digitalSignature, ExtendedKeyUsage serverAuth +
/// clientAuth, valid from one hour ago for `validity_days` days.
///
/// `CN=*` lets MP-SPDZ v0.3.4 accept the certificate for any player number; serverAuth and
/// clientAuth together because every party is both TLS client and server (MP-SPDZ fails with
/// serverAuth alone).
pub fn generate(
    party_id: &PartyId,
    key_type: GeneratedKeyType,
    validity_days: u32,
    now: OffsetDateTime,
) -> Result<GeneratedIdentity> {
    if validity_days == 0 || validity_days > 36_500 {
        return Err(Error::invalid(format!(
            "validity of {validity_days} days is out of range (1 to 36500)"
        )));
    }
    let key = KeyPair::generate_for(key_type.algorithm())
        .map_err(|e| Error::Internal(format!("key generation failed: {e}")))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "*");
    dn.push(DnType::OrganizationName, party_id.as_str());
    params.distinguished_name = dn;
    let mut serial = [0u8; 16];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut serial[..]);
    serial[0] &= 0x7f; // positive INTEGER without a leading zero byte: 128 bits exactly
    serial[0] |= 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(validity_days));
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::Internal(format!("certificate signing failed: {e}")))?;
    let certificate = Certificate::from_der(cert.der().to_vec())?;
    Ok(GeneratedIdentity {
        certificate,
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

/// Parses a PKCS#8 PEM private key, returning its DER, and checks that it belongs to `cert`.
pub fn private_key_der_matching(key_pem: &str, cert: &Certificate) -> Result<Zeroizing<Vec<u8>>> {
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| Error::invalid(format!("private key is unreadable ({e})")))?;
    if key.subject_public_key_info() != cert.spki_der {
        return Err(Error::invalid("private key does not belong to the certificate")
            .with_hint("restore the matching key, or renew the identity with `secagg certificate generate --force`"));
    }
    Ok(Zeroizing::new(key.serialize_der()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn generated_certificate_has_the_required_shape() {
        let id = PartyId::parse("node_abc").unwrap();
        for kt in [
            GeneratedKeyType::P256,
            GeneratedKeyType::P384,
            GeneratedKeyType::Ed25519,
        ] {
            let g = generate(&id, kt, 10, now()).unwrap();
            let c = &g.certificate;
            assert_eq!(c.version, 3);
            assert_eq!(c.organization.as_deref(), Some("node_abc"));
            assert!(c.subject.contains("CN=*"), "{}", c.subject);
            assert_eq!(c.serial_hex.len(), 32, "128-bit serial");
            assert_eq!(
                c.extended_key_usage,
                Some(ExtendedKeyUsage {
                    server_auth: true,
                    client_auth: true,
                    any: false
                })
            );
            assert_eq!(c.self_signature_ok, Some(true));
            let warnings = c.validate_for_registration(now()).unwrap();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].contains("expires in 9 days"), "{warnings:?}");
            assert_eq!(c.status_at(now()), ValidityStatus::Expiring);
            let der = private_key_der_matching(&g.key_pem, c).unwrap();
            assert!(!der.is_empty());
        }
    }

    #[test]
    fn key_mismatch_is_detected() {
        let id = PartyId::parse("node_abc").unwrap();
        let a = generate(&id, GeneratedKeyType::P256, 100, now()).unwrap();
        let b = generate(&id, GeneratedKeyType::P256, 100, now()).unwrap();
        let e = private_key_der_matching(&a.key_pem, &b.certificate).unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
    }

    #[test]
    fn fingerprint_forms() {
        let fp = Fingerprint::of_der(b"x");
        let s = fp.to_string();
        assert!(s.starts_with("SHA256:") && s.len() == 7 + 32 * 3 - 1);
        assert_eq!(Fingerprint::parse(&s).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&s.to_lowercase()).unwrap(), fp);
        let plain: String = s[7..].chars().filter(|c| *c != ':').collect();
        assert_eq!(Fingerprint::parse(&plain).unwrap(), fp);
        assert_eq!(
            Fingerprint::parse(&format!("sha256 Fingerprint={}", &s[7..])).unwrap(),
            fp
        );
        assert!(Fingerprint::parse("SHA256:AB").is_err());
        assert!(fp.ct_eq(&Fingerprint::parse(&s).unwrap()));
        assert!(fp.short().len() < s.len());
        // The readable form: OpenSSH's, 43 base64 characters, case-sensitive, padding tolerated.
        let r = fp.readable();
        assert_eq!(r.len(), 7 + 43);
        assert_eq!(
            Fingerprint::parse_with_form(&r).unwrap(),
            (fp, FingerprintForm::Base64)
        );
        assert_eq!(Fingerprint::parse(&format!("{r}=")).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&r[7..]).unwrap(), fp);
        assert_ne!(Fingerprint::parse(&r.to_lowercase()).ok(), Some(fp));
        assert_eq!(
            Fingerprint::parse_with_form(&s).unwrap().1,
            FingerprintForm::Hex
        );
        // A mismatch points at the first difference, in the form given.
        let other = Fingerprint::of_der(b"y");
        let m = Fingerprint::mismatch(&fp, &other, FingerprintForm::Base64);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines[0], format!("  expected  {r}"));
        assert_eq!(lines[1], format!("  actual    {}", other.readable()));
        let caret = lines[2].find('^').unwrap();
        let first = r
            .chars()
            .zip(other.readable().chars())
            .position(|(a, b)| a != b)
            .unwrap();
        assert_eq!(caret - 12, first);
    }

    #[test]
    fn pem_and_der_inputs() {
        let id = PartyId::parse("node_abc").unwrap();
        let g = generate(&id, GeneratedKeyType::P256, 100, now()).unwrap();
        let from_pem = Certificate::parse(g.certificate.pem.as_bytes(), "`a.pem`").unwrap();
        let from_der = Certificate::parse(&g.certificate.der, "`a.der`").unwrap();
        assert_eq!(from_pem.fingerprint, from_der.fingerprint);
        let e = Certificate::parse(g.key_pem.as_bytes(), "`k.pem`").unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        let two = format!("{}{}", g.certificate.pem, g.certificate.pem);
        let e = Certificate::parse(two.as_bytes(), "`two.pem`").unwrap_err();
        assert!(e.to_string().contains("2 certificates"), "{e}");
        let e = Certificate::parse(b"", "`e.pem`").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let half = &g.certificate.pem[..g.certificate.pem.len() / 2];
        let e = Certificate::parse(half.as_bytes(), "`t.pem`").unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
