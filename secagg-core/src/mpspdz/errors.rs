//! From MP-SPDZ's log lines to secagg error kinds.
//!
//! `shamir-party.x` v0.3.4 reports nearly every runtime failure by aborting (SIGABRT, "exit 134")
//! after printing a few recognisable lines on stderr (see `mp-spdz-interface.md` §2–§8). These
//! lines are matched here, most specific first, and turned into an [`Error`] of the right kind
//! that names the party involved and quotes the line.

use crate::error::Error;
use crate::party::PartyId;

/// What the classifier knows about the session, to name parties instead of `P<j>`.
#[derive(Debug, Clone, Default)]
pub struct LogContext {
    /// Party ids in session order.
    pub party_ids: Vec<PartyId>,
    /// `host:port` of each party, as written in the ip file.
    pub endpoints: Vec<String>,
}

impl LogContext {
    fn party(&self, j: usize) -> String {
        match self.party_ids.get(j) {
            Some(id) => format!("party {j} (`{id}`)"),
            None => format!("party {j}"),
        }
    }
}

fn quote(line: &str) -> String {
    let l = line.trim();
    let l = if l.len() > 300 {
        let mut cut = 300;
        while !l.is_char_boundary(cut) {
            cut -= 1;
        }
        &l[..cut]
    } else {
        l
    };
    format!("MP-SPDZ said: \"{}\"", l.escape_debug())
}

/// `P<j>` right after `prefix` in `line`.
fn party_after(line: &str, prefix: &str) -> Option<usize> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn find<'a>(lines: &'a [String], needle: &str) -> Option<&'a str> {
    lines
        .iter()
        .map(String::as_str)
        .find(|l| l.contains(needle))
}

/// The reason in `what():  handshake: <reason>` (or any `what():` line).
fn what_reason(lines: &[String]) -> Option<&str> {
    lines
        .iter()
        .filter_map(|l| l.split_once("what():").map(|(_, r)| r.trim()))
        .next_back()
}

/// Classifies a failed run from its log lines. `None` when no known line is present.
pub fn classify(lines: &[String], ctx: &LogContext) -> Option<Error> {
    // TLS handshake failures name the peer.
    if let Some(line) = find(lines, "-side handshake with P") {
        let j = party_after(line, "handshake with P");
        let who = j.map_or_else(|| "a peer".to_owned(), |j| ctx.party(j));
        let reason = what_reason(lines)
            .map(|r| r.trim_start_matches("handshake:").trim())
            .unwrap_or("unknown reason");
        let q = quote(&format!("handshake: {reason}"));
        let lower = reason.to_ascii_lowercase();
        if lower.contains("stream truncated")
            || lower.contains("connection reset")
            || lower.contains("end of file")
        {
            return Some(
                Error::peer(format!(
                    "{who} closed the connection during the TLS handshake ({q})"
                ))
                .with_hint("that party failed or aborted; see its own error"),
            );
        }
        let hint = if lower.contains("expired") {
            "a certificate has expired: renew it (`secagg certificate generate --force`) and register it again everywhere".to_owned()
        } else if lower.contains("internal error") {
            format!("{who} refused this party's certificate name: MP-SPDZ v0.3.4 needs CN=* or CN=P<j> (see `secagg mpspdz doctor`)")
        } else {
            format!("the certificate {who} presented is not the one registered here (or the reverse): compare fingerprints with `secagg certificate show` and `secagg identity show` on both sides")
        };
        return Some(
            Error::authentication(format!("TLS handshake with {who} failed ({q})")).with_hint(hint),
        );
    }
    if let Some(line) = find(lines, "key values mismatch") {
        return Some(
            Error::invalid(format!(
                "this party's private key does not match its certificate ({})",
                quote(line)
            ))
            .with_hint("check identity/key.pem and identity/cert.pem (`secagg identity show`)"),
        );
    }
    if let Some(line) = find(lines, "Not compiled for").or_else(|| find(lines, "GFP_MOD_SZ")) {
        return Some(
            Error::external(format!(
                "shamir-party.x does not support the session's prime size ({})",
                quote(line)
            ))
            .with_hint(
                "rebuild MP-SPDZ with `MOD = -DGFP_MOD_SZ=33` in CONFIG.mine for the 2050-bit prime",
            ),
        );
    }
    if let Some(line) = find(lines, "Missing 'Programs/") {
        return Some(
            Error::external(format!(
                "shamir-party.x cannot find the compiled program ({})",
                quote(line)
            ))
            .with_hint(
                "delete <home>/mpspdz-cache to recompile it, and check `secagg mpspdz doctor`",
            ),
        );
    }
    if let Some(line) = find(lines, "Different prime for compilation")
        .or_else(|| find(lines, "player id too large"))
    {
        return Some(
            Error::external(format!(
                "the compiled program does not match this session ({})",
                quote(line)
            ))
            .with_hint("delete <home>/mpspdz-cache to recompile it"),
        );
    }
    if let Some(line) =
        find(lines, "not enough inputs").or_else(|| find(lines, "cannot read integer from"))
    {
        return Some(Error::invalid(format!(
            "shamir-party.x could not read this party's input ({})",
            quote(line)
        )));
    }
    if let Some(line) = find(lines, "Cannot access Player-Data/") {
        return Some(Error::external(format!(
            "shamir-party.x cannot read this party's certificate or key ({})",
            quote(line)
        )));
    }
    if let Some(line) = find(lines, "cannot connect from") {
        // `… to <host>:<port> after 25 attempts in one minute because <reason>.`
        let target = line
            .split(" to ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("");
        let who = ctx
            .endpoints
            .iter()
            .position(|e| e == target)
            .map_or_else(|| format!("`{target}`"), |j| ctx.party(j));
        return Some(
            Error::peer(format!("cannot connect to {who} ({})", quote(line)))
                .with_hint("start every party within about 30 s of each other, and check the registered address and port"),
        );
    }
    if let Some(line) = find(lines, "No client after one minute") {
        return Some(
            Error::timeout(format!(
                "no peer connected to this party for one minute, MP-SPDZ's fixed wait ({})",
                quote(line)
            ))
            .with_hint("a lower-numbered party did not start or cannot reach this party's port"),
        );
    }
    if let Some(line) = find(lines, "Address already in use") {
        return Some(
            Error::peer(format!(
                "this party's negotiation port is in use ({})",
                quote(line)
            ))
            .with_hint("stop the program holding the port or register another port"),
        );
    }
    if let Some(line) = find(lines, "not enought hosts").or_else(|| find(lines, "Error opening")) {
        return Some(Error::external(format!(
            "shamir-party.x could not use the ip file ({})",
            quote(line)
        )));
    }
    if let Some(line) = find(lines, "stream truncated")
        .or_else(|| find(lines, "Connection reset by peer"))
        .or_else(|| find(lines, "End of file"))
    {
        return Some(
            Error::peer(format!("a peer disconnected ({})", quote(line)))
                .with_hint("another party failed or was stopped; see its own error"),
        );
    }
    if let Some(line) = find(lines, "threshold too high")
        .or_else(|| find(lines, "Threshold has to be positive"))
        .or_else(|| find(lines, "incorrect number of arguments"))
    {
        return Some(Error::external(format!(
            "shamir-party.x refused its arguments ({})",
            quote(line)
        )));
    }
    None
}

/// A short quotation of the last meaningful log lines, for errors with no known line.
pub fn last_lines(lines: &[String], max: usize) -> String {
    let useful: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    useful[useful.len().saturating_sub(max)..]
        .iter()
        .map(|l| format!("\"{}\"", l.escape_debug()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn ctx() -> LogContext {
        LogContext {
            party_ids: ["researcher_r", "node_a", "node_b"]
                .iter()
                .map(|s| PartyId::parse(s).unwrap())
                .collect(),
            endpoints: vec![
                "127.0.0.1:14000".into(),
                "127.0.0.1:14001".into(),
                "127.0.0.1:14002".into(),
            ],
        }
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    fn kind(text: &str) -> (ErrorKind, String) {
        let e = classify(&lines(text), &ctx()).expect("classified");
        (e.kind(), e.to_string())
    }

    // Lines recorded from MP-SPDZ v0.3.4 (mp-spdz-interface.md §2–§8).
    const HANDSHAKE: &str = "Client-side handshake with P2 failed. Make sure both sides  have the necessary certificate (Player-Data/P0.pem in the default configuration on their side and Player-Data/P2.pem on ours), and run `c_rehash <directory>` on its location.\nThe certificates should be the same on every host. Also make sure that it's still valid. Certificates generated with `Scripts/setup-ssl.sh` expire after a month.\nSee also https://mp-spdz.readthedocs.io/en/latest/troubleshooting.html#handshake-failures\nSignature (should match the other side): 1a2b/3c4d\nterminate called after throwing an instance of 'boost::wrapexcept<boost::system::system_error>'\n  what():  handshake: certificate verify failed";

    #[test]
    fn handshake_failure_is_authentication_naming_the_party() {
        let (k, m) = kind(HANDSHAKE);
        assert_eq!(k, ErrorKind::Authentication);
        assert!(m.contains("party 2 (`node_b`)"), "{m}");
        assert!(m.contains("certificate verify failed"), "{m}");
        let (k, m) =
            kind(&HANDSHAKE.replace("certificate verify failed", "tlsv1 alert unknown ca"));
        assert_eq!(k, ErrorKind::Authentication, "{m}");
        let e = classify(
            &lines(&HANDSHAKE.replace(
                "certificate verify failed",
                "sslv3 alert certificate expired",
            )),
            &ctx(),
        )
        .unwrap();
        assert!(e.hint().unwrap().contains("renew"));
        let server = HANDSHAKE.replace(
            "Client-side handshake with P2",
            "Server-side handshake with P1",
        );
        let (k, m) = kind(&server);
        assert_eq!(k, ErrorKind::Authentication);
        assert!(m.contains("`node_a`"), "{m}");
    }

    #[test]
    fn handshake_cut_by_a_dying_peer_is_a_peer_failure() {
        let (k, m) = kind(&HANDSHAKE.replace("certificate verify failed", "stream truncated"));
        assert_eq!(k, ErrorKind::PeerFailure, "{m}");
        let (k, _) =
            kind(&HANDSHAKE.replace("certificate verify failed", "Connection reset by peer"));
        assert_eq!(k, ErrorKind::PeerFailure);
    }

    #[test]
    fn connection_failures() {
        let (k, m) = kind("cannot connect from 127.0.0.1 to 127.0.0.1:14002 after 25 attempts in one minute because Connection refused. https://mp-spdz.readthedocs.io/en/latest/troubleshooting.html#connection-failures");
        assert_eq!(k, ErrorKind::PeerFailure);
        assert!(m.contains("`node_b`"), "{m}");
        let (k, _) = kind("terminate called after throwing an instance of 'std::runtime_error'\n  what():  No client after one minute");
        assert_eq!(k, ErrorKind::Timeout);
        let (k, _) = kind("  what():  read_some: stream truncated");
        assert_eq!(k, ErrorKind::PeerFailure);
        let (k, _) = kind("Binding to socket on 0.0.0.0:14001 failed (Address already in use), trying again in a second ...");
        assert_eq!(k, ErrorKind::PeerFailure);
    }

    #[test]
    fn local_setup_failures() {
        let (k, m) = kind("File Error : Missing 'Programs/Schedules/server_key.sch'. Did you compile 'server_key'?");
        assert_eq!(k, ErrorKind::ExternalTool);
        assert!(m.contains("compiled program"), "{m}");
        let (k, _) = kind("IO-Error : not enough inputs in /r/Input-P1-0");
        assert_eq!(k, ErrorKind::InvalidInput);
        let (k, _) = kind("cannot read integer from /r/Input-P1-0, problem with 'x' after 0");
        assert_eq!(k, ErrorKind::InvalidInput);
        let (k, m) = kind("terminate called after throwing an instance of 'boost::wrapexcept<boost::system::system_error>'\n  what():  use_private_key_file: key values mismatch");
        assert_eq!(k, ErrorKind::InvalidInput);
        assert!(m.contains("private key does not match"), "{m}");
        let (k, m) = kind("Not compiled for 2050-bit primes\nCompile with -DGFP_MOD_SZ=33");
        assert_eq!(k, ErrorKind::ExternalTool);
        assert!(m.contains("prime size"), "{m}");
        let (k, _) = kind("Different prime for compilation and computation.");
        assert_eq!(k, ErrorKind::ExternalTool);
        let (k, _) = kind("player id too large: 3");
        assert_eq!(k, ErrorKind::ExternalTool);
        let (k, _) = kind("Cannot access Player-Data/P1.pem. Have you set up SSL?");
        assert_eq!(k, ErrorKind::ExternalTool);
        let (k, _) = kind("not enought hosts in HOSTS");
        assert_eq!(k, ErrorKind::ExternalTool);
    }

    #[test]
    fn unknown_output_is_not_classified() {
        assert!(classify(&lines("Using security parameter 40\nsomething odd"), &ctx()).is_none());
        assert_eq!(last_lines(&lines("a\n\nb\nc\n"), 2), "\"b\", \"c\"");
    }
}
