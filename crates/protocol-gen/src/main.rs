//! `cargo run -p sluice-protocol-gen [generate | check | import KAFKA_ROOT SOURCE]`.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_protocol_gen::{generated_files, import, protocol_dir, schema, stale_files};

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let protocol = protocol_dir();
    match args.first().map(String::as_str) {
        None | Some("generate") => {
            let files = generated_files(&protocol)?;
            for stale in stale_files(&protocol, &files)? {
                std::fs::remove_file(&stale).map_err(|e| format!("{}: {e}", stale.display()))?;
            }
            std::fs::create_dir_all(protocol.join("src/messages")).map_err(|e| e.to_string())?;
            for (path, text) in &files {
                let current = std::fs::read_to_string(path).unwrap_or_default();
                if current != *text {
                    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            println!("generated {} files", files.len());
            Ok(())
        }
        Some("check") => {
            let files = generated_files(&protocol)?;
            let mut wrong: Vec<String> = stale_files(&protocol, &files)?
                .iter()
                .map(|p| format!("{} (stale)", p.display()))
                .collect();
            for (path, text) in &files {
                if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                    wrong.push(path.display().to_string());
                }
            }
            if wrong.is_empty() {
                println!("{} generated files are current", files.len());
                Ok(())
            } else {
                Err(format!(
                    "generated files differ from the schema (run `cargo run -p sluice-protocol-gen`):\n  {}",
                    wrong.join("\n  ")
                ))
            }
        }
        Some("import") => {
            let (Some(root), Some(source)) = (args.get(1), args.get(2)) else {
                return Err("usage: import KAFKA_ROOT SOURCE (SOURCE names the Kafka release and commit, for the file headers)".into());
            };
            let root = PathBuf::from(root);
            let schema_dir = protocol.join("schema");
            std::fs::create_dir_all(schema_dir.join("apis")).map_err(|e| e.to_string())?;
            let preamble = format!(
                "Wire facts of Kafka's message definitions, imported from {source}\n(clients/src/main/resources/common/message) by `sluice-protocol-gen import`.\nThis file is the source of truth for the generated code; the format is described in\ncrates/protocol/README.md."
            );
            let files = import::messages(&root.join("clients/src/main/resources/common/message"))?;
            let mut written = 0;
            for (stem, file) in files {
                let path = if stem == "headers" || stem == "data" {
                    schema_dir.join(format!("{stem}.schema"))
                } else {
                    schema_dir.join("apis").join(format!("{stem}.schema"))
                };
                std::fs::write(&path, schema::write(&file, &preamble))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                written += 1;
            }
            let errors = schema::File {
                messages: Vec::new(),
                errors: import::errors(&root)?,
            };
            let preamble = format!(
                "Kafka's error codes, imported from {source}\n(clients/src/main/java/org/apache/kafka/common/protocol/Errors.java) by `sluice-protocol-gen import`.\nOne line per code: CODE NAME, and `retriable` when its exception is a RetriableException."
            );
            std::fs::write(
                schema_dir.join("errors.schema"),
                schema::write(&errors, &preamble),
            )
            .map_err(|e| e.to_string())?;
            println!("wrote {} schema files and errors.schema", written);
            Ok(())
        }
        Some(other) => Err(format!(
            "unknown command {other:?} (generate, check or import)"
        )),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-protocol-gen: {e}");
            ExitCode::FAILURE
        }
    }
}
