//! `faasight serve`: recovers the data directory, binds every listener,
//! runs receivers, API and flush, and owns shutdown: on SIGTERM/SIGINT stop
//! accepting, let in-flight requests finish, flush the buffer, exit 0.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use faasight_collector::connections::{ConnectionBudget, budget_for};
use faasight_collector::ingest::Limits;
use faasight_collector::receive::{self, Receiver, ReceiverConfig};
use faasight_collector::{Collector, CollectorConfig, RecoveryReport};
use faasight_query::api::http::{self as api, ApiState};
use faasight_query::api::pg::PgServer;
use faasight_query::cost::PriceCatalog;
use faasight_query::rules::evaluate::resolve_url;
use faasight_query::rules::load;
use faasight_query::rules::notify::{MessageContext, Notifier};
use faasight_query::rules::{Rules, RulesArgs};
use faasight_query::{QueryConfig, QueryEngine};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::idle::{IDLE_TIME, IdleIo, InFlightLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("could not bind {name} on {addr}: {e}").into())
}

/// Turns off Nagle's algorithm on an accepted connection. Responses are
/// small and written in more than one piece (HTTP/2 frames for gRPC:
/// headers, data, trailers); with Nagle on, the last piece waits for the
/// client's delayed ACK, up to 40 ms on Linux, so an exporter sending one
/// batch at a time would stall on every request.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// How long a client may take to send a request's headers. hyper enforces
/// it only with a timer, which `axum::serve` does not give it: a client
/// that sent half its headers held its connection for good, and a few
/// hundred of them would use up the process's file descriptors.
const HEADER_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Raises the soft limit on open files to the hard one, as the Go runtime
/// does (the soft limit is often 1,024, a few hundred Lambda environments'
/// connections), and returns the limit now in force.
#[cfg(target_os = "linux")]
fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum.unwrap_or(u64::MAX),
            Err(e) => tracing::debug!(error = %e, "could not raise the open-file limit"),
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// Elsewhere the connections are not counted.
#[cfg(not(target_os = "linux"))]
fn raise_open_file_limit() -> u64 {
    u64::MAX
}

/// How each port admits its connections: its name in logs, the shared
/// budget of connections, and how long one may be idle.
#[derive(Debug, Clone)]
struct Admission {
    port: &'static str,
    budget: Arc<ConnectionBudget>,
    idle: std::time::Duration,
}

/// The next connection on `listener` that fits the budget, wrapped to be
/// closed when idle. Connections past the budget are closed at once; an
/// accept that fails (out of file descriptors, most likely) is retried
/// after a pause rather than at once.
async fn next_connection(listener: &TcpListener, admission: &Admission) -> IdleIo<TcpStream> {
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                let Some(admitted) = admission.budget.admit(admission.port) else {
                    continue;
                };
                no_delay(&mut stream);
                return IdleIo::new(stream, admission.idle, admitted);
            }
            Err(e) => {
                tracing::warn!(port = admission.port, error = %e, "could not accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves `router` on `listener` as `axum::serve` with graceful shutdown
/// does, plus [`HEADER_TIME`] (HTTP/1; request bodies have their own limit,
/// see `faasight_collector::receive::body`), and the connection limits of
/// `admission` (see [`next_connection`]).
async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    stop: impl Future<Output = ()>,
    admission: Admission,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt;

    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIME);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            stream = next_connection(&listener, &admission) => stream,
            () = &mut stop => break,
        };
        let activity = Arc::clone(stream.activity());
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
                let in_flight = activity.begin();
                let answer = router.clone().oneshot(req.map(axum::body::Body::new));
                async move {
                    let answer = answer.await;
                    drop(in_flight);
                    answer
                }
            });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting, let the requests in flight finish, close idle
    // connections.
    graceful.shutdown().await;
}

/// Serves the gRPC `routes` on `listener` until `stop`, with the
/// connection limits of `admission` (see [`next_connection`]; tonic's own
/// accept loop would retry a failed accept at once, spinning a core while
/// the process is out of file descriptors).
async fn serve_grpc(
    listener: TcpListener,
    routes: tonic::service::Routes,
    stop: impl Future<Output = ()>,
    admission: Admission,
) -> Result<(), tonic::transport::Error> {
    let incoming = futures::stream::unfold((listener, admission), |(listener, admission)| async {
        let stream = next_connection(&listener, &admission).await;
        Some((Ok::<_, std::io::Error>(stream), (listener, admission)))
    });
    tonic::transport::Server::builder()
        .layer(InFlightLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
}

/// How often settled hours of `invocations` are merged on disk (the first
/// pass runs shortly after start).
const COALESCE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "could not listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn warn_if_exposed(config: &ServeConfig) {
    let exposed: Vec<String> = [
        ("otlp-grpc", config.otlp_grpc_addr),
        ("otlp-http", config.otlp_http_addr),
        ("api", config.api_addr),
    ]
    .iter()
    .filter(|(_, a)| !a.ip().is_loopback())
    .map(|(n, a)| format!("{n}={a}"))
    .collect();
    if !config.pg_addr.ip().is_loopback() && config.pg.password.is_none() {
        tracing::warn!(
            pg_addr = %config.pg_addr,
            "postgres wire listening beyond loopback without a password: anyone who can reach it can read all data; set --pg-password (and TLS)"
        );
    }
    if !exposed.is_empty() && config.ingest_tokens.is_empty() {
        tracing::warn!(
            listeners = exposed.join(" "),
            "listening beyond loopback without ingest tokens: anyone who can reach these ports can send data; set --ingest-token"
        );
    }
}

/// Recovers the data directory and builds the receiver every ingest path
/// (listeners, poller, import) shares.
pub(crate) fn open_collector(
    config: &ServeConfig,
) -> Result<(Collector, RecoveryReport, Receiver), BoxError> {
    let (collector, recovery) = Collector::open(CollectorConfig {
        data_dir: config.data_dir.clone(),
        limits: Limits {
            max_buffer_bytes: config.max_buffer_size,
            max_wal_bytes: config.max_wal_size,
        },
    })?;
    let receiver = Receiver {
        ingest: collector.ingest.clone(),
        metrics: Arc::clone(&collector.metrics),
        config: Arc::new(ReceiverConfig {
            max_body_size: config.max_body_size,
            ingest_tokens: config.ingest_tokens.clone(),
            firehose_access_key: config.firehose_access_key.clone(),
        }),
    };
    Ok((collector, recovery, receiver))
}

/// Loads and checks the rules directory (a broken rule stops the start with
/// file, rule and reason) and resolves the notifiers' URLs.
async fn load_rules(config: &ServeConfig, engine: &QueryEngine) -> Result<Option<Rules>, BoxError> {
    if !config.rules_dir.is_dir() {
        tracing::info!(rules_dir = %config.rules_dir.display(), "no rules directory; rules are off");
        return Ok(None);
    }
    let rules = load::load_dir(&config.rules_dir).map_err(rule_errors)?;
    let mut notifiers = Vec::new();
    for n in &config.notifiers {
        let url = resolve_url(
            &n.name,
            n.webhook_url_env.as_deref(),
            n.webhook_url_file.as_deref(),
        )?;
        notifiers.push(Notifier {
            name: n.name.clone(),
            kind: n.kind,
            url,
        });
    }
    // With no notifier configured, alerts are tracked and shown by the API only.
    let allowed: Vec<String> = if notifiers.is_empty() {
        rules.iter().flat_map(|r| r.notify.clone()).collect()
    } else {
        notifiers.iter().map(|n| n.name.clone()).collect()
    };
    let problems = load::check(engine, &rules, &allowed).await;
    if !problems.is_empty() {
        return Err(rule_errors(problems));
    }
    if notifiers.is_empty() && !rules.is_empty() {
        tracing::warn!("no notifiers configured: alerts are shown at /api/v1/alerts but not sent");
    }
    tracing::info!(
        rules = rules.len(),
        notifiers = notifiers.len(),
        rules_dir = %config.rules_dir.display(),
        "rules loaded"
    );
    let engine = Rules::new(RulesArgs {
        engine: engine.clone(),
        rules,
        notifiers,
        data_dir: config.data_dir.clone(),
        context: MessageContext {
            grafana_url: config.grafana_url.clone(),
        },
    })?;
    Ok(Some(engine))
}

fn rule_errors(errors: Vec<load::RuleError>) -> BoxError {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("rules are invalid:\n  {}", lines.join("\n  ")).into()
}

pub(crate) async fn run(config: ServeConfig) -> Result<(), BoxError> {
    for section in &config.unsupported_sections {
        tracing::warn!(
            section,
            "config section is not acted on by this version of faasight"
        );
    }
    warn_if_exposed(&config);
    let (collector, recovery, receiver) = open_collector(&config)?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        files = recovery.files,
        segments_replayed = recovery.segments_replayed,
        rows_replayed = recovery.rows_replayed,
        torn_tails = recovery.torn_tails,
        quarantined = recovery.quarantined.len(),
        "data directory recovered"
    );
    let pricing = PriceCatalog::load(config.pricing.as_deref())?;
    tracing::info!(
        entries = pricing.len(),
        overrides = config.pricing.as_ref().map(|p| p.display().to_string()),
        "price catalog loaded"
    );
    let engine = QueryEngine::new(
        collector.buffer.clone(),
        QueryConfig {
            pricing: Arc::new(pricing),
            timeout: config.query_timeout,
            max_rows: config.query_max_rows,
            max_result_bytes: config.query_max_result_bytes,
            memory_limit: config.query_memory_limit,
            query_memory: config.query_max_memory,
            data_dir: Some(collector.data_dir.clone()),
            ..QueryConfig::default()
        },
    )?;

    let rules = load_rules(&config, &engine).await?;

    let grpc_listener = bind("otlp-grpc", config.otlp_grpc_addr).await?;
    let http_listener = bind("otlp-http", config.otlp_http_addr).await?;
    let api_listener = bind("api", config.api_addr).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;
    let pg_listener = bind("pg", config.pg_addr).await?;
    let budget = ConnectionBudget::new(budget_for(raise_open_file_limit()));
    tracing::info!(connections = budget.limit(), "connection budget");
    let _ = collector.metrics.connections.set(Arc::clone(&budget));
    let admission = |port| Admission {
        port,
        budget: Arc::clone(&budget),
        idle: IDLE_TIME,
    };
    let pg_server = PgServer::new(engine.clone(), pg_listener, &config.pg)
        .await?
        .with_budget(Arc::clone(&budget));
    let pg_addr = pg_server.local_addr()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let receiver_for_poller = receiver.clone();
    let (traces, logs, metrics) = receive::grpc::services(receiver.clone());
    let grpc = tokio::spawn(serve_grpc(
        grpc_listener,
        tonic::service::Routes::new(traces)
            .add_service(logs)
            .add_service(metrics),
        stopped(),
        admission("otlp-grpc"),
    ));
    let http = tokio::spawn(serve_http(
        http_listener,
        receive::http::router(receiver),
        stopped(),
        admission("otlp-http"),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let coalescer = tokio::spawn(engine.clone().run_coalescer(COALESCE_EVERY, stopped()));
    let api_state = ApiState {
        engine,
        collector_metrics: Arc::clone(&collector.metrics),
        ready: Arc::clone(&ready),
        rules: rules.clone(),
    };
    let api = tokio::spawn(serve_http(
        api_listener,
        api::router(api_state),
        stopped(),
        admission("api"),
    ));
    let pg = tokio::spawn(pg_server.run(stopped()));
    let rules_task = rules.map(|r| tokio::spawn(r.run(stopped.clone())));
    let flusher = tokio::spawn(
        collector
            .flusher
            .clone()
            .run(config.flush_interval, stopped()),
    );
    let poller = match &config.cloudwatch {
        Some(cw) => {
            let poller = faasight_collector::cloudwatch::Poller::new(
                cw.clone(),
                receiver_for_poller,
                collector.flusher.clone(),
                &collector.data_dir,
                recovery.cloudwatch_checkpoints.clone(),
            )
            .await?;
            tracing::info!(region = %cw.region, prefixes = ?cw.log_group_prefixes, "cloudwatch logs poller on");
            Some(tokio::spawn(poller.run(stopped())))
        }
        None => None,
    };

    ready.store(true, Ordering::Relaxed);
    // The one line a script reads to learn the chosen ports.
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "faasight listening otlp_grpc={grpc_addr} otlp_http={http_addr} api={api_addr} pg={pg_addr}"
    )?;
    out.flush()?;
    drop(out);
    tracing::info!(%grpc_addr, %http_addr, %api_addr, %pg_addr, "faasight is serving");

    // A WAL writer that has ended (a panic in it, a bug) can make nothing
    // durable any more: stop, so that a supervisor restarts the server and
    // the restart replays the WAL, instead of refusing every request.
    let writer_ended = tokio::select! {
        _ = shutdown_signal() => false,
        _ = collector.ingest.writer_ended() => true,
    };
    if writer_ended {
        tracing::error!(
            "the write-ahead log writer has stopped; shutting down (the rows it acknowledged are replayed at the next start)"
        );
    } else {
        tracing::info!("shutting down: finishing in-flight requests");
    }
    ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = grpc.await {
        tracing::error!(error = %e, "otlp grpc server ended with an error");
    }
    let _ = http.await;
    let _ = api.await;
    let _ = pg.await;
    let _ = coalescer.await;
    if let Some(r) = rules_task {
        let _ = r.await;
    }
    let _ = flusher.await;
    if let Some(p) = poller {
        // A poll in progress is cut short: its events are either durable
        // with their checkpoint or not acknowledged at all.
        p.abort();
        let _ = p.await;
    }
    if writer_ended {
        return Err("the write-ahead log writer stopped; restart faasight to replay it".into());
    }
    let report = collector.flusher.flush().await.inspect_err(|e| {
        tracing::error!(
            error = %e,
            "final flush failed; the buffered rows stay in the write-ahead log and are replayed at the next start"
        );
    })?;
    tracing::info!(
        rows = report.rows,
        files = report.files,
        "final flush done; bye"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Short enough for a test, long beside the requests' spacing below.
    const IDLE: Duration = Duration::from_millis(500);
    /// A request that takes three idle periods without moving a byte.
    const SLOW: Duration = Duration::from_millis(1500);
    /// Bounds every wait, so that a connection never closed fails the test
    /// instead of hanging it (not a measurement: the limits under test are
    /// [`IDLE`] and, for HTTP/1 after a request, [`HEADER_TIME`]).
    const GUARD: Duration = Duration::from_secs(20);

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    fn admission(idle: Duration, connections: usize) -> Admission {
        Admission {
            port: "test",
            budget: ConnectionBudget::new(connections),
            idle,
        }
    }

    /// Past the budget a connection is closed without an answer; once one
    /// of those counted ends, a new one is served.
    #[tokio::test]
    async fn connections_past_the_budget_are_closed_until_one_ends() {
        let router = axum::Router::new().route("/fast", axum::routing::get(|| async { "fast" }));
        let (listener, addr) = listener().await;
        let long = Duration::from_secs(600);
        tokio::spawn(serve_http(
            listener,
            router,
            std::future::pending(),
            admission(long, 2),
        ));

        let mut first = TcpStream::connect(addr).await.expect("connect");
        let mut second = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(get(&mut first, "/fast").await, (200, "fast".into()));
        assert_eq!(get(&mut second, "/fast").await, (200, "fast".into()));
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let _ = third
            .write_all(b"GET /fast HTTP/1.1\r\nhost: test\r\n\r\n")
            .await;
        // Closed without a byte of answer (a reset reads as an error).
        let mut answer = Vec::new();
        let read = tokio::time::timeout(GUARD, third.read_to_end(&mut answer))
            .await
            .expect("a connection past the budget stays open");
        assert!(
            read.is_err() || answer.is_empty(),
            "a connection past the budget is served: {:?}",
            String::from_utf8_lossy(&answer)
        );

        drop(first);
        // Until the server has seen the first one end, new ones are closed.
        let request = b"GET /fast HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";
        let served = tokio::time::timeout(GUARD, async {
            loop {
                let mut next = TcpStream::connect(addr).await.expect("connect");
                let mut answer = Vec::new();
                if next.write_all(request).await.is_ok()
                    && next.read_to_end(&mut answer).await.is_ok()
                    && answer.starts_with(b"HTTP/1.1 200")
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        assert!(served.await.is_ok(), "no connection served after one ended");
        assert_eq!(get(&mut second, "/fast").await, (200, "fast".into()));
    }

    /// Reads until the peer closes; true if it did within [`GUARD`].
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(GUARD, stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends a GET and reads one whole answer on a kept-alive connection.
    async fn get(stream: &mut TcpStream, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&buf).expect("parse") {
                let length: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .expect("utf8")
                            .parse()
                            .expect("length")
                    })
                    .expect("content-length");
                if buf.len() >= head + length {
                    let body = String::from_utf8_lossy(&buf[head..head + length]).into_owned();
                    return (response.code.expect("code"), body);
                }
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(GUARD, stream.read(&mut chunk))
                .await
                .expect("answer in time")
                .expect("read");
            assert!(
                n > 0,
                "closed before the answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Over HTTP/1: a connection that never sent a byte and one idle after
    /// its request are closed; a request taking three idle periods is
    /// answered, and so is a connection that keeps sending requests.
    #[tokio::test]
    async fn idle_http_connections_are_closed_and_busy_ones_are_not() {
        let router = axum::Router::new()
            .route("/fast", axum::routing::get(|| async { "fast" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(SLOW).await;
                    "slow"
                }),
            );
        let (listener, addr) = listener().await;
        tokio::spawn(serve_http(
            listener,
            router,
            std::future::pending(),
            admission(IDLE, 100),
        ));

        let mut silent = TcpStream::connect(addr).await.expect("connect");
        // HTTP/2: hyper's header timeout, which closes HTTP/1 connections
        // kept alive after a request, does not apply, so only the idle
        // limit can close it.
        let (kept, kept_ended) = h2_connect(addr).await;
        let mut slow = TcpStream::connect(addr).await.expect("connect");

        assert_eq!(h2_get(&kept, "/fast").await, 200);
        assert_eq!(get(&mut slow, "/slow").await, (200, "slow".into()));
        assert!(
            tokio::time::timeout(GUARD, kept_ended).await.is_ok(),
            "an idle kept-alive connection stays open"
        );
        let mut busy = TcpStream::connect(addr).await.expect("connect");
        for _ in 0..30 {
            assert_eq!(get(&mut busy, "/fast").await, (200, "fast".into()));
            tokio::time::sleep(IDLE / 10).await;
        }
        assert!(closed(&mut silent).await, "a silent connection stays open");
        assert!(
            closed(&mut busy).await,
            "the busy connection, idle now, stays open"
        );
    }

    /// A gRPC service answering `/test.Sleepy/Slow` after [`SLOW`] and
    /// anything else at once, with an empty OK answer.
    #[derive(Clone)]
    struct Sleepy;

    impl tonic::server::NamedService for Sleepy {
        const NAME: &'static str = "test.Sleepy";
    }

    impl tower::Service<axum::http::Request<tonic::body::Body>> for Sleepy {
        type Response = axum::http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future =
            std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: axum::http::Request<tonic::body::Body>) -> Self::Future {
            let slow = request.uri().path().ends_with("/Slow");
            Box::pin(async move {
                if slow {
                    tokio::time::sleep(SLOW).await;
                }
                Ok(axum::http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "0")
                    .body(tonic::body::Body::empty())
                    .expect("response"))
            })
        }
    }

    /// Opens an HTTP/2 connection; the handle ends when the server closes it.
    async fn h2_connect(
        addr: SocketAddr,
    ) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (send, connection) = h2::client::handshake(tcp).await.expect("handshake");
        let ended = tokio::spawn(async move {
            let _ = connection.await;
        });
        (send, ended)
    }

    /// GETs `path` over HTTP/2 and returns the status.
    async fn h2_get(send: &h2::client::SendRequest<Bytes>, path: &str) -> u16 {
        let mut send = send.clone().ready().await.expect("ready");
        let request = axum::http::Request::get(format!("http://test{path}"))
            .body(())
            .expect("request");
        let (response, _) = send.send_request(request, true).expect("send");
        let response = tokio::time::timeout(GUARD, response)
            .await
            .expect("answer in time")
            .expect("answer");
        response.status().as_u16()
    }

    /// Calls `method` and returns its `grpc-status`.
    async fn call(send: &h2::client::SendRequest<Bytes>, method: &str) -> Option<String> {
        let mut send = send.clone().ready().await.expect("ready");
        let request = axum::http::Request::post(format!("http://test/test.Sleepy/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, mut stream) = send.send_request(request, false).expect("send");
        stream
            .send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .expect("data");
        let response = tokio::time::timeout(GUARD, response)
            .await
            .expect("answer in time")
            .expect("answer");
        let status = response.headers().get("grpc-status")?;
        Some(status.to_str().expect("ascii").to_string())
    }

    /// Over gRPC: a connection that never sent its preface and one idle
    /// after its call are closed; a call taking three idle periods is
    /// answered, and so are calls on a connection that keeps calling.
    #[tokio::test]
    async fn idle_grpc_connections_are_closed_and_busy_ones_are_not() {
        let (listener, addr) = listener().await;
        tokio::spawn(serve_grpc(
            listener,
            tonic::service::Routes::new(Sleepy),
            std::future::pending(),
            admission(IDLE, 100),
        ));

        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let (kept, kept_ended) = h2_connect(addr).await;
        let (slow, _slow_ended) = h2_connect(addr).await;

        assert_eq!(call(&kept, "Fast").await.as_deref(), Some("0"));
        assert_eq!(call(&slow, "Slow").await.as_deref(), Some("0"));
        let (busy, busy_ended) = h2_connect(addr).await;
        for _ in 0..30 {
            assert_eq!(call(&busy, "Fast").await.as_deref(), Some("0"));
            tokio::time::sleep(IDLE / 10).await;
        }
        assert!(!busy_ended.is_finished(), "a busy connection was closed");
        assert!(closed(&mut silent).await, "a silent connection stays open");
        for (name, ended) in [("kept", kept_ended), ("busy", busy_ended)] {
            tokio::time::timeout(GUARD, ended)
                .await
                .unwrap_or_else(|_| panic!("the idle {name} connection stays open"))
                .expect("join");
        }
    }
}
