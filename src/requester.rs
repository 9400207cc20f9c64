//! Who asked for a run, and why: what a run request says of itself in the annotations
//! `loops.dev/run-requested-by` and `loops.dev/run-reason`, written beside
//! `loops.dev/run-requested-at`. The operator copies them onto the loop's Job (so that a status
//! rebuilt from the Jobs keeps them), into its history record and into its LoopStarted Event.
//!
//! They are user input: anyone who may annotate the LoopService writes them. The chart's
//! admission policy holds the requester to the user making the request; nothing holds the
//! reason to anything. So both are read as text to show: bounded, one line, without the
//! characters that would make a table or an Event say something else than they do.

use std::collections::BTreeMap;

use crate::keys::{ANN_RUN_REASON, ANN_RUN_REQUESTED_BY};
use crate::text::clip_to;

/// The longest requester kept, in bytes: a ServiceAccount's user name
/// (`system:serviceaccount:<namespace>:<name>`) takes at most 339; an OIDC user's e-mail
/// address at most 254. A longer one is kept cut, with ` ... ` where it was cut.
pub const REQUESTER_MAX: usize = 256;
/// The longest reason kept, in bytes (a history record stays a few hundred bytes); the plugin
/// refuses a longer `--reason`.
pub const REASON_MAX: usize = 200;

/// Who asked for a manual loop, and why, as far as its request said.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Requester {
    /// The user, as the API server authenticated them (see the module's note).
    pub by: Option<String>,
    pub reason: Option<String>,
}

impl Requester {
    /// A request that says nothing of itself.
    pub const UNKNOWN: Requester = Requester { by: None, reason: None };

    /// What the annotations of a LoopService (or of a manual loop's Job) say, cleaned.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Requester {
        Requester {
            by: annotations.get(ANN_RUN_REQUESTED_BY).and_then(|v| clean(v, REQUESTER_MAX)),
            reason: annotations.get(ANN_RUN_REASON).and_then(|v| clean(v, REASON_MAX)),
        }
    }

    /// The annotations that carry it on a loop's Job and Pod.
    pub fn annotations(&self) -> Vec<(String, String)> {
        [(ANN_RUN_REQUESTED_BY, &self.by), (ANN_RUN_REASON, &self.reason)]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
            .collect()
    }

    /// How an Event says it, after "run requested at X": ` by alice: the night's data came
    /// late`, or ` by an unknown user` when the request did not say who asked.
    pub fn phrase(&self) -> String {
        let by = self.by.as_deref().unwrap_or("an unknown user");
        match &self.reason {
            Some(reason) => format!(" by {by}: {reason}"),
            None => format!(" by {by}"),
        }
    }
}

/// `value` as text to show: each character that could break a line or reorder what is shown
/// (control characters, bidirectional overrides, invisible marks) a space, the ends trimmed,
/// cut to `max` bytes; `None` when nothing is left.
pub fn clean(value: &str, max: usize) -> Option<String> {
    // Never more than needed is looked at: what is cut would go anyway (4 bytes a character).
    let head: String = value.chars().take(max.saturating_mul(4)).map(|c| if hides(c) { ' ' } else { c }).collect();
    let shown = head.trim();
    (!shown.is_empty()).then(|| clip_to(shown, max))
}

/// Whether `c` can change how the text around it reads: a control character (a newline, an
/// escape sequence), a bidirectional embedding, override or isolate, or a zero-width mark.
fn hides(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(pairs: &[(&str, &str)]) -> Requester {
        Requester::from_annotations(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn a_request_says_who_asked_and_why_in_one_line() {
        let r = of(&[(ANN_RUN_REQUESTED_BY, "alice"), (ANN_RUN_REASON, "the night's data came late")]);
        assert_eq!(r.phrase(), " by alice: the night's data came late");
        assert_eq!(
            r.annotations(),
            [
                (ANN_RUN_REQUESTED_BY.to_string(), "alice".to_string()),
                (ANN_RUN_REASON.to_string(), "the night's data came late".to_string())
            ]
        );
        assert_eq!(of(&[(ANN_RUN_REQUESTED_BY, "system:serviceaccount:ci:deployer")]).phrase(), " by system:serviceaccount:ci:deployer");
        assert_eq!(of(&[(ANN_RUN_REASON, "retry")]).phrase(), " by an unknown user: retry");
        assert_eq!(of(&[]), Requester::UNKNOWN);
        assert_eq!(Requester::UNKNOWN.phrase(), " by an unknown user");
        assert!(Requester::UNKNOWN.annotations().is_empty());
    }

    #[test]
    fn what_a_request_says_of_itself_is_cleaned_and_bounded() {
        // A line break or an escape sequence cannot start a line of its own in a table or an Event.
        let r = of(&[(ANN_RUN_REQUESTED_BY, " alice\n"), (ANN_RUN_REASON, "retry\nloop 9 succeeded\u{1b}[2J")]);
        assert_eq!((r.by.as_deref(), r.reason.as_deref()), (Some("alice"), Some("retry loop 9 succeeded [2J")));
        // Nor can a bidirectional override reorder what follows it.
        assert_eq!(clean("a\u{202e}kcatta\u{2066}", 50).as_deref(), Some("a kcatta"));
        // Blank is unknown.
        assert_eq!(of(&[(ANN_RUN_REQUESTED_BY, " \t"), (ANN_RUN_REASON, "")]), Requester::UNKNOWN);
        // Long values are cut to their bound, on character boundaries, saying where.
        let r = of(&[(ANN_RUN_REQUESTED_BY, &"é".repeat(100_000)), (ANN_RUN_REASON, &"why ".repeat(100_000))]);
        let (by, reason) = (r.by.unwrap(), r.reason.unwrap());
        assert!(by.len() <= REQUESTER_MAX && by.contains(" ... ") && by.starts_with("éé"), "{by}");
        assert!(reason.len() <= REASON_MAX && reason.starts_with("why why"), "{reason}");
    }
}
