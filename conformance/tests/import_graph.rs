//! Keeps `grid-proto`'s modules free of import circles: a module that
//! imports another must not be imported back, directly or through others.
//! The one exception is `Connection`'s own impl files (`connection`,
//! `incoming`, `outgoing`), which split one type's methods by role.
//!
//! The edges are the `crate::`, `super::` and `self::` paths of each file's
//! code outside its comments and its unit tests, resolved to the module
//! that defines the item (a name the crate root or a `mod.rs` re-exports
//! counts as the module it comes from).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Modules allowed to import each other: one type's impl split by role.
const CONNECTION_IMPL: [&str; 3] = ["connection", "incoming", "outgoing"];

fn src_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../grid-proto/src")
}

/// Every `.rs` file under `dir`, with its module path (`driver::conn`;
/// `""` for `lib.rs`).
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("grid-proto/src is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file names")
            .to_owned();
        if path.is_dir() {
            let mut sub = prefix.to_vec();
            sub.push(name);
            modules(&path, &sub, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut module = prefix.to_vec();
            if name != "lib" && name != "mod" {
                module.push(name);
            }
            out.insert(module.join("::"), path);
        }
    }
}

/// The code of a file without its comments and its unit tests.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| {
            // A `//` after an even number of quotes is outside any string.
            let mut quotes = 0;
            let bytes = line.as_bytes();
            for i in 0..bytes.len() {
                match bytes[i] {
                    b'"' if i == 0 || bytes[i - 1] != b'\\' => quotes += 1,
                    b'/' if quotes % 2 == 0 && bytes.get(i + 1) == Some(&b'/') => {
                        return &line[..i];
                    }
                    _ => {}
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e` (without spaces).
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let prefix = &tree[..open];
    let body = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(|e| format!("{prefix}{e}")))
        .collect()
}

/// A use tree without its whitespace and renames (`a::{B as C, D}`:
/// `a::{B,D}`).
fn use_tree(text: &str) -> String {
    let spaced: String = text
        .chars()
        .flat_map(|c| match c {
            '{' | '}' | ',' => vec![' ', c, ' '],
            _ => vec![c],
        })
        .collect();
    let mut words = spaced.split_whitespace();
    let mut tree = String::new();
    while let Some(word) = words.next() {
        if word == "as" {
            words.next();
        } else {
            tree.push_str(word);
        }
    }
    tree
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a file's code names, from `use` items and inline paths.
fn paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(is_ident) {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        found.extend(expand(&use_tree(&rest[..end])));
    }
    let chars: Vec<char> = code.chars().collect();
    for start in 0..chars.len() {
        if start > 0 && (is_ident(chars[start - 1]) || chars[start - 1] == ':') {
            continue;
        }
        let mut end = start;
        while end < chars.len() && (is_ident(chars[end]) || chars[end] == ':') {
            end += 1;
        }
        let path: String = chars[start..end].iter().collect();
        if path.starts_with("crate::") || path.starts_with("super::") {
            found.push(path.trim_end_matches(':').to_owned());
        }
    }
    found
        .into_iter()
        .filter(|p| p.starts_with("crate::") || p.starts_with("super::") || p.starts_with("self::"))
        .collect()
}

/// For a `lib.rs` or `mod.rs`, which child module each re-exported name
/// comes from (`pub use conn::{Connection, ..}`).
fn reexports(code: &str, module: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let mut rest = code;
    while let Some(at) = rest.find("pub use ") {
        rest = &rest[at + 8..];
        let end = rest.find(';').unwrap_or(rest.len());
        for path in expand(&use_tree(&rest[..end])) {
            let segments: Vec<&str> = path.split("::").collect();
            if segments.len() < 2 || ["crate", "super", "self"].contains(&segments[0]) {
                continue;
            }
            let child = if module.is_empty() {
                segments[0].to_owned()
            } else {
                format!("{module}::{}", segments[0])
            };
            names.insert(segments[segments.len() - 1].to_owned(), child);
        }
    }
    names
}

/// The module of the item `path` names, seen from `module`.
fn resolve(
    path: &str,
    module: &str,
    known: &BTreeMap<String, PathBuf>,
    exports: &BTreeMap<String, BTreeMap<String, String>>,
) -> Option<String> {
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut segments = path.split("::").peekable();
    match segments.peek() {
        Some(&"crate") => {
            base.clear();
            segments.next();
        }
        Some(&"self") => {
            segments.next();
        }
        _ => {
            while segments.peek() == Some(&"super") {
                base.pop();
                segments.next();
            }
        }
    }
    let mut current = base.join("::");
    for segment in segments {
        let child = if current.is_empty() {
            segment.to_owned()
        } else {
            format!("{current}::{segment}")
        };
        if known.contains_key(&child) {
            current = child;
        } else if let Some(source) = exports.get(&current).and_then(|e| e.get(segment)) {
            return Some(source.clone());
        } else {
            break;
        }
    }
    Some(current)
}

/// The modules each module imports.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut known = BTreeMap::new();
    modules(&src_root(), &[], &mut known);
    let codes: BTreeMap<String, String> = known
        .iter()
        .map(|(m, p)| {
            (
                m.clone(),
                code(&fs::read_to_string(p).expect("a source file")),
            )
        })
        .collect();
    let exports: BTreeMap<String, BTreeMap<String, String>> = codes
        .iter()
        .map(|(m, code)| (m.clone(), reexports(code, m)))
        .collect();
    codes
        .iter()
        .map(|(module, code)| {
            let targets = paths(code)
                .iter()
                .filter_map(|p| resolve(p, module, &known, &exports))
                // A module's own parent re-exporting it is not an import.
                .filter(|t| t != module && !module.starts_with(&format!("{t}::")) && !t.is_empty())
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

/// The groups of modules that reach each other (Tarjan's strongly
/// connected components with more than one member).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    group.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn grid_proto_has_no_import_circles_outside_connections_impl_files() {
    let graph = import_graph();
    let bad: Vec<String> = circles(&graph)
        .into_iter()
        .filter(|group| !group.iter().all(|m| CONNECTION_IMPL.contains(&m.as_str())))
        .map(|group| {
            let edges: Vec<String> = group
                .iter()
                .flat_map(|a| {
                    graph[a]
                        .iter()
                        .filter(|b| group.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            format!("{{{}}}: {}", group.join(", "), edges.join(", "))
        })
        .collect();
    assert!(bad.is_empty(), "import circles in grid-proto/src: {bad:#?}");
}

#[test]
fn the_check_sees_imports_and_circles() {
    // The graph is not empty, and it holds edges every form of path makes.
    let graph = import_graph();
    assert!(
        graph["driver::task"].contains("driver::conn_shared"),
        "a use item"
    );
    assert!(
        graph["connection"].contains("incoming"),
        "Connection's impl files"
    );
    assert!(
        graph["driver::descriptor"].contains("driver::stream"),
        "via mod.rs re-export"
    );
    // A circle is found, and only where there is one.
    let mut toy = BTreeMap::new();
    toy.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    toy.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    toy.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    toy.insert("d".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(circles(&toy), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        expand(&use_tree("crate::{a::{B as E, C},\n d}")),
        ["crate::a::B", "crate::a::C", "crate::d"]
    );
}
