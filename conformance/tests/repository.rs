//! The repository stands alone: the README's embedding example is the
//! compiled `grid-tokio/examples/embed.rs` (and its typed-handler excerpt
//! comes from `grid-tokio/examples/typed.rs`), and no test, build script,
//! CI step or document points at files outside the checkout.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of the first fenced block of `lang` after `after` in `text`.
fn fenced_block<'a>(text: &'a str, after: &str, lang: &str) -> Option<&'a str> {
    let from = text.find(after)?;
    let open = format!("```{lang}\n");
    let start = from + text[from..].find(&open)? + open.len();
    let len = text[start..].find("\n```")?;
    Some(&text[start..start + len])
}

#[test]
fn the_readme_embedding_example_is_the_compiled_example() {
    let readme = read(&root().join("README.md"));
    let example = read(&root().join("grid-tokio/examples/embed.rs"));
    // The file minus its module comment.
    let code: Vec<&str> = example
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .collect();
    let block = fenced_block(&readme, "Embedding it", "rust")
        .expect("README.md has a rust block after \"Embedding it\"");
    assert_eq!(
        block.lines().collect::<Vec<_>>(),
        code,
        "README.md's embedding example differs from grid-tokio/examples/embed.rs: copy the file's code into the README"
    );
}

/// Whether every line of `excerpt` but blank ones and `// ...` is a line of
/// `code`, in order (leading and trailing spaces aside).
fn is_excerpt(excerpt: &str, code: &str) -> Result<(), String> {
    let mut code = code.lines().map(str::trim);
    for line in excerpt
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "// ...")
    {
        if !code.any(|c| c == line) {
            return Err(format!(
                "{line:?} is not in the file (or not in this order)"
            ));
        }
    }
    Ok(())
}

#[test]
fn the_readme_typed_excerpt_comes_from_the_compiled_example() {
    let readme = read(&root().join("README.md"));
    let example = read(&root().join("grid-tokio/examples/typed.rs"));
    let block = fenced_block(&readme, "Typed handlers", "rust")
        .expect("README.md has a rust block after \"Typed handlers\"");
    if let Err(why) = is_excerpt(block, &example) {
        panic!(
            "README.md's typed handler excerpt differs from grid-tokio/examples/typed.rs: {why}"
        );
    }
}

#[test]
fn an_excerpt_keeps_the_files_lines_in_order() {
    let code = "fn a() {\n    one();\n    two();\n}\n";
    assert_eq!(is_excerpt("fn a() {\n// ...\n    two();\n}", code), Ok(()));
    assert!(is_excerpt("two();\none();", code).is_err());
    assert!(is_excerpt("three();", code).is_err());
}

#[test]
fn the_fenced_block_finder_reads_what_it_should() {
    let text = "intro\n```sh\nnot this\n```\nEmbedding it\n```rust\nfn a() {}\nfn b() {}\n```\n";
    assert_eq!(
        fenced_block(text, "Embedding it", "rust"),
        Some("fn a() {}\nfn b() {}")
    );
    assert_eq!(fenced_block(text, "Embedding it", "toml"), None);
    assert_eq!(fenced_block(text, "missing", "rust"), None);
}

/// Files of the repository a clone runs or reads: sources, manifests,
/// documents and CI scripts (not build output, not fuzz corpora).
fn repository_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | ".git" | "corpus" | "artifacts") {
                repository_files(&path, out);
            }
        } else if name.ends_with(".rs")
            || name.ends_with(".toml")
            || name.ends_with(".md")
            || name == "run"
        {
            out.push(path);
        }
    }
}

#[test]
fn nothing_points_outside_the_checkout() {
    // Built from pieces so that this file does not match itself.
    let sibling = ["..", "/shared"].concat();
    let absolute = ["/work", "/shared"].concat();
    let mut files = Vec::new();
    repository_files(&root(), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with(".ci/run")),
        "the walk missed .ci/run: {files:?}"
    );
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            text.contains(&sibling) || text.contains(&absolute)
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "these files refer to a directory beside the repository: {offenders:?}"
    );
}
