//! `secagg-core`: secure-aggregation setup for a federated-learning federation, the library behind
//! the `secagg` command.
//!
//! A federation is one researcher and N ≥ 2 nodes (Fed-BioMed's parties). Before they can
//! aggregate model updates securely, every party needs keys such that the researcher holds a
//! *server key* `sk0` and each node a *user key* `sk_i` with `sk0 + Σ sk_i = 0` over the integers,
//! and no party learns another's key. This crate gets them there:
//!
//! - **Identity and certificates** ([`identity`], [`certificate`]): a party's id, role, MPC
//!   endpoint, private key and self-signed X.509 certificate in its home directory ([`home`]);
//!   creating, loading and renewing them; parsing and validating the certificates of others for
//!   pinning (supported keys, validity, self-signature), with SHA-256 fingerprints.
//! - **Peer store and registration** ([`registration`], [`peers`]): registration instructions and
//!   bundles for others, and registering their certificates and endpoints in this party's local
//!   SQLite store after every check passed (all or nothing); [`fedbiomed`] imports the
//!   certificates of a Fed-BioMed v4 TinyDB file the same way.
//! - **Signed rosters** ([`roster`]): the researcher vouches for the federation with a roster
//!   signed by its identity key; a node that registered the researcher imports it (signature,
//!   serial, expiry and every entry checked, in one transaction), so a federation takes O(N)
//!   out-of-band checks instead of N(N−1).
//! - **Negotiation sessions** ([`session`], [`engine`]): a session request (session id, ordered
//!   party list) checked against the store and turned into a validated
//!   [`NegotiationPlan`](engine::NegotiationPlan), run by an [`Engine`](engine::Engine) (the
//!   in-process [`NativeEngine`](engine::NativeEngine): Shamir sharing over pinned mutual TLS 1.3;
//!   or [`MpSpdzEngine`](engine::MpSpdzEngine): MP-SPDZ's `shamir-party.x`), the key stored as a
//!   context. Sessions are **all or nothing**: a stored server key implies that every node stored
//!   its key; a node stores its key *unconfirmed* first and marks it *confirmed* when the
//!   researcher confirms.
//! - **Contexts** ([`contexts`], listed, shown, confirmed, pruned and deleted through
//!   [`session`]): the stored keys and their states (`confirmed`, `unconfirmed`, expired after
//!   [`UNCONFIRMED_EXPIRY`](contexts::UNCONFIRMED_EXPIRY)).
//! - **VPN** ([`vpn`]): the WireGuard server's peer registry (address pools per peer type,
//!   pre-shared keys, Fed-BioMed's `config.env`), the server's and the peers' configurations, the
//!   peer-side key pair, and adopting a Fed-BioMed v4 VPN server's state
//!   ([`vpn::fedbiomed`]).
//! - **Containers** ([`deploy`]): the deployment's `docker compose` project and its verbs.
//! - **MP-SPDZ support** ([`mpspdz`]): locating a build, and the doctor that says whether it can
//!   run secagg's sessions (the compile cache and run directories are internal to the engine).
//! - **Aggregation** ([`aggregate`]): Joye–Libert encryption of quantised model updates with a
//!   node's key, and decryption of their sum only with the server key, bit-compatible with
//!   Fed-BioMed v4.5.0 (and v6's encoding); LOM masking with the pairwise secrets of a context
//!   ([`lom`], [`aggregate::lom_round`]), and LOM rounds that survive nodes dropping out
//!   ([`aggregate::lom_dropout`]: self-masks shared t-of-n between the nodes' agents).
//! - **Local demo federations** ([`demo`], [`processes`]): a researcher and N nodes with their own
//!   homes on one machine, registered with each other, their parties run as `secagg negotiate`
//!   processes, and the stored keys checked to cancel.
//! - **Party agent** ([`agent`]): `secagg serve`, a long-running agent on the party's endpoint that
//!   joins the sessions researchers request (several at once, routed by session id), and its
//!   clients, a whole session run from the researcher and the federation's preflight check.
//!
//! Errors are one type, [`Error`], with a kind ([`ErrorKind`]) that gives the process exit code
//! and an optional hint ([`error`]). [`fault`] is a test-only hook (compiled in only with the
//! `fault-injection` feature) that makes a party crash or fail at a chosen protocol step.
//!
//! What it does not do: no printing and no argument parsing (the `secagg` binary is a thin layer
//! over this crate and owns both); no training and no transport of model updates or ciphertexts
//! between parties (the caller moves the files); no federation roster (the party list of a session
//! is given by the caller).
//!
//! # Public modules
//!
//! | module | what |
//! |---|---|
//! | [`error`], [`party`], [`home`] | errors and exit codes; party ids, roles, endpoints, session ids; a party's home |
//! | [`certificate`], [`identity`] | certificates; this party's identity |
//! | [`peers`], [`registration`], [`fedbiomed`] | registered peers; registering them; Fed-BioMed import |
//! | [`engine`], [`session`], [`contexts`] | engines, plans and keys; sessions from the store; stored keys |
//! | [`aggregate`] | Joye–Libert aggregation with the negotiated keys |
//! | [`vpn`], [`deploy`] | the WireGuard VPN; containers |
//! | [`mpspdz`] | locating MP-SPDZ, the doctor |
//! | [`demo`], [`processes`] | local federations; parties as processes |
//! | [`agent`] | the party agent, `session run`, `federation check` |
//! | [`fault`] | test-only fault injection |
//!
//! Internals (crate-private): the SQLite store (one module per table), the TLS transport with its
//! pinned certificate verifiers, the prime field and Shamir sharing (its parameters are
//! re-exported by [`engine`]), the process supervisor (its party runner is re-exported by
//! [`processes`]), MP-SPDZ's program cache, run directories and output parsing, secure file
//! writes, and free loopback ports.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The public API: use cases and the types they take and return.
pub mod agent;
pub mod aggregate;
pub mod certificate;
pub mod contexts;
pub mod demo;
pub mod deploy;
pub mod engine;
pub mod error;
pub mod fault;
pub mod fedbiomed;
pub mod home;
pub mod identity;
pub mod lom;
pub mod lookup;
pub mod mpspdz;
pub mod party;
pub mod peers;
pub mod processes;
pub mod registration;
pub mod roster;
pub mod session;
pub mod signing;
pub mod vpn;

// Internals: the building blocks of the use cases above.
mod field;
mod fs_secure;
mod loopback;
mod parallel;
mod store;
mod supervise;
mod transport;
mod untrusted_text;

pub use error::{Error, ErrorKind, Result};
pub use party::{Endpoint, Host, PartyId, Role, SessionId};
