//! Parties of a federation: their ids, roles and MPC endpoints.
//!
//! A party id follows Fed-BioMed's convention, `researcher_<suffix>` or `node_<suffix>`, and the
//! prefix decides the role. Fed-BioMed treats any id not starting with `node_` as a researcher;
//! secagg refuses such ids instead, so that a typo (`Node_…`) cannot silently change a party's role.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The prefix of Fed-BioMed v4's secagg ids (`secagg_<uuid4>`); [`SessionId::parse`] strips it.
pub const FEDBIOMED_SESSION_PREFIX: &str = "secagg_";

/// Longest party id accepted, in bytes.
pub const MAX_PARTY_ID_LEN: usize = 128;

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_LEN: usize = 64;

/// A party's display name (`init --name "CHU Lyon"`): shown in lists beside the id, carried in
/// bundles and rosters, never used for identity (two parties may share one). Trimmed; 1 to 64
/// characters; no control characters, since it is printed in tables and logs on other machines.
pub fn check_display_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_DISPLAY_NAME_LEN {
        return Err(Error::invalid(format!(
            "a display name has 1 to {MAX_DISPLAY_NAME_LEN} characters, not {}",
            name.chars().count()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "display name `{}` holds a control character",
            name.escape_debug()
        ))
        .with_hint("a display name is one line of printable text, e.g. \"CHU Lyon\""));
    }
    Ok(name.to_owned())
}

/// The role of a party in a federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The researcher: party 0 of every session, receives the server key.
    Researcher,
    /// A data-holding node: receives a user key.
    Node,
}

impl Role {
    /// The id prefix of this role (`researcher_` or `node_`).
    pub fn id_prefix(self) -> &'static str {
        match self {
            Role::Researcher => "researcher_",
            Role::Node => "node_",
        }
    }

    /// Fed-BioMed's component name (`RESEARCHER` or `NODE`).
    pub fn component(self) -> &'static str {
        match self {
            Role::Researcher => "RESEARCHER",
            Role::Node => "NODE",
        }
    }

    /// Lowercase name (`researcher` or `node`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Researcher => "researcher",
            Role::Node => "node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "researcher" | "RESEARCHER" => Ok(Role::Researcher),
            "node" | "NODE" => Ok(Role::Node),
            other => Err(Error::invalid(format!(
                "unknown role `{other}`: expected `researcher` or `node`"
            ))),
        }
    }
}

/// A validated party id: `researcher_` or `node_` followed by 1 or more of `[A-Za-z0-9_.-]`,
/// at most [`MAX_PARTY_ID_LEN`] bytes in all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartyId(String);

impl PartyId {
    /// Parses and validates a party id.
    pub fn parse(s: &str) -> Result<Self> {
        let hint = "a party id is `researcher_<suffix>` or `node_<suffix>`, the suffix made of letters, digits, `_`, `.` and `-` (secagg makes `node_<uuid4>` when none is given)";
        if s.is_empty() {
            return Err(Error::invalid("party id is empty").with_hint(hint));
        }
        if s.len() > MAX_PARTY_ID_LEN {
            return Err(Error::invalid(format!(
                "party id is {} bytes long, the limit is {MAX_PARTY_ID_LEN}",
                s.len()
            ))
            .with_hint(hint));
        }
        let suffix = s
            .strip_prefix(Role::Researcher.id_prefix())
            .or_else(|| s.strip_prefix(Role::Node.id_prefix()))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "party id `{}` does not start with `researcher_` or `node_`",
                    s.escape_debug()
                ))
                .with_hint(hint)
            })?;
        if suffix.is_empty() {
            return Err(
                Error::invalid(format!("party id `{s}` has nothing after the prefix"))
                    .with_hint(hint),
            );
        }
        refuse_bad_character(s, suffix, hint)?;
        Ok(PartyId(s.to_owned()))
    }

    /// Parses a party id that may lack the `researcher_`/`node_` prefix, as Fed-BioMed accepts:
    /// 1 to [`MAX_PARTY_ID_LEN`] bytes of `[A-Za-z0-9_.-]`. Its role follows Fed-BioMed's rule
    /// ([`PartyId::role`]: a node iff it starts with `node_`, a researcher otherwise).
    ///
    /// For ids that were validated when they entered this home (its own configuration, the
    /// registered peers, a session's party list checked against them), and for the entry points
    /// given an explicit option ([`PartyId::parse_with_role`]). Everywhere else ids are parsed
    /// with [`PartyId::parse`], so a mistyped prefix is caught instead of silently naming a
    /// researcher.
    pub fn parse_custom(s: &str) -> Result<Self> {
        if let Ok(id) = PartyId::parse(s) {
            return Ok(id);
        }
        let hint = "a party id is 1 to 128 letters, digits, `_`, `.` or `-`";
        if s.is_empty() || s.len() > MAX_PARTY_ID_LEN {
            return Err(Error::invalid(format!(
                "party id `{}` is empty or longer than {MAX_PARTY_ID_LEN} bytes",
                s.escape_debug()
            ))
            .with_hint(hint));
        }
        refuse_bad_character(s, s, hint)?;
        Ok(PartyId(s.to_owned()))
    }

    /// Parses an id given with its `role` at an entry point (init, identity import, register,
    /// Fed-BioMed import). With `allow_custom`, an id without the `researcher_`/`node_` prefix is
    /// accepted ([`PartyId::parse_custom`]) if `role` is the one Fed-BioMed gives it (a node iff
    /// it starts with `node_`); without it, the prefix is required.
    pub fn parse_with_role(s: &str, role: Role, allow_custom: bool) -> Result<Self> {
        let id = PartyId::parse_entry(s, allow_custom)?;
        if id.role() != role {
            return Err(Error::invalid(format!(
                "party id `{id}` names a {} under Fed-BioMed's rule (a node id starts with `node_`, every other id is a researcher's), not a {role}",
                id.role()
            ))
            .with_hint("node ids must start with `node_`; give the role that matches the id"));
        }
        Ok(id)
    }

    /// Parses an id at an entry point where the role is not stated separately: with
    /// `allow_custom` as [`PartyId::parse_custom`] (the role then follows Fed-BioMed's rule),
    /// without it as [`PartyId::parse`], whose error then names the option.
    pub fn parse_entry(s: &str, allow_custom: bool) -> Result<Self> {
        if allow_custom {
            return PartyId::parse_custom(s);
        }
        PartyId::parse(s).map_err(|e| {
            let hint = format!(
                "{}; a Fed-BioMed id without the prefix is accepted with --allow-custom-id",
                e.hint().unwrap_or("")
            );
            e.with_hint(hint)
        })
    }

    /// True for an id without the `researcher_`/`node_` prefix (accepted by
    /// [`PartyId::parse_custom`]).
    pub fn is_custom(&self) -> bool {
        !(self.0.starts_with(Role::Researcher.id_prefix())
            || self.0.starts_with(Role::Node.id_prefix()))
    }

    /// A fresh id `<role prefix><uuid4>` in Fed-BioMed's convention.
    pub fn generate(role: Role) -> Self {
        PartyId(format!("{}{}", role.id_prefix(), uuid::Uuid::new_v4()))
    }

    /// The role the id names, by Fed-BioMed's rule: a node iff it starts with `node_`, a
    /// researcher otherwise (including a custom id, see [`PartyId::parse_custom`]).
    pub fn role(&self) -> Role {
        if self.0.starts_with(Role::Node.id_prefix()) {
            Role::Node
        } else {
            Role::Researcher
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Refuses a party id `id` whose `part` (the whole id, or what follows its prefix) holds a
/// character other than `[A-Za-z0-9_.-]`, naming the character.
fn refuse_bad_character(id: &str, part: &str, hint: &str) -> Result<()> {
    match part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(bad) => Err(Error::invalid(format!(
            "party id `{}` contains the character {bad:?}",
            id.escape_debug()
        ))
        .with_hint(hint)),
        None => Ok(()),
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PartyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PartyId::parse(s)
    }
}

impl TryFrom<String> for PartyId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        PartyId::parse(&s)
    }
}

impl From<PartyId> for String {
    fn from(id: PartyId) -> String {
        id.0
    }
}

/// A negotiation session id: a uuid that every party of the session uses.
///
/// Parsed once at the boundary ([`SessionId::parse`]); everything past it (session requests,
/// plans, stored contexts) takes this type, so a malformed id cannot get further.
///
/// Fed-BioMed v4 names a secagg context `secagg_<uuid4>`; that spelling is accepted wherever a
/// session id is parsed and names the same session as the bare uuid (it is normalised to the
/// uuid, which is what is stored and printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(uuid::Uuid);

impl SessionId {
    /// Parses a session id: a uuid in any of its usual spellings, or Fed-BioMed's
    /// `secagg_<uuid>` ([`FEDBIOMED_SESSION_PREFIX`]), which names the same session; surrounding
    /// blanks are ignored.
    pub fn parse(s: &str) -> Result<Self> {
        let trimmed = s.trim();
        let bare = trimmed
            .strip_prefix(FEDBIOMED_SESSION_PREFIX)
            .unwrap_or(trimmed);
        uuid::Uuid::parse_str(bare).map(SessionId).map_err(|_| {
            Error::invalid(format!("session id `{}` is not a uuid", s.escape_debug())).with_hint(
                "all parties must use the same session id: a uuid (`secagg session new` prints a fresh one) or Fed-BioMed's `secagg_<uuid>`",
            )
        })
    }

    /// The id in Fed-BioMed's spelling, `secagg_<uuid>`.
    pub fn fedbiomed_form(&self) -> String {
        format!("{FEDBIOMED_SESSION_PREFIX}{}", self.0)
    }

    /// A fresh random session id (uuid4).
    pub fn generate() -> Self {
        SessionId(uuid::Uuid::new_v4())
    }

    /// The uuid.
    pub fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl From<uuid::Uuid> for SessionId {
    fn from(u: uuid::Uuid) -> Self {
        SessionId(u)
    }
}

impl fmt::Display for SessionId {
    /// The hyphenated lowercase form, as stored and as the other parties print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for SessionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SessionId::parse(s)
    }
}

/// The host part of an endpoint: an IP literal or a DNS host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS host name (RFC 1123), stored in lowercase.
    Name(String),
}

impl Host {
    /// Parses an IP literal (IPv6 with or without brackets) or a DNS host name.
    pub fn parse(s: &str) -> Result<Self> {
        let hint = "give an IPv4 address (10.222.0.2), an IPv6 address (fd00::2) or a host name (node1.example.org)";
        let unbracketed = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let bad = || {
            Error::invalid(format!(
                "`{}` is neither an IP address nor a host name",
                s.escape_debug()
            ))
            .with_hint(hint)
        };
        if s.is_empty() || s.len() > 253 {
            return Err(bad());
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        let labels_ok = name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        // A name made only of digits and dots is a mistyped IPv4 address, not a host name.
        let all_numeric = name.chars().all(|c| c.is_ascii_digit() || c == '.');
        if !labels_ok || all_numeric {
            return Err(bad());
        }
        Ok(Host::Name(name.to_ascii_lowercase()))
    }
}

impl FromStr for Host {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Host::parse(s)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// Where a party runs key negotiation: host and TCP port (1–65535).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// IP literal or host name.
    pub host: Host,
    /// TCP port, never 0.
    pub port: u16,
}

impl Endpoint {
    /// Validates `host` and `port` (port 0 is refused).
    pub fn new(host: &str, port: u32) -> Result<Self> {
        let host = Host::parse(host)?;
        let port = validate_port(port)?;
        Ok(Endpoint { host, port })
    }

    /// `host:port`, with IPv6 literals in brackets (the form `connect` and ip files take).
    pub fn socket_string(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.port),
            h => format!("{h}:{}", self.port),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.socket_string())
    }
}

/// Checks that `port` is in 1–65535.
pub fn validate_port(port: u32) -> Result<u16> {
    match u16::try_from(port) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Error::invalid(format!("port {port} is out of range"))
            .with_hint("a port is a number from 1 to 65535")),
    }
}

/// Parses a port given as text (Fed-BioMed stores ports as int or string).
pub fn parse_port(s: &str) -> Result<u16> {
    let n: u32 = s.trim().parse().map_err(|_| {
        Error::invalid(format!("port `{}` is not a number", s.escape_debug()))
            .with_hint("a port is a number from 1 to 65535")
    })?;
    validate_port(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn party_ids() {
        assert_eq!(PartyId::parse("node_7c1e").unwrap().role(), Role::Node);
        assert_eq!(
            PartyId::parse("researcher_0b2f").unwrap().role(),
            Role::Researcher
        );
        let g = PartyId::generate(Role::Node);
        assert!(PartyId::parse(g.as_str()).is_ok());
        for bad in [
            "",
            "node_",
            "Node_x",
            "hospital",
            "node_a b",
            "node_é",
            "node_x;rm",
        ] {
            assert!(PartyId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(PartyId::parse(&format!("node_{}", "a".repeat(200))).is_err());
    }

    #[test]
    fn custom_ids_follow_fedbiomeds_role_rule_and_need_the_option() {
        let lab = PartyId::parse_custom("mylab-01").unwrap();
        assert_eq!(lab.role(), Role::Researcher);
        assert!(lab.is_custom());
        assert!(!PartyId::parse_custom("node_7").unwrap().is_custom());
        for bad in ["", "my lab", "a/b", "é"] {
            assert!(PartyId::parse_custom(bad).is_err(), "{bad:?}");
        }
        assert!(PartyId::parse_custom(&"a".repeat(129)).is_err());
        // Entry points: the option, and the role stated must be Fed-BioMed's.
        assert_eq!(
            PartyId::parse_with_role("mylab", Role::Researcher, true).unwrap(),
            lab_named("mylab")
        );
        let e = PartyId::parse_with_role("mylab", Role::Researcher, false).unwrap_err();
        assert!(e.hint().unwrap().contains("--allow-custom-id"), "{e:?}");
        let e = PartyId::parse_with_role("hospital7", Role::Node, true).unwrap_err();
        assert!(e.to_string().contains("names a researcher"), "{e}");
        let e = PartyId::parse_with_role("node_7", Role::Researcher, false).unwrap_err();
        assert!(e.to_string().contains("names a node"), "{e}");
        assert!(PartyId::parse_with_role("node_7", Role::Node, false).is_ok());
    }

    fn lab_named(s: &str) -> PartyId {
        PartyId::parse_custom(s).unwrap()
    }

    #[test]
    fn session_ids() {
        let id = SessionId::parse(" 3F0C8D2E-1B4A-4C6D-9E8F-0A1B2C3D4E5F ").unwrap();
        assert_eq!(id.to_string(), "3f0c8d2e-1b4a-4c6d-9e8f-0a1b2c3d4e5f");
        assert_eq!(SessionId::parse(&id.to_string()).unwrap(), id);
        let e = SessionId::parse("not-a-uuid").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("is not a uuid"), "{e}");
    }

    #[test]
    fn fedbiomed_session_ids_name_the_same_session() {
        let bare = SessionId::parse("3f0c8d2e-1b4a-4c6d-9e8f-0a1b2c3d4e5f").unwrap();
        let fbm = SessionId::parse(" secagg_3f0c8d2e-1b4a-4c6d-9e8f-0a1b2c3d4e5f ").unwrap();
        assert_eq!(fbm, bare);
        assert_eq!(fbm.to_string(), "3f0c8d2e-1b4a-4c6d-9e8f-0a1b2c3d4e5f");
        assert_eq!(
            bare.fedbiomed_form(),
            "secagg_3f0c8d2e-1b4a-4c6d-9e8f-0a1b2c3d4e5f"
        );
        assert_eq!(SessionId::parse(&bare.fedbiomed_form()).unwrap(), bare);
        for bad in [
            "secagg_",
            "secagg_not-a-uuid",
            "SECAGG_3f0c8d2e-1b4a-4c6d-9e8f-0a1b2c3d4e5f",
            "secagg_secagg_3f0c8d2e-1b4a-4c6d-9e8f-0a1b2c3d4e5f",
        ] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse("10.222.0.2").unwrap(),
            Host::Ip("10.222.0.2".parse().unwrap())
        );
        assert_eq!(
            Host::parse("[::1]").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("LocalHost").unwrap(),
            Host::Name("localhost".into())
        );
        for bad in [
            "",
            "10.0.0.300",
            "a..b",
            "-a.b",
            "a_b",
            "host name",
            "1.2.3",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ports_and_endpoints() {
        assert!(validate_port(0).is_err());
        assert!(validate_port(65536).is_err());
        assert_eq!(parse_port(" 14002 ").unwrap(), 14002);
        assert!(parse_port("14x").is_err());
        assert_eq!(
            Endpoint::new("::1", 14000).unwrap().to_string(),
            "[::1]:14000"
        );
    }
}
