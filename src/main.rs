//! loopservice-operator: flags, telemetry, the controller and its HTTP server, and signals.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::Reporter;
use kube::{Api, Client, Config};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};

#[cfg(feature = "fault-injection")]
use loopservice_operator::clock::OffsetClock;
use loopservice_operator::clock::{ServerClock, SystemClock};
use loopservice_operator::http::{self, HttpState, MetricsState, TlsFiles};
use loopservice_operator::metrics::{Metrics, ShardLabels};
use loopservice_operator::metrics_auth::{Authorizer, MetricsAuth};
use loopservice_operator::reconcile::claim::Claims;
use loopservice_operator::reconcile::{Fault, LoopEvents, Parts, Settings};
use loopservice_operator::runtime;
use loopservice_operator::runtime::Selection;
use loopservice_operator::scope::{Scope, ScopeError};
use loopservice_operator::shard::{self, Shard, ShardError};
use loopservice_operator::telemetry::{self, LogFormat};

/// Runs one Kubernetes Job per loop of each LoopService, on start-anchored timing.
#[derive(Parser, Debug)]
#[command(name = "loopservice-operator", version)]
struct Args {
    /// Kubeconfig file; in-cluster configuration (or ~/.kube/config) when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, env = "KUBE_CONTEXT")]
    context: Option<String>,
    /// Namespace whose LoopServices to run: a list of one (`--namespaces`), kept for
    /// compatibility.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Namespaces whose LoopServices to run, comma-separated, each watched on its own (a Role in
    /// each is all the operator needs); all namespaces but `--exclude-namespaces` when absent.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Namespaces whose LoopServices are never run, comma-separated: left out of the cluster-wide
    /// watches by a field selector. Not with `--namespaces`.
    #[arg(long, env = "EXCLUDE_NAMESPACES", value_delimiter = ',')]
    exclude_namespaces: Vec<String>,
    /// Log filter, e.g. `info` or `loopservice_operator=debug,kube=info`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Address of /healthz and /readyz, open to all (port 0 picks a free port).
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Address of /metrics (port 0 picks a free port).
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:8443")]
    metrics_addr: SocketAddr,
    /// Who may read /metrics: `token` (a bearer token allowed `get` on /metrics, checked by a
    /// TokenReview and a SubjectAccessReview) or `none` (anyone who reaches the port).
    #[arg(long, env = "METRICS_AUTH", value_enum, default_value = "token")]
    metrics_auth: MetricsAuth,
    /// Certificate (PEM) of /metrics, which is then served over TLS; plain HTTP when absent.
    #[arg(long, env = "METRICS_TLS_CERT", requires = "metrics_tls_key")]
    metrics_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --metrics-tls-cert.
    #[arg(long, env = "METRICS_TLS_KEY", requires = "metrics_tls_cert")]
    metrics_tls_key: Option<PathBuf>,
    /// Longest wait, after SIGTERM or SIGINT, for in-flight reconciles and status writes.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Name this instance signs its Events with (the pod's name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Run only while holding a Lease, so that of several replicas exactly one works and the
    /// others stand by to take over.
    #[arg(long, env = "LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "LEASE_NAME", default_value = "loopservice-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own namespace in a cluster); the watched
    /// namespace, else `default`, when absent.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Shards the LoopServices are split between: each shard (a release of its own, with its own
    /// Lease and standbys) works those whose uid hashes into its share of the hash space.
    #[arg(long, env = "SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: u32,
    /// Which shard this is, from 0 to `--shards` less one.
    #[arg(long, env = "SHARD_INDEX", default_value_t = 0)]
    shard_index: u32,
    /// Ask the API server for the shard's LoopServices only (`shardSelector`, where it serves
    /// sharded list and watch); `false` lists them all and drops the other shards' here.
    #[arg(long, env = "SERVER_SIDE_SHARDS", default_value_t = true, action = clap::ArgAction::Set)]
    server_side_shards: bool,
    /// API requests that reconciles make at once, at most. Due loops' Job creates go first;
    /// status writes, deletes of old Jobs and Events wait while any is waiting.
    #[arg(long, env = "CONCURRENCY", default_value_t = Settings::default().concurrency, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Of `--concurrency`, the status writes, deletes of old Jobs and Events in flight at once,
    /// at most, namespaces in turn: a backlog of them (thousands of new LoopServices to
    /// report) keeps this few ahead of another namespace's Job create at the API server.
    #[arg(long, env = "BOOKKEEPING_CONCURRENCY", default_value_t = Settings::default().bookkeeping_concurrency, value_parser = clap::value_parser!(u16).range(1..))]
    bookkeeping_concurrency: u16,
    /// Reports of invalid specs (a status write and an Event each) a second, at most, per
    /// namespace, after a burst of as many: a tenant's thousands of broken LoopServices are
    /// reported over minutes rather than in one flood of writes that every namespace shares.
    #[arg(long, env = "INVALID_REPORTS_PER_SECOND", default_value_t = Settings::default().invalid_reports_per_second)]
    invalid_reports_per_second: std::num::NonZeroU32,
    /// Reconciles running at once, at most (each LoopService is reconciled by one at a time);
    /// more wait for a place, namespaces in turn. Most of them wait for a turn to make a
    /// request; a waiting reconcile costs a few KiB.
    #[arg(long, env = "MAX_RECONCILES", default_value_t = 1024, value_parser = clap::value_parser!(u16).range(1..))]
    max_reconciles: u16,
    /// API requests per second that reconciles make, at most (watches are not counted).
    #[arg(long, env = "CLIENT_QPS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    client_qps: u32,
    /// Requests allowed at once above the QPS, after a quiet spell.
    #[arg(long, env = "CLIENT_BURST", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    client_burst: u32,
    /// Which Events to publish: `problems` (failures, overruns, stuck or invalid, suspensions)
    /// or `all` (also one per loop started and per loop succeeded).
    #[arg(long, env = "LOOP_EVENTS", value_enum, default_value = "problems")]
    loop_events: LoopEvents,
    /// A reconcile that takes longer than this fails and is retried (a request hanging on a dead
    /// connection, say).
    #[arg(long, env = "RECONCILE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    reconcile_timeout: Duration,
    /// Fault injection for crash-safety tests (a `fault-injection` build only).
    #[cfg(feature = "fault-injection")]
    #[arg(long, env = "LOOPSERVICE_FAULT", hide = true)]
    fault: Option<Fault>,
    /// Moves this machine's clock, as the operator reads it, by this much (`-1h`, `90s`): a
    /// machine whose clock is off, for the clock tests (a `fault-injection` build only).
    #[cfg(feature = "fault-injection")]
    #[arg(long, env = "LOOPSERVICE_CLOCK_OFFSET", hide = true, allow_hyphen_values = true, value_parser = signed_duration)]
    clock_offset: Option<jiff::SignedDuration>,
}

/// `90s`, `-1h`: a duration in humantime's words, with an optional sign.
#[cfg(feature = "fault-injection")]
fn signed_duration(s: &str) -> Result<jiff::SignedDuration, String> {
    let (sign, rest) = s.strip_prefix('-').map_or((1, s.trim_start_matches('+')), |r| (-1, r));
    let d = humantime::parse_duration(rest).map_err(|e| e.to_string())?;
    jiff::SignedDuration::try_from(d).map(|d| d * sign).map_err(|e| e.to_string())
}

impl Args {
    /// The namespaces whose LoopServices to run.
    fn scope(&self) -> Result<Scope, ScopeError> {
        let watch: Vec<String> = self.namespace.iter().chain(&self.namespaces).cloned().collect();
        Scope::new(&watch, &self.exclude_namespaces)
    }

    /// This release's shard.
    fn shard(&self) -> Result<Shard, ShardError> {
        Shard::new(self.shard_index, self.shards)
    }

    /// The leader Lease's namespace: the first watched namespace, else `default`, when not given.
    fn lease_namespace(&self) -> String {
        let watched = self.scope().ok().and_then(|s| s.first().map(String::from));
        self.lease_namespace.clone().or(watched).unwrap_or_else(|| "default".into())
    }

    #[cfg(feature = "fault-injection")]
    fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// A release build has no fault to inject.
    #[cfg(not(feature = "fault-injection"))]
    fn fault(&self) -> Option<Fault> {
        None
    }

    /// The loops' clock: the API server's, read through this machine's (moved by
    /// `--clock-offset` in a test build).
    fn clock(&self) -> ServerClock {
        #[cfg(feature = "fault-injection")]
        if let Some(offset) = self.clock_offset {
            return ServerClock::new(OffsetClock(offset));
        }
        ServerClock::new(SystemClock)
    }
}

/// How long a Lease holds without renewal, and how long before that the holder renews it.
/// A standby looks at the Lease again only when it would expire, so this also bounds how
/// long loops pause when the leader goes, released or not.
const LEASE_SECONDS: u64 = 10;
const LEASE_GRACE_SECONDS: u64 = 4;

/// kube-lease-manager retries a failed renewal quietly and never reports it as a loss, so the
/// leader also reads the Lease itself, every second: leadership is lost when another holder
/// shows, or when the last renewal seen is older than the Lease's duration less a second
/// (before a standby may take it over). Returns when leadership is lost.
fn lease_watchdog(api: Api<Lease>, name: String, identity: String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        let limit = Duration::from_secs(LEASE_SECONDS.saturating_sub(1));
        let mut renewed = jiff::Timestamp::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match api.get(&name).await {
                Ok(l) => {
                    let spec = l.spec.unwrap_or_default();
                    if spec.holder_identity.as_deref() != Some(identity.as_str()) {
                        warn!(holder = ?spec.holder_identity, "the leader lease has another holder");
                        return;
                    }
                    if let Some(t) = spec.renew_time {
                        renewed = renewed.max(t.0);
                    }
                }
                Err(e) => warn!(error = %e, "could not read the leader lease"),
            }
            let age = jiff::Timestamp::now().duration_since(renewed);
            if age.as_secs_f64() > limit.as_secs_f64() {
                warn!(age_ms = age.as_millis() as i64, "the leader lease was not renewed in time");
                return;
            }
        }
    })
}

fn main() {
    // Before any thread starts: one heap for all threads (see `heap::one_arena`).
    loopservice_operator::heap::one_arena();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loopservice-operator: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    runtime.block_on(operate());
}

/// Flags that make no sense end the operator before it starts.
fn exit_on_flags(e: &dyn std::fmt::Display) -> ! {
    eprintln!("loopservice-operator: {e}");
    std::process::exit(2);
}

async fn operate() {
    let mut args = Args::parse();
    if let Err(e) = telemetry::init(&args.log_level, args.log_format) {
        eprintln!("loopservice-operator: {e}");
        std::process::exit(2);
    }
    let (scope, shard) = match (args.scope(), args.shard()) {
        (Ok(scope), Ok(shard)) => (scope, shard),
        (Err(e), _) => exit_on_flags(&e),
        (_, Err(e)) => exit_on_flags(&e),
    };
    // Each shard has a Lease (and so a claim name) of its own.
    args.lease_name = shard.lease_name(&args.lease_name);
    match run(args, scope, shard).await {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            error!("{e:#}");
            std::process::exit(1);
        }
    }
}

async fn config(args: &Args) -> anyhow::Result<Config> {
    let options = KubeConfigOptions { context: args.context.clone(), ..KubeConfigOptions::default() };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options).await?
        }
        None => Config::infer().await?,
    };
    // A connection that cannot be made fails fast; a request that hangs on a dead one is cut
    // by the reconcile timeout, and a silent watch by the watch timeout.
    let mut config = config;
    config.connect_timeout = Some(Duration::from_secs(5));
    Ok(config)
}

/// The client of the LoopService watch of one shard of several: the operator's, each request
/// asking for the shard's range only (`shardSelector`, where the API server serves it).
fn shard_client(config: Config, shard: &Shard) -> anyhow::Result<Option<Client>> {
    let Some(selector) = shard.selector() else { return Ok(None) };
    let layer = tower::util::MapRequestLayer::new(move |req: ::http::Request<kube::client::Body>| shard::add_selector(req, &selector));
    Ok(Some(kube::client::ClientBuilder::try_from(config)?.with_layer(&layer).build()))
}

async fn run(args: Args, scope: Scope, shard: Shard) -> anyhow::Result<()> {
    let config = config(&args).await?;
    let client = Client::try_from(config.clone())?;
    let loopservice_client = if args.server_side_shards { shard_client(config, &shard)? } else { None };
    let selection = Selection { scope, shard, loopservice_client };
    let metrics = Arc::new(Metrics::default());
    metrics.shard.get_or_create(&ShardLabels { index: shard.index(), shards: shard.count() }).set(1);
    let ready = Arc::new(AtomicBool::new(false));
    // A release claims the LoopServices it works by its leader Lease; without leader election it
    // claims none (and stands by for those another release claims).
    let claims = Arc::new(Claims::new(args.leader_elect.then(|| format!("{}/{}", args.lease_namespace(), args.lease_name))));

    let (addr, server) = http::bind(args.http_addr, HttpState { metrics: metrics.clone(), ready: ready.clone(), claims: claims.clone() })
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", args.http_addr))?;
    info!(%addr, "serving /healthz and /readyz");
    tokio::spawn(async move {
        if let Err(e) = server.await {
            error!(error = %e, "http server stopped");
        }
    });
    let tls = args.metrics_tls_cert.clone().zip(args.metrics_tls_key.clone()).map(|(cert, key)| TlsFiles { cert, key });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let auth = (args.metrics_auth == MetricsAuth::Token).then(|| Authorizer::new(client.clone()));
    let (addr, server) = http::bind_metrics(args.metrics_addr, MetricsState { metrics: metrics.clone(), auth }, tls)
        .await
        .map_err(|e| anyhow::anyhow!("serving /metrics on {}: {e}", args.metrics_addr))?;
    info!(%addr, scheme, auth = ?args.metrics_auth, "serving /metrics");
    if args.metrics_auth == MetricsAuth::None {
        warn!("/metrics answers anyone who reaches {addr} (--metrics-auth none)");
    }
    tokio::spawn(async move {
        if let Err(e) = server.await {
            error!(error = %e, "metrics server stopped");
        }
    });
    let clock = Arc::new(args.clock());
    let operator = Operator { client, metrics, ready, claims, clock, args, selection };
    let mut signals = Signals::new()?;
    if operator.args.leader_elect {
        operator.elected(&mut signals).await
    } else {
        operator.alone(&mut signals).await
    }
}

/// What every term of work shares.
struct Operator {
    client: Client,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    claims: Arc<Claims>,
    /// Shared by every term, so that what it learnt of the API server's clock is kept.
    clock: Arc<ServerClock>,
    args: Args,
    selection: Selection,
}

/// A running term of work: the controller task, and how to stop it.
struct Term {
    draining: Arc<AtomicBool>,
    stop: tokio::sync::oneshot::Sender<()>,
    controller: tokio::task::JoinHandle<()>,
}

impl Operator {
    /// One term of work: a controller with fresh caches, until told to stop.
    fn term(&self) -> Term {
        let args = &self.args;
        let settings = Settings {
            concurrency: args.concurrency,
            bookkeeping_concurrency: args.bookkeeping_concurrency,
            max_reconciles: args.max_reconciles,
            qps: args.client_qps,
            burst: args.client_burst,
            loop_events: args.loop_events,
            reconcile_timeout: args.reconcile_timeout,
            invalid_reports_per_second: args.invalid_reports_per_second,
        };
        let draining = Arc::new(AtomicBool::new(false));
        let parts = Parts {
            client: self.client.clone(),
            reporter: Reporter { controller: "loopservice-operator".into(), instance: args.instance.clone() },
            metrics: self.metrics.clone(),
            draining: draining.clone(),
            fault: args.fault(),
            settings,
            clock: self.clock.clone(),
            claims: self.claims.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let controller = tokio::spawn(runtime::run(parts, self.selection.clone(), self.ready.clone(), shutdown));
        Term { draining, stop, controller }
    }

    /// Drains a term; whether it finished within the drain timeout.
    async fn drain(&self, term: Term, signals: &mut Signals) -> anyhow::Result<bool> {
        let Term { draining, stop, mut controller } = term;
        drain(&draining, &self.ready, stop, &mut controller, signals, self.args.drain_timeout).await
    }

    /// Without leader election: one term, until a signal.
    async fn alone(&self, signals: &mut Signals) -> anyhow::Result<()> {
        info!(namespace = %self.selection.scope, shard = %self.selection.shard, "starting controller");
        let mut term = self.term();
        tokio::select! {
            name = signals.next() => info!(signal = name, "draining"),
            res = &mut term.controller => {
                // The controller only ends on shutdown; ending early means its watch streams died.
                res?;
                anyhow::bail!("controller stopped unexpectedly");
            }
        }
        let began = Instant::now();
        if !self.drain(term, signals).await? {
            anyhow::bail!("drain did not finish within {:?}", self.args.drain_timeout);
        }
        info!(elapsed_ms = began.elapsed().as_millis() as u64, "drained; exiting");
        Ok(())
    }

    /// Leader election: stand by until this instance holds the Lease. A standby counts as
    /// ready: it is healthy and takes over as soon as the Lease is free. A leader that cannot
    /// renew stops starting loops before the Lease could pass to another instance, and stands
    /// by again rather than exit: an API server that is away (an upgrade, say) does not make
    /// it crash-loop.
    async fn elected(&self, signals: &mut Signals) -> anyhow::Result<()> {
        let args = &self.args;
        let namespace = args.lease_namespace();
        let identity = args.instance.clone().unwrap_or_else(|| format!("loopservice-operator-{}", std::process::id()));
        let manager = LeaseManagerBuilder::new(self.client.clone(), &args.lease_name)
            .with_namespace(&namespace)
            .with_identity(&identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .build()
            .await?;
        let (mut leader, task) = manager.watch().await;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &namespace);
        loop {
            info!(lease = %args.lease_name, %namespace, %identity, "standing by for the leader lease");
            self.ready.store(true, Ordering::SeqCst);
            tokio::select! {
                held = wait_for_lease(&mut leader, &leases, &args.lease_name, &identity) => if !held {
                    anyhow::bail!("leader election stopped: {:?}", task.await);
                },
                name = signals.next() => { info!(signal = name, "stopped while standing by"); return Ok(()); }
            }
            self.ready.store(false, Ordering::SeqCst);
            info!(lease = %args.lease_name, %identity, "became the leader");
            let (stopping, drained, began) = self.lead(&mut leader, &leases, &identity, signals).await?;
            if !stopping {
                if !drained {
                    // Reconciles hung past the limit: a clean slate is safer than a second term
                    // beside them.
                    anyhow::bail!("lost the leader lease and could not drain within {:?}", args.drain_timeout);
                }
                continue;
            }
            // Closing the channel makes the lease manager release the Lease and finish.
            drop(leader);
            let left = args.drain_timeout.saturating_sub(began.elapsed()).max(Duration::from_secs(1));
            match tokio::time::timeout(left, task).await {
                Ok(Ok(Ok(_))) => info!("released the leader lease"),
                other => {
                    warn!(result = ?other.map(|r| r.map(|r| r.map(|_| ()))), "could not release the leader lease; it expires by itself")
                }
            }
            if !drained {
                anyhow::bail!("drain did not finish within {:?}", args.drain_timeout);
            }
            info!(elapsed_ms = began.elapsed().as_millis() as u64, "drained; exiting");
            return Ok(());
        }
    }

    /// One term as the leader, until a signal (stopping: true) or the Lease is lost; drained
    /// either way. Returns (stopping, drained, when the drain began).
    async fn lead(
        &self,
        leader: &mut tokio::sync::watch::Receiver<bool>,
        leases: &Api<Lease>,
        identity: &str,
        signals: &mut Signals,
    ) -> anyhow::Result<(bool, bool, Instant)> {
        let mut term = self.term();
        let watchdog = lease_watchdog(leases.clone(), self.args.lease_name.clone(), identity.to_string());
        let released = async {
            while *leader.borrow_and_update() {
                if leader.changed().await.is_err() {
                    break;
                }
            }
        };
        let stopping = tokio::select! {
            name = signals.next() => { info!(signal = name, "draining"); true }
            _ = released => { warn!("lost the leader lease; stopping loops and standing by"); false }
            _ = watchdog => { warn!("lost the leader lease; stopping loops and standing by"); false }
            res = &mut term.controller => {
                res?;
                anyhow::bail!("controller stopped unexpectedly");
            }
        };
        let began = Instant::now();
        let drained = self.drain(term, signals).await?;
        Ok((stopping, drained, began))
    }
}

/// SIGTERM and SIGINT, as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Stops a term: no new loop starts, in-flight reconciles finish (up to `limit`). A second
/// signal exits at once. Returns whether the controller finished in time.
async fn drain(
    draining: &AtomicBool,
    ready: &AtomicBool,
    stop: tokio::sync::oneshot::Sender<()>,
    controller: &mut tokio::task::JoinHandle<()>,
    signals: &mut Signals,
    limit: Duration,
) -> anyhow::Result<bool> {
    draining.store(true, Ordering::SeqCst);
    ready.store(false, Ordering::SeqCst);
    let _ = stop.send(());
    tokio::select! {
        res = controller => { res?; Ok(true) }
        _ = signals.next() => {
            warn!("second signal: exiting at once");
            std::process::exit(130);
        }
        _ = tokio::time::sleep(limit) => Ok(false),
    }
}

/// Waits until this instance holds the Lease and has renewed it lately (the lease manager's
/// flag alone may lag a renewal that failed). `false` when leader election stopped.
async fn wait_for_lease(leader: &mut tokio::sync::watch::Receiver<bool>, api: &Api<Lease>, name: &str, identity: &str) -> bool {
    loop {
        if *leader.borrow_and_update() {
            match api.get(name).await {
                Ok(l) => {
                    let spec = l.spec.unwrap_or_default();
                    let fresh = spec
                        .renew_time
                        .is_some_and(|t| jiff::Timestamp::now().duration_since(t.0).as_secs_f64() < LEASE_SECONDS.saturating_sub(1) as f64);
                    if spec.holder_identity.as_deref() == Some(identity) && fresh {
                        return true;
                    }
                }
                Err(e) => debug!(error = %e, "could not read the leader lease"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else if leader.changed().await.is_err() {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(args: &[&str]) -> Result<Scope, String> {
        let args = Args::try_parse_from(std::iter::once("loopservice-operator").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        args.scope().map_err(|e| e.to_string())
    }

    #[test]
    fn namespaces_are_a_comma_separated_list_and_namespace_is_one_more_item() {
        let list = |names: &[&str]| Ok(Scope::Only(names.iter().map(|s| s.to_string()).collect()));
        assert_eq!(scope(&["--namespaces", "a,b"]), list(&["a", "b"]));
        assert_eq!(scope(&["--namespaces", "a", "--namespaces", "b,c"]), list(&["a", "b", "c"]));
        assert_eq!(scope(&["--namespace", "a", "--namespaces", "b,a"]), list(&["a", "b"]));
        assert_eq!(scope(&["--namespace", "team-a"]), list(&["team-a"]));
    }

    #[test]
    fn exclusions_and_everything() {
        let all_but = |names: &[&str]| Ok(Scope::AllBut(names.iter().map(|s| s.to_string()).collect()));
        assert_eq!(scope(&["--exclude-namespaces", "kube-system,c"]), all_but(&["kube-system", "c"]));
        assert_eq!(scope(&[]), all_but(&[]));
    }

    #[test]
    fn a_list_with_exclusions_or_a_bad_name_is_an_error_at_start() {
        let e = scope(&["--namespace", "a", "--exclude-namespaces", "kube-system"]).unwrap_err();
        assert!(e.contains("cannot be given together"), "{e}");
        let e = scope(&["--namespaces", "a,Team_B"]).unwrap_err();
        assert!(e.starts_with("--namespaces (WATCH_NAMESPACES): \"Team_B\" is not a namespace name"), "{e}");
    }

    #[test]
    fn the_lease_lives_in_the_first_watched_namespace_unless_told() {
        let args = |a: &[&str]| Args::try_parse_from(std::iter::once("x").chain(a.iter().copied())).unwrap();
        assert_eq!(args(&["--namespaces", "b,a"]).lease_namespace(), "b");
        assert_eq!(args(&["--namespaces", "b,a", "--lease-namespace", "ops"]).lease_namespace(), "ops");
        assert_eq!(args(&["--exclude-namespaces", "c"]).lease_namespace(), "default");
    }

    #[test]
    fn shards_are_checked_at_start_and_default_to_one_whole() {
        let shard = |a: &[&str]| {
            Args::try_parse_from(std::iter::once("x").chain(a.iter().copied()))
                .map_err(|e| e.to_string())?
                .shard()
                .map_err(|e| e.to_string())
        };
        assert_eq!(shard(&[]), Ok(Shard::default()));
        assert_eq!(shard(&["--shards", "3", "--shard-index", "2"]), Ok(Shard::new(2, 3).unwrap()));
        let e = shard(&["--shards", "3", "--shard-index", "3"]).unwrap_err();
        assert!(e.contains("--shard-index (SHARD_INDEX) must be below --shards"), "{e}");
        let e = shard(&["--shards", "0"]).unwrap_err();
        assert!(e.contains("--shards"), "{e}");
    }
}
