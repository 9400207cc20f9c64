//! The operator process as the bench sees it from outside: started with the bench's extra
//! environment, its readiness over HTTP, and its memory and CPU time from /proc.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::Operator;

/// Extra environment for the operator from `BENCH_OPERATOR_ENV="K=V,K=V"`.
pub fn extra_env() -> Vec<(String, String)> {
    std::env::var("BENCH_OPERATOR_ENV")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Starts the operator for namespace `ns` and returns it with its HTTP address.
pub async fn start(ns: &str) -> (Operator, String) {
    start_for(&[ns]).await
}

/// Starts the operator for the namespaces `namespaces` and returns it with its HTTP address.
pub async fn start_for(namespaces: &[&str]) -> (Operator, String) {
    let extra = extra_env();
    let mut env: Vec<(&str, &str)> = vec![("LOG_LEVEL", "warn,loopservice_operator=info")];
    env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let op = Operator::start_for(namespaces, &env);
    let addr = op.http_addr().await;
    (op, addr)
}

/// GETs `path` from `addr`: (status code, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut text = Vec::new();
    conn.read_to_end(&mut text).ok()?;
    let text = String::from_utf8_lossy(&text);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    // axum answers /metrics without chunking; undo chunking anyway should it appear.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Some((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls /readyz every 5 ms; the wall-clock instant it first answered 200.
pub async fn wait_ready(op: &mut Operator, addr: &str, limit: Duration) -> jiff::Timestamp {
    let start = Instant::now();
    loop {
        if let Some((200, _)) = http_get(addr, "/readyz") {
            return jiff::Timestamp::now();
        }
        if let Ok(Some(status)) = op.child.try_wait() {
            panic!("the operator exited ({status}) before it was ready; log:\n{}", tail(&op.log_text()));
        }
        assert!(start.elapsed() < limit, "the operator was not ready within {limit:?}; log:\n{}", tail(&op.log_text()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the operator says its caches synced (in its log). With leader election a
/// standby is ready before it leads; the leader it becomes starts loops once its caches have
/// synced.
pub async fn wait_synced(op: &mut Operator, limit: Duration) -> jiff::Timestamp {
    let start = Instant::now();
    loop {
        if op.log_text().contains("caches synced") {
            return jiff::Timestamp::now();
        }
        if let Ok(Some(status)) = op.child.try_wait() {
            panic!("the operator exited ({status}) before its caches synced; log:\n{}", tail(&op.log_text()));
        }
        assert!(start.elapsed() < limit, "the operator's caches did not sync within {limit:?}; log:\n{}", tail(&op.log_text()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn status_kib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// (resident MiB now, peak resident MiB) from VmRSS and VmHWM.
pub fn memory(pid: u32) -> (f64, f64) {
    (status_kib(pid, "VmRSS:") / 1024.0, status_kib(pid, "VmHWM:") / 1024.0)
}

/// CPU seconds (user + system) the process has used.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Waits until the process used under 5% of a core in two 2-second windows in a row (or
/// `limit` passed); returns how long that took and whether it settled.
pub async fn settle(pid: u32, limit: Duration) -> (Duration, bool) {
    let start = Instant::now();
    let mut quiet = 0;
    let mut last = cpu_secs(pid);
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = cpu_secs(pid);
        quiet = if now - last < 0.1 { quiet + 1 } else { 0 };
        last = now;
        if quiet >= 2 {
            return (start.elapsed(), true);
        }
    }
    (start.elapsed(), false)
}
