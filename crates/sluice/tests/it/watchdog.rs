//! A watchdog over every end-to-end test, so that no one test can hold CI for its whole budget.
//!
//! A test is armed when it first starts a `sluice` process through the harness ([`track`]) and
//! disarmed when its thread ends: libtest runs each test on a thread of its own, named after the
//! test, and a thread-local's destructor runs when that thread ends, whether the test passed or
//! panicked. A monitor thread looks at the armed tests once a second.
//!
//! A test still running after [`bound`] is hung or far too slow. The watchdog says so on stderr,
//! naming the test, and kills the processes that test started: a test blocked on one of them
//! (a request, a child's exit) then fails where it waits, with its own message, and the other
//! tests of the binary carry on. A test still running [`GRACE`] after that is stuck where no
//! failure can reach it (a blocking call inside librdkafka, a deadlock): no thread can be
//! interrupted from outside, so the watchdog kills every process the harness started, for
//! every test, and aborts the test binary. cargo then reports that binary as failed and, with
//! `--no-fail-fast`, still runs the others. Either way every `sluice serve` dies with its test.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant};

/// Overrides [`DEFAULT_BOUND`], in seconds.
pub(crate) const BOUND_VARIABLE: &str = "SLUICE_TEST_WATCHDOG_SECS";
/// How long one test may run after it starts its first process. The slowest tests (three-node
/// failovers) take about 25 s on an idle two-core machine; this leaves room for a machine
/// loaded several times over.
const DEFAULT_BOUND: Duration = Duration::from_secs(240);
/// How long a test whose processes were killed may take to fail before the binary is aborted.
const GRACE: Duration = Duration::from_secs(30);
/// How often the monitor looks.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// One armed test.
struct Watched {
    name: String,
    started: Instant,
    /// Processes it started that are still running (ids of children not yet reaped).
    pids: Vec<u32>,
    /// When the bound passed and its processes were killed.
    expired: Option<Instant>,
}

/// Armed tests by id.
static WATCHED: Mutex<BTreeMap<u64, Watched>> = Mutex::new(BTreeMap::new());
static NEXT_ID: Mutex<u64> = Mutex::new(0);
static MONITOR: Once = Once::new();

/// This thread's armed test; dropping it (when the thread ends) disarms the test.
struct Armed(u64);

impl Drop for Armed {
    fn drop(&mut self) {
        watched().remove(&self.0);
    }
}

thread_local! {
    static ARMED: RefCell<Option<Armed>> = const { RefCell::new(None) };
}

fn watched() -> MutexGuard<'static, BTreeMap<u64, Watched>> {
    // A panic while holding the lock leaves a map that is still consistent.
    WATCHED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The bound every test runs under.
pub(crate) fn bound() -> Duration {
    std::env::var(BOUND_VARIABLE)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_BOUND, Duration::from_secs)
}

/// Arms the watchdog for the test running on this thread (once; later calls return the same id).
fn arm() -> u64 {
    ARMED.with(|armed| {
        let mut armed = armed.borrow_mut();
        if let Some(Armed(id)) = armed.as_ref() {
            return *id;
        }
        let id = {
            let mut next = NEXT_ID.lock().unwrap_or_else(PoisonError::into_inner);
            *next += 1;
            *next
        };
        let name = std::thread::current()
            .name()
            .unwrap_or("<an unnamed thread>")
            .to_owned();
        watched().insert(
            id,
            Watched {
                name,
                started: Instant::now(),
                pids: Vec::new(),
                expired: None,
            },
        );
        MONITOR.call_once(|| {
            std::thread::Builder::new()
                .name("test watchdog".into())
                .spawn(monitor)
                .expect("spawn the test watchdog");
        });
        *armed = Some(Armed(id));
        id
    })
}

/// Puts process `pid`, just started by the test on this thread, under the watchdog (arming it).
pub(crate) fn track(pid: u32) {
    let id = arm();
    if let Some(test) = watched().get_mut(&id) {
        test.pids.push(pid);
    }
}

/// Takes process `pid` out of the watchdog's hands: call it before killing and reaping the
/// process yourself, so the watchdog never signals an id the system may have given to another.
pub(crate) fn untrack(pid: u32) {
    for test in watched().values_mut() {
        test.pids.retain(|p| *p != pid);
    }
}

fn monitor() {
    let bound = bound();
    loop {
        std::thread::sleep(CHECK_INTERVAL);
        let now = Instant::now();
        let mut tests = watched();
        let mut stuck = None;
        for test in tests.values_mut() {
            match test.expired {
                None if now.duration_since(test.started) > bound => {
                    say(&format!(
                        "test {} has run for {} s, past the watchdog's bound of {} s \
                         ({BOUND_VARIABLE}): it is hung or far too slow. Killing the processes it \
                         started ({}) so that it fails where it waits.",
                        test.name,
                        now.duration_since(test.started).as_secs(),
                        bound.as_secs(),
                        pid_list(&test.pids),
                    ));
                    kill_all(&test.pids);
                    test.expired = Some(now);
                }
                Some(expired) if now.duration_since(expired) > GRACE => {
                    stuck = Some(test.name.clone());
                }
                _ => {}
            }
        }
        if let Some(stuck) = stuck {
            let everyone: Vec<u32> = tests.values().flat_map(|t| t.pids.clone()).collect();
            say(&format!(
                "test {stuck} is still running {} s after its processes were killed: it is stuck \
                 where no failure reaches it (a blocking call inside librdkafka, a deadlock). \
                 Killing every process the tests started ({}) and aborting this test binary; \
                 the other tests still running in it are lost.",
                GRACE.as_secs(),
                pid_list(&everyone),
            ));
            kill_all(&everyone);
            std::process::abort();
        }
    }
}

/// Writes straight to the process's stderr: libtest captures `eprintln!` of test threads (and
/// of threads they spawn) and would show it only for a test that ends.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "WATCHDOG: {text}");
}

fn pid_list(pids: &[u32]) -> String {
    if pids.is_empty() {
        return "none".to_owned();
    }
    let list: Vec<String> = pids.iter().map(|p| format!("pid {p}")).collect();
    list.join(", ")
}

fn kill_all(pids: &[u32]) {
    for pid in pids {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}
