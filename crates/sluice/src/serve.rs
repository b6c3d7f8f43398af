//! `sluice serve`: turns flags, `SLUICE_*` variables and a TOML file of Kafka broker configs into a
//! [`BrokerConfig`], starts the broker, and shuts it down cleanly on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use sluice_broker::config::{parse_voters, split_host_port};
use sluice_broker::{server, Broker, BrokerConfig};
use tracing::info;

use crate::admin_http::{self, AdminState};

/// Flags of `sluice serve`. Precedence: flag > `SLUICE_*` variable > `--config` file > default.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address the Kafka listener binds (port 0 picks a free port).
    #[arg(long, env = "SLUICE_LISTEN", value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
    /// Address of the admin HTTP listener serving /health, /ready and /metrics (port 0 picks a
    /// free port).
    #[arg(
        long,
        env = "SLUICE_ADMIN_LISTEN",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9644"
    )]
    admin_listen: SocketAddr,
    /// Address clients are told to connect to (default: the listen address).
    #[arg(long, env = "SLUICE_ADVERTISED_LISTENER", value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Directory for partition logs and metadata.
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML file of Kafka broker configs, e.g. `"num.partitions" = 3`.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log line format on stderr (filter with RUST_LOG; default `info,openraft=warn`).
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// This node's id (`node.id`): its broker id in Metadata answers and its voter id in
    /// `--voters`.
    #[arg(long, env = "SLUICE_NODE_ID", value_name = "N")]
    node_id: Option<i32>,
    /// Address the metadata quorum's listener binds (`controller.listener`). With `--voters` it
    /// defaults to this node's voter address.
    #[arg(long, env = "SLUICE_CONTROLLER_LISTEN", value_name = "HOST:PORT")]
    controller_listen: Option<SocketAddr>,
    /// The metadata quorum (`controller.quorum.voters`): every voter's id and controller
    /// address, this node's included, e.g. `1@10.0.0.1:19092,2@10.0.0.2:19092,3@10.0.0.3:19092`.
    #[arg(long, env = "SLUICE_VOTERS", value_name = "ID@HOST:PORT,...")]
    voters: Option<String>,
    /// File holding the cluster secret (`cluster.secret.file`): every node of a cluster needs
    /// the same one (create it with `sluice cluster secret --file FILE`). Default:
    /// `<data dir>/cluster-secret`, which a single node creates on its first start.
    #[arg(long, env = "SLUICE_CLUSTER_SECRET_FILE", value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Variables that are flags (above, or of other subcommands), not Kafka config names.
const FLAG_VARIABLES: &[&str] = &[
    "SLUICE_LISTEN",
    "SLUICE_ADMIN_LISTEN",
    "SLUICE_ADVERTISED_LISTENER",
    "SLUICE_DATA_DIR",
    "SLUICE_CONFIG",
    "SLUICE_LOG_FORMAT",
    "SLUICE_NODE_ID",
    "SLUICE_CONTROLLER_LISTEN",
    "SLUICE_VOTERS",
    "SLUICE_CLUSTER_SECRET_FILE",
    // `sluice group --bootstrap-server`: exporting it must not break `sluice serve`.
    "SLUICE_BOOTSTRAP_SERVER",
    "SLUICE_BOOTSTRAP",
];

/// The log filter when `RUST_LOG` is not set: what an operator needs at `info` (start, stop,
/// topics, groups, leadership), with library internals (openraft's state dumps and per-RPC lines)
/// only when they are warnings. `RUST_LOG` replaces it whole (`RUST_LOG=info` shows openraft's
/// info lines again, `RUST_LOG=debug` everything).
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Never `eprintln!` about a failed log write: that panics on a broken pipe, inside whichever
    // task was logging (the signal task among them). `StderrLog` already drops such errors.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| StderrLog)
        .log_internal_errors(false)
        // Colours for a person at a terminal, not escape codes in a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Log lines go to stderr, and a line that cannot be written (the reader of a pipe went away, a
/// full disk behind a redirect) is dropped: logging must never be able to fail, let alone take
/// down the task that logged. Each line is one `write_all` of a formatted buffer, so lines from
/// different threads do not interleave.
struct StderrLog;

impl std::io::Write for StderrLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Prints a line on stdout for whoever started the broker; a closed or broken stdout is not a
/// reason to stop serving (`println!` would panic).
fn announce(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Flattens a TOML document into Kafka-style dotted keys with string values.
fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        toml::Value::Array(items) => {
            let joined: Vec<String> = items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.insert(prefix.to_string(), joined.join(","));
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn file_settings(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let value: toml::Value = toml::from_str(&text)
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    Ok(out)
}

/// `SLUICE_NUM_PARTITIONS=3` sets `num.partitions`.
fn env_settings() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("SLUICE_") && !FLAG_VARIABLES.contains(&k.as_str()))
        .map(|(k, v)| (k["SLUICE_".len()..].to_lowercase().replace('_', "."), v))
        .collect()
}

fn build_config(args: &ServeArgs) -> anyhow::Result<BrokerConfig> {
    build_config_with(args, &env_settings())
}

/// [`build_config`] with the `SLUICE_*` settings given (tests pass their own).
fn build_config_with(
    args: &ServeArgs,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<BrokerConfig> {
    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        config
            .apply(&file_settings(path)?)
            .with_context(|| format!("in config file {}", path.display()))?;
    }
    config
        .apply(env)
        .context("in a SLUICE_* environment variable")?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    match &args.advertised_listener {
        Some(addr) => {
            let (host, port) = split_host_port("--advertised-listener", addr)?;
            config.advertised_host = host;
            config.advertised_port = port;
        }
        None => {
            config.advertised_host = config.listen.ip().to_string();
            config.advertised_port = config.listen.port();
        }
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    let mut cluster_flags = BTreeMap::new();
    if let Some(id) = args.node_id {
        cluster_flags.insert("node.id".to_string(), id.to_string());
    }
    if let Some(addr) = args.controller_listen {
        cluster_flags.insert("controller.listener".to_string(), addr.to_string());
    }
    if let Some(voters) = &args.voters {
        // Parsed here too so a bad entry is reported against the flag, not the config key.
        parse_voters("--voters", voters)?;
        cluster_flags.insert("controller.quorum.voters".to_string(), voters.clone());
    }
    if let Some(path) = &args.cluster_secret_file {
        cluster_flags.insert(
            "cluster.secret.file".to_string(),
            path.display().to_string(),
        );
    }
    config.apply(&cluster_flags)?;
    config.validate()?;
    resolve_quorum(&mut config)?;
    Ok(config)
}

/// Checks this node's place in the metadata quorum and fills in the controller listen address.
///
/// With voters (from `--voters` or `controller.quorum.voters`): `node.id` must be given and be
/// one of them, and the controller listener binds this node's voter address unless
/// `--controller-listen` says otherwise. Without voters the node is a one-voter quorum and
/// nothing changes.
fn resolve_quorum(config: &mut BrokerConfig) -> anyhow::Result<()> {
    if config.voters.is_empty() {
        return Ok(());
    }
    let ids = config
        .voters
        .iter()
        .map(|v| v.id.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if !config.is_explicit("node.id") {
        bail!(
            "--voters (controller.quorum.voters) is given but --node-id (node.id) is not: give \
             this node's id, one of the voters ({ids})"
        );
    }
    let Some(me) = config.voters.iter().find(|v| v.id == config.node_id) else {
        bail!(
            "--node-id {} is not one of the voters ({ids}): every node of a cluster is a voter, \
             so --voters (controller.quorum.voters) must list this node too",
            config.node_id
        );
    };
    if config.controller_listen.is_none() {
        let address = me.address();
        let bind = (me.host.as_str(), me.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .with_context(|| {
                format!(
                    "cannot bind the controller listener to this node's voter address {address} \
                     (the host does not resolve here); give --controller-listen HOST:PORT"
                )
            })?;
        config.controller_listen = Some(bind);
    }
    Ok(())
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let mut config = build_config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (is another broker running there? choose another with --listen)",
                    config.listen
                )
            })?;
        let bound = listener.local_addr()?;
        if args.advertised_listener.is_none() {
            config.advertised_port = bound.port();
        }
        if config.listen.port() == 0 {
            config.listen = bound;
        }
        let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} for admin HTTP (choose another with --admin-listen)",
                    args.admin_listen
                )
            })?;
        let admin_bound = admin_listener.local_addr()?;
        let admin_state = Arc::new(AdminState::default());
        let admin = tokio::spawn(admin_http::serve(admin_listener, admin_state.clone()));
        let data_dir = config.data_dir.clone();
        let broker = Broker::open(config)
            .await
            .context("cannot start the broker")?;
        admin_state.set_broker(broker.clone());
        // The one line a person (or a test) reads to know the broker is up.
        announce(&format!(
            "sluice {} listening on {bound} (advertised {}:{}), data dir {}",
            env!("CARGO_PKG_VERSION"),
            broker.config.advertised_host,
            broker.config.advertised_port,
            data_dir.display()
        ));
        announce(&format!(
            "admin listening on {admin_bound} (console http://{admin_bound}/, /api, /health, /ready, /metrics)"
        ));
        let signal_broker = broker.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("shutdown requested");
            signal_broker.begin_shutdown();
        });
        let clean = server::run(broker, listener).await;
        admin.abort();
        if !clean {
            bail!("shutdown was not clean; the next start will run recovery");
        }
        Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// The config `sluice serve ARGS` would run with, ignoring the caller's `SLUICE_*` variables.
    fn config_for(args: &[&str]) -> anyhow::Result<BrokerConfig> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))?;
        build_config_with(&cli.serve, &BTreeMap::new())
    }

    fn error_for(args: &[&str]) -> String {
        format!(
            "{:#}",
            config_for(args).expect_err("these flags must be refused")
        )
    }

    const VOTERS: &str = "1@127.0.0.1:19092,2@127.0.0.1:19093,3@127.0.0.1:19094";

    #[test]
    fn no_cluster_flags_is_a_one_voter_quorum() {
        let config = config_for(&[]).unwrap();
        assert!(config.voters.is_empty());
        assert_eq!(config.controller_listen, None);
        assert_eq!(config.node_id, 1);
    }

    #[test]
    fn node_id_flag_sets_node_id() {
        let config = config_for(&["--node-id", "7"]).unwrap();
        assert_eq!(config.node_id, 7);
        assert!(config.is_explicit("node.id"));
    }

    #[test]
    fn voters_flag_binds_this_nodes_voter_address_by_default() {
        let config = config_for(&["--node-id", "2", "--voters", VOTERS]).unwrap();
        assert_eq!(config.voters.len(), 3);
        assert_eq!(
            config.voters.iter().map(|v| v.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(config.voters[2].address(), "127.0.0.1:19094");
        assert_eq!(
            config.controller_listen,
            Some("127.0.0.1:19093".parse().unwrap())
        );
    }

    #[test]
    fn controller_listen_flag_overrides_the_voter_address() {
        let config = config_for(&[
            "--node-id",
            "3",
            "--voters",
            VOTERS,
            "--controller-listen",
            "0.0.0.0:19094",
        ])
        .unwrap();
        assert_eq!(
            config.controller_listen,
            Some("0.0.0.0:19094".parse().unwrap())
        );
    }

    #[test]
    fn controller_listen_without_voters_is_accepted() {
        let config = config_for(&["--controller-listen", "127.0.0.1:19092"]).unwrap();
        assert_eq!(
            config.controller_listen,
            Some("127.0.0.1:19092".parse().unwrap())
        );
        assert!(config.voters.is_empty());
    }

    #[test]
    fn voters_without_this_node_are_refused() {
        let error = error_for(&[
            "--node-id",
            "4",
            "--voters",
            VOTERS,
            "--controller-listen",
            "127.0.0.1:19095",
        ]);
        assert!(
            error.contains("--node-id 4 is not one of the voters (1, 2, 3)"),
            "{error}"
        );
    }

    #[test]
    fn voters_without_node_id_are_refused() {
        let error = error_for(&["--voters", VOTERS]);
        assert!(error.contains("--node-id (node.id) is not"), "{error}");
        assert!(error.contains("(1, 2, 3)"), "{error}");
    }

    #[test]
    fn unresolvable_voter_host_needs_controller_listen() {
        let voters = "1@no-such-host.invalid:19092,2@127.0.0.1:19093";
        let error = error_for(&["--node-id", "1", "--voters", voters]);
        assert!(error.contains("give --controller-listen"), "{error}");
        let config = config_for(&[
            "--node-id",
            "1",
            "--voters",
            voters,
            "--controller-listen",
            "127.0.0.1:19092",
        ])
        .unwrap();
        assert_eq!(config.voters[0].host, "no-such-host.invalid");
    }

    #[test]
    fn malformed_voters_are_refused_naming_the_flag() {
        for bad in [
            "1@127.0.0.1",
            "127.0.0.1:19092",
            "x@127.0.0.1:19092",
            "1@127.0.0.1:19092,1@127.0.0.1:19093",
            "-1@127.0.0.1:19092",
        ] {
            let flag = format!("--voters={bad}");
            let error = error_for(&["--node-id", "1", &flag]);
            assert!(error.contains("--voters"), "{bad}: {error}");
        }
    }

    #[test]
    fn bad_controller_listen_is_a_flag_error() {
        let error = error_for(&["--controller-listen", "localhost"]);
        assert!(error.contains("--controller-listen"), "{error}");
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "\"node.id\" = 9\n\"controller.quorum.voters\" = \"9@127.0.0.1:19099\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let from_file = config_for(&["--config", path]).unwrap();
        assert_eq!(from_file.node_id, 9);
        assert_eq!(
            from_file.controller_listen,
            Some("127.0.0.1:19099".parse().unwrap())
        );
        let error = error_for(&["--config", path, "--node-id", "2"]);
        assert!(
            error.contains("--node-id 2 is not one of the voters (9)"),
            "{error}"
        );
        let flags = config_for(&["--config", path, "--node-id", "2", "--voters", VOTERS]).unwrap();
        assert_eq!(flags.node_id, 2);
        assert_eq!(flags.voters.len(), 3);
    }
}
