//! The docs keep working without a cluster: every LoopService in a ```yaml block of README.md
//! and docs/*.md, and in examples/*.yaml, uses only fields the CRD's schema has, decodes as a
//! LoopService and passes the operator's own checks (a block preceded by `<!-- invalid -->` must
//! fail them instead); every `make <target>` they mention exists in the Makefile; every relative
//! link points to a file that exists, and every `#anchor` to a heading there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use loopservice_operator::crd::LoopService;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// The marker before a ```yaml block whose LoopService must be refused.
const INVALID: &str = "<!-- invalid -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md, as (path relative to the root, text).
fn markdown_files() -> Vec<(String, String)> {
    let mut names = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("docs/ entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names.into_iter().map(|n| (n.clone(), std::fs::read_to_string(root().join(&n)).unwrap_or_else(|e| panic!("read {n}: {e}")))).collect()
}

/// A fenced code block: its info string, the line of its opening fence (1-based), its text,
/// and whether `<!-- invalid -->` precedes it.
struct Block {
    info: String,
    line: usize,
    text: String,
    invalid: bool,
}

/// A markdown file split into its fenced blocks and the text outside them (fenced lines blanked,
/// so that line numbers still count).
struct Markdown {
    blocks: Vec<Block>,
    prose: String,
}

fn split_markdown(text: &str) -> Markdown {
    let mut blocks = vec![];
    let mut prose = String::new();
    let mut open: Option<(String, String, usize, bool)> = None;
    let mut last_prose_line = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence = trimmed.starts_with("```") || trimmed.starts_with("~~~");
        match open.take() {
            None if fence => {
                let info = trimmed.trim_start_matches(['`', '~']).trim().to_string();
                open = Some((info, String::new(), i + 1, last_prose_line.trim() == INVALID));
                prose.push('\n');
            }
            None => {
                prose.push_str(line);
                prose.push('\n');
                if !line.trim().is_empty() {
                    last_prose_line = line.to_string();
                }
            }
            Some((info, body, start, invalid)) if fence => {
                blocks.push(Block { info, line: start, text: body, invalid });
                last_prose_line.clear();
                prose.push('\n');
            }
            Some((info, mut body, start, invalid)) => {
                body.push_str(line);
                body.push('\n');
                open = Some((info, body, start, invalid));
                prose.push('\n');
            }
        }
    }
    if let Some((info, body, start, invalid)) = open {
        blocks.push(Block { info, line: start, text: body, invalid });
    }
    Markdown { blocks, prose }
}

/// The text of every inline code span outside fenced blocks (spans may wrap lines).
fn code_spans(prose: &str) -> Vec<String> {
    let re = Regex::new(r"`([^`]+)`").unwrap();
    re.captures_iter(prose).map(|c| c[1].to_string()).collect()
}

/// The LoopService CRD's OpenAPI schema, as `crdgen` prints it.
fn crd_schema() -> Value {
    let yaml = loopservice_operator::crdgen_yaml().expect("crdgen_yaml");
    let crd: Value = serde_yaml::from_str(&yaml).expect("the CRD as YAML");
    let versions = crd["spec"]["versions"].as_array().expect("spec.versions");
    let version = versions.iter().find(|v| v["storage"] == Value::Bool(true)).unwrap_or(&versions[0]);
    version["schema"]["openAPIV3Schema"].clone()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What in `value` the schema does not allow: unknown fields (outside
/// `x-kubernetes-preserve-unknown-fields` subtrees), wrong types, values outside an enum,
/// strings that miss a pattern.
fn check_schema(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(format!("{path}: a {} where an integer or a string goes", type_name(value)));
        }
        return;
    }
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            errors.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if let Some(want) = schema["type"].as_str() {
        let got = type_name(value);
        if got != want && !(want == "number" && got == "integer") {
            errors.push(format!("{path}: a {got} where the schema wants a {want}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{path}: {value} is not one of {}", Value::Array(allowed.clone())));
        }
    }
    if let (Some(s), Some(p)) = (value.as_str(), schema["pattern"].as_str()) {
        // A pattern the regex crate cannot read (ECMA-only syntax) is left to the API server.
        if let Ok(re) = Regex::new(p) {
            if !re.is_match(s) {
                errors.push(format!("{path}: {s:?} does not match the schema's pattern {p}"));
            }
        }
    }
    match value {
        Value::Object(map) => {
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
            let properties = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            for (key, v) in map {
                let here = format!("{path}.{key}");
                if let Some(s) = properties.and_then(|p| p.get(key)) {
                    check_schema(v, s, &here, errors);
                } else if additional.is_object() {
                    check_schema(v, additional, &here, errors);
                } else if !(preserve || *additional == Value::Bool(true)) {
                    errors.push(format!("{here}: no such field in the CRD's schema"));
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, v) in items.iter().enumerate() {
                check_schema(v, &schema["items"], &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

/// Everything wrong with one LoopService document: schema, decoding, `spec.validate()`.
fn loopservice_problems(doc: &Value, schema: &Value) -> Vec<String> {
    let mut errors = vec![];
    let Some(top) = doc.as_object() else {
        return vec!["not a mapping".into()];
    };
    for (key, v) in top {
        match key.as_str() {
            // The API server's own fields, which the CRD's schema leaves out.
            "apiVersion" if v != "loops.dev/v1alpha1" => errors.push(format!("apiVersion: {v}, not loops.dev/v1alpha1")),
            "apiVersion" | "kind" | "metadata" => {}
            _ => match schema["properties"].get(key) {
                None => errors.push(format!("{key}: no such field in the CRD's schema")),
                Some(s) => check_schema(v, s, key, &mut errors),
            },
        }
    }
    match serde_path_to_error::deserialize::<_, LoopService>(doc.clone()) {
        Err(e) => errors.push(format!("does not decode as a LoopService: {e}")),
        Ok(ls) => {
            if let Err(e) = ls.spec.validate() {
                errors.push(format!("spec.validate() refuses it: {e}"));
            }
        }
    }
    errors
}

/// The documents of a YAML text that are LoopServices, with their names.
fn loopservices_in(yaml: &str) -> Result<Vec<(String, Value)>, String> {
    let mut out = vec![];
    for (i, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| format!("document {} is not YAML: {e}", i + 1))?;
        if v["kind"] == "LoopService" {
            let name = v["metadata"]["name"].as_str().unwrap_or("<no name>").to_string();
            out.push((name, v));
        }
    }
    Ok(out)
}

#[test]
fn loopservices_in_the_docs_use_the_crds_fields_and_pass_validation() {
    let schema = crd_schema();
    let mut failures = vec![];
    let (mut valid, mut invalid) = (0, 0);
    for (file, text) in markdown_files() {
        for block in split_markdown(&text).blocks {
            let lang = block.info.split_whitespace().next().unwrap_or("");
            if lang != "yaml" && lang != "yml" {
                if block.invalid {
                    failures.push(format!("{file}, block at line {}: marked {INVALID} but not a ```yaml block", block.line));
                }
                continue;
            }
            let at = format!("{file}, ```yaml block at line {}", block.line);
            let docs = match loopservices_in(&block.text) {
                Ok(d) => d,
                Err(e) => {
                    failures.push(format!("{at}: {e}"));
                    continue;
                }
            };
            if block.invalid && docs.is_empty() {
                failures.push(format!("{at}: marked {INVALID} but holds no LoopService"));
            }
            for (name, doc) in docs {
                let problems = loopservice_problems(&doc, &schema);
                match (block.invalid, problems.is_empty()) {
                    (false, true) => valid += 1,
                    (true, false) => invalid += 1,
                    (false, false) => failures.push(format!("{at}, LoopService {name:?}:\n    {}", problems.join("\n    "))),
                    (true, true) => failures.push(format!(
                        "{at}, LoopService {name:?}: marked {INVALID}, but the schema, decoding and spec.validate() all accept it"
                    )),
                }
            }
        }
    }
    assert!(failures.is_empty(), "LoopServices in the docs:\n  {}", failures.join("\n  "));
    assert!(valid >= 2, "only {valid} valid LoopService blocks found in README.md and docs/: is the ```yaml parsing broken?");
    println!("{valid} valid and {invalid} intentionally invalid LoopService blocks checked");
}

#[test]
fn examples_use_the_crds_fields_and_pass_validation() {
    let schema = crd_schema();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("read examples/")
        .map(|e| e.expect("examples/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples/*.yaml");
    let mut failures = vec![];
    for path in &files {
        let file = path.strip_prefix(root()).unwrap_or(path).display().to_string();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {file}: {e}"));
        match loopservices_in(&text) {
            Err(e) => failures.push(format!("{file}: {e}")),
            Ok(docs) if docs.is_empty() => failures.push(format!("{file}: holds no LoopService")),
            Ok(docs) => {
                for (name, doc) in docs {
                    let problems = loopservice_problems(&doc, &schema);
                    if !problems.is_empty() {
                        failures.push(format!("{file}, LoopService {name:?}:\n    {}", problems.join("\n    ")));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "examples:\n  {}", failures.join("\n  "));
}

/// The Makefile's targets: every `name:` at the start of a line that is not an assignment.
fn makefile_targets() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("Makefile")).expect("read Makefile");
    let re = Regex::new(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:([^=]|$)").unwrap();
    text.lines().filter_map(|l| re.captures(l)).map(|c| c[1].to_string()).collect()
}

/// Every `make TARGET` in code (inline spans and fenced blocks), with where it was seen.
fn make_mentions(file: &str, text: &str) -> Vec<(String, String)> {
    let md = split_markdown(text);
    let re = Regex::new(r"(?:^|[\s;&|(])make((?:\s+\S+)+)").unwrap();
    let mut out = vec![];
    let mut scan = |code: &str, at: String| {
        for line in code.lines() {
            for c in re.captures_iter(line) {
                // The first word that is neither an option nor a VAR=value is the target.
                let target = c[1].split_whitespace().find(|w| !w.starts_with('-') && !w.contains('='));
                if let Some(t) = target {
                    let t = t.trim_end_matches([',', ')', ';', '`', '.', ':']);
                    out.push((t.to_string(), at.clone()));
                }
            }
        }
    };
    for span in code_spans(&md.prose) {
        scan(&span.replace('\n', " "), format!("{file}, `{}`", span.replace('\n', " ")));
    }
    for block in &md.blocks {
        if !matches!(block.info.split_whitespace().next().unwrap_or(""), "yaml" | "yml") {
            scan(&block.text, format!("{file}, code block at line {}", block.line));
        }
    }
    out
}

#[test]
fn make_targets_named_in_the_docs_exist() {
    let targets = makefile_targets();
    assert!(targets.contains("test") && targets.contains("demo"), "Makefile targets not found: {targets:?}");
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    assert!(readme.contains("`make test`"), "README.md must name `make test`: CI reads the test command from it");
    let mut failures = vec![];
    let mut seen = BTreeSet::new();
    for (file, text) in markdown_files() {
        for (target, at) in make_mentions(&file, &text) {
            if !targets.contains(&target) {
                failures.push(format!("{at}: no target {target:?} in the Makefile"));
            }
            seen.insert(target);
        }
    }
    assert!(failures.is_empty(), "make targets in the docs:\n  {}\nMakefile targets: {targets:?}", failures.join("\n  "));
    assert!(seen.contains("test"), "no `make test` found in the docs: is the code span parsing broken?");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    let links = Regex::new(r"\[([^\]]*)\]\([^)]*\)").unwrap();
    let text = links.replace_all(heading, "$1");
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown file's headings (outside code blocks), duplicates numbered as
/// GitHub numbers them.
fn anchors(text: &str) -> BTreeSet<String> {
    let heading = Regex::new(r"^#{1,6}\s+(.*?)\s*#*\s*$").unwrap();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in split_markdown(text).prose.lines() {
        if let Some(c) = heading.captures(line) {
            let s = slug(&c[1]);
            let n = count.entry(s.clone()).or_insert(0);
            out.insert(if *n == 0 { s.clone() } else { format!("{s}-{n}") });
            *n += 1;
        }
    }
    out
}

#[test]
fn relative_links_and_anchors_in_the_docs_resolve() {
    let link = Regex::new(r#"\]\(\s*([^)\s]+)(?:\s+"[^"]*")?\s*\)"#).unwrap();
    let span = Regex::new(r"`[^`]*`").unwrap();
    let mut failures = vec![];
    let mut checked = 0;
    for (file, text) in markdown_files() {
        let prose = split_markdown(&text).prose;
        // Code spans are not links: `a[0](b)` in one must not count.
        let prose = span.replace_all(&prose, |c: &regex::Captures| " ".repeat(c[0].len()));
        let dir = Path::new(&file).parent().unwrap_or(Path::new("")).to_path_buf();
        for (n, line) in prose.lines().enumerate() {
            for c in link.captures_iter(line) {
                let target = &c[1];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let at = format!("{file}:{}: link {target}", n + 1);
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target, None),
                };
                let resolved = if path.is_empty() { PathBuf::from(&file) } else { dir.join(path) };
                let full = root().join(&resolved);
                if !full.exists() {
                    failures.push(format!("{at}: {} does not exist", resolved.display()));
                    continue;
                }
                if let Some(anchor) = anchor {
                    if full.extension().is_none_or(|x| x != "md") {
                        failures.push(format!("{at}: an anchor into {}, which is not markdown", resolved.display()));
                        continue;
                    }
                    let target_text = std::fs::read_to_string(&full).unwrap_or_default();
                    let known = anchors(&target_text);
                    if !known.contains(anchor) {
                        failures.push(format!("{at}: no heading #{anchor} in {} (it has: {known:?})", resolved.display()));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "links in the docs:\n  {}", failures.join("\n  "));
    assert!(checked > 0, "no relative link found in README.md and docs/: is the link parsing broken?");
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(slug("Why `spec.template` preserves unknown fields"), "why-spectemplate-preserves-unknown-fields");
    assert_eq!(slug("When a loop's Pod cannot start"), "when-a-loops-pod-cannot-start");
    assert_eq!(slug("The local cluster and the Kubernetes versions tested"), "the-local-cluster-and-the-kubernetes-versions-tested");
    let text = "# A\n## Same\n```\n# not a heading\n```\n## Same\n";
    assert_eq!(anchors(text), ["a", "same", "same-1"].into_iter().map(String::from).collect());
}
