//! The plugin's errors: one line each, printed after `error: `, and the exit code of each.

use std::io;

use super::{EXIT_ERROR, EXIT_OK, EXIT_REFUSED, EXIT_TIMED_OUT};

/// Everything a command can fail at.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("loopservice {name:?} not found in namespace {namespace:?}")]
    NotFound { name: String, namespace: String },
    #[error("this cluster does not serve loopservices.loops.dev/v1alpha1: install the LoopService CRD (crds/loopservice.yaml)")]
    NoCrd,
    #[error("{what}: {}", describe(source))]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Other(String),
    /// `run --wait`: the request cannot be answered as things stand (the spec is invalid, the
    /// API server refused the loop's Job, its name is taken); what the status says.
    #[error("{0}")]
    Refused(String),
    /// `run --wait`: nothing took the request up, or its loop did not end, within --timeout.
    #[error("{0}")]
    TimedOut(String),
    /// The reader of stdout has gone (`| head`): there is no one left to tell, so the command
    /// ends quietly.
    #[error("stdout is closed")]
    StdoutClosed,
    #[error("writing to stdout: {0}")]
    Stdout(#[source] io::Error),
}

impl Error {
    /// An API error while doing `what` to LoopService `name` in `namespace`: a 404 becomes
    /// [`Error::NotFound`], or [`Error::NoCrd`] when the resource itself is not served.
    pub fn loopservice(what: &str, name: &str, namespace: &str, source: kube::Error) -> Error {
        match &source {
            kube::Error::Api(s) if s.code == 404 && no_such_resource(s) => return Error::NoCrd,
            kube::Error::Api(s) if s.code == 404 => return Error::NotFound { name: name.to_string(), namespace: namespace.to_string() },
            _ => {}
        }
        Error::Api { what: format!("{what} loopservice {name:?} in namespace {namespace:?}"), source }
    }

    /// A failed write to stdout: a closed pipe is [`Error::StdoutClosed`], anything else an
    /// error to report.
    pub fn stdout(e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Error::StdoutClosed
        } else {
            Error::Stdout(e)
        }
    }

    /// The exit code this error ends the plugin with (the codes are in `after_help` and
    /// docs/plugin.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Refused(_) => EXIT_REFUSED,
            Error::TimedOut(_) => EXIT_TIMED_OUT,
            // As `kubectl logs | head` ends: the reader has what it wanted.
            Error::StdoutClosed => EXIT_OK,
            _ => EXIT_ERROR,
        }
    }

    /// An API error while doing `what`; a 404 for the LoopService resource itself becomes
    /// [`Error::NoCrd`].
    pub fn api(what: impl Into<String>, source: kube::Error) -> Error {
        if matches!(&source, kube::Error::Api(s) if s.code == 404 && no_such_resource(s)) {
            return Error::NoCrd;
        }
        Error::Api { what: what.into(), source }
    }
}

/// A 404 for the resource type rather than for an object: the API server names no object.
fn no_such_resource(s: &kube::core::Status) -> bool {
    s.message.contains("could not find the requested resource")
}

/// An API error as a user should read it: the API server's message and its HTTP code, e.g.
/// `no preferred addresses found; known addresses: [] (500 InternalError)`; other errors as
/// kube words them.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => {
            let code = if s.reason.is_empty() { s.code.to_string() } else { format!("{} {}", s.code, s.reason) };
            format!("{} ({code})", s.message)
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure(message, reason).with_code(code).boxed())
    }

    #[test]
    fn a_404_names_the_loopservice_or_the_missing_crd_and_api_errors_read_plainly() {
        let e = Error::loopservice("reading", "x", "y", api(404, "NotFound", "loopservices.loops.dev \"x\" not found"));
        assert_eq!(e.to_string(), "loopservice \"x\" not found in namespace \"y\"");
        let e = Error::loopservice("reading", "x", "y", api(404, "NotFound", "the server could not find the requested resource"));
        assert!(matches!(e, Error::NoCrd), "{e}");
        let e = Error::loopservice("suspending", "x", "y", api(403, "Forbidden", "loopservices.loops.dev \"x\" is forbidden"));
        assert_eq!(
            e.to_string(),
            "suspending loopservice \"x\" in namespace \"y\": loopservices.loops.dev \"x\" is forbidden (403 Forbidden)"
        );
        assert_eq!(
            describe(&api(500, "", "no preferred addresses found; known addresses: []")),
            "no preferred addresses found; known addresses: [] (500)"
        );
    }

    #[test]
    fn a_closed_stdout_ends_quietly_with_0_and_other_failures_have_codes_of_their_own() {
        let closed = Error::stdout(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(closed, Error::StdoutClosed), "{closed:?}");
        assert_eq!(closed.exit_code(), 0);
        let full = Error::stdout(io::Error::other("no space left on device"));
        assert_eq!((full.to_string().as_str(), full.exit_code()), ("writing to stdout: no space left on device", 1));
        assert_eq!(Error::Refused("r".into()).exit_code(), 3);
        assert_eq!(Error::TimedOut("t".into()).exit_code(), 4);
        assert_eq!(Error::Other("o".into()).exit_code(), 1);
    }
}
