//! `kubectl loopservice`: the kubectl plugin for LoopServices. On PATH as
//! `kubectl-loopservice`, kubectl runs it for `kubectl loopservice ...`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use loopservice_operator::plugin::{self, Cli, Error, EXIT_ERROR};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version exit 0; a usage error exits 1, as kubectl's do.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { 0 });
        }
    };
    match plugin::run(cli).await {
        Ok(code) => ExitCode::from(code),
        // Its reader has gone: nothing to say, and no one to say it to.
        Err(Error::StdoutClosed) => ExitCode::from(Error::StdoutClosed.exit_code()),
        Err(e) => {
            plugin::note(&format!("error: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
