//! The schema format: its data model, its parser and its writer.
//!
//! A schema file is plain text. A line that starts in column 0 opens a block:
//!
//! ```text
//! request ProduceRequest key=0 versions=3-13 flexible=9+ header=1:3-8,2:9+ listeners=broker
//!   TransactionalId  string                 3+     nullable=3+ default=null entity=transactionalId
//!   TopicData        []TopicProduceData     3+
//!     Name           string                 3-12   entity=topicName mapkey
//! struct SomeCommonStruct versions=0+
//!   Field            int32                  0+
//! ```
//!
//! Block kinds are `request`, `response`, `header`, `data` (a message) and `struct` (a common
//! struct of the message opened last). Field lines are indented two spaces per level; a field's
//! own fields (when its type names a struct defined in place) follow one level deeper. Each field
//! line is `Name Type Versions` and then attributes: `nullable=V`, `tag=N`, `tagged=V`,
//! `default=X` (quoted as `"..."` when empty or holding spaces), `entity=E`, `flexible=V`,
//! `ignorable`, `mapkey`. Versions are `none`, `N`, `N+` or `N-M`. `#` starts a comment line.
//! The error table (`errors.schema`) has one line per code: `CODE NAME [retriable]`.

use std::fmt::{self, Write as _};

/// A set of versions: `none`, or `min..=max` (`max` is `i16::MAX` for an open range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    None,
    Range(i16, i16),
}

impl Versions {
    pub const ALL: Versions = Versions::Range(0, i16::MAX);

    pub fn parse(s: &str) -> Result<Versions, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<i16>()
                .map_err(|_| format!("bad version {t:?} in {s:?}"))
        };
        if s == "none" {
            return Ok(Versions::None);
        }
        if let Some(min) = s.strip_suffix('+') {
            return Ok(Versions::Range(num(min)?, i16::MAX));
        }
        if let Some((a, b)) = s.split_once('-') {
            return Ok(Versions::Range(num(a)?, num(b)?));
        }
        let v = num(s)?;
        Ok(Versions::Range(v, v))
    }

    pub fn contains(self, version: i16) -> bool {
        match self {
            Versions::None => false,
            Versions::Range(a, b) => (a..=b).contains(&version),
        }
    }

    pub fn intersect(self, other: Versions) -> Versions {
        match (self, other) {
            (Versions::Range(a, b), Versions::Range(c, d)) if a.max(c) <= b.min(d) => {
                Versions::Range(a.max(c), b.min(d))
            }
            _ => Versions::None,
        }
    }

    /// The smallest range holding both.
    pub fn hull(self, other: Versions) -> Versions {
        match (self, other) {
            (Versions::None, x) | (x, Versions::None) => x,
            (Versions::Range(a, b), Versions::Range(c, d)) => Versions::Range(a.min(c), b.max(d)),
        }
    }

    /// True when every version of `other` is in `self`.
    pub fn covers(self, other: Versions) -> bool {
        match (self, other) {
            (_, Versions::None) => true,
            (Versions::None, _) => false,
            (Versions::Range(a, b), Versions::Range(c, d)) => a <= c && d <= b,
        }
    }

    pub fn bounds(self) -> Option<(i16, i16)> {
        match self {
            Versions::None => None,
            Versions::Range(a, b) => Some((a, b)),
        }
    }
}

impl fmt::Display for Versions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Versions::None => f.write_str("none"),
            Versions::Range(a, i16::MAX) => write!(f, "{a}+"),
            Versions::Range(a, b) if a == b => write!(f, "{a}"),
            Versions::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
    Header,
    Data,
}

impl Kind {
    fn keyword(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Response => "response",
            Kind::Header => "header",
            Kind::Data => "data",
        }
    }
}

/// One message (a JSON file of Kafka's).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    pub name: String,
    pub api_key: Option<i16>,
    pub versions: Versions,
    pub flexible: Versions,
    pub deprecated: Versions,
    /// The highest version is still under development in Kafka (not to be advertised).
    pub latest_unstable: bool,
    pub listeners: Vec<String>,
    /// (header version, message versions that use it), requests and responses only.
    pub header: Vec<(i16, Versions)>,
    pub fields: Vec<Field>,
    pub structs: Vec<Struct>,
}

/// A common struct of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Struct {
    pub name: String,
    pub versions: Versions,
    pub fields: Vec<Field>,
}

/// One field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    /// As Kafka writes it: `int32`, `string`, `[]int32`, `[]SomeStruct`, `SomeStruct`.
    pub ty: String,
    pub versions: Versions,
    pub nullable: Versions,
    pub tag: Option<u32>,
    pub tagged: Versions,
    pub default: Option<String>,
    pub entity: Option<String>,
    /// Overrides the message's flexible versions for this field (`none` in RequestHeader).
    pub flexible: Option<Versions>,
    pub ignorable: bool,
    pub map_key: bool,
    pub fields: Vec<Field>,
}

/// One error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: i16,
    pub name: String,
    pub retriable: bool,
}

/// A schema file: messages, or the error table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub messages: Vec<Message>,
    pub errors: Vec<ErrorCode>,
}

fn attrs(tokens: &[String]) -> Result<Vec<(String, Option<String>)>, String> {
    tokens
        .iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), Some(unquote(v)?))),
            None => Ok((t.clone(), None)),
        })
        .collect()
}

fn unquote(v: &str) -> Result<String, String> {
    if let Some(inner) = v.strip_prefix('"') {
        return inner
            .strip_suffix('"')
            .map(str::to_owned)
            .ok_or_else(|| format!("unterminated quote in {v:?}"));
    }
    Ok(v.to_owned())
}

/// Splits a line into tokens; a `"..."` token may hold spaces.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ' ' if !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quote in {line:?}"));
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    Ok(tokens)
}

fn parse_field(tokens: &[String]) -> Result<Field, String> {
    if tokens.len() < 3 {
        return Err("a field needs a name, a type and versions".into());
    }
    let mut field = Field {
        name: tokens[0].clone(),
        ty: tokens[1].clone(),
        versions: Versions::parse(&tokens[2])?,
        nullable: Versions::None,
        tag: None,
        tagged: Versions::None,
        default: None,
        entity: None,
        flexible: None,
        ignorable: false,
        map_key: false,
        fields: Vec::new(),
    };
    for (key, value) in attrs(&tokens[3..])? {
        let need = || value.clone().ok_or_else(|| format!("{key} needs a value"));
        match key.as_str() {
            "nullable" => field.nullable = Versions::parse(&need()?)?,
            "tag" => field.tag = Some(need()?.parse().map_err(|_| "bad tag".to_string())?),
            "tagged" => field.tagged = Versions::parse(&need()?)?,
            "default" => field.default = Some(need()?),
            "entity" => field.entity = Some(need()?),
            "flexible" => field.flexible = Some(Versions::parse(&need()?)?),
            "ignorable" => field.ignorable = true,
            "mapkey" => field.map_key = true,
            other => return Err(format!("unknown field attribute {other:?}")),
        }
    }
    if field.tag.is_some() != (field.tagged != Versions::None) {
        return Err(format!("{}: tag and tagged go together", field.name));
    }
    Ok(field)
}

fn parse_header(spec: &str) -> Result<Vec<(i16, Versions)>, String> {
    spec.split(',')
        .map(|part| {
            let (h, v) = part
                .split_once(':')
                .ok_or_else(|| format!("bad header spec {part:?}"))?;
            let h = h.parse().map_err(|_| format!("bad header version {h:?}"))?;
            Ok((h, Versions::parse(v)?))
        })
        .collect()
}

/// Parses one schema file.
pub fn parse(text: &str) -> Result<File, String> {
    let mut file = File::default();
    // Fields being filled, by depth: the block's list at depth 0.
    let mut stack: Vec<(usize, Field)> = Vec::new();
    let mut block_fields: Vec<Field> = Vec::new();
    // Where the finished block goes: a message, or a struct of the last message.
    enum Open {
        Nothing,
        Message(Message),
        Struct(Struct),
    }
    let mut open = Open::Nothing;

    fn unwind(stack: &mut Vec<(usize, Field)>, block: &mut Vec<Field>, to_depth: usize) {
        while let Some((depth, _)) = stack.last() {
            if *depth < to_depth {
                break;
            }
            let (depth, field) = stack.pop().expect("non-empty");
            match stack.last_mut() {
                Some((parent_depth, parent)) if *parent_depth == depth - 1 => {
                    parent.fields.push(field)
                }
                _ => block.push(field),
            }
        }
    }

    let close = |file: &mut File,
                 open: Open,
                 stack: &mut Vec<(usize, Field)>,
                 block: &mut Vec<Field>|
     -> Result<(), String> {
        unwind(stack, block, 1);
        let fields = std::mem::take(block);
        match open {
            Open::Nothing => {}
            Open::Message(mut m) => {
                m.fields = fields;
                file.messages.push(m);
            }
            Open::Struct(mut s) => {
                s.fields = fields;
                let message = file
                    .messages
                    .last_mut()
                    .ok_or("a struct block needs a message before it")?;
                message.structs.push(s);
            }
        }
        Ok(())
    };

    for (number, raw) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", number + 1);
        let line = raw.trim_end();
        if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let tokens = tokenize(line.trim_start()).map_err(at)?;
        if indent == 0 {
            if tokens[0].parse::<i16>().is_ok() {
                let retriable = tokens.get(2).map(String::as_str) == Some("retriable");
                file.errors.push(ErrorCode {
                    code: tokens[0].parse().expect("checked"),
                    name: tokens.get(1).cloned().ok_or_else(|| at("no name".into()))?,
                    retriable,
                });
                continue;
            }
            let finished = std::mem::replace(&mut open, Open::Nothing);
            close(&mut file, finished, &mut stack, &mut block_fields).map_err(at)?;
            let name = tokens
                .get(1)
                .cloned()
                .ok_or_else(|| at("block needs a name".into()))?;
            let attributes = attrs(&tokens[2..]).map_err(at)?;
            let get = |k: &str| {
                attributes
                    .iter()
                    .find(|(key, _)| key == k)
                    .and_then(|(_, v)| v.clone())
            };
            let versions = Versions::parse(&get("versions").unwrap_or_default()).map_err(at)?;
            if tokens[0] == "struct" {
                open = Open::Struct(Struct {
                    name,
                    versions,
                    fields: Vec::new(),
                });
                continue;
            }
            let kind = match tokens[0].as_str() {
                "request" => Kind::Request,
                "response" => Kind::Response,
                "header" => Kind::Header,
                "data" => Kind::Data,
                other => return Err(at(format!("unknown block {other:?}"))),
            };
            let opt_versions = |k: &str| -> Result<Versions, String> {
                get(k)
                    .map(|v| Versions::parse(&v))
                    .transpose()
                    .map(|v| v.unwrap_or(Versions::None))
            };
            open = Open::Message(Message {
                kind,
                name,
                api_key: get("key")
                    .map(|k| k.parse().map_err(|_| at(format!("bad key {k:?}"))))
                    .transpose()?,
                versions,
                flexible: opt_versions("flexible").map_err(at)?,
                deprecated: opt_versions("deprecated").map_err(at)?,
                latest_unstable: attributes.iter().any(|(k, _)| k == "unstable-latest"),
                listeners: get("listeners")
                    .map(|l| l.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
                header: get("header")
                    .map(|h| parse_header(&h))
                    .transpose()
                    .map_err(at)?
                    .unwrap_or_default(),
                fields: Vec::new(),
                structs: Vec::new(),
            });
            continue;
        }
        if indent % 2 != 0 {
            return Err(at("indent by two spaces per level".into()));
        }
        let depth = indent / 2;
        if matches!(open, Open::Nothing) {
            return Err(at("a field outside a block".into()));
        }
        let expected_max = stack.last().map_or(1, |(d, _)| d + 1);
        if depth > expected_max {
            return Err(at("indented deeper than its parent field".into()));
        }
        unwind(&mut stack, &mut block_fields, depth);
        stack.push((depth, parse_field(&tokens).map_err(at)?));
    }
    close(&mut file, open, &mut stack, &mut block_fields)?;
    Ok(file)
}

fn quote(v: &str) -> String {
    if v.is_empty() || v.contains(' ') || v.contains('"') {
        format!("\"{v}\"")
    } else {
        v.to_owned()
    }
}

/// A field line's columns: name, type, versions, attributes.
type Columns = (String, String, String, String);

fn field_columns(field: &Field) -> Columns {
    let mut attrs = Vec::new();
    if field.nullable != Versions::None {
        attrs.push(format!("nullable={}", field.nullable));
    }
    if let Some(tag) = field.tag {
        attrs.push(format!("tag={tag}"));
        attrs.push(format!("tagged={}", field.tagged));
    }
    if let Some(d) = &field.default {
        attrs.push(format!("default={}", quote(d)));
    }
    if let Some(e) = &field.entity {
        attrs.push(format!("entity={e}"));
    }
    if let Some(f) = field.flexible {
        attrs.push(format!("flexible={f}"));
    }
    if field.ignorable {
        attrs.push("ignorable".into());
    }
    if field.map_key {
        attrs.push("mapkey".into());
    }
    (
        field.name.clone(),
        field.ty.clone(),
        field.versions.to_string(),
        attrs.join(" "),
    )
}

/// Field lines of a block with aligned columns.
fn write_fields(out: &mut String, fields: &[Field]) {
    fn collect(rows: &mut Vec<(usize, Columns)>, fields: &[Field], d: usize) {
        for f in fields {
            rows.push((d, field_columns(f)));
            collect(rows, &f.fields, d + 1);
        }
    }
    let mut rows = Vec::new();
    collect(&mut rows, fields, 1);
    let w_name = rows
        .iter()
        .map(|(d, c)| 2 * d + c.0.len())
        .max()
        .unwrap_or(0);
    let w_ty = rows.iter().map(|(_, c)| c.1.len()).max().unwrap_or(0);
    let w_v = rows.iter().map(|(_, c)| c.2.len()).max().unwrap_or(0);
    for (d, (name, ty, versions, attrs)) in rows {
        let lead = format!("{}{}", "  ".repeat(d), name);
        let line = format!("{lead:w_name$}  {ty:w_ty$}  {versions:w_v$}  {attrs}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// Writes a schema file in the canonical layout ([`parse`] reads it back unchanged).
pub fn write(file: &File, preamble: &str) -> String {
    let mut out = String::new();
    for line in preamble.lines() {
        let _ = writeln!(out, "# {line}");
    }
    for m in &file.messages {
        out.push('\n');
        let mut head = format!("{} {}", m.kind.keyword(), m.name);
        if let Some(k) = m.api_key {
            let _ = write!(head, " key={k}");
        }
        let _ = write!(head, " versions={} flexible={}", m.versions, m.flexible);
        if m.deprecated != Versions::None {
            let _ = write!(head, " deprecated={}", m.deprecated);
        }
        if !m.header.is_empty() {
            let spec: Vec<String> = m.header.iter().map(|(h, v)| format!("{h}:{v}")).collect();
            let _ = write!(head, " header={}", spec.join(","));
        }
        if !m.listeners.is_empty() {
            let _ = write!(head, " listeners={}", m.listeners.join(","));
        }
        if m.latest_unstable {
            head.push_str(" unstable-latest");
        }
        out.push_str(&head);
        out.push('\n');
        write_fields(&mut out, &m.fields);
        for s in &m.structs {
            let _ = writeln!(out, "struct {} versions={}", s.name, s.versions);
            write_fields(&mut out, &s.fields);
        }
    }
    if !file.errors.is_empty() {
        out.push('\n');
        let w = file.errors.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for e in &file.errors {
            let line = format!(
                "{:<4} {:w$} {}",
                e.code,
                e.name,
                if e.retriable { "retriable" } else { "" }
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# a comment
request FooRequest key=7 versions=0-3 flexible=2+ header=1:0-1,2:2+ listeners=broker unstable-latest
  Name      string    0+   nullable=1+ default=null entity=topicName
  Items     []Item    0+
    Id      int32     0+   default=-1 mapkey
    Extra   bytes     2+   tag=0 tagged=2+ ignorable
  Empty     string    1+   default=\"\"
  Cursor    Cursor    3+   nullable=3+ default=null
struct Cursor versions=3+
  At        int32     3+
";

    #[test]
    fn parses_nesting_and_attributes() {
        let file = parse(SAMPLE).unwrap();
        let m = &file.messages[0];
        assert_eq!(m.api_key, Some(7));
        assert_eq!(
            m.header,
            vec![
                (1, Versions::Range(0, 1)),
                (2, Versions::Range(2, i16::MAX))
            ]
        );
        assert!(m.latest_unstable);
        assert_eq!(m.fields.len(), 4);
        assert_eq!(m.fields[1].fields.len(), 2);
        assert_eq!(m.fields[1].fields[1].tag, Some(0));
        assert_eq!(m.fields[2].default.as_deref(), Some(""));
        assert_eq!(m.structs[0].fields[0].name, "At");
    }

    #[test]
    fn writing_and_parsing_round_trip() {
        let file = parse(SAMPLE).unwrap();
        let text = write(&file, "preamble");
        assert_eq!(parse(&text).unwrap(), file);
        assert_eq!(write(&parse(&text).unwrap(), "preamble"), text);
    }

    #[test]
    fn versions_parse_and_print() {
        for s in ["none", "3", "3+", "0-12"] {
            assert_eq!(Versions::parse(s).unwrap().to_string(), s);
        }
        assert!(Versions::parse("x").is_err());
    }
}
