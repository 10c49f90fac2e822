//! A node's ciphertext file of one round: what it holds, the bounds every field is checked
//! against before anything is parsed, and its signature.
//!
//! **The signature.** A node signs its file with its identity key ([`crate::signing`], purpose
//! [`Purpose::Ciphertexts`]); the researcher verifies it against the certificate it registered
//! for the party the file names. What is signed is a canonical encoding of every field that
//! decides the result ([`CiphertextFile::signed_bytes`]): format, version, session, round,
//! party, nodes, count, clipping range, biprime name, and a SHA-256 digest of the ciphertexts
//! exactly as written. So a file relabelled as another node's, a file of another session or
//! round with its fields edited, or an altered ciphertext does not verify. Files without a
//! signature (written by hand, or by an older build) are refused unless the researcher accepts
//! them explicitly, and the result is then marked unauthenticated.
//!
//! **The bounds.** A file is at most [`MAX_CIPHERTEXT_FILE_BYTES`] on disk; it holds exactly the
//! number of ciphertexts its count needs; each ciphertext is a canonical decimal (digits only, no
//! leading zero) no longer than `N² − 1`, so parsing is linear in the file's size; and each is in
//! `0 < c < N²`.

use std::path::Path;

use base64::Engine as _;
use num_bigint::BigUint;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Biprime;
use crate::error::{Error, Result};
use crate::fs_secure;
use crate::identity::Identity;
use crate::signing::{self, Purpose};

/// The `format` field of a ciphertext file.
pub const CIPHERTEXT_FORMAT: &str = "secagg-ciphertexts";
/// The version of the ciphertext file format this build writes and reads (the signature is an
/// optional field: files of earlier builds read as unsigned).
pub const CIPHERTEXT_VERSION: u32 = 1;
/// The largest ciphertext file read: 2 GiB, about 3.4 million ciphertexts (some 200 million
/// parameters for 2 nodes, 170 million for 32).
pub const MAX_CIPHERTEXT_FILE_BYTES: u64 = 2 << 30;

/// The `profile` of a file encoded as Fed-BioMed v6 encodes (`aggregate --profile fedbiomed-v6`).
pub const PROFILE_FEDBIOMED_V6: &str = "fedbiomed-v6";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What a node sends the researcher for one round: its ciphertexts, what they belong to, and its
/// signature over both. Ciphertexts are decimal strings (JSON numbers of 2048 bits would not
/// survive most parsers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiphertextFile {
    /// Always [`CIPHERTEXT_FORMAT`].
    pub format: String,
    /// [`CIPHERTEXT_VERSION`].
    pub version: u32,
    /// The session whose keys were used.
    pub session_id: String,
    /// The training round (part of every batch's tag).
    pub round: u64,
    /// The node that encrypted.
    pub party_id: String,
    /// Number of nodes in the session (decides the packing).
    pub nodes: usize,
    /// Number of parameters encrypted.
    pub count: usize,
    /// Clipping range `c` used by the quantisation.
    pub clipping_range: u32,
    /// Name of the biprime.
    pub biprime: String,
    /// The ciphertexts, decimal.
    pub ciphertexts: Vec<String>,
    /// The encoding: absent for Fed-BioMed v4's (the default), [`PROFILE_FEDBIOMED_V6`] for v6's
    /// (T = 8192, weighted, elements of `30 + ⌈log2(n + 1)⌉` bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// v6's encoding: the node's weight (sample count), if it weighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
    /// The node's signature over [`CiphertextFile::signed_bytes`]; `None` in an unsigned file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<FileSignature>,
}

/// A signature in a ciphertext file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSignature {
    /// The scheme ([`signing::scheme_name`] of the signer's key type).
    pub scheme: String,
    /// The signature, base64.
    pub value: String,
}

/// A node's JSON file (a ciphertext or masked file) as `T`; bytes that are not JSON of that
/// shape are invalid input, named `name` and called a secagg `kind`, with `hint`.
pub(crate) fn parse_node_file<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    name: &str,
    kind: &str,
    hint: &str,
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        // The message may quote the file's bytes (a node's): escaped and bounded.
        let why = crate::untrusted_text::escape_bounded(
            &e.to_string(),
            crate::untrusted_text::LOG_TEXT_LIMIT,
        );
        Error::invalid(format!("{name} is not a secagg {kind}: {why}")).with_hint(hint)
    })
}

impl FileSignature {
    /// `identity`'s signature of `payload` for `purpose`.
    pub(crate) fn create(purpose: Purpose, payload: &[u8], identity: &Identity) -> Result<Self> {
        let key = identity.private_key_der()?;
        let key_type = identity.certificate.key_type.ok_or_else(|| {
            Error::invalid("this party's certificate has an unsupported key type: it cannot sign")
        })?;
        let (scheme, value) = signing::sign(purpose, payload, &key, key_type)?;
        Ok(FileSignature {
            scheme: scheme.to_owned(),
            value: B64.encode(value),
        })
    }

    /// Verifies that this signs `payload` for `purpose` with the key of `certificate_der`, the
    /// certificate registered for `signer`.
    pub(crate) fn verify(
        &self,
        purpose: Purpose,
        payload: &[u8],
        certificate_der: &[u8],
        signer: &str,
    ) -> Result<()> {
        let value = B64.decode(self.value.as_bytes()).map_err(|e| {
            Error::authentication(format!("its signature is not valid base64 ({e})"))
        })?;
        signing::verify(
            purpose,
            payload,
            &self.scheme,
            &value,
            certificate_der,
            signer,
        )
    }
}

impl CiphertextFile {
    /// Reads a ciphertext file (at most [`MAX_CIPHERTEXT_FILE_BYTES`]).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs_secure::read_limited(path, MAX_CIPHERTEXT_FILE_BYTES, "ciphertext file")?;
        Self::parse(&bytes, &format!("`{}`", path.display()))
    }

    /// Decodes ciphertext file bytes; `name` names them in errors. Bytes that are not UTF-8 JSON
    /// of this shape are invalid input.
    pub fn parse(bytes: &[u8], name: &str) -> Result<Self> {
        parse_node_file(
            bytes,
            name,
            "ciphertext file",
            "give the files written by `secagg aggregate encrypt` on the nodes",
        )
    }

    /// The bytes a node signs: every field but the signature, each length-prefixed (so no two
    /// files share an encoding), the ciphertexts as a SHA-256 digest of their decimal strings
    /// exactly as written.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut digest = Sha256::new();
        for c in &self.ciphertexts {
            digest.update((c.len() as u64).to_be_bytes());
            digest.update(c.as_bytes());
        }
        let mut out = Vec::with_capacity(256);
        let mut put = |field: &[u8]| {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field);
        };
        put(self.format.as_bytes());
        put(&self.version.to_be_bytes());
        put(self.session_id.as_bytes());
        put(&self.round.to_be_bytes());
        put(self.party_id.as_bytes());
        put(&(self.nodes as u64).to_be_bytes());
        put(&(self.count as u64).to_be_bytes());
        put(&self.clipping_range.to_be_bytes());
        put(self.biprime.as_bytes());
        put(&(self.ciphertexts.len() as u64).to_be_bytes());
        put(&digest.finalize());
        // Appended only when present, so that a v4 file's signed bytes are what they always
        // were (every field is length-prefixed, so no two files share an encoding).
        if let Some(p) = &self.profile {
            put(b"profile");
            put(p.as_bytes());
        }
        if let Some(w) = self.weight {
            put(b"weight");
            put(&w.to_be_bytes());
        }
        out
    }

    /// Signs the file with `identity`'s key (the node that encrypted).
    pub(crate) fn sign(&mut self, identity: &Identity) -> Result<()> {
        let payload = self.signed_bytes();
        self.signature = Some(FileSignature::create(
            Purpose::Ciphertexts,
            &payload,
            identity,
        )?);
        Ok(())
    }

    /// Verifies the signature against `certificate_der`, the certificate registered for the
    /// party the file names. A file without a signature is [`Error::Authentication`] too; the
    /// caller decides whether to accept it.
    pub(crate) fn verify_signature(&self, name: &str, certificate_der: &[u8]) -> Result<()> {
        let sig = self.signature.as_ref().ok_or_else(|| {
            Error::authentication(format!(
                "ciphertext file {name} is not signed: nothing shows that `{}` wrote it",
                self.party_id
            ))
            .with_hint("ask the node to encrypt again with this version of secagg, or accept unsigned files with --allow-unsigned (the result is then marked unauthenticated)")
        })?;
        sig.verify(
            Purpose::Ciphertexts,
            &self.signed_bytes(),
            certificate_der,
            &self.party_id,
        )
        .map_err(|e| e.context(format!("while verifying ciphertext file {name}")))
    }

    /// Checks the shape before any ciphertext is parsed: at least one value, exactly the
    /// ciphertexts `count` values need when packed for `nodes` nodes, each a canonical decimal
    /// no longer than `N² − 1`.
    pub(crate) fn check_shape(&self, name: &str, biprime: &Biprime) -> Result<()> {
        let bad = |why: String| Error::invalid(format!("ciphertext file {name}: {why}"));
        if self.count == 0 {
            return Err(bad("it holds no parameters (count 0)".into()));
        }
        if self.nodes == 0 {
            return Err(bad("it was packed for 0 nodes".into()));
        }
        let per = match self.profile.as_deref() {
            None => super::elements_per_plaintext(self.nodes),
            Some(PROFILE_FEDBIOMED_V6) => super::v6::elements_per_plaintext(self.nodes),
            Some(other) => {
                return Err(bad(format!(
                    "unknown profile `{}` (this build knows Fed-BioMed v4's, the default, and `{PROFILE_FEDBIOMED_V6}`)",
                    other.escape_debug()
                )))
            }
        };
        let expected = self.count.div_ceil(per);
        if self.ciphertexts.len() != expected {
            return Err(bad(format!(
                "{} parameters packed for {} nodes make {expected} ciphertexts, the file holds {}",
                self.count,
                self.nodes,
                self.ciphertexts.len()
            )));
        }
        let max_digits = biprime.max_ciphertext_digits();
        for (i, c) in self.ciphertexts.iter().enumerate() {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("ciphertext {i} is not a decimal integer")));
            }
            if c.len() > 1 && c.starts_with('0') {
                return Err(bad(format!(
                    "ciphertext {i} has a leading zero (not how a node writes it)"
                )));
            }
            if c.len() > max_digits {
                return Err(bad(format!(
                    "ciphertext {i} has {} digits: a ciphertext is below N² ({max_digits} digits)",
                    c.len()
                )));
            }
        }
        Ok(())
    }

    /// The ciphertexts as integers, each checked to be in `0 < c < N²` (after
    /// [`Self::check_shape`], so each parse is bounded).
    pub(crate) fn ciphertexts(&self, name: &str, biprime: &Biprime) -> Result<Vec<BigUint>> {
        self.ciphertexts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let c: BigUint = text.parse().map_err(|_| {
                    Error::invalid(format!(
                        "ciphertext file {name}: ciphertext {i} is not a decimal integer"
                    ))
                })?;
                biprime.check_ciphertext(&c).map_err(|why| {
                    Error::invalid(format!("ciphertext file {name}: ciphertext {i} {why}"))
                })?;
                Ok(c)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde quotes a wrong value's bytes in its message: a node's file cannot put a forged line
    /// or a terminal escape into the researcher's error, nor a 5 MB string.
    #[test]
    fn a_parse_error_quoting_the_file_is_escaped_and_bounded() {
        let bad = format!(
            "{{\"format\": \"secagg-ciphertexts\", \"version\": \"1\\nerror: forged\\u001b[31m{}\"}}",
            "x".repeat(100_000)
        );
        let e = CiphertextFile::parse(bad.as_bytes(), "`f`").unwrap_err();
        let text = e.to_string();
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        assert!(text.contains("error: forged"), "{text}");
        assert!(text.len() < 2_000, "{} bytes", text.len());
    }
}
