//! PodSecurity admission, as it shows in the answer to a Job's dry run. PodSecurity enforces
//! only on Pods: a Job whose Pod template breaks its namespace's `enforce` level is created,
//! and every Pod of it is refused. For a workload it sends back a `Warning` header instead
//! (RFC 7234: `299 - "would violate PodSecurity \"restricted:latest\": ..."`), naming the
//! namespace's `warn` level, which is its `enforce` level unless set apart. Whether the Pods will
//! be refused is told by that level against the namespace's `enforce` label.

use std::collections::BTreeMap;

/// The namespace label that sets the level PodSecurity admission enforces on Pods.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// The texts of the `299` warnings in `Warning` header values (RFC 7234 section 5.5: `code
/// agent "text" ["date"]`, several to a value when comma separated). Unreadable values are
/// skipped: a warning is advice, never a reason to fail.
pub fn warning_texts<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut texts = vec![];
    for value in values {
        let mut rest = value;
        while let Some((code, text, after)) = one_warning(rest) {
            if code == "299" {
                texts.push(text);
            }
            rest = after;
        }
    }
    texts
}

/// The first warning of `s`: its code, its unquoted text, and what follows it.
fn one_warning(s: &str) -> Option<(&str, String, &str)> {
    let s = s.trim_start_matches([' ', ',']);
    let (code, s) = s.split_once(' ')?;
    let (_agent, s) = s.trim_start().split_once(' ')?;
    let (text, mut rest) = quoted(s.trim_start())?;
    // An optional quoted date.
    if let Some((_, after)) = quoted(rest.trim_start()) {
        rest = after;
    }
    Some((code, text, rest))
}

/// A quoted string at the start of `s` (with `\` escapes), and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut text = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?.1),
            '"' => return Some((text, &body[i + 1..])),
            c => text.push(c),
        }
    }
    None
}

/// A PodSecurity level; the later ones forbid all that the earlier ones do, and more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        })
    }
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }
}

/// A PodSecurity warning about a Pod template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The level it names (`restricted`).
    pub level: Level,
    /// Its whole text: `would violate PodSecurity "restricted:latest": ...`, each check that fails.
    pub text: String,
}

/// The PodSecurity warning among `texts`, if any.
pub fn violation(texts: &[String]) -> Option<Violation> {
    texts.iter().find_map(|t| {
        let named = t.strip_prefix("would violate PodSecurity \"")?;
        let (level, _) = named.split_once([':', '"'])?;
        Some(Violation { level: Level::parse(level)?, text: t.clone() })
    })
}

/// What a violation means in a namespace with `labels`: whether its Pods would be refused. A
/// Pod that breaks a level breaks every stricter one, so a warning at or below the enforced
/// level is one the Pods would be refused for (whatever versions the labels pin). `None` when
/// the namespace enforces nothing, or nothing PodSecurity reads (an unknown level).
pub fn enforced(v: &Violation, labels: &BTreeMap<String, String>) -> Option<Level> {
    let enforce = Level::parse(labels.get(ENFORCE_LABEL)?)?;
    (enforce != Level::Privileged && v.level <= enforce).then_some(enforce)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTRICTED: &str = r#"299 - "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"loop\" must set securityContext.allowPrivilegeEscalation=false), runAsNonRoot != true (pod or container \"loop\" must set securityContext.runAsNonRoot=true)""#;

    #[test]
    fn the_texts_of_299_warnings_are_read_with_their_escapes() {
        let texts = warning_texts([RESTRICTED]);
        assert_eq!(texts.len(), 1);
        assert!(texts[0]
            .starts_with(r#"would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "loop" must"#));
        assert!(texts[0].ends_with(r#"must set securityContext.runAsNonRoot=true)"#), "{}", texts[0]);
        // Several in one value, a date, another code, and text that is not a warning.
        let many = r#"299 - "one, with a comma" "Sat, 05 Dec 2026 04:00:00 GMT", 199 agent "miscellaneous", 299 kube "two""#;
        assert_eq!(warning_texts([many, "", "garbage", r#"299 - "unterminated"#]), ["one, with a comma", "two"]);
        assert_eq!(warning_texts([r#"299 - "a", 299 - "b""#, r#"299 - "c""#]), ["a", "b", "c"]);
    }

    #[test]
    fn a_pod_security_warning_names_its_level() {
        let texts = warning_texts(["299 - \"metadata.name: this is not PodSecurity\"", RESTRICTED]);
        let v = violation(&texts).expect("a PodSecurity warning");
        assert_eq!(v.level, Level::Restricted);
        assert_eq!(v.text, texts[1]);
        let baseline = vec![
            r#"would violate PodSecurity "baseline:v1.30": privileged (container "loop" must not set securityContext.privileged=true)"#
                .to_string(),
        ];
        assert_eq!(violation(&baseline).map(|v| v.level), Some(Level::Baseline));
        assert_eq!(violation(&[r#"would violate PodSecurity "unheard-of:latest": x"#.into()]), None);
        assert_eq!(violation(&["spec.template: deprecated".into()]), None);
    }

    #[test]
    fn pods_are_refused_when_the_warned_level_is_at_or_below_the_enforced_one() {
        let labels = |enforce: Option<&str>| -> BTreeMap<String, String> {
            enforce.map(|e| (ENFORCE_LABEL.to_string(), e.to_string())).into_iter().collect()
        };
        let v = |level| Violation { level, text: String::new() };
        // Only `enforce` set: the warning is at the enforce level.
        assert_eq!(enforced(&v(Level::Restricted), &labels(Some("restricted"))), Some(Level::Restricted));
        // `warn: baseline` under `enforce: restricted`: breaking baseline breaks restricted.
        assert_eq!(enforced(&v(Level::Baseline), &labels(Some("restricted"))), Some(Level::Restricted));
        // `warn: restricted` under `enforce: baseline` (the usual way to try a stricter level).
        assert_eq!(enforced(&v(Level::Restricted), &labels(Some("baseline"))), None);
        assert_eq!(enforced(&v(Level::Baseline), &labels(Some("privileged"))), None);
        assert_eq!(enforced(&v(Level::Baseline), &labels(None)), None);
        assert_eq!(enforced(&v(Level::Baseline), &labels(Some("strict"))), None);
    }
}
