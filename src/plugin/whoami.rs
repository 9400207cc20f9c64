//! Who the plugin's user is, as the API server authenticates them (`kubectl auth whoami`): a
//! SelfSubjectReview, served as authentication.k8s.io/v1 from Kubernetes 1.28. A run request
//! names them as its requester, and the chart's admission policy compares that name with the
//! user who makes the request: the same API server answers both, so they agree.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::PostParams;
use kube::{Api, Client};

use super::error::describe;

/// The user's name, or why it cannot be known (the request then names no requester).
pub async fn whoami(client: &Client) -> Result<String, String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    match api.create(&PostParams::default(), &SelfSubjectReview::default()).await {
        Ok(review) => {
            let user = review.status.and_then(|s| s.user_info).and_then(|u| u.username).filter(|u| !u.is_empty());
            user.ok_or_else(|| "the API server's SelfSubjectReview named no user".to_string())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            Err("this API server does not say who you are (SelfSubjectReview is served from Kubernetes 1.28)".to_string())
        }
        // Before 1.28, RBAC answers first for a resource the server does not have.
        Err(kube::Error::Api(s)) if s.code == 403 => Err(format!(
            "this API server does not say who you are (SelfSubjectReview is served from Kubernetes 1.28, to users RBAC lets create selfsubjectreviews): {}",
            s.message
        )),
        Err(e) => Err(format!("asking the API server who you are (a SelfSubjectReview): {}", describe(&e))),
    }
}
