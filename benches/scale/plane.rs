//! The local cluster's control plane as the bench sees it from outside: the CPU time of
//! kube-apiserver, kube-controller-manager and etcd from /proc (their pids from the cluster's
//! pid files, `$LOOPS_CLUSTER_DIR/run/<name>.pid`), and the size of etcd's database from
//! etcd's own /metrics, at the client URL its command line gives.

use crate::proc::{self, cpu_secs};

pub const COMPONENTS: [&str; 3] = ["kube-apiserver", "kube-controller-manager", "etcd"];

fn run_dir() -> String {
    let dir = std::env::var("LOOPS_CLUSTER_DIR")
        .unwrap_or_else(|_| format!("{}/.local/state/loops-cluster", std::env::var("HOME").unwrap_or_default()));
    format!("{dir}/run")
}

/// The pid of a control plane process, from its pid file.
pub fn pid(component: &str) -> Option<u32> {
    std::fs::read_to_string(format!("{}/{component}.pid", run_dir())).ok()?.trim().parse().ok()
}

/// CPU seconds of each of [`COMPONENTS`] at one instant, with the pid read: a process that
/// was restarted between two readings has no figure for the time between them.
#[derive(Clone, Debug)]
pub struct Cpu(Vec<(&'static str, Option<u32>, f64)>);

impl Cpu {
    pub fn read() -> Cpu {
        Cpu(COMPONENTS.iter().map(|c| (*c, pid(c), pid(c).map_or(f64::NAN, cpu_secs))).collect())
    }

    /// CPU seconds each used since `before`; NaN for a process restarted or not found.
    pub fn since(&self, before: &Cpu) -> Vec<(&'static str, f64)> {
        self.0
            .iter()
            .zip(&before.0)
            .map(|((c, pid, now), (_, pid0, then))| (*c, if pid.is_some() && pid == pid0 { now - then } else { f64::NAN }))
            .collect()
    }
}

/// The value of `--flag` (as `--flag=v` or `--flag v`) on the command line of process `pid`.
fn flag(pid: u32, name: &str) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&format!("{name}=")).map(str::to_string).or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
    })
}

/// etcd's database: (`etcd_mvcc_db_total_size_in_bytes`, `..._in_use_in_bytes`) in MiB, from
/// the /metrics of its first plain-HTTP client URL; `None` when it cannot be read.
pub fn etcd_db() -> Option<(f64, f64)> {
    let urls = flag(pid("etcd")?, "--listen-client-urls")?;
    let addr = urls.split(',').find_map(|u| u.strip_prefix("http://"))?.trim_end_matches('/').to_string();
    let (200, body) = proc::http_get(&addr, "/metrics")? else { return None };
    let value = |name: &str| -> Option<f64> {
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok()).map(|b| b / (1024.0 * 1024.0))
    };
    Some((value("etcd_mvcc_db_total_size_in_bytes")?, value("etcd_mvcc_db_total_size_in_use_in_bytes")?))
}
