//! Shared by the Rust tests that drive the scripts in tests/browser/ (included
//! with `#[path]` from crates/duplex-cli/tests/browser.rs and
//! crates/duplex/tests/browser_http2.rs): where the scripts are, and the check
//! that everything they need is installed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

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
