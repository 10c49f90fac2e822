//! Transport of the native key negotiation: pinned mutual TLS 1.3 between parties, with
//! length-prefixed frames.
//!
//! - [`pinned_verifier`]: the rustls verifiers that accept exactly the registered certificates
//!   (the security-critical part; read its documentation before changing anything here);
//! - [`tls`]: client/server configurations (ring, TLS 1.3 only) and TLS error classification;
//! - [`frame`]: frame encoding with a size cap, reads and writes bounded by the session deadline;
//! - [`mesh`]: the connection phase (dial up, accept down, retry with backoff, session-binding
//!   hello) producing one [`mesh::Link`] per peer;
//! - [`pool`]: the connections a party agent keeps open between sessions.
//!
//! Transport knows nothing of engines or plans: it takes a [`mesh::MeshConfig`] (parties as labels,
//! endpoints and pinned certificates, own index and key, listen address, an opaque transcript
//! binding). The protocol that runs over the mesh, and the binding it computes, live in
//! [`crate::engine::native`].

pub(crate) mod frame;
pub(crate) mod listen;
pub(crate) mod mesh;
pub(crate) mod pinned_verifier;
pub(crate) mod pool;
pub(crate) mod tls;
