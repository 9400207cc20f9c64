//! The printed figures, each with its sample count, and the targets beside them.

use crate::apiserver::{self, RESOURCES};
use crate::fairness::{FairResult, Window};
use crate::floor::FloorResult;
use crate::idle::IdleResult;
use crate::overdue::OverdueResult;
use crate::peers::{CronResult, LsResult};
use crate::stats::{fmt, target, Sample};
use crate::steady::Steady;

pub fn peers(ls: &LsResult, cron: Option<&CronResult>) {
    let l = Sample::new(ls.skew.clone());
    println!("\n1. Job created after its due time, as the bench's Job watch saw it");
    println!("  LoopService (loops 2.., {} Jobs seen in {:.0} s)  {}", ls.loops, ls.seconds, l.line(1000.0, " ms"));
    if let Some(cron) = cron {
        let c = Sample::new(cron.skew.clone());
        println!(
            "  CronJob ({} minutes x {}, {:.0} s)              {}",
            cron.schedules,
            cron.expected / cron.schedules.max(1),
            cron.seconds,
            c.line(1000.0, " ms")
        );
        if c.n() < cron.expected {
            println!("  CronJob Jobs not seen within 55 s of their minute: {}", cron.expected - c.n());
        }
        println!(
            "  ratio CronJob / LoopService: p50 {}x  p99 {}x  max {}x",
            fmt(c.p(0.5) / l.p(0.5)),
            fmt(c.p(0.99) / l.p(0.99)),
            fmt(c.max() / l.max())
        );
    }
    println!(
        "  due time = previous loop's start + 60 s (to the ms): {} of {} loops{}",
        ls.anchored,
        ls.anchored + ls.not_anchored.len(),
        if ls.not_anchored.is_empty() {
            String::new()
        } else {
            format!("; not: {}", ls.not_anchored.iter().take(5).cloned().collect::<Vec<_>>().join("; "))
        }
    );
    println!(
        "  each wave's due times spread over (loop: ms) {}",
        ls.due_spread_ms.iter().map(|(l, ms)| format!("{l}: {ms:.0}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "  LoopService start spacing error (start - previous start - 60 s)  {}",
        Sample::new(ls.spacing_err_ms.clone()).line(1.0, " ms")
    );
    println!("{}", target("(1) LoopService skew p99 <= 250 ms", &format!("p99 {} ms", fmt(l.p(0.99) * 1000.0)), l.p(0.99) <= 0.25));
}

pub fn api(ls: &LsResult) {
    let loops = ls.loops.max(1) as f64;
    println!("\n2. API calls during the LoopService phase ({} loops in {:.0} s; the CronJob phase ran after it)", ls.loops, ls.seconds);
    println!("  a) the API server's apiserver_request_total, diffed over the phase, for {RESOURCES:?}: every client of the");
    println!("     cluster is in it (the operator; the Job controller, scheduler and kwok running its Jobs; the bench's watches;");
    println!(
        "     anything else using the cluster then); the bench's own {} LoopService creates and the operator's first LIST",
        ls.bench_creates
    );
    println!("     of each of its three caches, at its start, are subtracted");
    println!("  {:<8} {:<20} {:<20} {:>7} {:>9}", "verb", "resource", "group", "count", "per loop");
    for ((verb, res, group), n) in &ls.api {
        let n = *n;
        if n > 0.0 {
            println!("  {verb:<8} {res:<20} {:<20} {n:>7.0} {:>9}", if group.is_empty() { "core" } else { group }, fmt(n / loops));
        }
    }
    let s = |verbs: &[&str], res: &str| apiserver::sum(&ls.api, verbs, res, None);
    let writes = ["PATCH", "APPLY", "PUT"];
    let lists = s(&["LIST"], "loopservices") + s(&["LIST"], "jobs") + s(&["LIST"], "pods");
    println!(
        "  per loop: LIST loopservices {}, jobs {}, pods {}; GET loopservices {}, jobs {}, pods {}; WATCH {}; create job {}; loopservices/status writes {}; Events created {}",
        fmt(s(&["LIST"], "loopservices") / loops), fmt(s(&["LIST"], "jobs") / loops), fmt(s(&["LIST"], "pods") / loops),
        fmt(s(&["GET"], "loopservices") / loops), fmt(s(&["GET"], "jobs") / loops), fmt(s(&["GET"], "pods") / loops),
        fmt((s(&["WATCH"], "loopservices") + s(&["WATCH"], "jobs") + s(&["WATCH"], "pods")) / loops),
        fmt(s(&["POST"], "jobs") / loops), fmt(s(&writes, "loopservices/status") / loops),
        fmt(apiserver::sum(&ls.api, &["POST"], "events", Some("events.k8s.io")) / loops),
    );
    println!("  b) in the bench's namespace only, from the bench's own watches and an Event list:");
    println!(
        "     Jobs created (the loops) {}, LoopService status writes {} ({} per loop), other LoopService writes {}, Events by loopservice-operator {:.0} ({} per loop)",
        ls.loops, ls.status_writes, fmt(ls.status_writes as f64 / loops), ls.other_writes, ls.operator_events, fmt(ls.operator_events / loops)
    );
    if ls.relisted > 0 {
        println!("     (the LoopService watch relisted after a gap, {} objects: writes in a gap count once)", ls.relisted);
    }
    println!(
        "  c) the operator's own counters: {}",
        ls.operator_counters.iter().map(|(k, v)| format!("{k} {v:.0} ({} per loop)", fmt(v / loops))).collect::<Vec<_>>().join(", ")
    );
    println!("{}", target("(4) no LIST per loop (a, all clients)", &format!("{} per loop", fmt(lists / loops)), lists == 0.0));
    let creates = s(&["POST"], "jobs") / loops;
    println!("{}", target("(4) <= 1 Job create per loop (a, all clients)", &fmt(creates), creates <= 1.0));
    let st = ls.status_writes as f64 / loops;
    println!("{}", target("(4) <= 2 status writes per loop (b)", &fmt(st), st <= 2.0));
    let ev = ls.operator_events / loops;
    println!("{}", target("(4) <= 1 Event per loop (b)", &fmt(ev), ev <= 1.0));
}

pub fn overdue(o: &OverdueResult) {
    let s = Sample::new(o.lat.clone());
    println!("\n3. {} LoopServices overdue at operator start (created in {:.1} s with no operator)", o.m, o.create_s);
    println!("  operator start to /readyz 200: {:.2} s", o.ready_s);
    println!("  ready to Job seen   {}", s.line(1000.0, " ms"));
    println!(
        "  all {} Jobs seen {} s after ready{}",
        s.n(),
        fmt(s.max()),
        if s.n() < o.m { format!(" (only {} of {} within 300 s)", s.n(), o.m) } else { String::new() }
    );
    let all = s.n() == o.m && s.max() <= 2.0;
    println!("{}", target(&format!("(2) all {} Jobs within 2 s of ready", o.m), &format!("max {} s", fmt(s.max())), all));
    println!("{}", target("(2) p99 <= 1 s", &format!("p99 {} s", fmt(s.p(0.99))), s.p(0.99) <= 1.0));
}

pub fn idle(r: &IdleResult) {
    println!("\n4. Suspended LoopServices: operator memory (VmRSS, peak VmHWM) and time to ready after a restart");
    println!(
        "  {:>6} {:>9} {:>10} {:>9} {:>9} | {:>9} {:>10} {:>10} {:>10}",
        "N", "create s", "statuses s", "RSS MiB", "peak MiB", "ready s", "settled s", "RSS MiB", "peak MiB"
    );
    for w in &r.rows {
        println!(
            "  {:>6} {:>9.1} {:>10.1} {:>9.1} {:>9.1} | {:>9.2} {:>10} {:>10.1} {:>10.1}",
            w.n,
            w.create_s,
            w.statuses_s,
            w.rss,
            w.hwm,
            w.ready_s,
            if w.settled { format!("{:.0}", w.settle_s) } else { format!(">{:.0}", w.settle_s) },
            w.rss_restart,
            w.hwm_restart
        );
    }
    println!("  (left: the operator that saw them created; right: a new operator started with them present)");
    let last = r.rows.last().expect("an idle step");
    println!("  idle CPU with {}: {:.2}% of a core over {:.0} s", last.n, r.cpu_pct, r.cpu_window_s);
    println!("  /metrics with {}: {} bytes, {} series", last.n, r.metrics_bytes, r.series);
    println!(
        "{}",
        target(&format!("(3) RSS <= 50 MiB settled at {}", last.n), &format!("{:.1} MiB", last.rss_restart), last.rss_restart <= 50.0)
    );
    println!(
        "{}",
        target(
            "(3) peak <= 2x settled",
            &format!("{:.1} MiB ({:.2}x)", last.hwm_restart, last.hwm_restart / last.rss_restart),
            last.hwm_restart <= 2.0 * last.rss_restart
        )
    );
    if let Some(w) = r.rows.iter().rfind(|w| w.n <= 1000) {
        println!(
            "{}",
            target(&format!("(3) ready <= 2 s at 1,000 (measured at {})", w.n), &format!("{:.2} s", w.ready_s), w.ready_s <= 2.0)
        );
    }
    if let Some(w) = r.rows.iter().rfind(|w| w.n > 1000 && w.n <= 10000) {
        println!(
            "{}",
            target(&format!("(3) ready <= 10 s at 10,000 (measured at {})", w.n), &format!("{:.2} s", w.ready_s), w.ready_s <= 10.0)
        );
    }
    println!("{}", target("(3) idle CPU <= 2% of a core", &format!("{:.2}%", r.cpu_pct), r.cpu_pct <= 2.0));
}

pub fn floor(rows: &[FloorResult]) {
    println!("\n0. The floor: a bare client (no operator) creates N Jobs at one instant, K at a time; first create to each seen");
    for r in rows {
        let s = Sample::new(r.lat.clone());
        println!(
            "  {:>5} Jobs, {:>4} at a time  {}{}",
            r.n,
            r.at_once,
            s.line(1000.0, " ms"),
            if s.n() < r.n { format!(" (only {} of {} seen)", s.n(), r.n) } else { String::new() }
        );
    }
}

/// The lateness of a window's loops, without their due times.
fn late_of(w: &Window) -> Sample {
    Sample::new(w.late.iter().map(|x| x.1).collect())
}

/// A window's line: its lateness, and how many loops were due at the end of an overrun.
fn window_line(w: &Window) -> String {
    let unknown = if w.unknown_end > 0 { format!(", {} with the end before unknown", w.unknown_end) } else { String::new() };
    let after = Sample::new(w.after_overrun.clone());
    let overruns = match after.n() {
        0 => "0 due at an overrun's end".to_string(),
        n => format!(
            "{n} due at an overrun's end, p99 {}; the other {}, p99 {}",
            dur(after.p(0.99)),
            w.on_time.len(),
            dur(Sample::new(w.on_time.clone()).p(0.99))
        ),
    };
    format!("{}  [{overruns}{unknown}]", late_of(w).line(1000.0, " ms"))
}

/// A window's p99 lateness in each 10 s of it, by due time: where in the window the tail is.
fn by_ten_seconds(w: &Window) -> String {
    let slices = (0..6).map(|k| {
        let s = Sample::new(w.late.iter().filter(|x| x.0 >= 10.0 * k as f64 && x.0 < 10.0 * (k + 1) as f64).map(|x| x.1).collect());
        if s.n() == 0 {
            "-".to_string()
        } else {
            format!("{} (n={})", dur(s.p(0.99)), s.n())
        }
    });
    slices.collect::<Vec<_>>().join(" | ")
}

pub fn fairness(r: &FairResult) {
    let (alone, beside, restarted) = (late_of(&r.alone), late_of(&r.beside), late_of(&r.restarted));
    println!("\n5. Fairness: {} LoopServices every 10 s in one namespace, {} broken ones in another", r.healthy, r.broken);
    println!(
        "  Job seen by the bench's watch after due (the stamped due time, or the loop before's end when later), loops after the first:"
    );
    println!("  alone                       {}", window_line(&r.alone));
    println!(
        "  beside {} broken ones the operator does not watch, the 60 s after they were created ({:.1} s)  {}",
        r.broken,
        r.create_unwatched_s,
        window_line(&r.unwatched)
    );
    println!(
        "  while the bench creates {} broken ones the operator does not watch ({:.1} s)  {}",
        r.broken,
        r.create_unwatched_s,
        window_line(&r.during_unwatched)
    );
    println!("  while the bench creates {} broken ones ({:.1} s)  {}", r.broken, r.create_broken_s, window_line(&r.during));
    println!("  beside them, the 60 s after  {}", window_line(&r.beside));
    println!("  beside them, the 60 s after all were reported Invalid  {}", window_line(&r.settled));
    println!("  60 s after an operator restart with both (loops due once it leads with its caches synced)  {}", window_line(&r.restarted));
    let reported =
        r.all_reported_s.map_or("not by the end of the window beside them".to_string(), |s| format!("{s:.1} s after the first create"));
    println!("  broken LoopServices reported Invalid: {} of {} at the end; all of them {reported}", r.broken_reported, r.broken);
    println!("  p99 by when the loop was due, 0-10 s | 10-20 s | ... | 50-60 s into the window:");
    let windows = [
        ("alone", &r.alone),
        ("not watched", &r.unwatched),
        ("beside", &r.beside),
        ("all reported", &r.settled),
        ("after a restart", &r.restarted),
    ];
    // The creates' own spans, beside the windows: how the creates themselves, and the
    // operator's work on them, load the healthy loops.
    let with_creates = [("creating, not w.", &r.during_unwatched), ("creating", &r.during)];
    for (what, w) in with_creates.iter().chain(&windows) {
        println!("  {what:<16} {}", by_ten_seconds(w));
    }
    println!("  p99 timed from the recorded end before (the Job's completionTime, to the second), not from when the watch saw it:");
    for (what, w) in with_creates.iter().chain(&windows) {
        let s = Sample::new(w.from_recorded_end.clone());
        println!("  {what:<16} p99 {} (n={})", dur(s.p(0.99)), s.n());
    }
    println!("  where the lateness is, p50 / p99: due to the create sent (the operator's wake and turn) | the create sent to the Job seen (API server and watch)");
    for (what, w) in with_creates.iter().chain(&windows) {
        let part = |k: fn(&(f64, f64)) -> f64| Sample::new(w.parts.iter().map(k).collect());
        let (op, server) = (part(|p| p.0), part(|p| p.1));
        println!(
            "  {what:<16} {} / {} | {} / {}  (n={})",
            dur(op.p(0.5)),
            dur(op.p(0.99)),
            dur(server.p(0.5)),
            dur(server.p(0.99)),
            op.n()
        );
    }
    println!(
        "  API requests in each window (all clients): LoopService status writes | other LoopService writes (claims) | Event writes | Jobs made | Pod writes | dry runs | all of these kinds"
    );
    for (what, w) in with_creates.iter().chain(&windows) {
        let c = &w.calls;
        let sum = |verbs: &[&str], res: &str| apiserver::sum(c, verbs, res, None);
        // A float sum of nothing is -0.0: + 0.0 prints it as 0.
        let dry = c.iter().filter(|((_, r, _), _)| r.contains("(dry run)")).map(|(_, n)| n).sum::<f64>() + 0.0;
        println!(
            "  {what:<16} {} | {} | {} | {} | {} | {} | {}",
            sum(&["PATCH", "APPLY", "PUT"], "loopservices/status"),
            sum(&["PATCH", "APPLY", "PUT"], "loopservices"),
            sum(&["POST", "PATCH"], "events"),
            sum(&["POST"], "jobs"),
            sum(&["POST", "PATCH", "PUT", "DELETE"], "pods") + sum(&["PATCH", "PUT"], "pods/status"),
            dry,
            c.values().sum::<f64>()
        );
    }
    println!("  CPU seconds in each window: operator | kube-apiserver | kube-controller-manager | etcd");
    for (what, w) in with_creates.iter().chain(&windows) {
        let cpu = w.cpu.iter().map(|c| fmt(c.1)).collect::<Vec<_>>().join(" | ");
        println!("  {what:<16} {cpu}");
    }
    let bound = 2.0 * alone.p(0.99);
    let settled = late_of(&r.settled);
    let unwatched = late_of(&r.unwatched);
    for (what, s) in [
        ("beside broken ones not watched (the control)", &unwatched),
        ("beside", &beside),
        ("beside, all reported", &settled),
        ("after a restart", &restarted),
    ] {
        let met = s.p(0.99) <= bound;
        println!(
            "{}",
            target(
                &format!("(3) p99 {what} <= 2x alone ({} ms)", fmt(bound * 1000.0)),
                &format!("p99 {} ms", fmt(s.p(0.99) * 1000.0)),
                met
            )
        );
    }
}

/// Seconds as ms under one second, else as s.
fn dur(v: f64) -> String {
    if v.is_finite() && v.abs() < 1.0 {
        format!("{} ms", fmt(v * 1000.0))
    } else {
        format!("{} s", fmt(v))
    }
}

pub fn steady(r: &Steady) {
    println!(
        "\nSteady load: {} loops every {} s for {} minutes, as LoopServices, as CronJobs, and created by a bare client",
        r.n, r.interval, r.minutes
    );
    println!("(lateness: the bench's Job watch saw the Job's ADDED event after its due time; n: the Jobs timed)\n");
    println!("| {} minutes | Jobs made / due | lateness p50 | p90 | p99 | max (n) | CPU |", r.minutes);
    println!("|---|---|---|---|---|---|---|");
    for p in &r.phases {
        let s = Sample::new(p.late.iter().map(|x| x.1).collect());
        let api = p.plane.iter().find(|c| c.0 == "kube-apiserver").map_or(f64::NAN, |c| c.1);
        println!(
            "| {} | {} / {} | {} | {} | {} | {} (n={}) | {} {} s, kube-apiserver {} s |",
            p.name,
            p.made,
            p.due,
            dur(s.p(0.5)),
            dur(s.p(0.9)),
            dur(s.p(0.99)),
            dur(s.max()),
            s.n(),
            p.maker.0,
            fmt(p.maker.1),
            fmt(api)
        );
    }
    println!("\n| phase | {} CPU s | etcd db MiB before -> after (in use) | peak RSS |", crate::plane::COMPONENTS.join(" CPU s | "));
    println!("|---|---|---|---|---|---|");
    let db = |d: Option<(f64, f64)>| d.map_or("-".into(), |(t, u)| format!("{} ({})", fmt(t), fmt(u)));
    for p in &r.phases {
        println!(
            "| {} | {} | {} -> {} | {} |",
            p.name,
            p.plane.iter().map(|c| fmt(c.1)).collect::<Vec<_>>().join(" | "),
            db(p.db[0]),
            db(p.db[1]),
            p.peak_rss_mib.map_or("-".into(), |m| format!("operator {} MiB (VmHWM)", fmt(m)))
        );
    }
    println!("  (CPU over each phase; every client of the cluster is in the control plane's: the Job controller,");
    println!("   scheduler and kwok run all three phases' Jobs, and anything else using the cluster then)");
    for p in &r.phases {
        for n in &p.notes {
            println!("  {}: {n}", p.name);
        }
    }
}
