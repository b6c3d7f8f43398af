//! `sluice-protocol-gen`: the generator of `sluice-protocol`'s message codecs.
//!
//! The schema in `crates/protocol/schema` is the source of truth. `import` rebuilds it from a
//! Kafka checkout; `generate` (the default) writes `crates/protocol/src/messages*` and
//! `crates/protocol/src/error.rs` from it; `check` fails when those files are not what the schema
//! generates (a test runs it on every `cargo test`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod emit;
pub mod import;
pub mod names;
pub mod schema;

/// `crates/protocol` of this workspace.
pub fn protocol_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol")
}

/// Every message and the error table of the schema in `schema_dir`.
pub fn read_schema(
    schema_dir: &Path,
) -> Result<(Vec<schema::Message>, Vec<schema::ErrorCode>), String> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for sub in ["", "apis"] {
        let dir = schema_dir.join(sub);
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|e| e == "schema") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let mut messages = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file = schema::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        messages.extend(file.messages);
        errors.extend(file.errors);
    }
    Ok((messages, errors))
}

/// Formats Rust source with rustfmt, so the output is what `cargo fmt` leaves alone.
fn rustfmt(source: &str) -> Result<String, String> {
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run rustfmt: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let text = source.to_owned();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(text.as_bytes())
    });
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    writer
        .join()
        .map_err(|_| "rustfmt writer panicked")?
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "rustfmt failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| e.to_string())
}

/// The generated files (path under `crates/protocol/src`, formatted text).
pub fn generated_files(protocol_dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let (messages, errors) = read_schema(&protocol_dir.join("schema"))?;
    let files = emit::generate(&messages, &errors)?;
    // rustfmt the files two at a time: a 2-core machine.
    let mut out = Vec::with_capacity(files.len());
    for chunk in files.chunks(2) {
        let handles: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|(path, text)| {
                std::thread::spawn(move || {
                    rustfmt(&text)
                        .map(|t| (path.clone(), t))
                        .map_err(|e| format!("{path}: {e}"))
                })
            })
            .collect();
        for h in handles {
            let (path, text) = h.join().map_err(|_| "formatter panicked")??;
            out.push((protocol_dir.join("src").join(path), text));
        }
    }
    Ok(out)
}

/// Generated files that exist on disk but the schema no longer produces.
pub fn stale_files(
    protocol_dir: &Path,
    files: &[(PathBuf, String)],
) -> Result<Vec<PathBuf>, String> {
    let dir = protocol_dir.join("src/messages");
    let mut stale = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if !files.iter().any(|(p, _)| *p == path) {
                stale.push(path);
            }
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_code_is_what_the_schema_generates() {
        let protocol = protocol_dir();
        let files = generated_files(&protocol).unwrap();
        for (path, text) in &files {
            let on_disk = std::fs::read_to_string(path).unwrap_or_default();
            assert!(
                on_disk == *text,
                "{} is not what the schema generates: run `cargo run -p sluice-protocol-gen`",
                path.display()
            );
        }
        assert_eq!(
            stale_files(&protocol, &files).unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn schema_files_are_in_canonical_form() {
        let dir = protocol_dir().join("schema");
        for sub in ["", "apis"] {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "schema") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let preamble: Vec<&str> = text
                    .lines()
                    .take_while(|l| l.starts_with('#'))
                    .map(|l| l.trim_start_matches('#').trim_start())
                    .collect();
                let file = schema::parse(&text).unwrap();
                assert_eq!(
                    schema::write(&file, &preamble.join("\n")),
                    text,
                    "{} is not in the layout the importer writes",
                    path.display()
                );
            }
        }
    }
}
