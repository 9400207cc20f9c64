//! Output as kubectl writes it: tables aligned like `kubectl get` (the same tab-stop
//! algorithm and 3-space padding), ages like its AGE column, and `-o json|yaml`; and the two
//! ways out: stdout, whose failures are errors, and stderr, whose are not.

use std::io::{self, Write};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tabwriter::TabWriter;

use super::{Error, Output};

/// What kubectl prints for an absent value.
pub const NONE: &str = "<none>";

/// A duration as kubectl's AGE column shows it (apimachinery's `HumanDuration`): `45s`,
/// `3m20s`, `42m`, `5h12m`, `30h`, `3d4h`, `120d`, `2y3d`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        return match secs % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if days < 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// `at` seen from `now`: `in 12s`, `3m ago`, or `now` within a second either way.
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    let d = at.duration_since(now);
    if d.abs() < jiff::SignedDuration::from_secs(1) {
        return "now".to_string();
    }
    let amount = human_duration(d.unsigned_abs());
    if d.is_negative() {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// `relative`, or [`NONE`] when there is no instant.
pub fn relative_or_none(at: Option<Timestamp>, now: Timestamp) -> String {
    at.map_or_else(|| NONE.to_string(), |t| relative(t, now))
}

/// Seconds as a loop's duration: `2.6s`, `41s`.
pub fn seconds(s: f64) -> String {
    format!("{}s", crate::schedule::fmt_secs(s))
}

/// A table cell: one line, no tabs, at most `max` characters (cut with `...`).
pub fn cell(text: &str, max: usize) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let kept: String = line.chars().take(max.saturating_sub(3)).collect();
    format!("{}...", kept.trim_end())
}

/// Rows under upper-case headers, columns aligned as `kubectl get` aligns them (its Go
/// tabwriter's minimum width of 6 counts the padding of 3; this one's does not).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut tw = TabWriter::new(vec![]).minwidth(3).padding(3);
    for line in std::iter::once(headers.iter().map(|h| h.to_string()).collect::<Vec<_>>()).chain(rows.iter().cloned()) {
        // Cells are separated by tabs; an empty cell would collapse, so it shows as NONE.
        let cells: Vec<String> = line.into_iter().map(|c| if c.is_empty() { NONE.to_string() } else { c.replace('\t', " ") }).collect();
        // Writes to a Vec cannot fail.
        let _ = writeln!(tw, "{}", cells.join("\t"));
    }
    let bytes = tw.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Writes `text` to stdout. A reader that has gone (`| head`) ends the command through
/// [`Error::StdoutClosed`] instead of the panic of `print!`.
pub fn print(text: &str) -> Result<(), Error> {
    write_out(&mut io::stdout().lock(), text.as_bytes())
}

/// Writes `bytes` to `out` and flushes them, so that what a followed log says shows at once.
pub fn write_out(out: &mut impl Write, bytes: &[u8]) -> Result<(), Error> {
    out.write_all(bytes).and_then(|()| out.flush()).map_err(Error::stdout)
}

/// A line for the person at the terminal (progress, warnings) on stderr. One that cannot be
/// written is dropped: stderr closed with the pipe it shared with stdout is no reason to fail,
/// and `eprintln!` would panic.
pub fn note(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// `value` as JSON (indented, as `kubectl -o json`) or YAML.
pub fn data<T: Serialize>(value: &T, format: Output) -> Result<String, Error> {
    match format {
        Output::Json => serde_json::to_string_pretty(value).map(|s| s + "\n").map_err(|e| Error::Other(format!("writing JSON: {e}"))),
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| Error::Other(format!("writing YAML: {e}"))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn durations_read_like_kubectls_age_column() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 12 * 60 + 9, "5h12m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (733 * 86400, "2y3d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
        // Parts of a second are cut, as kubectl cuts them.
        assert_eq!(human_duration(Duration::from_millis(12_900)), "12s");
    }

    #[test]
    fn relative_times_say_in_or_ago_from_the_injected_now() {
        let now = at(0);
        assert_eq!(relative(at(12), now), "in 12s");
        assert_eq!(relative(at(-180), now), "3m ago");
        assert_eq!(relative(at(-(5 * 3600 + 60)), now), "5h1m ago");
        assert_eq!(relative(at(86400 * 3), now), "in 3d");
        assert_eq!(relative(now, now), "now");
        let ms = |m: i64| now.checked_add(jiff::SignedDuration::from_millis(m)).unwrap();
        assert_eq!(relative(ms(999), now), "now");
        assert_eq!(relative(ms(-999), now), "now");
        assert_eq!(relative(ms(1_500), now), "in 1s");
        assert_eq!(relative(ms(-1_500), now), "1s ago");
        assert_eq!(relative_or_none(None, now), "<none>");
    }

    #[test]
    fn tables_align_columns_with_three_spaces_and_no_trailing_blanks() {
        let rows = vec![
            vec!["hello".to_string(), "10s".to_string(), "Waiting".to_string()],
            vec!["overrunning-service".to_string(), String::new(), "Running".to_string()],
        ];
        let t = table(&["NAME", "INTERVAL", "PHASE"], &rows);
        assert_eq!(
            t,
            "NAME                  INTERVAL   PHASE\n\
             hello                 10s        Waiting\n\
             overrunning-service   <none>     Running\n"
        );
    }

    /// A writer whose reader has gone (`| head` after its lines): the plugin's tests share it.
    pub(crate) struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_to_a_closed_pipe_is_the_quiet_error_not_a_panic() {
        assert!(matches!(write_out(&mut Closed, b"row\n"), Err(Error::StdoutClosed)));
        let mut out = vec![];
        write_out(&mut out, b"row\n").unwrap();
        assert_eq!(out, b"row\n");
    }

    #[test]
    fn cells_are_one_line_and_cut_to_length() {
        assert_eq!(cell("container exited\nwith code 1", 80), "container exited with code 1");
        assert_eq!(cell("abcdefghij", 8), "abcde...");
        assert_eq!(cell("abc", 3), "abc");
        assert_eq!(seconds(2.64), "2.6s");
        assert_eq!(seconds(41.0), "41s");
    }
}
