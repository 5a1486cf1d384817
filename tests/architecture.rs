//! The architecture stays as ARCHITECTURE.md draws it: no import circle between the
//! files of either crate, no import from a lower layer to a higher one, an emulator
//! crate that knows nothing of the operator, and every path the document names exists.
//!
//! Each `.rs` file is a module. An import is any path that starts with `crate::`,
//! `super::`, `self::` or a child module's name, resolved to the longest module it
//! names; `#[cfg(test)]` modules and comments are left out, as tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file is, relative to the crate's `src`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The text without comments and without `#[cfg(test)]` items (`mod x;` or `mod x {..}`).
fn production_code(text: &str) -> (String, Vec<String>) {
    let without_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut test_children = Vec::new();
    let mut rest = without_comments.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "#[cfg(test)]".len()..];
        let item = after.trim_start();
        let item = item.strip_prefix("pub(crate) ").unwrap_or(item);
        let Some(named) = item.strip_prefix("mod ") else {
            rest = after;
            continue;
        };
        let name: String = named
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let tail = named[name.len()..].trim_start();
        if let Some(tail) = tail.strip_prefix(';') {
            test_children.push(name);
            rest = tail;
        } else {
            let body = tail.strip_prefix('{').expect("a test module has a body");
            let mut depth = 1;
            let end = body
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(body.len(), |(i, _)| i + 1);
            rest = &body[end..];
        }
    }
    out.push_str(rest);
    (out, test_children)
}

/// Paths such as `crate::a::b` or `super::c` in the code.
fn paths(code: &str) -> Vec<Vec<&str>> {
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            let start = i;
            let mut end = i;
            loop {
                while end < bytes.len() && ident(bytes[end]) {
                    end += 1;
                }
                if code[end..].starts_with("::") && bytes.get(end + 2).copied().is_some_and(ident) {
                    end += 2;
                } else {
                    break;
                }
            }
            let path: Vec<&str> = code[start..end].split("::").collect();
            if path.len() > 1 {
                out.push(path);
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

struct Crate {
    name: &'static str,
    /// Each module's file and the modules it imports.
    imports: BTreeMap<Module, (PathBuf, BTreeSet<Module>)>,
    /// External crates each module names.
    externs: BTreeMap<Module, BTreeSet<String>>,
}

fn read_crate(name: &'static str, src: &Path) -> Crate {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut parsed = BTreeMap::new();
    let mut test_modules: Vec<Module> = Vec::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let (code, test_children) = production_code(&text);
        test_modules.extend(test_children.into_iter().map(|c| {
            let mut m = module.clone();
            m.push(c);
            m
        }));
        parsed.insert(module.clone(), code);
    }
    let resolve = |path: &[String]| -> Option<Module> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains_key(m))
    };
    let mut imports = BTreeMap::new();
    let mut externs = BTreeMap::new();
    for (module, code) in &parsed {
        if test_modules.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        let children: BTreeSet<&str> = modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m[module.len()].as_str())
            .collect();
        let mut deps = BTreeSet::new();
        let mut named = BTreeSet::new();
        for path in paths(code) {
            let mut full: Module = match path[0] {
                "crate" => Vec::new(),
                "super" | "self" => module.clone(),
                child if children.contains(child) => module.clone(),
                other => {
                    named.insert(other.to_string());
                    continue;
                }
            };
            let mut rest = &path[..];
            if path[0] == "crate" {
                rest = &path[1..];
            }
            while let Some(first) = rest.first() {
                match *first {
                    "super" => {
                        full.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
            full.extend(rest.iter().map(|s| s.to_string()));
            if let Some(target) = resolve(&full).filter(|t| t != module) {
                deps.insert(target);
            }
        }
        imports.insert(module.clone(), (modules[module].clone(), deps));
        externs.insert(module.clone(), named);
    }
    Crate {
        name,
        imports,
        externs,
    }
}

fn crates() -> [Crate; 2] {
    [
        read_crate("ringfence", &root().join("src")),
        read_crate("kube-emulator", &root().join("emulator/src")),
    ]
}

fn display(module: &Module) -> String {
    if module.is_empty() {
        "<crate root>".into()
    } else {
        module.join("::")
    }
}

/// A circle through `from`, if any, as the modules along it.
fn circle(
    imports: &BTreeMap<Module, (PathBuf, BTreeSet<Module>)>,
    from: &Module,
) -> Option<Vec<Module>> {
    let mut stack = vec![(from.clone(), vec![from.clone()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in imports.get(&at).map(|(_, d)| d).into_iter().flatten() {
            if next == from {
                return Some(path);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_import_circles() {
    let mut found = Vec::new();
    for krate in crates() {
        assert!(
            krate.imports.len() > 10,
            "{}: too few modules found",
            krate.name
        );
        let mut reported: BTreeSet<Module> = BTreeSet::new();
        for module in krate.imports.keys() {
            if reported.contains(module) {
                continue;
            }
            if let Some(path) = circle(&krate.imports, module) {
                reported.extend(path.iter().cloned());
                let names: Vec<String> = path.iter().map(display).collect();
                found.push(format!(
                    "{}: {} -> {}",
                    krate.name,
                    names.join(" -> "),
                    names[0]
                ));
            }
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn lower_layers_import_nothing_of_higher_ones() {
    let [operator, emulator] = crates();
    // What each layer may not import; the layers below come first.
    let forbidden: [(&str, &[&str]); 3] = [
        (
            "api",
            &[
                "engine",
                "validation",
                "controller",
                "gates",
                "leader",
                "cli",
                "demo",
                "plugin",
                "server",
                "metrics",
            ],
        ),
        (
            "engine",
            &[
                "controller",
                "gates",
                "leader",
                "cli",
                "demo",
                "plugin",
                "server",
                "metrics",
            ],
        ),
        (
            "validation",
            &["controller", "leader", "cli", "demo", "plugin", "server"],
        ),
    ];
    let mut found = Vec::new();
    for (layer, higher) in forbidden {
        for (module, (_, deps)) in &operator.imports {
            if module.first().map(String::as_str) != Some(layer) {
                continue;
            }
            for dep in deps {
                if dep
                    .first()
                    .is_some_and(|top| higher.contains(&top.as_str()))
                {
                    found.push(format!("{} imports {}", display(module), display(dep)));
                }
            }
            if layer != "validation" && operator.externs[module].contains("kube_emulator") {
                found.push(format!("{} imports the emulator", display(module)));
            }
        }
    }
    for (module, named) in &emulator.externs {
        if named.contains("ringfence") {
            found.push(format!(
                "kube-emulator's {} imports ringfence",
                display(module)
            ));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
    let manifest = std::fs::read_to_string(root().join("emulator/Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("ringfence"),
        "the emulator crate must not depend on the operator"
    );
}

#[test]
fn every_path_architecture_md_names_exists() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut named = 0;
    let mut missing = Vec::new();
    for (i, span) in text.split('`').enumerate() {
        let looks_like_path = i % 2 == 1
            && !span.contains(' ')
            && [
                "src/",
                "emulator/",
                "tests/",
                "charts/",
                "crds/",
                "benches/",
            ]
            .iter()
            .any(|p| span.starts_with(p));
        if looks_like_path {
            named += 1;
            let path = span.split("::").next().unwrap_or(span);
            if !root().join(path).exists() {
                missing.push(span.to_string());
            }
        }
    }
    assert!(named >= 20, "ARCHITECTURE.md names only {named} paths");
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names missing paths: {missing:?}"
    );
}

#[test]
fn the_checker_sees_a_circle_and_a_layer_violation() {
    // The parser itself: a `super::` path, a child path and a test module left out.
    let (code, tests) = production_code(
        "use super::a::B;\nmod c;\nfn f() { c::g(); } // crate::x::y\n#[cfg(test)]\nmod tests { use crate::z; }\n#[cfg(test)]\nmod more;\n",
    );
    assert_eq!(tests, ["more"]);
    assert!(!code.contains("crate::z") && !code.contains("crate::x"));
    let found: Vec<Vec<&str>> = paths(&code);
    assert_eq!(found, [vec!["super", "a", "B"], vec!["c", "g"]]);
    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    let imports = BTreeMap::from([
        (m("a"), (PathBuf::new(), BTreeSet::from([m("b")]))),
        (m("b"), (PathBuf::new(), BTreeSet::from([m("a")]))),
        (m("c"), (PathBuf::new(), BTreeSet::from([m("a")]))),
    ]);
    assert_eq!(circle(&imports, &m("a")), Some(vec![m("a"), m("b")]));
    assert_eq!(circle(&imports, &m("c")), None);
}
