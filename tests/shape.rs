//! The shape of the source, kept: no function outside test code is longer than
//! `MAX_FN_LINES`, so that each reads in one sitting. Test modules (a `#[cfg(test)]` block to
//! the end of a file, and files included as test modules) are left out: tables of cases are
//! data.

use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 80;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A line without its comment and the contents of its string and char literals, so that
/// braces in them are not counted.
fn code_of(line: &str) -> String {
    let (mut out, mut chars) = (String::new(), line.chars().peekable());
    let mut in_str = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_str => {
                chars.next();
            }
            '"' => in_str = !in_str,
            '\'' if !in_str => {
                // A char literal such as '{' (a lifetime has no closing quote two chars on).
                let rest: String = chars.clone().take(3).collect();
                if rest.chars().nth(1) == Some('\'') {
                    chars.nth(1);
                } else if rest.starts_with('\\') {
                    while chars.next().is_some_and(|c| c != '\'') {}
                }
            }
            '/' if !in_str && chars.peek() == Some(&'/') => break,
            _ if in_str => {}
            c => out.push(c),
        }
    }
    out
}

/// (name, first line, length in lines) of each function in `text`, test modules left out.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().take_while(|l| l.trim() != "#[cfg(test)]").collect();
    let (mut found, mut i) = (vec![], 0);
    while i < lines.len() {
        let code = code_of(lines[i]);
        let Some(name) =
            code.split("fn ").nth(1).filter(|_| is_fn_start(&code)).map(|r| r.split(['(', '<']).next().unwrap_or("").to_string())
        else {
            i += 1;
            continue;
        };
        let (mut depth, mut started, mut j) = (0i64, false, i);
        while j < lines.len() {
            let code = code_of(lines[j]);
            for c in code.chars() {
                match c {
                    '{' => (depth, started) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if (started && depth == 0) || (!started && code.trim_end().ends_with(';')) {
                break;
            }
            j += 1;
        }
        if started {
            found.push((name, i + 1, j - i + 1));
        }
        i = j + 1;
    }
    found
}

fn is_fn_start(code: &str) -> bool {
    let t = code.trim_start();
    let t = t.strip_prefix("pub(crate) ").or_else(|| t.strip_prefix("pub ")).unwrap_or(t);
    let t = t.strip_prefix("async ").unwrap_or(t);
    let t = t.strip_prefix("const ").unwrap_or(t);
    t.starts_with("fn ")
}

#[test]
fn no_function_outside_tests_is_longer_than_80_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![];
    rust_files(&root.join("src"), &mut files);
    let mut long = vec![];
    for f in files.iter().filter(|f| !f.ends_with("reconcile/tests.rs") && !f.ends_with("reconcile/fixtures.rs")) {
        let text = std::fs::read_to_string(f).expect("read a source file");
        for (name, line, len) in functions(&text) {
            if len > MAX_FN_LINES {
                long.push(format!("{}:{line} fn {name}: {len} lines", f.strip_prefix(root).unwrap_or(f).display()));
            }
        }
    }
    assert!(long.is_empty(), "functions longer than {MAX_FN_LINES} lines (split them into named steps):\n{}", long.join("\n"));
    assert!(files.len() > 20, "the scan found the source ({} files)", files.len());
}

#[test]
fn the_scan_measures_a_function_as_a_reader_counts_it() {
    let text = "fn a() {\n    let s = \"}{\";\n    let c = '{';\n    // }\n}\n\npub async fn b<'x>(v: &'x str) -> usize {\n    v.len()\n}\nfn c();\n";
    let got = functions(text);
    assert_eq!(got, vec![("a".to_string(), 1, 5), ("b".to_string(), 7, 3)]);
}
