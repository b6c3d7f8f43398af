//! Test harness: runs a real `sluice serve` process on a free loopback port with its own data dir,
//! and builds rdkafka clients pointed at it. Every process is killed when its handle drops, and
//! is under the test's [`watchdog`](crate::watchdog) while it runs.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
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
    /// The admin HTTP listener's port (`/health`, `/ready`, `/metrics`).
    pub(crate) admin_port: u16,
    stderr: Arc<Mutex<String>>,
    /// The first two stdout lines, until [`Broker::await_started`] reads them.
    startup_lines: Option<std::sync::mpsc::Receiver<String>>,
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
        let (mut broker, pipe) = Self::start_with_stderr_pipe(data_dir, port, extra);
        let stderr = broker.stderr.clone();
        std::thread::spawn(move || {
            let mut pipe = pipe;
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
        broker.await_started();
        broker
    }

    /// Spawns a broker and hands its stderr pipe to the caller, who must read it (or close it:
    /// what a broker does when nobody reads its log is a test of its own); [`Broker::stderr`]
    /// stays empty. Call [`Broker::await_started`] before using it.
    pub(crate) fn start_with_stderr_pipe(
        data_dir: &Path,
        port: u16,
        extra: &[&str],
    ) -> (Broker, ChildStderr) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .args(extra)
            // The operator's default filter: tests see the log a user would.
            .env_remove("RUST_LOG")
            // A test's own settings, not broker configs (`sluice serve` refuses unknown ones).
            .env_remove(crate::watchdog::BOUND_VARIABLE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice serve");
        crate::watchdog::track(child.id());
        let pipe = child.stderr.take().expect("stderr piped");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            // The startup line, then the admin listener's line.
            for _ in 0..2 {
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
            }
            // Keep draining so the broker never blocks on a full pipe.
            for _ in lines {}
        });
        let broker = Broker {
            child: Some(child),
            port: 0,
            admin_port: 0,
            stderr: Arc::new(Mutex::new(String::new())),
            startup_lines: Some(rx),
        };
        (broker, pipe)
    }

    /// Waits (bounded) for the startup lines of a broker spawned by
    /// [`Broker::start_with_stderr_pipe`] and learns its ports.
    pub(crate) fn await_started(&mut self) {
        let rx = self.startup_lines.take().expect("await_started once");
        let next_line = || match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => panic!("broker did not start; stderr:\n{}", self.stderr()),
        };
        let line = next_line();
        let admin_line = next_line();
        self.port = listening_port(&line);
        self.admin_port = listening_port(&admin_line);
    }

    /// `GET path` on the admin listener: (status code, body).
    pub(crate) fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_port, path)
    }

    /// Requests of Kafka API `api` (`Heartbeat`, `JoinGroup`, ...) this broker process has
    /// answered, from `/metrics`.
    pub(crate) fn requests_answered(&self, api: &str) -> u64 {
        let (status, metrics) = self.admin_get("/metrics");
        assert_eq!(status, 200, "{metrics}");
        let series = format!("sluice_requests_total{{api=\"{api}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0, |value| value.trim().parse().expect("a counter value"))
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
            crate::watchdog::untrack(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns whether it exited successfully.
    pub(crate) fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        crate::watchdog::untrack(child.id());
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        wait_for_exit(&mut child, Duration::from_secs(20))
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

/// The port in a `... listening on HOST:PORT ...` line.
fn listening_port(line: &str) -> u16 {
    line.split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in startup line: {line}"))
}

/// A minimal HTTP/1.1 GET over a plain TCP stream (`Connection: close`): (status code, body).
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, "GET", path, None)
}

/// A minimal HTTP/1.1 request with an optional JSON body (`Connection: close`): (status code,
/// body).
pub(crate) fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> (u16, String) {
    http_request_typed(port, method, path, "application/json", body)
}

/// [`http_request`] with the body's `Content-Type`.
pub(crate) fn http_request_typed(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&[u8]>,
) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    if let Some(body) = body {
        // The server may answer (413) and close before reading it all.
        let _ = stream.write_all(body);
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    // Bodies are sent whole with Content-Length; decode chunked ones just in case.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
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
    let args = [&[subcommand][..], args].concat();
    wait_watched(spawn_sluice(&args, bootstrap, Stdio::null()))
}

/// Spawns `sluice ARGS --bootstrap-server BOOTSTRAP` (ignoring the caller's environment) with
/// `stdin`, stdout and stderr piped, under the test's watchdog; [`wait_watched`] ends it.
pub(crate) fn spawn_sluice(args: &[&str], bootstrap: &str, stdin: Stdio) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--bootstrap-server")
        .arg(bootstrap)
        .env_remove("SLUICE_BOOTSTRAP_SERVER")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    crate::watchdog::track(child.id());
    child
}

/// Waits for a child the watchdog tracks and collects what it wrote, like
/// [`Child::wait_with_output`].
pub(crate) fn wait_watched(child: Child) -> std::process::Output {
    let pid = child.id();
    let output = child.wait_with_output().expect("wait for sluice");
    crate::watchdog::untrack(pid);
    output
}

/// Runs `command` to completion like [`Command::output`] (stdin closed, stdout and stderr
/// captured), under the test's watchdog.
pub(crate) fn run_watched(command: &mut Command) -> std::process::Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    crate::watchdog::track(child.id());
    wait_watched(child)
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

/// Runs `sluice SUBCOMMAND list` against a port nothing listens on and checks the error names the
/// address.
pub(crate) fn assert_unreachable_broker_is_a_clear_error(subcommand: &str) {
    assert_unreachable_broker_is_a_clear_error_for(subcommand, &["list"]);
}

/// Runs `sluice SUBCOMMAND ARGS` against a port nothing listens on and checks the error names the
/// address.
pub(crate) fn assert_unreachable_broker_is_a_clear_error_for(subcommand: &str, args: &[&str]) {
    // Bind then drop a listener: nothing listens on that port now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let stderr = cli_fails(subcommand, &address, args, Some(1));
    assert!(
        stderr.contains(&format!("cannot reach broker at {address}")),
        "{stderr}"
    );
}

/// Waits (bounded) for `child` to exit after a SIGTERM; kills it when it does not in time.
/// Whether it exited successfully.
pub(crate) fn wait_for_exit(child: &mut std::process::Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}
