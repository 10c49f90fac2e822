//! Parties as OS processes: building a party's `secagg negotiate` command line and running a
//! session's parties side by side, for `secagg demo`, the end-to-end tests and the processes
//! benchmark; and the signal handling of a process that supervises others.
//!
//! A facade over the crate's process supervisor: a [`NegotiateCommand`] per party, run by
//! [`PartyProcesses`] (or [`run_parties`]) under one deadline, each ending as a [`PartyExit`]
//! that carries a failing party's [`crate::error::ErrorReport`] as data.

pub use crate::supervise::parties::{
    run_parties, NegotiateCommand, PartyExit, PartyProcesses, Stopper,
};
pub use crate::supervise::{
    process_alive, signal_name, unblock_termination_signals, TerminationSignals,
};
