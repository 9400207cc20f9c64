//! loopservice-operator: runs one Kubernetes Job per loop of a `LoopService`, on
//! start-anchored timing, and writes what happened into the resource's status.
#![deny(unsafe_code)]

// Types at the bottom: the resource, its keys and reasons, text and duration formats.
pub mod crd;
pub mod duration;
pub mod json_paths;
pub mod keys;
pub mod pod_security;
pub mod reasons;
pub mod requester;
pub mod rules;
pub mod scope;
pub mod shard;
pub mod text;
// Pure logic: timing, validation, a loop's Job, the status of loops.
pub mod clock;
pub mod fault;
pub mod job;
pub mod schedule;
pub mod spec;
pub mod status;
// API code: caches, one reconcile, the controller's wiring, metrics and HTTP.
pub mod cache;
pub mod cached;
pub mod failed_creates;
pub mod fair;
pub mod heap;
pub mod http;
pub mod metrics;
pub mod metrics_auth;
pub mod orphans;
pub mod pace;
pub mod pause;
pub mod reconcile;
pub mod runtime;
pub mod telemetry;
pub mod turns;
pub mod urgency;
pub mod verdicts;
pub mod watches;
// The kubectl plugin.
pub mod plugin;

/// Everything a reconcile can fail at, one variant per step.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("creating job {0}: {1}")]
    CreateJob(String, #[source] kube::Error),
    #[error("checking job {0} with a dry run: {1}")]
    CheckJob(String, #[source] kube::Error),
    #[error("reading job {0}: {1}")]
    GetJob(String, #[source] kube::Error),
    #[error("reading loopservice {0}: {1}")]
    GetLoopService(String, #[source] kube::Error),
    #[error("writing the status of {0}: {1}")]
    WriteStatus(String, #[source] kube::Error),
    #[error("deleting job {0}: {1}")]
    DeleteJob(String, #[source] kube::Error),
    #[error("taking the finalizer off job {0}: {1}")]
    ReleaseJob(String, #[source] kube::Error),
    #[error("claiming loopservice {0}: {1}")]
    Claim(String, #[source] kube::Error),
    #[error("loopservice {0} has no namespace or uid")]
    Incomplete(String),
    #[error("decoding the cached loopservice {0}: {1}")]
    Cached(String, #[source] serde_json::Error),
    #[error("the reconcile took longer than {0:?} (an API request hanging?)")]
    TimedOut(std::time::Duration),
    #[error(
        "the API server dropped {1} from the status of {0}: the LoopService CRD is older than this operator; apply crds/loopservice.yaml"
    )]
    OutdatedCrd(String, String),
    /// An injected fault stopped the reconcile (the crate's own tests only).
    #[error("fault injection: {0}")]
    Fault(&'static str),
}

impl Error {
    /// The API error underneath, if any.
    pub fn kube(&self) -> Option<&kube::Error> {
        match self {
            Error::CreateJob(_, e)
            | Error::CheckJob(_, e)
            | Error::GetJob(_, e)
            | Error::GetLoopService(_, e)
            | Error::WriteStatus(_, e)
            | Error::DeleteJob(_, e)
            | Error::ReleaseJob(_, e)
            | Error::Claim(_, e) => Some(e),
            Error::Incomplete(_) | Error::OutdatedCrd(..) | Error::TimedOut(_) | Error::Cached(..) | Error::Fault(_) => None,
        }
    }

    /// The error as a person reads it: for an API error, the server's message and code
    /// rather than the whole response.
    pub fn plain(&self) -> String {
        let full = self.to_string();
        match self.kube() {
            Some(kube::Error::Api(s)) => {
                let step = full.split(": ApiError").next().unwrap_or(&full);
                format!("{step}: {} ({} {})", s.message, s.code, s.reason)
            }
            _ => full,
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::CreateJob(..) => "create_job",
            Error::CheckJob(..) => "check_job",
            Error::GetJob(..) => "get_job",
            Error::GetLoopService(..) => "get_loopservice",
            Error::WriteStatus(..) => "write_status",
            Error::DeleteJob(..) => "delete_job",
            Error::ReleaseJob(..) => "release_job",
            Error::Claim(..) => "claim",
            Error::Incomplete(..) => "incomplete",
            Error::OutdatedCrd(..) => "outdated_crd",
            Error::TimedOut(..) => "timed_out",
            Error::Cached(..) => "cached",
            Error::Fault(..) => "fault",
        }
    }
}

/// Whether an API error is worth retrying as it is: timeouts, 5xx, 429 and conflicts,
/// and failures to reach the server at all. Anything else is the server's final answer.
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code == 408 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The CRD as YAML, exactly as `crdgen` prints it and `crds/loopservice.yaml` holds it.
pub fn crdgen_yaml() -> std::result::Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut crd = crd::LoopService::crd();
    // A nullable `status` is published to OpenAPI v2 without its type, and `kubectl explain`
    // then cannot descend into it (see crd::not_nullable).
    for version in &mut crd.spec.versions {
        let root = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut());
        if let Some(status) = root.and_then(|r| r.properties.as_mut()).and_then(|p| p.get_mut("status")) {
            status.nullable = None;
        }
    }
    // The name's bound applies to the object as a whole (a rule on the spec cannot see it).
    for version in &mut crd.spec.versions {
        if let Some(root) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            root.x_kubernetes_validations =
                Some(vec![k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule {
                    rule: rules::RULE_NAME_LENGTH.into(),
                    message: Some(rules::MSG_NAME_LENGTH.into()),
                    ..Default::default()
                }]);
        }
    }
    let yaml = serde_yaml::to_string(&crd)?;
    Ok(format!("# Generated by `cargo run --bin crdgen`; do not edit.\n{yaml}"))
}
