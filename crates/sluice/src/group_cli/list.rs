//! `sluice group list`: ListGroups, optionally filtered by state.

use anyhow::bail;
use clap::Args;
use serde::Serialize;
use sluice_protocol::messages::ListGroupsRequest;
use sluice_protocol::StrBytes;

use super::{json, or_dash, table, Output};
use crate::client::{error_name, Client};

/// The group states a broker reports, in Kafka's spelling.
const GROUP_STATES: &[&str] = &[
    "PreparingRebalance",
    "CompletingRebalance",
    "Stable",
    "Dead",
    "Empty",
];

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Only groups in this state (repeatable): Stable, Empty, PreparingRebalance,
    /// CompletingRebalance, Dead.
    #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
    states: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ListedGroup {
    group: String,
    state: String,
    protocol_type: String,
}

/// Lists the broker's groups.
pub(super) async fn run(
    client: &mut Client,
    args: &ListArgs,
    output: Output,
) -> anyhow::Result<String> {
    let request = ListGroupsRequest::default().with_states_filter(
        args.states
            .iter()
            .map(|s| StrBytes::from_string(s.clone()))
            .collect(),
    );
    let response = client.send(4, &request).await?;
    if let Some(error) = error_name(response.error_code) {
        bail!("cannot list groups: {error}");
    }
    let mut groups: Vec<ListedGroup> = response
        .groups
        .into_iter()
        .map(|g| ListedGroup {
            group: g.group_id.0.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
        })
        .collect();
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    if output == Output::Json {
        return json(&groups);
    }
    let rows = groups
        .into_iter()
        .map(|g| vec![g.group, or_dash(g.state), or_dash(g.protocol_type)])
        .collect::<Vec<_>>();
    Ok(table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows))
}

fn parse_state(value: &str) -> Result<String, String> {
    GROUP_STATES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(value))
        .map(|s| (*s).to_owned())
        .ok_or_else(|| format!("unknown group state; one of {}", GROUP_STATES.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_spelled_like_kafka() {
        assert_eq!(parse_state("stable").unwrap(), "Stable");
        assert_eq!(
            parse_state("PREPARINGREBALANCE").unwrap(),
            "PreparingRebalance"
        );
        assert!(parse_state("running").is_err());
    }
}
