//! What the test targets that run outside programs share, taken as a
//! dev-dependency by duplex's and duplex-cli's tests:
//!
//! - [`browser`]: where the node scripts of `tests/browser/` are, the check
//!   that Chromium, node and playwright-core are installed, and running a
//!   script within a time limit.
//! - [`proxies`]: Debian's tinyproxy and microsocks on free loopback ports,
//!   killed on drop.
//!
//! A missing program fails the test that needs it, naming the script that
//! installs it; nothing here skips.

pub mod browser;
pub mod proxies;
