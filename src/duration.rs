//! The duration format of the spec (`30s`, `1m30s`, `2h`): the schema's pattern and the
//! parser that holds the same bounds.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

/// The body of [`DURATION_PATTERN`], without its anchors.
macro_rules! duration_alternatives {
    () => {
        concat!(
            r"(0*[1-9][0-9]{0,4}h(0*[0-9]{1,7}m)?(0*[0-9]{1,9}s)?",
            r"|(0*[0-9]{1,5}h)?0*[1-9][0-9]{0,6}m(0*[0-9]{1,9}s)?",
            r"|(0*[0-9]{1,5}h)?(0*[0-9]{1,7}m)?0*[1-9][0-9]{0,8}s)(0*[0-9]{1,12}ms)?"
        )
    };
}

/// A duration of at least one second, written as integer parts in the order h, m, s, ms:
/// `30s`, `1m30s`, `2h`, `1s500ms`. At least one of the hour, minute or second parts must be
/// non-zero. Kubernetes 1.20 has no CEL rules, so this regular expression is what makes the
/// API server refuse a shorter or malformed duration.
///
/// Each part has a bounded number of significant digits (leading zeros aside): at most 5 for
/// hours, 7 for minutes, 9 for seconds and 12 for milliseconds. A value with more is longer
/// than a year, which the operator refuses anyway ([`MAX_DURATION`]), and
/// the bound keeps every value the pattern lets through inside the range of Go's durations,
/// so the CEL rules that compare durations (`duration(self.jitter) < duration(self.interval)`)
/// never fail to evaluate: a value such as `99999999999h` is refused here, with the field's
/// name, and not by a CEL conversion error.
pub const DURATION_PATTERN: &str = concat!("^", duration_alternatives!(), "$");

/// `spec.alignment.offset`: a duration as [`DURATION_PATTERN`] has it, or zero (`0s`, `0m`,
/// `0h`).
pub const OFFSET_PATTERN: &str = concat!("^(0+[hms]|", duration_alternatives!(), ")$");

/// Parses an interval or timeout such as `30s`, `1m30s`, `2h` or `1s500ms`.
///
/// The CRD schema already refuses anything that does not match
/// [`DURATION_PATTERN`]; this also refuses what a pattern cannot see (a value too
/// large to represent) and holds the one-second floor for objects written before the schema.
pub fn parse_duration(field: &str, raw: &str) -> Result<Duration, String> {
    // Quoted in the messages: a value the schema did not bound (an object stored before the
    // CRD had its maxLength) is cut.
    let value = &crate::text::clip_to(raw, 40);
    if !matches_pattern(raw) {
        return Err(format!("spec.{field} {value:?} is not a duration such as 30s, 1m30s or 2h (integer parts in the order h, m, s, ms)"));
    }
    let d = humantime::parse_duration(raw).map_err(|e| format!("spec.{field} {value:?} is not a duration: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("spec.{field} {value:?} is shorter than the minimum of 1s"));
    }
    // A year is far beyond any useful interval, and keeps every later sum of timestamps
    // inside jiff's range.
    if d > MAX_DURATION {
        return Err(format!("spec.{field} {value:?} is longer than the maximum of 8760h (one year)"));
    }
    Ok(d)
}

/// Parses `spec.alignment.offset`: zero (`0s`, `0m`, `0h`) or a duration as [`parse_duration`]
/// reads it.
pub fn parse_offset(raw: &str) -> Result<Duration, String> {
    static ZERO: LazyLock<Regex> = LazyLock::new(|| Regex::new("^0+[hms]$").expect("a valid regex"));
    if ZERO.is_match(raw) {
        return Ok(Duration::ZERO);
    }
    parse_duration("alignment.offset", raw)
}

/// The longest interval or timeout accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn matches_pattern(value: &str) -> bool {
    static PATTERN: LazyLock<Regex> = LazyLock::new(|| Regex::new(DURATION_PATTERN).expect("DURATION_PATTERN is a valid regex"));
    PATTERN.is_match(value)
}
