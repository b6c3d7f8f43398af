//! The importer: reads Kafka's message definitions (`clients/src/main/resources/common/message`,
//! JSON with `//` comments) and its error table (`Errors.java` and the exception classes) and
//! turns them into schema files. Only the wire facts are carried over; comments, `about` texts and
//! error messages are dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use crate::schema::{ErrorCode, Field, File, Kind, Message, Struct, Versions};

/// Removes `//` comments outside of strings.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == '/' && chars.peek() == Some(&'/') {
            for n in chars.by_ref() {
                if n == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn versions(v: &Value, key: &str) -> Result<Versions, String> {
    text(v, key).map_or(Ok(Versions::None), |s| Versions::parse(&s))
}

fn field(v: &Value) -> Result<Field, String> {
    let name = text(v, "name").ok_or("field without a name")?;
    let at = |e: String| format!("{name}: {e}");
    let tag = v
        .get("tag")
        .map(|t| {
            t.as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or("bad tag")
        })
        .transpose()
        .map_err(|e| at(e.into()))?;
    Ok(Field {
        ty: text(v, "type").ok_or_else(|| at("no type".into()))?,
        versions: versions(v, "versions").map_err(at)?,
        nullable: versions(v, "nullableVersions").map_err(at)?,
        tag,
        tagged: versions(v, "taggedVersions").map_err(at)?,
        default: text(v, "default").map(|d| d.trim().to_owned()),
        entity: text(v, "entityType"),
        flexible: v
            .get("flexibleVersions")
            .map(|_| versions(v, "flexibleVersions"))
            .transpose()
            .map_err(at)?,
        ignorable: v.get("ignorable").and_then(Value::as_bool).unwrap_or(false),
        map_key: v.get("mapKey").and_then(Value::as_bool).unwrap_or(false),
        fields: fields(v).map_err(at)?,
        name,
    })
}

fn fields(v: &Value) -> Result<Vec<Field>, String> {
    match v.get("fields") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(field).collect(),
        Some(_) => Err("fields is not an array".into()),
    }
}

/// Kafka's rule for header versions: requests use header v2 in flexible versions and v1 before;
/// responses v1 and v0, except ApiVersions responses, always v0 (a client must read the answer
/// before it knows what the broker supports).
fn header_versions(
    kind: Kind,
    name: &str,
    versions: Versions,
    flexible: Versions,
) -> Vec<(i16, Versions)> {
    let (plain, flex) = match kind {
        Kind::Request => (1, 2),
        Kind::Response if name == "ApiVersionsResponse" => (0, 0),
        Kind::Response => (0, 1),
        _ => return Vec::new(),
    };
    let Some((min, max)) = versions.bounds() else {
        return Vec::new();
    };
    let flex_min = flexible.bounds().map_or(i16::MAX, |(a, _)| a);
    let mut out = Vec::new();
    if plain == flex {
        out.push((plain, versions));
        return out;
    }
    if min < flex_min {
        out.push((plain, Versions::Range(min, max.min(flex_min - 1))));
    }
    if max >= flex_min {
        out.push((flex, Versions::Range(min.max(flex_min), max)));
    }
    out
}

/// Converts one of Kafka's message definitions.
pub fn message(json_text: &str) -> Result<Message, String> {
    let v: Value =
        serde_json::from_str(&strip_comments(json_text)).map_err(|e| format!("bad JSON: {e}"))?;
    let name = text(&v, "name").ok_or("message without a name")?;
    let at = |e: String| format!("{name}: {e}");
    let kind = match text(&v, "type").as_deref() {
        Some("request") => Kind::Request,
        Some("response") => Kind::Response,
        Some("header") => Kind::Header,
        Some("data") => Kind::Data,
        other => return Err(at(format!("unsupported message type {other:?}"))),
    };
    let valid = versions(&v, "validVersions").map_err(at)?;
    let flexible = versions(&v, "flexibleVersions").map_err(at)?;
    let structs = match v.get("commonStructs") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                Ok(Struct {
                    name: text(s, "name").ok_or("common struct without a name")?,
                    versions: versions(s, "versions")?,
                    fields: fields(s)?,
                })
            })
            .collect::<Result<_, String>>()
            .map_err(at)?,
        Some(_) => return Err(at("commonStructs is not an array".into())),
    };
    Ok(Message {
        kind,
        api_key: v
            .get("apiKey")
            .and_then(Value::as_i64)
            .map(|k| i16::try_from(k).map_err(|_| at("bad apiKey".into())))
            .transpose()?,
        versions: valid,
        flexible,
        deprecated: versions(&v, "deprecatedVersions").map_err(at)?,
        latest_unstable: v
            .get("latestVersionUnstable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        listeners: v
            .get("listeners")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        header: header_versions(kind, &name, valid, flexible),
        fields: fields(&v).map_err(at)?,
        structs,
        name,
    })
}

/// `ProduceRequest` → `produce`: the file an API's request and response go in.
pub fn api_file_stem(request_name: &str) -> String {
    crate::names::snake(request_name.strip_suffix("Request").unwrap_or(request_name))
}

/// Reads Errors.java's table: `NAME(code, "message", SomeException::new)` entries, in order.
fn error_entries(errors_java: &str) -> Vec<(String, i16, Option<String>)> {
    let mut out = Vec::new();
    let body = errors_java;
    let mut rest = body;
    // Entries look like `    NAME(-1, ...` at the start of a line.
    while let Some(pos) = rest.find('\n') {
        rest = &rest[pos + 1..];
        let line = rest.trim_start();
        let Some(open) = line.find('(') else { continue };
        let name = &line[..open];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        let after = &line[open + 1..];
        let Some(comma) = after.find(',') else {
            continue;
        };
        let Ok(code) = after[..comma].trim().parse::<i16>() else {
            continue;
        };
        // The exception constructor: the first `Xyz::new` before the entry's closing `),`.
        let end = after
            .find("),")
            .or_else(|| after.find(");"))
            .unwrap_or(after.len());
        let entry = &after[..end];
        let exception = entry.find("::new").map(|i| {
            let head = &entry[..i];
            let start = head
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |p| p + 1);
            head[start..].to_owned()
        });
        out.push((name.to_owned(), code, exception));
    }
    out
}

/// Each class's superclass, from `class X extends Y` in the Java sources under `dir`.
fn superclasses(dir: &Path, out: &mut HashMap<String, String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            superclasses(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "java") {
            let source = std::fs::read_to_string(&path)?;
            for line in source.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "class") {
                    if words.get(i + 2) == Some(&"extends") {
                        if let (Some(class), Some(parent)) = (words.get(i + 1), words.get(i + 3)) {
                            let clean = |s: &str| {
                                s.trim_end_matches('{')
                                    .split('<')
                                    .next()
                                    .unwrap_or("")
                                    .to_owned()
                            };
                            out.insert(clean(class), clean(parent));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The error table from a Kafka checkout: codes, names, and whether each is retriable (its
/// exception class descends from `RetriableException`).
pub fn errors(kafka_root: &Path) -> Result<Vec<ErrorCode>, String> {
    let java = kafka_root.join("clients/src/main/java");
    let errors_java =
        std::fs::read_to_string(java.join("org/apache/kafka/common/protocol/Errors.java"))
            .map_err(|e| format!("cannot read Errors.java: {e}"))?;
    let mut parents = HashMap::new();
    superclasses(&java, &mut parents).map_err(|e| format!("cannot read Java sources: {e}"))?;
    let retriable = |class: &str| {
        let mut current = class.to_owned();
        for _ in 0..32 {
            if current == "RetriableException" {
                return true;
            }
            match parents.get(&current) {
                Some(p) => current = p.clone(),
                None => return false,
            }
        }
        false
    };
    let mut out: Vec<ErrorCode> = Vec::new();
    for (name, code, exception) in error_entries(&errors_java) {
        if code == 0 {
            continue; // NONE is not an error.
        }
        if out.iter().any(|e| e.code == code) {
            return Err(format!("error code {code} appears twice"));
        }
        out.push(ErrorCode {
            code,
            retriable: exception.as_deref().is_some_and(retriable),
            name,
        });
    }
    if out.len() < 100 {
        return Err(format!(
            "only {} error codes found in Errors.java",
            out.len()
        ));
    }
    Ok(out)
}

/// Every message definition in `dir`, grouped into schema files: one per API (request and
/// response), `headers` and `data`. Returns (file stem, file).
pub fn messages(dir: &Path) -> Result<Vec<(String, File)>, String> {
    let mut parsed = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    for path in entries {
        let source =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let m = message(&source).map_err(|e| format!("{}: {e}", path.display()))?;
        // APIs removed from Kafka (the ZooKeeper-era LeaderAndIsr, StopReplica, UpdateMetadata,
        // ControlledShutdown) keep their files with no valid versions: nothing to carry over.
        if m.versions != Versions::None {
            parsed.push(m);
        }
    }
    let mut files: BTreeMap<String, File> = BTreeMap::new();
    let mut by_key: BTreeMap<i16, String> = BTreeMap::new();
    for m in &parsed {
        if m.kind == Kind::Request {
            by_key.insert(
                m.api_key
                    .ok_or_else(|| format!("{} has no apiKey", m.name))?,
                api_file_stem(&m.name),
            );
        }
    }
    // Requests first, then responses, so each API file reads request → response.
    parsed.sort_by_key(|m| (m.kind != Kind::Request, m.name.clone()));
    for m in parsed {
        let stem = match m.kind {
            Kind::Header => "headers".to_owned(),
            Kind::Data => "data".to_owned(),
            Kind::Request | Kind::Response => {
                let key = m
                    .api_key
                    .ok_or_else(|| format!("{} has no apiKey", m.name))?;
                by_key
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| format!("{} has no request", m.name))?
            }
        };
        files.entry(stem).or_default().messages.push(m);
    }
    Ok(files.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_go_but_urls_in_strings_stay() {
        let json = "{ // comment\n \"a\": \"http://x\" // more\n}";
        let v: Value = serde_json::from_str(&strip_comments(json)).unwrap();
        assert_eq!(v["a"], "http://x");
    }

    #[test]
    fn a_message_converts() {
        let json = r#"{
          "apiKey": 0, "type": "request", "listeners": ["broker"], "name": "ProduceRequest",
          // a comment
          "validVersions": "3-13", "flexibleVersions": "9+",
          "fields": [
            { "name": "TransactionalId", "type": "string", "versions": "3+", "nullableVersions": "3+",
              "default": "null", "entityType": "transactionalId", "about": "prose" },
            { "name": "Extra", "type": "int32", "versions": "9+", "taggedVersions": "9+", "tag": 0,
              "default": -1, "ignorable": true }
          ]
        }"#;
        let m = message(json).unwrap();
        assert_eq!(m.api_key, Some(0));
        assert_eq!(
            m.header,
            vec![(1, Versions::Range(3, 8)), (2, Versions::Range(9, 13))]
        );
        assert_eq!(m.fields[0].default.as_deref(), Some("null"));
        assert_eq!(m.fields[1].tag, Some(0));
        assert_eq!(m.fields[1].default.as_deref(), Some("-1"));
    }

    #[test]
    fn error_entries_are_found() {
        let java = "enum Errors {\n    UNKNOWN_SERVER_ERROR(-1, \"x\",\n            UnknownServerException::new),\n    NONE(0, null, message -> null),\n    OFFSET_OUT_OF_RANGE(1, \"y\", OffsetOutOfRangeException::new),\n";
        let e = error_entries(java);
        assert_eq!(
            e[0],
            (
                "UNKNOWN_SERVER_ERROR".into(),
                -1,
                Some("UnknownServerException".into())
            )
        );
        assert_eq!(e[2].2.as_deref(), Some("OffsetOutOfRangeException"));
    }
}
