//! `sluice serve`: turns flags, `SLUICE_*` variables and a TOML file of Kafka broker configs into a
//! [`BrokerConfig`], starts the broker, and shuts it down cleanly on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use sluice_broker::config::split_host_port;
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
    /// Log line format on stderr (filter with RUST_LOG, default info).
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    // `sluice group --bootstrap-server`: exporting it must not break `sluice serve`.
    "SLUICE_BOOTSTRAP_SERVER",
    "SLUICE_BOOTSTRAP",
];

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        config
            .apply(&file_settings(path)?)
            .with_context(|| format!("in config file {}", path.display()))?;
    }
    config
        .apply(&env_settings())
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
    Ok(config)
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
        println!(
            "sluice {} listening on {bound} (advertised {}:{}), data dir {}",
            env!("CARGO_PKG_VERSION"),
            broker.config.advertised_host,
            broker.config.advertised_port,
            data_dir.display()
        );
        println!(
            "admin listening on {admin_bound} (console http://{admin_bound}/, /api, /health, /ready, /metrics)"
        );
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
        info!("stopped");
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
