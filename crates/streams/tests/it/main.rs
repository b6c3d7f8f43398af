//! sluice-streams tests: `driver` runs topologies in the in-process test driver (every operator,
//! window kind and join); the others run the runtime and the examples against a real
//! `sluice serve`.

mod driver;
