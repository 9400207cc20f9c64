//! Two releases of the operator and one LoopService: the release that claims it works it, the
//! other stands by (saying so once) until the claimant's Lease is gone, then takes it over.
//! Each scenario runs the real reconcile against the mocked API server.

use kube::runtime::controller::Action;
use serde_json::{json, Value};

use super::claim::Standing;
use super::fixtures::*;
use super::reconcile;
use crate::crd::LoopService;
use crate::keys::ANN_CLAIMED_BY;
use crate::reasons::Reason;

const MINE: &str = "ops/loopservice-operator";
const OTHER: &str = "team-b/loopservice-operator";

fn claimed_by(by: &str) -> LoopService {
    let mut ls = loopservice(json!({}));
    ls.metadata.annotations = Some([(ANN_CLAIMED_BY.to_string(), by.to_string())].into());
    ls
}

fn lease(holder: Option<&str>) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "loopservice-operator", "namespace": "team-b", "resourceVersion": "7"},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10}})
}

#[tokio::test]
async fn a_release_claims_a_free_loopservice_before_its_first_job() {
    let ls = loopservice(json!({}));
    let (client, api) = api_server(vec![Expect::claim(&ls, MINE), Expect::dry_run_job(), Expect::create_job(), Expect::write_status(&ls)]);
    let ctx = context_of_release(client, clock_at(t0()), vec![], MINE);
    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    assert_eq!(ctx.claims.standing(), Standing::Working);
    let asked = api.done(ctx).await;
    assert_eq!(asked.created_jobs().len(), 1, "loop 1 starts once claimed");
    assert_eq!(asked.statuses()[0].0, "2", "the status is written on the claimed version, not a conflict");
}

#[tokio::test]
async fn a_loopservice_this_release_claimed_is_worked_without_a_lease_read() {
    let ls = claimed_by(MINE);
    let (client, api) = api_server(vec![Expect::dry_run_job(), Expect::create_job(), Expect::write_status(&ls)]);
    let ctx = context_of_release(client, clock_at(t0()), vec![], MINE);
    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    assert_eq!(api.done(ctx).await.created_jobs().len(), 1);
}

#[tokio::test]
async fn a_loopservice_a_live_release_claimed_is_left_alone_and_that_is_said_once() {
    // A release with leader election, and an instance without (it claims nothing, but still
    // keeps off what another release works).
    for mine in [Some(MINE), None] {
        let ls = claimed_by(OTHER);
        let (client, api) = api_server(vec![Expect::get_lease(OTHER, Some(lease(Some("operator-7f9c")))), Expect::event()]);
        let ctx = match mine {
            Some(m) => context_of_release(client, clock_at(t0()), vec![], m),
            None => context(client, clock_at(t0()), vec![], vec![]),
        };
        reconcile(cached(&ls), ctx.clone()).await.expect("standing by is no error");
        // Looked at again at once: the Lease read is reused, and nothing is said twice.
        reconcile(cached(&ls), ctx.clone()).await.expect("standing by is no error");
        assert!(matches!(ctx.claims.standing(), Standing::Only(ref why) if why.contains(OTHER)), "{:?}", ctx.claims.standing());
        let asked = api.done(ctx).await;
        assert!(asked.created_jobs().is_empty() && asked.statuses().is_empty(), "nothing written: {:#?}", asked.lines());
        let events = asked.events();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].type_.as_str(), events[0].reason.as_str()), ("Warning", Reason::ClaimedElsewhere.as_str()));
        assert!(events[0].note.contains(OTHER) && events[0].note.contains("its Lease is renewed"), "{}", events[0].note);
    }
}

#[tokio::test]
async fn a_claimant_whose_lease_cannot_be_read_is_taken_for_alive() {
    let ls = claimed_by(OTHER);
    let refused = Expect::get_lease(OTHER, None).refused(403, "Forbidden", "leases.coordination.k8s.io is forbidden");
    let (client, api) = api_server(vec![refused, Expect::event()]);
    let ctx = context_of_release(client, clock_at(t0()), vec![], MINE);
    reconcile(cached(&ls), ctx.clone()).await.expect("standing by is no error");
    let asked = api.done(ctx).await;
    assert!(asked.created_jobs().is_empty() && asked.statuses().is_empty());
    assert!(asked.events()[0].note.contains("cannot be read"), "{}", asked.events()[0].note);
}

#[tokio::test]
async fn a_claim_whose_release_is_uninstalled_or_stopped_is_taken_over_and_said() {
    for (lease, why) in [(None, "its Lease does not exist"), (Some(lease(None)), "its Lease has no holder")] {
        let ls = claimed_by(OTHER);
        let (client, api) = api_server(vec![
            Expect::get_lease(OTHER, lease),
            Expect::claim(&ls, MINE),
            Expect::event(),
            Expect::dry_run_job(),
            Expect::create_job(),
            Expect::write_status(&ls),
        ]);
        let ctx = context_of_release(client, clock_at(t0()), vec![], MINE);
        reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
        let asked = api.done(ctx).await;
        let events = asked.events();
        assert_eq!((events[0].type_.as_str(), events[0].reason.as_str()), ("Normal", Reason::ClaimTaken.as_str()));
        assert!(events[0].note.contains(why) && events[0].note.contains(MINE), "{}", events[0].note);
        assert_eq!(asked.created_jobs().len(), 1, "its loops go on under this release");
    }
}

#[tokio::test]
async fn two_releases_claiming_at_once_the_second_conflicts_and_starts_nothing() {
    let ls = loopservice(json!({}));
    let conflict =
        Expect::claim(&ls, MINE).refused(409, "Conflict", "the object has been modified; please apply your changes to the latest version");
    let (client, api) = api_server(vec![conflict]);
    let ctx = context_of_release(client, clock_at(t0()), vec![], MINE);
    let err = reconcile(cached(&ls), ctx.clone()).await.expect_err("a conflict");
    assert!(matches!(err, crate::Error::Claim(..)), "{err}");
    let asked = api.done(ctx).await;
    assert!(asked.created_jobs().is_empty() && asked.statuses().is_empty(), "{:#?}", asked.lines());
}

/// Thousands of new LoopServices of one invalid spec (refused by the API server's dry run, or
/// by the operator's own rules), each to be claimed before it is reported: the claims go in the
/// pace of the reports, a claim and its report in one turn. Past the burst a reconcile writes
/// nothing, not even the claim, before its instant.
#[tokio::test]
async fn claims_of_an_invalid_spec_go_in_the_reports_pace_one_turn_for_claim_and_report() {
    let settings = super::context::Settings::default();
    let burst = settings.invalid_reports_per_second.get() as usize;
    let every = std::time::Duration::from_secs(1) / settings.invalid_reports_per_second.get();
    let refusal = "Job.batch is invalid: spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"nope\"";
    for refused_by_api_server in [true, false] {
        let spec = if refused_by_api_server { json!({}) } else { json!({"interval": "soon"}) };
        let all: Vec<LoopService> = (0..burst + 2)
            .map(|i| {
                let mut ls = loopservice(spec.clone());
                ls.metadata.name = Some(format!("broken-{i}"));
                ls.metadata.uid = Some(format!("0aa1b2c3-d4e5-4f60-8a7b-9c8d7e6f5a{i:02}"));
                ls
            })
            .collect();
        let mut expect = vec![];
        for (i, ls) in all.iter().enumerate() {
            expect.push(Expect::claim(ls, MINE));
            if i == 0 && refused_by_api_server {
                expect.push(Expect::dry_run_job().refused(422, "Invalid", refusal));
            }
            expect.extend([Expect::write_status(ls), Expect::event()]);
        }
        let (client, api) = api_server(expect);
        let clock = clock_at(t0());
        let ctx = context_of_release(client, clock.clone(), vec![], MINE);
        let mut actions = vec![];
        for ls in &all {
            actions.push(reconcile(cached(ls), ctx.clone()).await.expect("the reconcile succeeds"));
        }
        let (first, past) = actions.split_at(burst);
        assert!(first.iter().all(|a| *a == first[0]), "the burst is claimed and reported at once: {actions:?}");
        assert_eq!(past, [Action::requeue(every), Action::requeue(every * 2)], "past the burst, one claim and report each `every`");
        let claims =
            |api: &ApiServer| api.seen().iter().filter(|s| s.path.contains("/loopservices/") && !s.path.ends_with("/status")).count();
        assert_eq!(claims(&api), burst, "past the burst, not even the claim is written before its instant");
        clock.advance(every * 2);
        for ls in &all[burst..] {
            let back = reconcile(cached(ls), ctx.clone()).await.expect("the reconcile succeeds");
            assert_eq!(back, first[0], "claimed and reported in the one turn, not booked another");
        }
        let asked = api.done(ctx).await;
        assert_eq!((asked.statuses().len(), asked.events().len()), (burst + 2, burst + 2), "each claimed and reported once");
    }
}
