//! The house's structure: no module imports a module that imports it back,
//! between the crate's top-level modules and between the files of one
//! folder (a folder's `mod.rs`, which declares and re-exports its files, is
//! its face, not a room). Read from the code's own `crate::` paths, doc
//! comments and comments left out; `farm-studio look` draws the same graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each source file of `src`, as (its module path below the crate, its text).
fn sources() -> Vec<(Vec<String>, String)> {
    fn walk(dir: &Path, prefix: &[String], out: &mut Vec<(Vec<String>, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let mut module = prefix.to_vec();
            if path.is_dir() {
                module.push(name);
                walk(&path, &module, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if name != "mod" {
                    module.push(name);
                }
                out.push((module, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path(),
        &[],
        &mut out,
    );
    out
}

/// The `crate::a::b` paths a text uses outside comments, as segment lists.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let path: Vec<String> = rest
                .split("::")
                .map_while(|segment| {
                    let ident: String = segment
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    (!ident.is_empty() && ident.chars().next().unwrap().is_ascii_lowercase())
                        .then_some(ident)
                })
                .collect();
            paths.push(path);
        }
    }
    paths
}

fn pairs_importing_each_other(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (from, tos) in edges {
        for to in tos {
            if from < to && edges.get(to).is_some_and(|back| back.contains(from)) {
                pairs.push((from.clone(), to.clone()));
            }
        }
    }
    pairs
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let sources = sources();
    assert!(sources.len() > 20, "read the crate's sources");
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut within: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &sources {
        let Some(first) = module.first() else {
            continue; // lib.rs declares every module
        };
        if first == "main" {
            continue;
        }
        for path in crate_paths(text) {
            let Some(target) = path.first() else { continue };
            if target != first {
                top.entry(first.clone()).or_default().insert(target.clone());
            } else if module.len() == 2 && path.len() >= 2 && path[1] != module[1] {
                // A file of a folder naming a sibling file (not the folder's face).
                let sibling = format!("{first}/{}", path[1]);
                if sources
                    .iter()
                    .any(|(m, _)| m.len() == 2 && format!("{}/{}", m[0], m[1]) == sibling)
                {
                    within
                        .entry(format!("{first}/{}", module[1]))
                        .or_default()
                        .insert(sibling);
                }
            }
        }
    }
    assert!(top.len() > 10, "found the modules' imports: {top:?}");
    assert_eq!(
        pairs_importing_each_other(&top),
        vec![],
        "top-level modules"
    );
    assert_eq!(
        pairs_importing_each_other(&within),
        vec![],
        "files of one folder"
    );
}

/// The length of each function in `text` before its tests (`#[cfg(test)]`),
/// from its `fn` line to its closing brace, as (name, first line, lines).
fn function_lengths(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .collect();
    let mut out = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let Some(rest) = code
            .trim_start()
            .split_once("fn ")
            .filter(|(before, _)| {
                before.split_whitespace().all(|w| {
                    [
                        "pub",
                        "pub(crate)",
                        "pub(super)",
                        "async",
                        "const",
                        "unsafe",
                    ]
                    .contains(&w)
                })
            })
            .map(|(_, rest)| rest)
        else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened) = (0i64, false);
        for (end, body) in lines.iter().enumerate().skip(at) {
            let body = body.split("//").next().unwrap_or("");
            if !opened && body.trim_end().ends_with(';') {
                break; // a declaration without a body
            }
            for c in body.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth == 0 {
                out.push((name.clone(), at + 1, end - at + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn no_function_outside_tests_is_over_80_lines() {
    let mut long = Vec::new();
    let mut functions = 0;
    for (module, text) in sources() {
        for (name, line, length) in function_lengths(&text) {
            functions += 1;
            if length > 80 {
                long.push(format!(
                    "{}:{line} {name}: {length} lines",
                    module.join("/")
                ));
            }
        }
    }
    assert!(functions > 300, "found the functions: {functions}");
    assert_eq!(long, Vec::<String>::new());
}
