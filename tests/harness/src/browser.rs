//! The Rust side of the browser and node scripts in `tests/browser/`: where
//! they are, the check that everything they need is installed, and running a
//! child within a time limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Debian's Chromium, which the scripts drive.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one run of a script may take (the scripts limit themselves to 30 s).
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// `tests/browser/` at the workspace root.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../browser")
}

/// The path of the script `name`, after checking that Chromium, node and
/// playwright-core are installed: a test fails, never skips, without them.
pub fn script(name: &str) -> PathBuf {
    const SETUP: &str = "run scripts/setup-browser.sh (it installs Debian's chromium and \
                         playwright-core into tests/browser/node_modules/)";
    let dir = browser_dir();
    assert!(
        PathBuf::from(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: {SETUP}"
    );
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed in {}: {SETUP}",
        dir.join("node_modules").display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|out| out.status.success()),
        "node is not installed or does not run: {SETUP}"
    );
    dir.join(name)
}

/// Reads `pipe` to its end on a thread of its own, so that a child never
/// blocks on a full pipe; the thread returns the text.
pub fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Waits for `child` until `limit` has passed since `started`, calling `tick`
/// every 20 ms meanwhile. Past the limit the child is killed and `None`
/// returned: the caller says what ran over.
pub fn wait_limited(
    child: &mut Child,
    started: Instant,
    limit: Duration,
    mut tick: impl FnMut(),
) -> Option<ExitStatus> {
    loop {
        tick();
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a test does when a script prints a line: the text to write to the
/// script's standard input in answer, if any.
pub type OnLine<'a> = &'a mut dyn FnMut(&str) -> Option<String>;

/// Runs `command` (a `node` command line) in tests/browser/, bounded by
/// [`RUN_LIMIT`], and returns its exit status, standard output and
/// standard error. Each line of its standard output goes to `on_line` as it
/// comes.
pub fn run_node(mut command: Command, what: &str, on_line: OnLine) -> (ExitStatus, String, String) {
    let started = Instant::now();
    let mut child = command
        .current_dir(browser_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut stdin = child.stdin.take().unwrap();
    let (line_sender, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_sender.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = read_all(child.stderr.take().unwrap());
    let mut out = String::new();
    let mut take_lines = |out: &mut String, stdin: &mut ChildStdin| {
        while let Ok(line) = lines.try_recv() {
            if let Some(answer) = on_line(&line) {
                stdin
                    .write_all(answer.as_bytes())
                    .expect("write to the script");
            }
            out.push_str(&line);
            out.push('\n');
        }
    };
    let status = wait_limited(&mut child, started, RUN_LIMIT, || {
        take_lines(&mut out, &mut stdin)
    });
    let Some(status) = status else {
        panic!(
            "{what} ran over {:?}; stdout:\n{out}\nstderr:\n{}",
            RUN_LIMIT,
            stderr.join().unwrap()
        );
    };
    // The last lines, printed just before the end.
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.push_str(&line);
        out.push('\n');
    }
    eprintln!(
        "{what} ({:.1} s): {status}",
        started.elapsed().as_secs_f64()
    );
    (status, out, stderr.join().unwrap())
}

/// [`run_node`] for a script that prints a JSON report last: returns the
/// report after checking that the script exited 0 and said `"ok": true`.
pub fn run_report(command: Command, what: &str, on_line: OnLine) -> serde_json::Value {
    let (status, stdout, stderr) = run_node(command, what, on_line);
    let line = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("{what} printed no JSON line ({e}); status {status}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    assert!(
        status.success() && report["ok"] == true,
        "{what} failed ({status}): {}\nfull report: {report}\nstderr:\n{stderr}",
        report["reason"]
    );
    report
}
