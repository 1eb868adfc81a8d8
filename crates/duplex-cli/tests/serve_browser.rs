//! Real browsers against `duplex serve`: Debian's headless Chromium, driven
//! by playwright-core (tests/browser/chat.mjs and tests/browser/ticker.mjs),
//! uses the pages the server itself serves (/chat, /ticker) as people would,
//! each person in a browser context of their own: two people chatting, a page
//! that goes offline and recovers what it missed (or, when the server no
//! longer holds it all, says so), pages that ride out a server restart, and
//! the ticker's live prices, and the client module riding out the expiry of
//! its tokens with `getToken` and `op: refresh` (tests/browser/refresh.mjs).
//! Each test starts its own
//! server with a fresh data folder on 127.0.0.1:0 and kills it at the end.
//! The pages' client module also has unit tests in node
//! (tests/browser/client.test.mjs), run from here.
//!
//! Needs /usr/bin/chromium (Debian's `chromium`), node, and playwright-core in
//! tests/browser/node_modules/: `scripts/setup-browser.sh` installs them.
//! Without them these tests fail and say so; they never skip.
//!
//! With `DUPLEX_SCREENSHOT_DIR=/some/dir` the scripts also save screenshots of
//! the pages there (chat.png, chat-recovery.png, ticker.png, ...).

use duplex_harness::browser as harness;

mod common;

use common::serve::spawn_serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// One browser at a time: the machine has two cores.
static BROWSER: Mutex<()> = Mutex::new(());

/// A `duplex serve` process with a data folder of its own; on drop the
/// process is killed and the folder removed.
struct Serve {
    child: Child,
    addr: SocketAddr,
    data: PathBuf,
    config: Option<PathBuf>,
}

impl Serve {
    /// Starts `duplex serve --listen 127.0.0.1:0 --data <fresh folder>`.
    fn start() -> Serve {
        Serve::start_with_config(None)
    }

    /// The same, with `--config <file>` holding `config` (TOML) when given.
    fn start_with_config(config: Option<&str>) -> Serve {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let data = std::env::temp_dir().join(format!(
            "duplex-serve-browser-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&data).expect("create the data folder");
        let config = config.map(|text| {
            let file = data.join("duplex.toml");
            std::fs::write(&file, text).expect("write the config file");
            file
        });
        let (child, addr) = match spawn_serve("127.0.0.1:0", &data, config.as_deref()) {
            Ok(started) => started,
            Err(message) => {
                let _ = std::fs::remove_dir_all(&data);
                panic!("{message}");
            }
        };
        Serve {
            child,
            addr,
            data,
            config,
        }
    }

    /// Kills the server, as a crash would: no close frames.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// After [`Serve::kill`]: starts a new server on the same address with
    /// the same data folder.
    fn start_again(&mut self) {
        let (child, addr) = spawn_serve(&self.addr.to_string(), &self.data, self.config.as_deref())
            .unwrap_or_else(|message| panic!("starting again: {message}"));
        assert_eq!(addr, self.addr, "the new server listens elsewhere");
        self.child = child;
    }

    /// The pages' origin, `http://ADDR/`.
    fn base(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Runs `node tests/browser/<script> <base> <args...>` (`base` the server's
/// origin, one
/// browser at a time) and returns the JSON report it printed last, after
/// checking that it exited 0 and said `"ok": true`. With
/// `DUPLEX_SCREENSHOT_DIR` set, asks for a screenshot named `screenshot`
/// there. Lines before the report go to `on_line` (see [`harness::run_node`]).
fn run_script(
    base: &str,
    script: &str,
    args: &[&str],
    screenshot: &str,
    on_line: harness::OnLine,
) -> Value {
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    run_script_in_turn(base, script, args, screenshot, on_line)
}

/// [`run_script`] for a caller that holds [`BROWSER`] already (to sign
/// short-lived tokens once its turn has come).
fn run_script_in_turn(
    base: &str,
    script: &str,
    args: &[&str],
    screenshot: &str,
    on_line: harness::OnLine,
) -> Value {
    let path = harness::script(script);
    let mut command = Command::new("node");
    command.arg(&path).arg(base).args(args);
    if let Some(dir) = std::env::var_os("DUPLEX_SCREENSHOT_DIR") {
        command
            .arg("--screenshot")
            .arg(PathBuf::from(dir).join(screenshot));
    }
    let what = format!("{script} {args:?}");
    harness::run_report(command, &what, on_line)
}

/// The `(user, text)` of each message a page showed, top to bottom, after
/// checking that their offsets go up and that no text became markup.
fn shown(report: &Value, page: &str) -> Vec<(String, String)> {
    let messages = report["messages"][page]
        .as_array()
        .unwrap_or_else(|| panic!("no messages for {page}: {report}"));
    let offsets: Vec<u64> = messages
        .iter()
        .map(|m| m["offset"].as_u64().expect("an offset"))
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "{page}'s messages are not in offset order: {offsets:?}"
    );
    for m in messages {
        assert_eq!(m["markup"], 0, "{page} shows data as markup: {m}");
        assert!(
            m["time"].as_str().is_some_and(|t| t.starts_with("20")),
            "{page} shows no time for {m}"
        );
    }
    messages
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap_or_default().to_string(),
                m["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The names in a list of people, as strings.
fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list of people: {list}"))
        .iter()
        .map(|n| n.as_str().unwrap_or_default())
        .collect()
}

#[test]
fn two_people_chat_in_a_room_and_see_who_is_there() {
    let serve = Serve::start();
    let report = run_script(
        &serve.base(),
        "chat.mjs",
        &["two-users"],
        "chat.png",
        &mut |_| None,
    );

    // The index page links to both applications.
    let links: Vec<&str> = report["index"]
        .as_array()
        .expect("index")
        .iter()
        .map(|l| l["href"].as_str().unwrap_or_default())
        .collect();
    assert!(
        links.contains(&"/chat") && links.contains(&"/ticker"),
        "{}",
        report["index"]
    );
    assert_eq!(
        report["unlabelled"],
        Value::Array(vec![]),
        "fields without a label"
    );
    assert_eq!(names(&report["peopleBefore"]["alice"]), ["alice", "bob"]);
    assert_eq!(names(&report["peopleBefore"]["bob"]), ["alice", "bob"]);
    let sent: Vec<(String, String)> = report["sent"]
        .as_array()
        .expect("sent")
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_string(),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(sent.len(), 3, "{report}");
    assert!(
        sent.iter().any(|(_, text)| text.contains("<script>")),
        "one message is full of markup"
    );
    // Each sees the other's messages with the right sender, and their own.
    assert_eq!(shown(&report, "alice"), sent);
    assert_eq!(shown(&report, "bob"), sent);
    // None of the markup ran.
    assert_eq!(report["pwned"], Value::Null);
    // Who comes later sees the room's history.
    assert_eq!(shown(&report, "carol"), sent);
    // bob closed his page: alice's list dropped him.
    assert_eq!(names(&report["peopleAfterBobLeft"]["alice"]), ["alice"]);
    // Another room has its own (empty) history.
    let second = &report["secondRoom"];
    assert_eq!(second["room"], "second", "{second}");
    assert_eq!(second["messages"], Value::Array(vec![]), "{second}");
    assert_eq!(names(&second["people"]), ["alice"]);
    assert_eq!(
        report["errors"],
        Value::Array(vec![]),
        "Chromium reported errors"
    );
}

#[test]
fn a_page_that_lost_its_connection_shows_what_it_missed_once_and_in_order() {
    let serve = Serve::start();
    let report = run_script(
        &serve.base(),
        "chat.mjs",
        &["recovery"],
        "chat-recovery.png",
        &mut |_| None,
    );

    // What Chromium did with the open socket in offline mode (see chat.mjs).
    eprintln!("Chromium offline: {}", report["offline"]);
    let missed = ["missed one", "missed two", "missed three"];
    let while_offline = report["aliceWhileOffline"]
        .as_array()
        .expect("aliceWhileOffline");
    assert!(
        !while_offline.iter().any(|t| missed.iter().any(|m| t == m)),
        "alice's page showed bob's messages while offline: {while_offline:?}"
    );

    let expected: Vec<(String, String)> = [("alice", "before the outage")]
        .into_iter()
        .chain(missed.iter().map(|m| ("bob", *m)))
        .chain([("bob", "after the outage")])
        .map(|(u, t)| (u.to_string(), t.to_string()))
        .collect();
    // Exactly once each, in order (the room had nothing else).
    assert_eq!(shown(&report, "alice"), expected);
    assert_eq!(shown(&report, "bob"), expected);

    // They came through the client's recovery, not as live pushes.
    let log = report["log"].as_array().expect("log");
    for text in missed {
        let deliveries: Vec<&Value> = log
            .iter()
            .filter(|e| e["type"] == "message" && e["text"] == text)
            .collect();
        assert_eq!(deliveries.len(), 1, "{text:?} delivered {deliveries:?}");
        assert_eq!(deliveries[0]["recovered"], true, "{text:?}: {log:?}");
    }
    let resumed: Vec<&Value> = log
        .iter()
        .filter(|e| e["type"] == "subscribed" && e["resumed"] == true)
        .collect();
    assert_eq!(resumed.len(), 1, "{log:?}");
    assert_eq!(resumed[0]["recovered"], 3, "{log:?}");
    assert_eq!(
        report["offsetBefore"], 1,
        "the client had seen the room's first message"
    );
    // The reconnection went through the backoff: attempts failed while
    // offline, each after a delay, and then one got through.
    let closes: Vec<&Value> = log
        .iter()
        .filter(|e| e["type"] == "state" && e["state"] == "closed")
        .collect();
    assert!(closes.len() >= 3, "a drop and two failed attempts: {log:?}");
    assert!(
        closes
            .iter()
            .all(|e| e["delayMs"].as_u64().is_some_and(|d| d > 0 && d <= 10_000)),
        "every lost connection schedules a retry: {closes:?}"
    );
    assert!(
        log.iter()
            .any(|e| e["type"] == "state" && e["state"] == "open"),
        "{log:?}"
    );
    assert_eq!(report["stats"]["connections"], 2, "{}", report["stats"]);
    assert_eq!(report["stats"]["duplicates"], 0, "{}", report["stats"]);
    assert_eq!(names(&report["people"]["alice"]), ["alice", "bob"]);
    assert_eq!(names(&report["people"]["bob"]), ["alice", "bob"]);
    assert_eq!(report["notice"], Value::Null, "nothing was lost");

    // Chromium's only complaints: the attempts refused while offline.
    let errors: Vec<&str> = report["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().unwrap_or_default())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("ERR_INTERNET_DISCONNECTED")),
        "no reconnection attempt was refused while offline: {errors:?}"
    );
    let others: Vec<&&str> = errors
        .iter()
        .filter(|e| !e.contains("ERR_INTERNET_DISCONNECTED"))
        .collect();
    assert!(others.is_empty(), "Chromium reported errors: {others:?}");
}

/// A hub that verifies tokens with [`REFRESH_SECRET`], pushes `refresh` 2 s
/// before a token's `exp` and closes 1 s after it, for
/// [`the_client_refreshes_its_token_by_itself_and_its_connection_outlives_the_first_exp`].
const REFRESH_CONFIG: &str = r#"
[auth]
hs256_secret = "browser refresh secret"
refresh_before_secs = 2
leeway_secs = 1
"#;
const REFRESH_SECRET: &str = "browser refresh secret";

#[test]
fn the_client_refreshes_its_token_by_itself_and_its_connection_outlives_the_first_exp() {
    use duplex_hub::auth::{Claims, sign};
    let serve = Serve::start_with_config(Some(REFRESH_CONFIG));
    // The tokens are signed once this test's turn for the browser has come,
    // so that none expires while it waits.
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    // Tokens of one user expiring 5, 9, 13... seconds from now: without a
    // refresh the connection would be closed 6 s from now.
    let now = duplex_hub::clock::Clock::system().now_secs();
    let tokens: Vec<String> = (0..6)
        .map(|i| {
            let claims = Claims {
                sub: "riley".into(),
                exp: Some(now + 5 + 4 * i),
                ..Claims::default()
            };
            sign(&claims, REFRESH_SECRET.as_bytes())
        })
        .collect();
    let args: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let report = run_script_in_turn(
        &serve.base(),
        "refresh.mjs",
        &args,
        "refresh.png",
        &mut |_| None,
    );
    let first_exp = now + 5;
    assert_eq!(report["firstExp"], first_exp);
    // One connection, one client id, from before the first exp to after it.
    assert_eq!(report["stats"]["connections"], 1, "{report}");
    let ids = report["clientIds"].as_array().expect("clientIds");
    assert_eq!(ids.len(), 1, "{report}");
    assert_eq!(report["clientId"], ids[0]);
    assert_eq!(report["state"], "open");
    // The hub asked before the first exp; the client answered with
    // `op: refresh`, accepted.
    let pushes = report["refreshPushes"].as_array().expect("refreshPushes");
    let first = pushes
        .first()
        .unwrap_or_else(|| panic!("no refresh push: {report}"));
    assert!(
        first["at"].as_u64().unwrap() < first_exp * 1000,
        "the first push came after exp: {first}"
    );
    assert!(first["expires_in"].as_u64().unwrap() <= 5, "{first}");
    let requests = report["refreshRequests"]
        .as_array()
        .expect("refreshRequests");
    assert!(!requests.is_empty(), "{report}");
    assert!(requests.iter().all(|r| r["ok"] == true), "{report}");
    assert!(report["stats"]["refreshes"].as_u64().unwrap() >= 1);
    assert!(
        report["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "refresh")
            .all(|e| e["refreshed"] == true),
        "{report}"
    );
    // Publications kept coming after exp + leeway, and a publish went through.
    assert!(report["tickerAfterExp"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["published"]["offset"].as_u64().is_some(), "{report}");
    assert_eq!(report["echoed"], true);
    assert!(
        report["errors"].as_array().unwrap().is_empty(),
        "Chromium reported errors: {}",
        report["errors"]
    );
}

/// Rooms that keep only 3 messages, for [`a_page_that_missed_more_than_the_history_holds_says_so_and_shows_the_newest`].
const SHORT_HISTORY: &str = r#"
[namespaces.chat]
history_size = 3
presence = true
publish = true

[namespaces.ticker]
history_size = 100
presence = false
publish = false
"#;

#[test]
fn a_page_that_missed_more_than_the_history_holds_says_so_and_shows_the_newest() {
    let serve = Serve::start_with_config(Some(SHORT_HISTORY));
    let report = run_script(
        &serve.base(),
        "chat.mjs",
        &["gap"],
        "chat-gap.png",
        &mut |_| None,
    );
    // What it showed stays; of the five sent meanwhile, the three the server
    // still holds come from the history; live messages follow.
    let expected: Vec<(String, String)> = [
        ("alice", "before the gap"),
        ("bob", "gap three"),
        ("bob", "gap four"),
        ("bob", "gap five"),
        ("bob", "after the gap"),
    ]
    .map(|(u, t)| (u.to_string(), t.to_string()))
    .into();
    assert_eq!(shown(&report, "alice"), expected);
    let log = report["log"].as_array().expect("log");
    let impossible: Vec<&Value> = log
        .iter()
        .filter(|e| e["type"] == "recovery_impossible")
        .collect();
    assert_eq!(impossible.len(), 1, "{log:?}");
    assert_eq!(impossible[0]["channel"], "chat:lobby");
    assert_eq!(impossible[0]["offset"], 1, "alice had seen offset 1");
    assert!(
        report["notice"]
            .as_str()
            .is_some_and(|n| n.contains("no longer kept")),
        "{}",
        report["notice"]
    );
    assert_eq!(report["stats"]["duplicates"], 0, "{}", report["stats"]);
}

#[test]
fn the_pages_reconnect_by_themselves_after_a_server_restart_and_history_survives() {
    let mut serve = Serve::start();
    let base = serve.base();
    let mut asked = Vec::new();
    let report = run_script(
        &base,
        "chat.mjs",
        &["restart"],
        "chat-restart.png",
        &mut |line| match line {
            "stop the server" => {
                asked.push(line.to_string());
                serve.kill();
                Some("stopped\n".into())
            }
            "start the server" => {
                asked.push(line.to_string());
                serve.start_again();
                Some("started\n".into())
            }
            _ => None,
        },
    );
    assert_eq!(asked, ["stop the server", "start the server"]);

    let expected: Vec<(String, String)> = [
        ("alice", "before the restart"),
        ("bob", "after the restart"),
    ]
    .map(|(u, t)| (u.to_string(), t.to_string()))
    .into();
    assert_eq!(shown(&report, "alice"), expected);
    assert_eq!(shown(&report, "bob"), expected);
    // From the new server's history: on disk across the restart.
    assert_eq!(shown(&report, "carol"), expected);

    for page in ["alice", "bob"] {
        let log = report["log"][page].as_array().expect("log");
        let closed: Vec<&Value> = log
            .iter()
            .filter(|e| e["type"] == "state" && e["state"] == "closed")
            .collect();
        assert!(
            closed.len() >= 2,
            "{page}: the lost connection and at least one refused attempt: {log:?}"
        );
        assert!(
            closed.iter().all(|e| e["delayMs"].as_u64().is_some()),
            "{page}: every one schedules a retry: {log:?}"
        );
        assert!(
            log.iter()
                .any(|e| e["type"] == "state" && e["state"] == "open"),
            "{page}: {log:?}"
        );
        // Resubscribed from where it was: nothing missed, nothing reloaded.
        assert!(
            log.iter()
                .any(|e| e["type"] == "subscribed" && e["resumed"] == true && e["recovered"] == 0),
            "{page}: {log:?}"
        );
        assert!(
            !log.iter().any(|e| e["type"] == "recovery_impossible"),
            "{page}: {log:?}"
        );
    }
    assert_eq!(
        report["stats"]["alice"]["duplicates"], 0,
        "{}",
        report["stats"]
    );
    assert!(
        report["statusWhileStopped"]
            .as_str()
            .is_some_and(|s| s.starts_with("Connection lost") || s.starts_with("Reconnecting")),
        "{}",
        report["statusWhileStopped"]
    );
    // Chromium's only complaints: the attempts refused while the server was down.
    let errors: Vec<&str> = report["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().unwrap_or_default())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("ERR_CONNECTION_REFUSED")),
        "no attempt was refused while the server was down: {errors:?}"
    );
    let others: Vec<&&str> = errors
        .iter()
        .filter(|e| !e.contains("ERR_CONNECTION_REFUSED"))
        .collect();
    assert!(others.is_empty(), "Chromium reported errors: {others:?}");
}

#[test]
fn the_ticker_page_shows_changing_simulated_prices_of_its_symbols_only() {
    let serve = Serve::start();
    let report = run_script(&serve.base(), "ticker.mjs", &[], "ticker.png", &mut |_| {
        None
    });

    assert_eq!(names(&report["rowsAtStart"]), ["AAPL", "MSFT", "GOOG"]);
    assert_eq!(
        report["unlabelled"],
        Value::Array(vec![]),
        "fields without a label"
    );
    for symbol in ["AAPL", "MSFT", "GOOG", "NVDA"] {
        let prices = report["samples"][symbol]
            .as_array()
            .unwrap_or_else(|| panic!("no prices of {symbol}: {report}"));
        assert!(prices.len() >= 3, "{symbol}: {prices:?}");
        for price in prices {
            let value: f64 = price
                .as_str()
                .and_then(|p| p.replace(',', "").parse().ok())
                .unwrap_or_else(|| panic!("{symbol}: not a price: {price}"));
            assert!(value > 0.0, "{symbol}: {value}");
        }
    }
    let label = &report["simulatedLabel"];
    assert_eq!(label["visible"], true, "{label}");
    assert!(
        label["text"]
            .as_str()
            .is_some_and(|t| t.contains("Simulated") && t.contains("random walk")),
        "{label}"
    );
    // GOOG unsubscribed: its row went, and nothing of it arrived after the
    // server's reply while the others went on.
    assert_eq!(names(&report["rowsAtEnd"]), ["AAPL", "MSFT", "NVDA"]);
    assert_eq!(report["unsubscribeReply"]["ok"], true, "{report}");
    assert_eq!(report["gogAfterUnsubscribe"], 0, "{report}");
    assert!(
        report["othersAfterUnsubscribe"].as_u64() >= Some(8),
        "{report}"
    );
    // Never subscribed, never sent.
    let frames = report["framesBySymbol"]
        .as_object()
        .expect("framesBySymbol");
    for symbol in ["AMZN", "TSLA"] {
        assert!(
            !frames.contains_key(symbol),
            "{symbol} reached the page: {frames:?}"
        );
    }
    // Colours by direction (style.css, light scheme).
    let directions = report["directions"].as_array().expect("directions");
    assert!(!directions.is_empty(), "no price moved: {report}");
    for d in directions {
        let want = match d["direction"].as_str() {
            Some("up") => "rgb(21, 127, 59)",
            Some("down") => "rgb(194, 49, 43)",
            other => panic!("unexpected direction {other:?}"),
        };
        assert_eq!(d["colour"], want, "{d}");
    }
    assert_eq!(report["status"], "Connected");
    assert_eq!(
        report["errors"],
        Value::Array(vec![]),
        "Chromium reported errors"
    );
}

/// The pages' client module (crates/duplex-hub/web/client.js) on its own, in node against a
/// fake WebSocket: tests/browser/client.test.mjs (node's test runner).
#[test]
fn the_pages_client_module_passes_its_unit_tests() {
    let mut command = Command::new("node");
    command.args(["--test", "client.test.mjs"]);
    let (status, out, err) =
        harness::run_node(command, "node --test client.test.mjs", &mut |_| None);
    let count = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("# {key} ")))
            .and_then(|n| n.trim().parse::<u32>().ok())
    };
    assert!(
        status.success() && count("fail") == Some(0) && count("pass") >= Some(10),
        "client.test.mjs: {status}\n{out}\n{err}"
    );
}
