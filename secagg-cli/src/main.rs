//! `secagg`: set up secure aggregation for a federated-learning federation (the CLI is the
//! library `secagg_cli`; see [`secagg_cli::run`]).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(secagg_cli::run(std::env::args_os().collect()))
}
