//! `kubectl loopservice`: the kubectl plugin that operates LoopServices (the binary
//! `kubectl-loopservice`). One module per command; they share the connection, the errors and
//! the output formatting.

mod connect;
mod error;
mod explain;
mod format;
mod history;
mod list;
mod logs;
mod release;
mod run;
mod suspend;
mod whoami;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use error::{describe, Error};
pub use format::{human_duration, note, relative};

/// Exit codes of the plugin. Success; also a command whose stdout was closed by its reader
/// (`| head`), which ends quietly.
pub const EXIT_OK: u8 = 0;
/// An error: bad flags, the API server refused a request, not found.
pub const EXIT_ERROR: u8 = 1;
/// `run --wait`: the loop ran and failed.
pub const EXIT_LOOP_FAILED: u8 = 2;
/// `run --wait`: the request cannot run as things stand: the spec is invalid, the API server
/// refused the loop's Job, or the Job's name is taken. The status's message is printed.
pub const EXIT_REFUSED: u8 = 3;
/// `run --wait`: no operator took the request up, or its loop did not end, within --timeout.
pub const EXIT_TIMED_OUT: u8 = 4;

/// How long `run --wait` waits by default: a request is taken up within a second or two by a
/// running operator, and a script should not hang for ever on one that is not.
const DEFAULT_TIMEOUT: &str = "10m";

/// Operate LoopServices (loops.dev/v1alpha1): list them, run one now, suspend and resume,
/// read their history and logs, and see why the next loop starts when it does.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-loopservice",
    bin_name = "kubectl loopservice",
    version,
    after_help = "Exit codes: 0 ok (also when stdout is closed early, as by `| head`); 1 an error; `run --wait`: 2 the loop failed, \
3 the request was refused (invalid spec, Job refused, Job name taken), 4 timed out (not taken up, or the loop did not end)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags every command takes, as kubectl spells them.
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// Namespace of the LoopService (default: the namespace of the kubeconfig context, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List LoopServices: phase, loops, last result, last and next run (relative times).
    #[command(visible_alias = "get")]
    List {
        /// List the LoopServices of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Start a loop now (the annotation loops.dev/run-requested-at), or as soon as the running one ends.
    /// The request names you (as the API server knows you) and, with --reason, why.
    Run {
        name: String,
        /// Why you ask for this run (one line, at most 200 bytes): shown in `history` and in the
        /// loop's Event.
        #[arg(long, value_parser = run::parse_reason)]
        reason: Option<String>,
        /// Wait for the loop to finish and print its result; exit 2 when it failed, 3 when the
        /// request was refused, 4 when it timed out.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (e.g. 30s, 5m, 1h), counted from the request
        /// until its loop ends; 0s waits for ever.
        #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Pause a LoopService (spec.suspend: true): no new loop starts, a running loop finishes.
    Suspend { name: String },
    /// Resume a LoopService (spec.suspend: false); also ends a suspension after failures.
    Resume { name: String },
    /// The latest loops (status.history), newest first.
    History {
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// The logs of a loop's Pod (container `loop`): the latest loop's, or --loop N's.
    Logs {
        name: String,
        /// The loop's number (default: the latest loop that has a Pod).
        #[arg(long = "loop", value_name = "N")]
        loop_number: Option<i64>,
        /// Follow the log as it is written.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Why the next loop starts when it does: interval, overrun, failure backoff, alignment,
    /// jitter, suspend, loops limit, pending run request.
    ExplainTiming {
        name: String,
        /// Instead: the next N start times the plan implies, one RFC 3339 time a line (jitter,
        /// alignment, pause windows, the failure backoff, the catch-up window and the loops limit included;
        /// each loop is taken to succeed within its interval). At most 1000.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
        next: Option<u16>,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// After the operator is uninstalled: take its finalizer (loops.dev/record-end) off the
    /// loops' Jobs, so that they can be deleted. Not while an operator runs: a Job let go
    /// before its loop's end is recorded could go unrecorded.
    ReleaseJobs {
        /// The Jobs of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

/// `-o json|yaml`: the same information as data, times in RFC 3339; a table or text when absent.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct OutputFlag {
    /// Output format: json or yaml (default: human-readable text).
    #[arg(short = 'o', long = "output", value_enum)]
    pub format: Option<Output>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
}

/// Runs one command; the exit code on success (0, or 2 for a failed loop with `run --wait`);
/// an error's is [`Error::exit_code`].
pub async fn run(cli: Cli) -> Result<u8, Error> {
    let target = connect::connect(&cli.global).await?;
    match cli.command {
        Command::List { all_namespaces, output } => list::list(&target, all_namespaces, output.format).await,
        Command::Run { name, reason, wait, timeout } => run::run(&target, &name, reason.as_deref(), wait, timeout).await,
        Command::Suspend { name } => suspend::set_suspend(&target, &name, true).await,
        Command::Resume { name } => suspend::set_suspend(&target, &name, false).await,
        Command::History { name, output } => history::history(&target, &name, output.format).await,
        Command::Logs { name, loop_number, follow } => logs::logs(&target, &name, loop_number, follow).await,
        Command::ExplainTiming { name, next, output } => {
            explain::explain_timing(&target, &name, output.format, next.map(usize::from)).await
        }
        Command::ReleaseJobs { all_namespaces } => release::release_jobs(&target, all_namespaces).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_flags_parse_before_and_after_the_command() {
        let cli =
            Cli::try_parse_from(["kubectl-loopservice", "-n", "ops", "run", "report", "--wait", "--timeout", "2m", "--context", "prod"])
                .unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("ops"));
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
        match cli.command {
            Command::Run { name, reason, wait, timeout } => {
                assert_eq!((name.as_str(), reason, wait, timeout), ("report", None, true, Duration::from_secs(120)))
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["kubectl-loopservice", "list", "-A", "-o", "yaml"]).unwrap();
        assert!(matches!(cli.command, Command::List { all_namespaces: true, output: OutputFlag { format: Some(Output::Yaml) } }));
        let cli = Cli::try_parse_from(["kubectl-loopservice", "logs", "report", "--loop", "3", "-f"]).unwrap();
        assert!(matches!(cli.command, Command::Logs { loop_number: Some(3), follow: true, .. }));
        assert!(Cli::try_parse_from(["kubectl-loopservice", "history", "report", "-o", "wide"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-loopservice", "run"]).is_err(), "run needs a name");
        // `run --wait` gives up after 10 minutes unless told otherwise.
        let cli = Cli::try_parse_from(["kubectl-loopservice", "run", "report", "--wait"]).unwrap();
        assert!(matches!(cli.command, Command::Run { timeout, .. } if timeout == Duration::from_secs(600)));
        // --reason is one line; a bad one is a usage error, before anything is asked of the cluster.
        let cli = Cli::try_parse_from(["kubectl-loopservice", "run", "report", "--reason", "late data"]).unwrap();
        assert!(matches!(cli.command, Command::Run { reason: Some(r), .. } if r == "late data"));
        let bad = Cli::try_parse_from(["kubectl-loopservice", "run", "report", "--reason", "two\nlines"]).unwrap_err();
        assert!(bad.to_string().contains("a reason is one line of text"), "{bad}");
    }
}
