//! Finding a stored context or a registered party by a unique prefix of its id, as git and
//! docker find objects: party ids are 41 characters and session ids 36, and nobody reads them
//! out in full. A whole id is taken as it is; a prefix must name exactly one stored id, and an
//! ambiguous one is refused (exit 3) with its candidates, so that a lookup never picks one of two
//! parties silently.

use crate::error::{Error, Result};
use crate::home::Home;
use crate::party::{PartyId, SessionId};
use crate::store::{contexts, peers, Store};

/// Shortest prefix taken, so that a stray character is not a lookup.
pub const MIN_PREFIX: usize = 4;

/// How many candidates an ambiguity error lists.
const LISTED: usize = 8;

/// The session of `text`: a whole session id (a uuid or `secagg_<uuid>`), or a unique prefix of a
/// stored context's session id (`secagg_` and case ignored).
pub fn session(home: &Home, text: &str) -> Result<SessionId> {
    if let Ok(id) = SessionId::parse(text) {
        return Ok(id);
    }
    let lower = text.trim().to_ascii_lowercase();
    let prefix = lower.strip_prefix("secagg_").unwrap_or(&lower);
    if prefix.len() < MIN_PREFIX || !prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        // Neither an id nor a prefix of one: the parser's own error says what an id is.
        return SessionId::parse(text);
    }
    // Ids only: a lookup reads no key.
    let stored: Vec<String> = Store::open_party_read_only(home)?
        .read(|tx| contexts::session_ids(tx))?
        .into_iter()
        .filter(|id| id.starts_with(prefix))
        .collect();
    let id = one(text, "stored context's session", stored)?;
    SessionId::parse(&id)
}

/// The registered party of `text`: a registered party id, or a unique prefix of one. Anything
/// else is returned parsed as it is, for the caller to say that it is not registered.
pub fn party(home: &Home, text: &str) -> Result<PartyId> {
    let text = text.trim();
    let registered: Vec<String> = Store::open_party_read_only(home)?
        .read(|tx| peers::list(tx))?
        .into_iter()
        .map(|p| p.party_id.to_string())
        .collect();
    if text.len() < MIN_PREFIX || registered.iter().any(|id| id == text) {
        return PartyId::parse_custom(text);
    }
    let matching: Vec<String> = registered
        .into_iter()
        .filter(|id| id.starts_with(text))
        .collect();
    if matching.is_empty() {
        return PartyId::parse_custom(text);
    }
    PartyId::parse_custom(&one(text, "registered party's id", matching)?)
}

/// The single id of `candidates` that `text` is a prefix of.
fn one(text: &str, what: &str, mut candidates: Vec<String>) -> Result<String> {
    candidates.sort();
    match candidates.len() {
        1 => Ok(candidates.remove(0)),
        0 => Err(Error::not_found(format!(
            "no {what} starts with `{}`",
            text.escape_debug()
        ))),
        n => {
            let shown: Vec<&str> = candidates.iter().take(LISTED).map(String::as_str).collect();
            Err(Error::invalid(format!(
                "`{}` is ambiguous: {n} ids start with it: {}{}",
                text.escape_debug(),
                shown.join(", "),
                if n > LISTED { ", …" } else { "" }
            ))
            .with_hint("give more characters of the id"))
        }
    }
}
