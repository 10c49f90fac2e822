//! A node's masked file of one LOM round: its masked vector, what it belongs to, and its
//! signature (as a ciphertext file's, [`super::ciphertext_file`], under its own purpose
//! [`Purpose::MaskedVector`]).
//!
//! What is signed: every field that decides the result, each length-prefixed, and a SHA-256 of
//! the masked words as 8-byte little-endian integers. So a file relabelled as another node's,
//! of another round or label, with another weight, or with an altered word does not verify.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ciphertext_file::FileSignature;
use crate::error::{Error, Result};
use crate::fs_secure;
use crate::identity::Identity;
use crate::lom::{Profile, Width};
use crate::signing::Purpose;

/// The `format` field of a masked file.
pub const MASKED_FORMAT: &str = "secagg-lom-masked";
/// The version of the masked file format this build writes and reads.
pub const MASKED_VERSION: u32 = 1;
/// The largest masked file read: 2 GiB (some 100 million parameters).
pub const MAX_MASKED_FILE_BYTES: u64 = 2 << 30;

/// What a node sends the researcher for one LOM round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedFile {
    /// Always [`MASKED_FORMAT`].
    pub format: String,
    /// [`MASKED_VERSION`].
    pub version: u32,
    /// The LOM context (session) whose pairwise secrets masked it.
    pub session_id: String,
    /// The training round.
    pub round: u64,
    /// The vector's label (0: the model's weights; others: auxiliary variables, validation).
    pub label: u64,
    /// The profile: `secagg`, `fedbiomed-v6` (6.4) or `fedbiomed-v6.3`.
    pub profile: String,
    /// The node that masked.
    pub party_id: String,
    /// Number of nodes in the context.
    pub nodes: usize,
    /// Number of parameters.
    pub count: usize,
    /// Clipping range `c` of the quantisation.
    pub clipping_range: u32,
    /// The node's weight (sample count), if it weighted its vector.
    pub weight: Option<u64>,
    /// Dropout-tolerant contexts: the threshold t of shares that rebuild the node's self-mask
    /// (signed; absent otherwise, and then not part of the signed bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout_threshold: Option<u32>,
    /// The masked words (each below 2^32 for 6.3's profile, 2^64 otherwise).
    pub values: Vec<u64>,
    /// The node's signature over [`MaskedFile::signed_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<FileSignature>,
}

/// The profile's name in files and on the command line.
pub fn profile_name(p: Profile) -> &'static str {
    match p {
        Profile::Secagg => "secagg",
        Profile::FedbiomedV64 => "fedbiomed-v6",
        Profile::FedbiomedV63 => "fedbiomed-v6.3",
    }
}

/// The profile named `s`.
pub fn parse_profile(s: &str) -> Result<Profile> {
    match s {
        "secagg" => Ok(Profile::Secagg),
        "fedbiomed-v6" | "fedbiomed-v6.4" => Ok(Profile::FedbiomedV64),
        "fedbiomed-v6.3" => Ok(Profile::FedbiomedV63),
        other => Err(Error::invalid(format!(
            "unknown LOM profile `{}`: expected `secagg`, `fedbiomed-v6` (6.4) or `fedbiomed-v6.3`",
            other.escape_debug()
        ))),
    }
}

impl MaskedFile {
    /// Reads a masked file (at most [`MAX_MASKED_FILE_BYTES`]).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs_secure::read_limited(path, MAX_MASKED_FILE_BYTES, "masked file")?;
        Self::parse(&bytes, &format!("`{}`", path.display()))
    }

    /// Decodes masked file bytes; `name` names them in errors.
    pub fn parse(bytes: &[u8], name: &str) -> Result<Self> {
        super::ciphertext_file::parse_node_file(
            bytes,
            name,
            "masked file",
            "give the files written by `secagg aggregate encrypt --scheme lom` on the nodes",
        )
    }

    /// The profile the file names.
    pub fn profile(&self) -> Result<Profile> {
        parse_profile(&self.profile)
    }

    /// The bytes a node signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        self.signed_bytes_of(&self.values)
    }

    /// [`MaskedFile::signed_bytes`] with the words `values` in place of the file's own (a file
    /// whose words live elsewhere: a NumPy array the Python binding borrows).
    pub fn signed_bytes_of(&self, values: &[u64]) -> Vec<u8> {
        // In blocks: one hasher call per 8 bytes costs more than the hashing.
        let mut digest = Sha256::new();
        let mut block = Vec::with_capacity(8 * 4096);
        for chunk in values.chunks(4096) {
            block.clear();
            chunk
                .iter()
                .for_each(|v| block.extend_from_slice(&v.to_le_bytes()));
            digest.update(&block);
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
        put(&self.label.to_be_bytes());
        put(self.profile.as_bytes());
        put(self.party_id.as_bytes());
        put(&(self.nodes as u64).to_be_bytes());
        put(&(self.count as u64).to_be_bytes());
        put(&self.clipping_range.to_be_bytes());
        match self.weight {
            None => put(b"unweighted"),
            Some(w) => put(&w.to_be_bytes()),
        }
        put(&(values.len() as u64).to_be_bytes());
        put(&digest.finalize());
        if let Some(t) = self.dropout_threshold {
            put(b"dropout threshold");
            put(&t.to_be_bytes());
        }
        out
    }

    /// Signs the file with `identity`'s key (the node that masked).
    pub(crate) fn sign(&mut self, identity: &Identity) -> Result<()> {
        let payload = self.signed_bytes();
        self.signature = Some(FileSignature::create(
            Purpose::MaskedVector,
            &payload,
            identity,
        )?);
        Ok(())
    }

    /// Verifies the signature, over the file with the words `values`, against `certificate_der`,
    /// registered for the party the file names; an unsigned file is [`Error::Authentication`].
    pub(crate) fn verify_signature(
        &self,
        name: &str,
        certificate_der: &[u8],
        values: &[u64],
    ) -> Result<()> {
        let sig = self.signature.as_ref().ok_or_else(|| {
            Error::authentication(format!(
                "masked file {name} is not signed: nothing shows that `{}` wrote it",
                self.party_id
            ))
        })?;
        sig.verify(
            Purpose::MaskedVector,
            &self.signed_bytes_of(values),
            certificate_der,
            &self.party_id,
        )
        .map_err(|e| e.context(format!("while verifying masked file {name}")))
    }

    /// Checks the shape: the format, one word per parameter, each word within the profile's
    /// width.
    pub(crate) fn check_shape(&self, name: &str, values: &[u64]) -> Result<Width> {
        let bad = |why: String| Error::invalid(format!("masked file {name}: {why}"));
        if self.format != MASKED_FORMAT || self.version != MASKED_VERSION {
            return Err(bad(format!(
                "format `{}` version {} is not `{MASKED_FORMAT}` version {MASKED_VERSION}",
                self.format, self.version
            )));
        }
        let width = self
            .profile()
            .map_err(|e| e.context(format!("in masked file {name}")))?
            .width();
        if values.len() != self.count || self.count == 0 {
            return Err(bad(format!(
                "{} values for a count of {}",
                values.len(),
                self.count
            )));
        }
        if width == Width::W32 {
            if let Some(i) = values.iter().position(|&v| v > u64::from(u32::MAX)) {
                return Err(bad(format!(
                    "value {i} does not fit the profile's 32-bit words"
                )));
            }
        }
        Ok(width)
    }
}
