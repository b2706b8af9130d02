//! The layering ARCHITECTURE.md promises, checked against the source tree: `store` and
//! `config` import no domain module, SQL text appears only in `store`, no connection leaves
//! `store`, axum only in `http`, and every `.rs` file opens with a `//!` header. No Postgres
//! needed.
//!
//! The checks read the source as text with a small lexer (string literals, comments), which
//! is enough for the rules: they are about where words appear, not what code means.

use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, as (path relative to `src/`, contents).
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(src_dir())
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The file lexed, without its unit tests: each `#[cfg(test)] mod … { … }` is blanked (the
/// braces are matched on the lexed code, where strings and comments no longer count).
fn production(text: &str) -> Lexed {
    let mut lexed = lex(text);
    let code = &lexed.code;
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut cut: Vec<(usize, usize)> = Vec::new();
    for (i, _) in code.match_indices("#[cfg(test)]") {
        let after = code[i + "#[cfg(test)]".len()..].trim_start();
        if !after.starts_with("mod ") {
            continue;
        }
        let Some(open) = code[i..].find('{').map(|o| i + o) else {
            continue;
        };
        let mut depth = 0;
        let mut close = code.len();
        for (j, ch) in code[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        cut.push((i, close));
    }
    let lines: Vec<(usize, usize)> = cut.iter().map(|&(a, b)| (line_of(a), line_of(b))).collect();
    let mut blanked = String::with_capacity(lexed.code.len());
    for (offset, ch) in lexed.code.char_indices() {
        let inside = cut.iter().any(|&(a, b)| offset >= a && offset < b);
        blanked.push(if inside && ch != '\n' { ' ' } else { ch });
    }
    lexed.code = blanked;
    lexed
        .strings
        .retain(|(line, _)| !lines.iter().any(|&(a, b)| *line >= a && *line <= b));
    lexed
}

/// Code with comments and string/char literals blanked, and the string literals apart.
struct Lexed {
    code: String,
    strings: Vec<(usize, String)>,
}

fn lex(text: &str) -> Lexed {
    let b: Vec<char> = text.chars().collect();
    let (mut code, mut strings) = (String::new(), Vec::new());
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| b.get(i).copied().unwrap_or('\0');
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            code.push('\n');
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            i += 2;
            while i < b.len() && !(b[i] == '*' && at(i + 1) == '/') {
                if b[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c == 'r'
            && (at(i + 1) == '"' || (at(i + 1) == '#' && !at(i.wrapping_sub(1)).is_alphanumeric()))
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) != '"' {
                code.push(c);
                i += 1;
                continue;
            }
            let (start, mut s) = (line, String::new());
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                    j += 1 + hashes;
                    break;
                }
                if b[j] == '\n' {
                    line += 1;
                }
                s.push(b[j]);
                j += 1;
            }
            strings.push((start, s));
            code.push_str("\"\"");
            i = j;
        } else if c == '"' {
            let (start, mut s) = (line, String::new());
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                    if at(i) == '\n' {
                        line += 1;
                    }
                }
                if at(i) == '\n' {
                    line += 1;
                }
                s.push(at(i));
                i += 1;
            }
            i += 1;
            strings.push((start, s));
            code.push_str("\"\"");
        } else if c == '\'' && (at(i + 2) == '\'' || (at(i + 1) == '\\' && at(i + 3) == '\'')) {
            // A char literal ('"' among them); lifetimes ('a) fall through as code.
            i += if at(i + 1) == '\\' { 4 } else { 3 };
            code.push_str("' '");
        } else {
            code.push(c);
            i += 1;
        }
    }
    Lexed { code, strings }
}

/// Whether a string literal reads as a SQL statement (or a statement's core clause).
fn looks_like_sql(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    let words: Vec<&str> = s.split_whitespace().collect();
    let has = |seq: &[&str]| words.windows(seq.len()).any(|w| w == seq);
    let starts = |w: &str| words.first() == Some(&w);
    let ddl_object = [
        "table",
        "role",
        "database",
        "index",
        "function",
        "schema",
        "extension",
        "trigger",
        "policy",
        "sequence",
        "view",
    ];
    (words.contains(&"select") && words.contains(&"from"))
        || has(&["insert", "into"])
        || has(&["delete", "from"])
        || (starts("update") && words.contains(&"set"))
        || ["create", "alter", "drop"]
            .iter()
            .any(|v| ddl_object.iter().any(|o| has(&[v, o])))
        || (words.len() == 2 && (starts("listen") || starts("unlisten")))
        || (starts("notify") && words.len() <= 3)
        || starts("grant")
        || s.contains("set_config(")
        || s.contains("pg_notify(")
}

/// `crate::<module>` paths named in `code` (imports and inline paths), with their lines;
/// `crate::{a, b::c}` names `a` and `b`.
fn crate_modules(code: &str) -> Vec<(usize, String)> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let tail = &code[i + "crate::".len()..];
        if let Some(group) = tail.strip_prefix('{') {
            let (mut depth, mut part_start) = (0i32, 0);
            for (j, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push((line_of(i), ident(&group[part_start..j])));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push((line_of(i), ident(&group[part_start..j])));
                        part_start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push((line_of(i), ident(tail)));
        }
    }
    out.retain(|(_, m)| !m.is_empty());
    out
}

/// Lines of `code` that take a database connection out of a store (`.client()`, or a
/// connection straight from `.pool().get()`), however rustfmt splits the chain.
fn connection_grabs(code: &str) -> Vec<usize> {
    let (mut compact, mut lines) = (String::new(), Vec::new());
    let mut line = 1;
    for ch in code.chars() {
        if ch == '\n' {
            line += 1;
        }
        if !ch.is_whitespace() {
            compact.push(ch);
            lines.push(line);
        }
    }
    let mut out: Vec<usize> = [".client()", ".pool().get("]
        .iter()
        .flat_map(|p| compact.match_indices(p).map(|(i, _)| i).collect::<Vec<_>>())
        .map(|i| lines[compact[..i].chars().count()])
        .collect();
    out.sort();
    out
}

/// Modules the leaves may name: themselves and the generic primitives below every layer.
fn leaf_may_use(leaf: &str, module: &str) -> bool {
    module == leaf || module == "backoff"
}

#[derive(Default)]
struct Violations(Vec<String>);

impl Violations {
    fn check(self) {
        assert!(
            self.0.is_empty(),
            "{} layering violation(s):\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

#[test]
fn every_rust_file_opens_with_a_module_header() {
    let mut v = Violations::default();
    for (path, text) in sources(&src_dir()) {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            v.0.push(format!("{path}: begins with {first:?}, not a `//!` header"));
        }
    }
    v.check();
}

#[test]
fn store_and_config_import_no_domain_module() {
    let mut v = Violations::default();
    for (path, text) in sources(&src_dir()) {
        let leaf = if path.starts_with("store/") || path == "store.rs" {
            "store"
        } else if path == "config.rs" || path.starts_with("config/") {
            "config"
        } else {
            continue;
        };
        let lexed = production(&text);
        for (line, module) in crate_modules(&lexed.code) {
            if !leaf_may_use(leaf, &module) {
                v.0.push(format!("{path}:{line}: `{leaf}` imports `crate::{module}`"));
            }
        }
    }
    v.check();
}

#[test]
fn sql_text_appears_only_in_store() {
    let mut v = Violations::default();
    for (path, text) in sources(&src_dir()) {
        if path.starts_with("store/") {
            continue;
        }
        for (line, s) in production(&text).strings {
            if looks_like_sql(&s) {
                let shown: String = s.chars().take(60).collect();
                v.0.push(format!("{path}:{line}: SQL outside store: {shown:?}"));
            }
        }
    }
    v.check();
}

#[test]
fn connections_stay_in_store() {
    let mut v = Violations::default();
    for (path, text) in sources(&src_dir()) {
        if path.starts_with("store/") {
            continue;
        }
        for line in connection_grabs(&production(&text).code) {
            v.0.push(format!(
                "{path}:{line}: takes a connection out of the store; add a `Store` method"
            ));
        }
    }
    v.check();
}

#[test]
fn only_http_knows_axum() {
    let mut v = Violations::default();
    for (path, text) in sources(&src_dir()) {
        if path.starts_with("http/") {
            continue;
        }
        let lexed = production(&text);
        for (n, line) in lexed.code.lines().enumerate() {
            if line.contains("axum::") || line.trim_start().starts_with("use axum") {
                v.0.push(format!("{path}:{}: names axum outside http/", n + 1));
            }
        }
    }
    v.check();
}

/// The checks themselves: each rule fires on a line that breaks it, so a passing run means
/// the tree is clean, not that the lexer saw nothing.
#[test]
fn the_checks_catch_what_they_are_for() {
    assert!(looks_like_sql("select id from public.todos where id = $1"));
    assert!(looks_like_sql("LISTEN rowcast_changes"));
    assert!(!looks_like_sql(
        "LISTEN connection lost; polling until it is back"
    ));
    assert!(looks_like_sql("create database rowcast"));
    assert!(looks_like_sql("alter role x set search_path = public"));
    assert!(looks_like_sql(
        "select set_config('request.jwt.claims', $1, true)"
    ));
    assert!(!looks_like_sql("unknown column in select"));
    assert!(!looks_like_sql("cannot create the data directory"));

    let lexed = lex("use crate::{auth::Identity, store::X};\n// crate::rest in a comment\nlet s = \"select a from b\"; let c = '\"';\nfn f() { crate::policy::parse(); }\n");
    let modules: Vec<String> = crate_modules(&lexed.code)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert!(modules.contains(&"auth".to_string()), "{modules:?}");
    assert!(modules.contains(&"store".to_string()), "{modules:?}");
    assert!(modules.contains(&"policy".to_string()), "{modules:?}");
    assert!(
        !modules.contains(&"rest".to_string()),
        "comments are not imports: {modules:?}"
    );
    assert_eq!(
        lexed.strings.len(),
        1,
        "the char literal '\"' is not a string"
    );
    assert!(looks_like_sql(&lexed.strings[0].1));

    let grabs = production("// store.client() in a comment\nlet s = \"x.client()\";\nlet c = shared\n    .store\n    .client()\n    .await?;\nlet p = store.pool().get().await?;\nlet n = store.pool().status();\n#[cfg(test)]\nmod tests { fn t() { store.client(); } }\n");
    assert_eq!(
        connection_grabs(&grabs.code),
        vec![5, 7],
        "a split chain and a pool checkout count; comments, strings, tests and status do not"
    );

    let raw = lex("let q = r#\"insert into t values (1)\"#;");
    assert!(looks_like_sql(&raw.strings[0].1));
    let p = production("let a = \"select x from y\";\n#[cfg(test)]\nmod tests { fn t() { let b = \"delete from z\"; } }\nfn g() { crate::rest::x(); }");
    assert_eq!(p.strings.len(), 1, "test modules are not production code");
    assert!(
        p.code.contains("crate::rest"),
        "code after a test module is still checked"
    );
}
