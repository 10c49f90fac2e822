//! A whole federation on one machine, for `secagg demo` and for tests: one researcher and N nodes,
//! each with its own home, set up through the roster path (the nodes' bundles registered at the
//! researcher and the researcher's at each node, their fingerprints checked, standing in for the
//! out-of-band comparison; one signed roster imported by every node), and, after the negotiation, the check that the stored keys
//! satisfy `sk0 + Σ sk_i = 0` over the integers.
//!
//! The negotiation itself is run by the caller (the CLI starts one `secagg negotiate` process per
//! party), so this module only prepares and verifies.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use num_bigint::BigInt;
use num_traits::Zero;
use serde::Serialize;
use time::OffsetDateTime;

use crate::aggregate;
use crate::certificate::GeneratedKeyType;
use crate::engine::SecretKey;
use crate::error::{Error, Result};
use crate::fs_secure::{self, PUBLIC_FILE_MODE};
use crate::home::Home;
use crate::identity::{self, InitOptions};
use crate::party::{Role, SessionId};
use crate::registration;
use crate::roster;
use crate::session;

/// One party of a demo federation.
#[derive(Debug, Clone)]
pub struct DemoParty {
    /// Party id.
    pub party_id: String,
    /// Its home.
    pub home: Home,
}

/// A prepared federation: the researcher first, then the nodes.
#[derive(Debug, Clone)]
pub struct Federation {
    /// The directory holding every home and bundle.
    pub dir: PathBuf,
    /// Parties in session order.
    pub parties: Vec<DemoParty>,
}

impl Federation {
    /// Party ids in session order.
    pub fn party_ids(&self) -> Vec<String> {
        self.parties.iter().map(|p| p.party_id.clone()).collect()
    }
}

/// Creates a federation of one researcher and `nodes` nodes under `dir`, every party listening on
/// its own loopback port, set up through a signed roster: the researcher registers every node's
/// bundle, each node registers the researcher's and imports the researcher's roster
/// (`dir/roster.json`).
pub fn prepare(dir: &Path, nodes: usize) -> Result<Federation> {
    prepare_gated(dir, nodes, &Mutex::new(()))
}

/// [`prepare`], holding `gate` during each step that writes under `dir` (one party's identity, one
/// registration): a thread that takes `gate` and keeps it (`secagg demo`'s interrupt handler,
/// deleting `dir`) knows that nothing is written there any more.
pub fn prepare_gated<T>(dir: &Path, nodes: usize, gate: &Mutex<T>) -> Result<Federation> {
    // A poisoned gate only means another step panicked; the directory is still ours to write.
    let step = || gate.lock().unwrap_or_else(PoisonError::into_inner);
    if nodes < 2 {
        return Err(Error::invalid(format!(
            "a federation needs at least 2 nodes (3 parties), got {nodes}"
        )));
    }
    let guard = step();
    fs_secure::create_private_dir(dir)?;
    let bundles_dir = dir.join("bundles");
    fs_secure::create_private_dir(&bundles_dir)?;
    drop(guard);
    let now = OffsetDateTime::now_utc();
    let ports = crate::loopback::free_ports_below_ephemeral(nodes + 1)?;
    let mut parties = Vec::with_capacity(nodes + 1);
    let mut bundles = Vec::with_capacity(nodes + 1);
    for (i, port) in ports.iter().enumerate() {
        let role = if i == 0 { Role::Researcher } else { Role::Node };
        let home = Home::new(dir.join(if i == 0 {
            "researcher".to_owned()
        } else {
            format!("node{i}")
        }));
        let opts = InitOptions {
            role,
            id: None,
            host: Some("127.0.0.1".into()),
            port: Some(u32::from(*port)),
            key_type: GeneratedKeyType::P256,
            validity_days: 30,
            force: false,
            allow_custom_id: false,
            name: None,
        };
        let _guard = step();
        let id = identity::init(&home, &opts, now)?;
        let bundle = registration::bundle(&id);
        let path = bundles_dir.join(format!("{}.json", id.party_id));
        let text =
            serde_json::to_vec_pretty(&bundle).map_err(|e| Error::Internal(e.to_string()))?;
        fs_secure::write_atomic(&path, &text, PUBLIC_FILE_MODE)?;
        bundles.push((path, bundle.fingerprint.to_string()));
        parties.push(DemoParty {
            party_id: id.party_id.to_string(),
            home,
        });
    }
    // The roster path (O(N) registrations): the researcher registers every node's bundle in one
    // transaction and exports one signed roster; each node registers the researcher's bundle and
    // imports the roster. The fingerprint check stands in for the out-of-band comparison.
    let request = |(bundle, fingerprint): &(PathBuf, String)| {
        registration::request_from_bundle(bundle, Some(fingerprint.clone()), false, false)
    };
    let node_requests = bundles[1..]
        .iter()
        .map(request)
        .collect::<Result<Vec<_>>>()?;
    {
        let _guard = step();
        registration::register_all(&parties[0].home, &node_requests, now)?;
    }
    let researcher = identity::load(&parties[0].home)?;
    let exported = {
        let _guard = step();
        roster::export(&researcher, &roster::ExportOptions::default(), now)?
    };
    let roster_path = dir.join("roster.json");
    let text =
        serde_json::to_vec_pretty(&exported.file).map_err(|e| Error::Internal(e.to_string()))?;
    {
        let _guard = step();
        fs_secure::write_atomic(&roster_path, &text, PUBLIC_FILE_MODE)?;
    }
    let researcher_request = request(&bundles[0])?;
    let file = roster::UnverifiedRoster::read(&roster_path)?;
    for node in &parties[1..] {
        let _guard = step();
        registration::register(&node.home, &researcher_request, now)?;
        let own = identity::load(&node.home)?;
        roster::import(&own, &file, &roster::ImportOptions::default(), None, now)?;
    }
    Ok(Federation {
        dir: dir.to_owned(),
        parties,
    })
}

/// The result of checking a federation's stored keys for one session.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Whether `sk0 + Σ sk_i = 0` over the integers.
    pub verified: bool,
    /// Fingerprint of each party's key, in session order.
    pub key_fingerprints: Vec<String>,
    /// Bit length of the server key `|sk0|`.
    pub server_key_bits: u64,
}

/// Reads every party's stored key for `session_id` and checks `sk0 + Σ sk_i = 0` over ℤ.
pub fn verify(federation: &Federation, session_id: &SessionId) -> Result<Verification> {
    let mut sum = BigInt::zero();
    let mut key_fingerprints = Vec::new();
    let mut server_key_bits = 0;
    for (i, party) in federation.parties.iter().enumerate() {
        let ctx = session::get_context(&party.home, session_id)
            .map_err(|e| e.context(format!("party `{}`", party.party_id)))?;
        let key = SecretKey::from_decimal(&ctx.key_decimal)?;
        if i == 0 {
            server_key_bits = key.bits();
        }
        key_fingerprints.push(key.fingerprint());
        sum += key.to_bigint();
    }
    Ok(Verification {
        verified: sum.is_zero(),
        key_fingerprints,
        server_key_bits,
    })
}

/// The result of [`aggregate_check`].
#[derive(Debug, Clone, Serialize)]
pub struct AggregateCheck {
    /// Parameters per node.
    pub parameters: usize,
    /// Nodes that encrypted.
    pub nodes: usize,
    /// Largest difference between the decrypted average and the plain average.
    pub max_error: f64,
    /// Whether every value is within the quantisation error (2c / TR per value).
    pub verified: bool,
    /// Milliseconds the nodes spent encrypting, in all.
    pub encrypt_ms: f64,
    /// Milliseconds the researcher spent aggregating and decrypting.
    pub decrypt_ms: f64,
}

/// One aggregation round on the federation's keys of `session`: every node encrypts a random
/// vector of `parameters` values in `[−2, 2]`, the researcher decrypts the average from the
/// ciphertext files, and the result is compared with the plain average.
pub fn aggregate_check(
    federation: &Federation,
    session: &SessionId,
    parameters: usize,
) -> Result<AggregateCheck> {
    let biprime = aggregate::Biprime::default_biprime0();
    let nodes = &federation.parties[1..];
    let (inputs, plain) = random_inputs(nodes.len(), parameters);
    let mut files = Vec::with_capacity(nodes.len());
    let started = std::time::Instant::now();
    for (node, values) in nodes.iter().zip(inputs) {
        let req = aggregate::EncryptRequest::new(*session, 1, values);
        let file = aggregate::encrypt_round(&node.home, &req, &biprime, None)
            .map_err(|e| e.context(format!("node `{}`", node.party_id)))?;
        files.push((node.party_id.clone(), file));
    }
    let encrypted = started.elapsed();
    let req = aggregate::DecryptRequest {
        session: *session,
        round: 1,
        files,
        unsigned: aggregate::UnsignedFiles::Refuse,
    };
    let avg = aggregate::decrypt_round(&federation.parties[0].home, &req, &biprime, None)?;
    let decrypted = started.elapsed() - encrypted;
    let step =
        2.0 * f64::from(aggregate::DEFAULT_CLIPPING_RANGE) / f64::from(aggregate::TARGET_RANGE);
    Ok(AggregateCheck {
        nodes: nodes.len(),
        ..compared(&avg.average, &plain, step, (encrypted, decrypted))
    })
}

/// Each of `nodes` nodes' random vector of `parameters` values in `[−2, 2]`, and their plain
/// average.
fn random_inputs(nodes: usize, parameters: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let inputs: Vec<Vec<f64>> = (0..nodes)
        .map(|_| (0..parameters).map(|_| rng.gen_range(-2.0..2.0)).collect())
        .collect();
    let mut plain = vec![0.0f64; parameters];
    for values in &inputs {
        for (p, v) in plain.iter_mut().zip(values) {
            *p += v / nodes as f64;
        }
    }
    (inputs, plain)
}

/// The check of an `average` against the `plain` one, each value within `tolerance`, with the
/// time the nodes and the researcher took.
fn compared(
    average: &[f64],
    plain: &[f64],
    tolerance: f64,
    (encrypted, decrypted): (std::time::Duration, std::time::Duration),
) -> AggregateCheck {
    let max_error = average
        .iter()
        .zip(plain)
        .map(|(a, p)| (a - p).abs())
        .fold(0.0, f64::max);
    AggregateCheck {
        parameters: plain.len(),
        nodes: 0,
        max_error,
        verified: average.len() == plain.len() && max_error <= tolerance,
        encrypt_ms: (encrypted.as_secs_f64() * 1e6).round() / 1e3,
        decrypt_ms: (decrypted.as_secs_f64() * 1e6).round() / 1e3,
    }
}

/// Reads every party's LOM context of `session_id` and checks it: confirmed everywhere, the
/// researcher holding no secret, every node one secret per other node, and both nodes of every
/// pair the same one (the LOM counterpart of [`verify`]). `key_fingerprints` are the parties'
/// context fingerprints; `server_key_bits` is 0.
pub fn verify_lom(federation: &Federation, session_id: &SessionId) -> Result<Verification> {
    use crate::contexts::KeyState;
    use crate::engine::ContextScheme;
    let sid = session_id.to_string();
    let ids = federation.party_ids();
    let mut key_fingerprints = Vec::new();
    let mut sets = Vec::new();
    let mut verified = true;
    for (i, party) in federation.parties.iter().enumerate() {
        let ctx = session::get_context(&party.home, session_id)
            .map_err(|e| e.context(format!("party `{}`", party.party_id)))?;
        verified &= ctx.scheme == ContextScheme::Lom && ctx.state == KeyState::Confirmed;
        key_fingerprints.push(ctx.key_fingerprint.clone());
        if i == 0 {
            continue;
        }
        let peers: Vec<String> = ids[1..]
            .iter()
            .filter(|p| **p != party.party_id)
            .cloned()
            .collect();
        let set = crate::store::Store::open_party_read_only(&party.home)?
            .read(|tx| crate::store::lom_secrets::get(tx, &sid, &peers))?;
        sets.push(set);
    }
    for (a, set) in sets.iter().enumerate() {
        for (peer, secret) in set {
            let b = ids[1..]
                .iter()
                .position(|p| p == peer)
                .unwrap_or(usize::MAX);
            let back = sets
                .get(b)
                .and_then(|s| s.iter().find(|(p, _)| *p == ids[a + 1]))
                .map(|(_, s)| s);
            verified &= back.is_some_and(|s| **s == **secret);
        }
    }
    Ok(Verification {
        verified,
        key_fingerprints,
        server_key_bits: 0,
    })
}

/// [`aggregate_check`] for a LOM context: every node masks a random vector (secagg's profile,
/// round 1, unweighted), the researcher unmasks the average from the signed files, and it is
/// compared with the plain average (within two quantisation steps: v6's encoding truncates).
pub fn aggregate_check_lom(
    federation: &Federation,
    session: &SessionId,
    parameters: usize,
) -> Result<AggregateCheck> {
    let nodes = &federation.parties[1..];
    let (inputs, plain) = random_inputs(nodes.len(), parameters);
    let mut files = Vec::with_capacity(nodes.len());
    let started = std::time::Instant::now();
    for (node, values) in nodes.iter().zip(inputs) {
        let req = aggregate::LomEncryptRequest {
            session: *session,
            round: 1,
            label: 0,
            values,
            weight: None,
            clipping_range: aggregate::DEFAULT_CLIPPING_RANGE,
            profile: crate::lom::Profile::Secagg,
        };
        let masked = aggregate::encrypt_lom(&node.home, &req)
            .map_err(|e| e.context(format!("node `{}`", node.party_id)))?;
        files.push((node.party_id.clone(), masked.file));
    }
    let encrypted = started.elapsed();
    let req = aggregate::LomDecryptRequest {
        session: *session,
        round: 1,
        label: 0,
        files,
    };
    let avg = aggregate::decrypt_lom(&federation.parties[0].home, &req)?;
    let decrypted = started.elapsed() - encrypted;
    // LOM's encoding (v6's): T = 8192, reversed as −c + q·2c/(T − 1).
    let step = 2.0 * f64::from(aggregate::DEFAULT_CLIPPING_RANGE)
        / (crate::lom::encoding::TARGET_RANGE - 1) as f64;
    Ok(AggregateCheck {
        nodes: nodes.len(),
        ..compared(&avg.average, &plain, 2.0 * step, (encrypted, decrypted))
    })
}
