//! Kafka's names (PascalCase) as Rust spells them.

/// `TopicData` → `topic_data`, `KRaftVersion` → `k_raft_version`, `V3AndBelow` → `v3_and_below`.
pub fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A field name as a Rust identifier (`type` → `r#type`).
pub fn field_ident(name: &str) -> String {
    let s = snake(name);
    match s.as_str() {
        "type" | "match" | "ref" | "self" | "struct" | "fn" | "mod" | "use" | "impl" | "loop"
        | "move" | "box" | "where" | "async" | "await" | "dyn" | "final" | "override" | "yield"
        | "macro" | "static" | "const" | "crate" | "super" | "trait" | "enum" | "extern"
        | "for" | "if" | "in" | "let" | "mut" | "pub" | "return" | "unsafe" | "while" | "as"
        | "break" | "continue" | "else" | "false" | "true" | "virtual" | "typeof" | "try"
        | "do" => {
            format!("r#{s}")
        }
        _ => s,
    }
}

/// `UNKNOWN_TOPIC_OR_PARTITION` → `UnknownTopicOrPartition`.
pub fn camel_from_upper_snake(name: &str) -> String {
    name.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let lower = p.to_ascii_lowercase();
            let mut c = lower.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// `topicName` → `TopicName`.
pub fn upper_first(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_protocol_spelling() {
        assert_eq!(snake("TopicData"), "topic_data");
        assert_eq!(snake("KRaftVersion"), "k_raft_version");
        assert_eq!(snake("V3AndBelowProducerId"), "v3_and_below_producer_id");
        assert_eq!(snake("Enable2Pc"), "enable2_pc");
        assert_eq!(snake("ProduceRequest"), "produce_request");
        assert_eq!(field_ident("Type"), "r#type");
        assert_eq!(
            camel_from_upper_snake("INVALID_TOPIC_EXCEPTION"),
            "InvalidTopicException"
        );
        assert_eq!(upper_first("topicName"), "TopicName");
    }
}
