//! Test-only fault injection: make this process crash or fail at a chosen protocol step.
//!
//! **Only compiled with the `fault-injection` cargo feature**, which the release binary does not
//! have: `cargo test` turns it on for the test build of `secagg` (secagg-cli's dev-dependency), so
//! the end-to-end tests can prove the all-or-nothing invariant at every step instead of by luck.
//! Without the feature [`at`] is an empty inline function and the environment is never read.
//!
//! With the feature, the environment variable [`FAULT_ENV`] (`SECAGG_FAULT`) holds
//! `STEP:ACTION`, where `STEP` is a [`Step`] name (e.g. `node-before-store`) and `ACTION` is
//! - `crash`: the process kills itself with SIGKILL at that step (no destructor, no goodbye to
//!   peers: a power cut as far as the protocol can tell);
//! - `fail`: the step returns an error (for the store steps, the store write fails), and the
//!   party goes down its normal failure path;
//! - `sleep=MS`: the party stops for MS milliseconds at that step (blocking its thread), then goes
//!   on: a slow party, or one to signal while it is mid-session.
//!
//! Tests set the variable on the one party process that should fail.

use crate::error::Result;

/// The environment variable read by [`at`] (with the `fault-injection` feature only).
pub const FAULT_ENV: &str = "SECAGG_FAULT";

/// The protocol steps at which a fault can be injected, in protocol order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Any party: the connection phase succeeded, nothing was sent yet.
    Connected,
    /// Node: before sending its shares.
    NodeBeforeSendShares,
    /// Node: after sending its shares.
    NodeAfterSendShares,
    /// Node: before sending its share sum to the researcher.
    NodeBeforeSendSum,
    /// Node: after sending its share sum.
    NodeAfterSendSum,
    /// Node: the researcher's finish arrived; before storing the key (unconfirmed).
    NodeBeforeStore,
    /// Node: the key is durably stored (unconfirmed); before the acknowledgement.
    NodeAfterStore,
    /// Node: after sending the acknowledgement, before the researcher's confirmation.
    NodeAfterSendAck,
    /// Node: the confirmation arrived; before marking the key confirmed.
    NodeBeforeConfirm,
    /// Node: the key is marked confirmed.
    NodeAfterConfirm,
    /// Researcher: the sums verified; before sending finish.
    ResearcherBeforeSendFinish,
    /// Researcher: after sending finish to every node.
    ResearcherAfterSendFinish,
    /// Researcher: every node acknowledged; before storing the server key.
    ResearcherBeforeStore,
    /// Researcher: the server key is durably stored; before sending the confirmations.
    ResearcherAfterStore,
    /// Researcher: after sending the confirmations.
    ResearcherAfterSendConfirm,
    /// Party agent (`secagg serve`): the researcher's start arrived, the session's side is about
    /// to run. Not in [`Step::ALL`] (the negotiation's steps); see [`Step::AGENT`].
    AgentStarted,
    /// Node masking a round of a dropout-tolerant LOM context (`aggregate encrypt`): its
    /// self-mask shares are stored at enough nodes; before masking. Not in [`Step::ALL`]; see
    /// [`Step::DROPOUT`].
    DropoutShared,
    /// Node agent: another node's self-mask share is durably stored; before answering.
    DropoutShareStored,
    /// Node agent: the researcher's survivor announcement is durably recorded; before answering.
    DropoutAnnounced,
    /// Node agent: the researcher's reveal request arrived; before comparing announcements.
    DropoutRevealAsked,
    /// Node agent: what it reveals is durably recorded; before sending it.
    DropoutRevealRecorded,
    /// Researcher unmasking (`aggregate decrypt`): the survivors are announced; before asking
    /// them to reveal.
    DropoutResearcherAnnounced,
}

impl Step {
    /// Every step, in protocol order.
    pub const ALL: [Step; 15] = [
        Step::Connected,
        Step::NodeBeforeSendShares,
        Step::NodeAfterSendShares,
        Step::NodeBeforeSendSum,
        Step::NodeAfterSendSum,
        Step::NodeBeforeStore,
        Step::NodeAfterStore,
        Step::NodeAfterSendAck,
        Step::NodeBeforeConfirm,
        Step::NodeAfterConfirm,
        Step::ResearcherBeforeSendFinish,
        Step::ResearcherAfterSendFinish,
        Step::ResearcherBeforeStore,
        Step::ResearcherAfterStore,
        Step::ResearcherAfterSendConfirm,
    ];

    /// The party agent's steps (a `secagg negotiate` never passes them).
    pub const AGENT: [Step; 1] = [Step::AgentStarted];

    /// The steps of a dropout-tolerant LOM round ([`crate::aggregate::lom_dropout`]).
    pub const DROPOUT: [Step; 6] = [
        Step::DropoutShared,
        Step::DropoutShareStored,
        Step::DropoutAnnounced,
        Step::DropoutRevealAsked,
        Step::DropoutRevealRecorded,
        Step::DropoutResearcherAnnounced,
    ];

    /// The steps the MP-SPDZ engine passes (a node stores its key before its `shamir-party.x`
    /// starts and confirms it after the run; the researcher stores the server key from the output).
    pub const MPSPDZ: [Step; 6] = [
        Step::NodeBeforeStore,
        Step::NodeAfterStore,
        Step::NodeBeforeConfirm,
        Step::NodeAfterConfirm,
        Step::ResearcherBeforeStore,
        Step::ResearcherAfterStore,
    ];

    /// The name used in [`FAULT_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Step::Connected => "connected",
            Step::NodeBeforeSendShares => "node-before-send-shares",
            Step::NodeAfterSendShares => "node-after-send-shares",
            Step::NodeBeforeSendSum => "node-before-send-sum",
            Step::NodeAfterSendSum => "node-after-send-sum",
            Step::NodeBeforeStore => "node-before-store",
            Step::NodeAfterStore => "node-after-store",
            Step::NodeAfterSendAck => "node-after-send-ack",
            Step::NodeBeforeConfirm => "node-before-confirm",
            Step::NodeAfterConfirm => "node-after-confirm",
            Step::ResearcherBeforeSendFinish => "researcher-before-send-finish",
            Step::ResearcherAfterSendFinish => "researcher-after-send-finish",
            Step::ResearcherBeforeStore => "researcher-before-store",
            Step::ResearcherAfterStore => "researcher-after-store",
            Step::ResearcherAfterSendConfirm => "researcher-after-send-confirm",
            Step::AgentStarted => "agent-started",
            Step::DropoutShared => "dropout-shared",
            Step::DropoutShareStored => "dropout-share-stored",
            Step::DropoutAnnounced => "dropout-announced",
            Step::DropoutRevealAsked => "dropout-reveal-asked",
            Step::DropoutRevealRecorded => "dropout-reveal-recorded",
            Step::DropoutResearcherAnnounced => "dropout-researcher-announced",
        }
    }

    /// True for the steps a node passes, false for the researcher's (`Connected` is both).
    pub fn is_node_step(self) -> bool {
        self.name().starts_with("node-") || self == Step::Connected
    }

    /// True for the steps the researcher passes.
    pub fn is_researcher_step(self) -> bool {
        self.name().starts_with("researcher-") || self == Step::Connected
    }
}

/// The pause `STEP:sleep=MS` asks for at `step`, for async callers (the agent) that wait for it
/// without blocking their thread (and can be interrupted meanwhile): without the
/// `fault-injection` feature, none.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn pause_at(_step: Step) -> Option<std::time::Duration> {
    None
}

/// The pause `STEP:sleep=MS` asks for at `step` (see the non-feature variant).
#[cfg(feature = "fault-injection")]
pub fn pause_at(step: Step) -> Option<std::time::Duration> {
    let spec = std::env::var(FAULT_ENV).ok()?;
    let (name, action) = spec.split_once(':')?;
    let ms: u64 = action.strip_prefix("sleep=")?.parse().ok()?;
    (name == step.name()).then(|| std::time::Duration::from_millis(ms))
}

/// Passes protocol step `step`: without the `fault-injection` feature, nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn at(_step: Step) -> Result<()> {
    Ok(())
}

/// Passes protocol step `step`: crashes or fails here if [`FAULT_ENV`] names this step.
#[cfg(feature = "fault-injection")]
pub fn at(step: Step) -> Result<()> {
    use crate::error::Error;
    let Ok(spec) = std::env::var(FAULT_ENV) else {
        return Ok(());
    };
    let Some((name, action)) = spec.split_once(':') else {
        return Ok(());
    };
    if name != step.name() {
        return Ok(());
    }
    match action {
        "crash" => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            // SIGKILL cannot be caught; this is unreachable unless raise itself failed.
            std::process::abort();
        }
        sleep if sleep.starts_with("sleep=") && Step::AGENT.contains(&step) => Ok(()), // pause_at
        sleep if sleep.starts_with("sleep=") => {
            // Test-only: holds this party at the step (e.g. to stop an agent mid-session).
            let ms: u64 = sleep["sleep=".len()..].parse().unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
        "fail" => Err(Error::io(
            format!("injected fault at step `{}`", step.name()),
            std::io::Error::other("fault injection (SECAGG_FAULT)"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_are_unique_and_role_tagged() {
        let mut names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Step::ALL.len());
        assert!(Step::NodeBeforeStore.is_node_step());
        assert!(!Step::NodeBeforeStore.is_researcher_step());
        assert!(Step::ResearcherAfterStore.is_researcher_step());
        assert!(Step::Connected.is_node_step() && Step::Connected.is_researcher_step());
    }
}
