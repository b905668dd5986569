//! ARCHITECTURE.md's layer table against the code: every `crate::` (and, in
//! `http/`, `super::`) path outside test code points to a lower row, or
//! stays inside its own folder module; every module has a row.

use std::collections::BTreeMap;
use std::path::Path;

/// Row of each module named in the `## Layers` table (`http/*`: every file
/// of `http/`).
fn rows(architecture: &str) -> BTreeMap<String, usize> {
    let section = architecture
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a Layers section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(row) = cells.get(1).and_then(|c| c.parse::<usize>().ok()) else {
            continue;
        };
        for name in cells[2].split('`').skip(1).step_by(2) {
            rows.insert(name.to_owned(), row);
        }
    }
    rows
}

/// `src/feed/input.rs` → `feed`, `src/http/api.rs` → `http/api`,
/// `src/query.rs` → `query`.
fn module_of(rel: &str) -> String {
    let rel = rel.trim_end_matches(".rs");
    match rel.split_once('/') {
        Some(("http", file)) => format!("http/{file}"),
        Some((folder, _)) => folder.to_owned(),
        None => rel.to_owned(),
    }
}

/// The planbox modules `code` (test code cut off) refers to.
fn uses(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        for (prefix, http_only) in [("crate::", false), ("super::", true)] {
            if http_only && !module.starts_with("http/") {
                continue;
            }
            for (i, _) in line.match_indices(prefix) {
                let path: Vec<&str> = line[i + prefix.len()..]
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .collect();
                let used = match (prefix, path[0]) {
                    (_, "self") => continue,
                    // A grouped import: reported, as no row names it.
                    (_, "") => format!("{prefix}{{…}} (one path per module, please)"),
                    ("crate::", "http") => format!("http/{}", path.get(1).unwrap_or(&"")),
                    ("crate::", "api" | "server") => format!("http/{}", path[0]),
                    ("super::", m) => format!("http/{m}"),
                    (_, m) => m.to_owned(),
                };
                out.push(used);
            }
        }
    }
    out
}

/// What breaks the rule in `files` (path under `src/`, text).
fn violations(rows: &BTreeMap<String, usize>, files: &[(String, String)]) -> Vec<String> {
    let row_of = |m: &str| {
        rows.get(m)
            .or_else(|| m.strip_prefix("http/").and(rows.get("http/*")))
            .copied()
    };
    let mut wrong = Vec::new();
    for (rel, text) in files {
        let stem = rel.rsplit('/').next().unwrap().trim_end_matches(".rs");
        if matches!(rel.as_str(), "lib.rs" | "main.rs")
            || stem.contains("tests")
            || stem == "test_support"
        {
            continue;
        }
        let module = module_of(rel);
        let Some(row) = row_of(&module) else {
            wrong.push(format!("{rel}: `{module}` has no row in the Layers table"));
            continue;
        };
        let code = text.split("#[cfg(test)]").next().unwrap();
        for used in uses(&module, code) {
            let same_folder =
                module.contains('/') && module.split('/').next() == used.split('/').next();
            if used == module || same_folder {
                continue;
            }
            match row_of(&used) {
                Some(r) if r > row => {}
                Some(r) => wrong.push(format!(
                    "{rel}: `{module}` (row {row}) uses `{used}` (row {r})"
                )),
                None => wrong.push(format!("{rel}: uses `{used}`, which has no row")),
            }
        }
    }
    wrong
}

#[test]
fn every_module_uses_only_lower_layers_or_its_own_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rows = rows(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    assert!(rows.len() > 10, "no layer table found: {rows:?}");
    let mut files = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root.join("src")).unwrap();
                let rel = rel.to_string_lossy().replace('\\', "/");
                files.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    assert!(files.len() > 20, "{}", files.len());
    let wrong = violations(&rows, &files);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_layer_check_finds_uses_up_sideways_and_unplaced() {
    let rows = rows(
        "\n## Layers\n| 1 | `a` | x |\n| 2 | `b`, `c` | y |\n| 3 | `http/*` | z |\n## Next\n| 4 | `d` | |",
    );
    assert_eq!(rows.len(), 4, "{rows:?}");
    let file = |rel: &str, text: &str| (rel.to_owned(), text.to_owned());
    let files = [
        file("a.rs", "use crate::b::X;\nuse crate::http::api::Y;"),
        file("b.rs", "use crate::c::X; // crate::a is only a comment"),
        file(
            "http/wire.rs",
            "use super::api::Response;\nuse crate::server::Z;",
        ),
        file("http/api.rs", "fn f() { crate::b::g() }"),
        file("c.rs", "#[cfg(test)]\nmod tests { use crate::a; }"),
        file("e.rs", ""),
        file("http/events.rs", "use crate::{a, b};"),
        file("feed/tests.rs", "use crate::a;"),
    ];
    assert_eq!(
        violations(&rows, &files),
        [
            "b.rs: `b` (row 2) uses `c` (row 2)",
            "http/api.rs: `http/api` (row 3) uses `b` (row 2)",
            "e.rs: `e` has no row in the Layers table",
            "http/events.rs: uses `crate::{…} (one path per module, please)`, which has no row",
        ]
    );
}
