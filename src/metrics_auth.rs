//! Who may read /metrics: the bearer token of the request is checked the way Kubernetes'
//! own components and controller-runtime's secure metrics check it, by a TokenReview
//! (authentication.k8s.io/v1), then a SubjectAccessReview (authorization.k8s.io/v1) of `get`
//! on the non-resource URL `/metrics`. Answers are kept a while per token hash, so that a
//! scrape every few seconds costs no API call.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use mini_moka::sync::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::debug;

/// Whether /metrics asks for a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsAuth {
    /// Anyone who can reach the port reads /metrics (every namespace and LoopService name).
    None,
    /// A bearer token allowed `get` on the non-resource URL /metrics.
    #[default]
    Token,
}

/// The verdict on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token, a token of no one, or one the API server would not vouch for: 401.
    Unauthenticated,
    /// A known user without the right: 403.
    Forbidden,
}

/// The URL and verb a reader must be allowed.
pub const PATH: &str = "/metrics";
pub const VERB: &str = "get";

/// How long a verdict is kept. A token revoked, or a right removed, lasts this long at most.
pub const TTL: Duration = Duration::from_secs(30);
/// Tokens whose verdicts are kept, at most (each entry is a hash and a verdict).
pub const CAPACITY: u64 = 4096;
/// A longer Authorization header is refused unread: service account tokens are about 1 KiB,
/// and no API call is spent on a header that cannot be one.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Reviews in flight at once: a flood of new tokens waits here rather than on the API server.
const MAX_REVIEWS: usize = 4;

/// A review could not be made (the API server away, or the operator lacking the right to
/// create reviews): not kept, and answered 503 so that the scrape is retried.
#[derive(Debug, thiserror::Error)]
#[error("reviewing the token of a /metrics request: {0}")]
pub struct ReviewError(#[from] kube::Error);

/// Checks tokens against the API server, keeping verdicts for [`TTL`].
pub struct Authorizer {
    client: Client,
    verdicts: Cache<[u8; 32], Verdict>,
    reviews: Semaphore,
}

impl Authorizer {
    pub fn new(client: Client) -> Arc<Authorizer> {
        Arc::new(Authorizer {
            client,
            verdicts: Cache::builder().max_capacity(CAPACITY).time_to_live(TTL).build(),
            reviews: Semaphore::new(MAX_REVIEWS),
        })
    }

    /// The verdict on a request with these headers.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Verdict, ReviewError> {
        let Some(token) = bearer_token(headers) else {
            return Ok(Verdict::Unauthenticated);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(v) = self.verdicts.get(&key) {
            return Ok(v);
        }
        // The semaphore is never closed.
        let _turn = self.reviews.acquire().await.ok();
        if let Some(v) = self.verdicts.get(&key) {
            return Ok(v);
        }
        let verdict = self.review(token).await?;
        self.verdicts.insert(key, verdict);
        Ok(verdict)
    }

    async fn review(&self, token: &str) -> Result<Verdict, ReviewError> {
        let review = TokenReview { spec: TokenReviewSpec { token: token.to_string(), ..Default::default() }, ..Default::default() };
        let answer = Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) if user.username.as_deref().is_some_and(|u| !u.is_empty()) => user,
            _ => {
                debug!(error = status.error.as_deref().unwrap_or(""), "a /metrics request's token was not authenticated");
                return Ok(Verdict::Unauthenticated);
            }
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                uid: user.uid,
                groups: user.groups,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes { path: Some(PATH.into()), verb: Some(VERB.into()) }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone()).create(&PostParams::default(), &access).await?;
        let allowed = answer.status.is_some_and(|s| s.allowed && s.denied != Some(true));
        if !allowed {
            debug!(user = user.username.as_deref().unwrap_or(""), "a /metrics request's user may not get /metrics");
        }
        Ok(if allowed { Verdict::Allowed } else { Verdict::Forbidden })
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case), if there
/// is exactly one such header and it is printable ASCII no longer than [`MAX_TOKEN_BYTES`].
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() || value.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let text = value.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' ')).then_some(token)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body as AxumBody;
    use axum::http::{HeaderValue, Request, StatusCode};
    use http::Response;
    use kube::client::Body;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::http::{metrics_router, MetricsState};
    use crate::metrics::Metrics;

    const READER: &str = "token-of-reader";
    const STRANGER: &str = "token-of-stranger";
    /// A token whose review the API server fails (500).
    const BROKEN: &str = "token-the-server-fails-on";

    /// An API server that knows two tokens: the reader's (allowed /metrics) and a stranger's
    /// (not). Counts the reviews asked of it, and checks what each asks.
    fn api_server() -> (Client, Arc<AtomicUsize>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (parts, body) = request.into_parts();
                let body: Value = serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap();
                let (code, answer) = match parts.uri.path() {
                    "/apis/authentication.k8s.io/v1/tokenreviews" => match body["spec"]["token"].as_str().unwrap() {
                        BROKEN => (
                            500,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd is away"}),
                        ),
                        t @ (READER | STRANGER) => (
                            201,
                            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
                                   "status": {"authenticated": true, "user": {"username": format!("system:serviceaccount:mon:{t}"),
                                   "uid": "u-1", "groups": ["system:serviceaccounts"], "extra": {"k": ["v"]}}}}),
                        ),
                        _ => (
                            201,
                            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
                                   "status": {"authenticated": false, "error": "invalid bearer token"}}),
                        ),
                    },
                    "/apis/authorization.k8s.io/v1/subjectaccessreviews" => {
                        let spec = &body["spec"];
                        assert_eq!(spec["nonResourceAttributes"], json!({"path": "/metrics", "verb": "get"}), "{body}");
                        assert_eq!(spec["groups"], json!(["system:serviceaccounts"]), "the user's groups are passed on: {body}");
                        assert_eq!(spec["extra"], json!({"k": ["v"]}), "and its extra: {body}");
                        assert_eq!(spec["uid"], "u-1", "{body}");
                        let allowed = spec["user"] == format!("system:serviceaccount:mon:{READER}");
                        (
                            201,
                            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec,
                                   "status": {"allowed": allowed}}),
                        )
                    }
                    other => panic!("unexpected request to {other}"),
                };
                let response = Response::builder().status(code).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap();
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), calls)
    }

    fn metrics() -> Arc<Metrics> {
        let m = Arc::new(Metrics::default());
        let ls = crate::metrics::LsLabels { namespace: "team-a".into(), name: "secret-project".into() };
        m.record_status(&ls, &crate::crd::LoopServiceStatus { consecutive_failures: 2, ..Default::default() });
        m
    }

    /// GETs /metrics with these header values of `Authorization`: the code and the body.
    async fn get(state: &MetricsState, authorization: &[HeaderValue]) -> (StatusCode, String) {
        let mut request = Request::get("/metrics");
        for v in authorization {
            request = request.header("authorization", v.clone());
        }
        let response = metrics_router(state.clone()).oneshot(request.body(AxumBody::empty()).unwrap()).await.unwrap();
        let code = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[tokio::test]
    async fn only_a_token_allowed_get_on_metrics_reads_them_and_verdicts_are_kept() {
        let (client, calls) = api_server();
        let state = MetricsState { metrics: metrics(), auth: Some(Authorizer::new(client)) };
        let calls = || calls.load(Ordering::SeqCst);

        let (code, body) = get(&state, &[]).await;
        assert_eq!((code, calls()), (StatusCode::UNAUTHORIZED, 0), "no token, no review: {body}");
        assert!(!body.contains("secret-project"), "{body}");

        let (code, body) = get(&state, &[bearer("garbage")]).await;
        assert_eq!((code, calls()), (StatusCode::UNAUTHORIZED, 1), "a TokenReview only: {body}");
        assert!(!body.contains("secret-project"), "{body}");

        let (code, body) = get(&state, &[bearer(STRANGER)]).await;
        assert_eq!((code, calls()), (StatusCode::FORBIDDEN, 3), "a TokenReview and a SubjectAccessReview: {body}");
        assert!(!body.contains("secret-project"), "{body}");

        let (code, body) = get(&state, &[bearer(READER)]).await;
        assert_eq!((code, calls()), (StatusCode::OK, 5));
        assert!(body.contains("secret-project"), "{body}");

        // A scrape every few seconds asks nothing more, whatever the verdict, and the scheme
        // is read in any case.
        for (token, want) in [("garbage", StatusCode::UNAUTHORIZED), (STRANGER, StatusCode::FORBIDDEN), (READER, StatusCode::OK)] {
            assert_eq!(get(&state, &[bearer(token)]).await.0, want, "{token}");
        }
        let lower = HeaderValue::from_str(&format!("bearer {READER}")).unwrap();
        assert_eq!(get(&state, &[lower]).await.0, StatusCode::OK);
        assert_eq!(calls(), 5, "verdicts are kept per token");
    }

    #[tokio::test]
    async fn a_review_that_fails_is_503_and_not_kept() {
        let (client, calls) = api_server();
        let state = MetricsState { metrics: metrics(), auth: Some(Authorizer::new(client)) };
        assert_eq!(get(&state, &[bearer(BROKEN)]).await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get(&state, &[bearer(BROKEN)]).await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "asked again: a failure is not a verdict");
    }

    #[tokio::test]
    async fn what_cannot_be_a_bearer_token_is_refused_unasked() {
        let (client, calls) = api_server();
        let state = MetricsState { metrics: metrics(), auth: Some(Authorizer::new(client)) };
        let huge = bearer(&"a".repeat(MAX_TOKEN_BYTES + 1));
        let cases: Vec<(&str, Vec<HeaderValue>)> = vec![
            ("a token above the size limit", vec![huge]),
            ("a header of bytes that are not text", vec![HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap()]),
            ("another scheme", vec![HeaderValue::from_static("Basic dXNlcjpwYXNz")]),
            ("a scheme alone", vec![HeaderValue::from_static("Bearer")]),
            ("an empty token", vec![HeaderValue::from_static("Bearer   ")]),
            ("two tokens", vec![HeaderValue::from_static("Bearer a b")]),
            ("two headers", vec![bearer(READER), bearer(READER)]),
            ("an empty header", vec![HeaderValue::from_static("")]),
        ];
        for (what, headers) in cases {
            let (code, body) = get(&state, &headers).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{what}: {body}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn without_auth_metrics_answer_anyone() {
        let state = MetricsState { metrics: metrics(), auth: None };
        let (code, body) = get(&state, &[]).await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("secret-project"), "{body}");
    }
}
