//! Test harness: runs a real `sluice serve` process on a free loopback port with its own data dir,
//! and builds rdkafka clients pointed at it. Every process is killed when its handle drops.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// How long a broker may take to print its startup line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running broker process.
pub(crate) struct Broker {
    child: Option<Child>,
    pub(crate) port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Broker {
    /// Starts a broker on a fresh temporary data dir (kept alive by `dir`).
    pub(crate) fn start(dir: &Path) -> Broker {
        Self::start_with(dir, &[])
    }

    /// Starts a broker on `data_dir` with extra `serve` arguments.
    pub(crate) fn start_with(data_dir: &Path, extra: &[&str]) -> Broker {
        Self::start_on(data_dir, 0, extra)
    }

    /// Starts a broker on a given port (0 = any free port).
    pub(crate) fn start_on(data_dir: &Path, port: u16, extra: &[&str]) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut pipe = child.stderr.take().expect("stderr piped");
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the broker never blocks on a full pipe.
            for _ in lines {}
        });
        let mut broker = Broker {
            child: Some(child),
            port: 0,
            stderr,
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => panic!("broker did not start; stderr:\n{}", broker.stderr()),
        };
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected startup line: {line}"));
        broker.port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in startup line: {line}"));
        broker
    }

    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything the broker logged so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL, no chance to clean up.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns whether it exited successfully.
    pub(crate) fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("broker.address.family", "v4")
            .set("log_level", "3");
        config
    }

    pub(crate) fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client_config().create().expect("admin client")
    }

    /// Creates a topic and waits for the answer.
    pub(crate) async fn create_topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let results = self
            .admin()
            .create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create_topics request");
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Wall-clock milliseconds: record timestamps inside the default 7-day retention.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Starts a broker on `<dir>/data` with a TOML config file `<dir>/sluice.toml` holding `toml`.
pub(crate) fn start_with_toml(dir: &Path, toml: &str) -> Broker {
    let config = dir.join("sluice.toml");
    std::fs::write(&config, toml).expect("write config");
    Broker::start_with(
        &dir.join("data"),
        &["--config", config.to_str().expect("utf-8 path")],
    )
}

/// Runs `sluice SUBCOMMAND ARGS --bootstrap-server BOOTSTRAP` (ignoring the caller's environment).
pub(crate) fn sluice_cli(subcommand: &str, bootstrap: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg(subcommand)
        .args(args)
        .arg("--bootstrap-server")
        .arg(bootstrap)
        .env_remove("SLUICE_BOOTSTRAP_SERVER")
        .output()
        .expect("run sluice")
}

/// Runs a CLI command, asserts it succeeded, returns its stdout.
pub(crate) fn cli_ok(subcommand: &str, broker: &Broker, args: &[&str]) -> String {
    let out = sluice_cli(subcommand, &broker.bootstrap(), args);
    assert!(
        out.status.success(),
        "sluice {subcommand} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a CLI command, asserts it failed (with `code` when given: 1 for errors from the command,
/// 2 for flag errors) with an `error: ` line and no panic, returns its stderr.
pub(crate) fn cli_fails(
    subcommand: &str,
    bootstrap: &str,
    args: &[&str],
    code: Option<i32>,
) -> String {
    let out = sluice_cli(subcommand, bootstrap, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && code.is_none_or(|c| out.status.code() == Some(c)),
        "sluice {subcommand} {args:?} should fail with {code:?}, got {:?}; stdout:\n{}\nstderr:\n{stderr}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}
