//! Integration tests of `sluice-meta`: one binary for the crate (see STYLE.md).

mod cluster;
mod node;
