//! The plugin's errors: one line each, printed after `error: `.

/// Everything a command can fail at.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("loopservice {name:?} not found in namespace {namespace:?}")]
    NotFound { name: String, namespace: String },
    #[error("this cluster does not serve loopservices.loops.dev/v1alpha1: install the LoopService CRD (crds/loopservice.yaml)")]
    NoCrd,
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Other(String),
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
