//! The rule both schemes' rounds share: the researcher takes exactly one file from every node of
//! the context (their masks cancel only in the sum over all of them), and none from anyone else.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::party::SessionId;

/// The nodes whose files were taken so far, against the context's node list.
pub(crate) struct OnePerNode<'a> {
    nodes: &'a [&'a String],
    seen: BTreeSet<String>,
}

impl<'a> OnePerNode<'a> {
    pub(crate) fn new(nodes: &'a [&'a String]) -> Self {
        OnePerNode {
            nodes,
            seen: BTreeSet::new(),
        }
    }

    /// Takes the file of `party`: refused (`bad` makes the error) when `party` is no node of
    /// `session` or already gave one.
    pub(crate) fn take(
        &mut self,
        party: &str,
        session: &SessionId,
        bad: impl Fn(String) -> Error,
    ) -> Result<()> {
        if !self.nodes.iter().any(|n| n.as_str() == party) {
            return Err(bad(format!("`{party}` is not a node of session {session}")));
        }
        if !self.seen.insert(party.to_owned()) {
            return Err(bad(format!("a second file from `{party}`")));
        }
        Ok(())
    }

    /// Refuses a round some node gave no file for: "no `noun` from …: `why`".
    pub(crate) fn finish(self, noun: &str, why: &str) -> Result<()> {
        let missing: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| !self.seen.contains(n.as_str()))
            .map(|n| n.as_str())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(
            Error::invalid(format!("no {noun} from {}: {why}", missing.join(", ")))
                .with_hint("collect one file from every node of the context for this round"),
        )
    }
}
