//! Shared by the Rust tests that drive node scripts (included with `#[path]`
//! from crates/duplex-cli/tests/browser.rs, serve_browser.rs, cluster_browser.rs
//! and docs.rs, and
//! crates/duplex/tests/browser_http2.rs): where the browser scripts are, the
//! check that everything they need is installed, and running a child within a
//! time limit.

#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Debian's Chromium, which the scripts drive.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one run of a script may take (the scripts limit themselves to 30 s).
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// `tests/browser/` at the workspace root, from a crate under `crates/`.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
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
