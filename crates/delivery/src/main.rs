//! The `sba` binary.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = sba_delivery::cli::Cli::parse();
    sba_delivery::cli::run(cli)
}
