//! Which namespaces the operator works in: every namespace, every namespace but a list, or only
//! a list. A LoopService outside the scope is never watched, so never touched; so are its Jobs
//! and Pods.

use kube::runtime::watcher;

/// The namespaces the operator watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace but these (none: the whole cluster): one cluster-wide watch per kind,
    /// with a field selector that leaves them out.
    AllBut(Vec<String>),
    /// Only these namespaces (at least one): one watch per namespace and kind, which is all a
    /// Role in each of them allows.
    Only(Vec<String>),
}

/// Why the namespaces given at start cannot make a scope.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum ScopeError {
    #[error(
        "{flag}: {name:?} is not a namespace name (an RFC 1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
    )]
    InvalidName { flag: &'static str, name: String },
    #[error(
        "namespaces to watch (--namespace, --namespaces: WATCH_NAMESPACE, WATCH_NAMESPACES) and namespaces to leave out (--exclude-namespaces: EXCLUDE_NAMESPACES) cannot be given together: watch a list of namespaces, or all but a list"
    )]
    Both,
}

/// Flag names, as errors name them.
const WATCH: &str = "--namespaces (WATCH_NAMESPACES)";
const EXCLUDE: &str = "--exclude-namespaces (EXCLUDE_NAMESPACES)";

impl Scope {
    /// The scope of namespaces to watch (`watch`) or to leave out (`exclude`). Names are trimmed,
    /// empty ones (`a,,b`, a trailing comma) dropped and repeats kept once, in the order given.
    pub fn new(watch: &[String], exclude: &[String]) -> Result<Scope, ScopeError> {
        let watch = names(watch, WATCH)?;
        let exclude = names(exclude, EXCLUDE)?;
        match (watch.is_empty(), exclude.is_empty()) {
            (false, false) => Err(ScopeError::Both),
            (false, true) => Ok(Scope::Only(watch)),
            (true, _) => Ok(Scope::AllBut(exclude)),
        }
    }

    /// The watches of each kind: a namespace each, or `None` for one cluster-wide watch.
    pub fn watches(&self) -> Vec<Option<&str>> {
        match self {
            Scope::AllBut(_) => vec![None],
            Scope::Only(list) => list.iter().map(|ns| Some(ns.as_str())).collect(),
        }
    }

    /// `metadata.namespace!=a,metadata.namespace!=b`: what a cluster-wide watch leaves out
    /// (the API server serves `metadata.namespace` as a field selector for every kind).
    pub fn field_selector(&self) -> Option<String> {
        match self {
            Scope::AllBut(out) if !out.is_empty() => {
                Some(out.iter().map(|ns| format!("metadata.namespace!={ns}")).collect::<Vec<_>>().join(","))
            }
            _ => None,
        }
    }

    /// `config` with the scope's field selector, if any.
    pub fn config(&self, config: watcher::Config) -> watcher::Config {
        match self.field_selector() {
            Some(fields) => config.fields(&fields),
            None => config,
        }
    }

    /// Whether LoopServices in `namespace` are run.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Scope::AllBut(out) => !out.iter().any(|ns| ns == namespace),
            Scope::Only(list) => list.iter().any(|ns| ns == namespace),
        }
    }

    /// The first namespace of a list, if one was given.
    pub fn first(&self) -> Option<&str> {
        match self {
            Scope::Only(list) => list.first().map(String::as_str),
            Scope::AllBut(_) => None,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::AllBut(out) if out.is_empty() => write!(f, "<all>"),
            Scope::AllBut(out) => write!(f, "<all> but {}", out.join(",")),
            Scope::Only(list) => write!(f, "{}", list.join(",")),
        }
    }
}

/// The names given, trimmed, without empty ones and repeats; each an RFC 1123 label.
fn names(given: &[String], flag: &'static str) -> Result<Vec<String>, ScopeError> {
    let mut out: Vec<String> = vec![];
    for name in given.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !is_label(name) {
            return Err(ScopeError::InvalidName { flag, name: name.to_string() });
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// An RFC 1123 label, as Kubernetes checks a namespace's name.
fn is_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len())
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.chars().next().is_some_and(alnum)
        && s.chars().last().is_some_and(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_list_watches_each_namespace_once_in_the_order_given() {
        let s = Scope::new(&v(&["b", " a ", "", "b"]), &[]).unwrap();
        assert_eq!(s, Scope::Only(v(&["b", "a"])));
        assert_eq!(s.watches(), [Some("b"), Some("a")]);
        assert_eq!(s.field_selector(), None);
        assert!(s.contains("a") && !s.contains("c"));
        assert_eq!(s.first(), Some("b"));
        assert_eq!(s.to_string(), "b,a");
    }

    #[test]
    fn an_exclusion_list_is_one_cluster_wide_watch_with_a_field_selector() {
        let s = Scope::new(&[], &v(&["kube-system", "c"])).unwrap();
        assert_eq!(s.watches(), [None]);
        assert_eq!(s.field_selector().as_deref(), Some("metadata.namespace!=kube-system,metadata.namespace!=c"));
        assert!(s.contains("a") && !s.contains("c") && !s.contains("kube-system"));
        assert_eq!(s.to_string(), "<all> but kube-system,c");
    }

    #[test]
    fn nothing_given_is_every_namespace() {
        let s = Scope::new(&[], &v(&[""])).unwrap();
        assert_eq!(s, Scope::AllBut(vec![]));
        assert_eq!((s.watches(), s.field_selector(), s.contains("kube-system"), s.first()), (vec![None], None, true, None));
        assert_eq!(s.to_string(), "<all>");
    }

    #[test]
    fn both_lists_at_once_are_refused() {
        let e = Scope::new(&v(&["a"]), &v(&["b"])).unwrap_err();
        assert_eq!(e, ScopeError::Both);
        assert!(e.to_string().contains("cannot be given together"), "{e}");
    }

    #[test]
    fn names_that_are_not_rfc_1123_labels_are_refused_naming_the_flag() {
        for bad in ["A", "a_b", "-a", "a-", "a.b", "ns/x", &"a".repeat(64), "ä"] {
            let e = Scope::new(&v(&["ok", bad]), &[]).unwrap_err();
            assert_eq!(e, ScopeError::InvalidName { flag: WATCH, name: bad.to_string() }, "{bad}");
            let e = Scope::new(&[], &v(&[bad])).unwrap_err();
            assert!(e.to_string().starts_with("--exclude-namespaces (EXCLUDE_NAMESPACES): "), "{e}");
        }
        for good in ["a", "0", "a-0", &"a".repeat(63)] {
            assert!(Scope::new(&v(&[good]), &[]).is_ok(), "{good}");
        }
    }
}
