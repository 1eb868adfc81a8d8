//! `duplex serve` as a process: the first line says where it listens, it
//! serves the hub (here over TLS), SIGTERM closes WebSockets with 1001 and
//! exits 0, a restart on the same data folder keeps history, a bad
//! configuration is refused with the key named, and the repository's
//! configuration files (duplex.example.toml, bench/*.toml) parse.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use duplex::{ClientBuilder, CloseCode, Message};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("duplex-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `duplex serve` with `args`; the child and its first stdout line.
fn serve(args: &[&str]) -> (Child, String) {
    serve_with_env(args, &[])
}

/// [`serve`], with these variables added to its environment.
fn serve_with_env(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_string())
}

/// SIGTERM, as a service manager stops it.
fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn next_json<S>(ws: &mut duplex::WebSocket<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_tls_shuts_down_on_sigterm_and_keeps_history() {
    let dir = temp_dir("tls");
    let data = dir.join("data");
    let (cert, key) = write_cert(&dir);
    let data_arg = data.to_str().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--data",
        data_arg,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let (mut child, line) = serve(&args);
    let addr = line
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    assert!(!addr.ends_with(":0"), "the real port: {addr}");

    let url = format!("wss://localhost:{}/ws", addr.rsplit(':').next().unwrap());
    let mut ws = ClientBuilder::new(&url)
        .danger_accept_invalid_certs(true)
        .connect()
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"id":1,"op":"subscribe","channel":"ticker:AAPL"}"#,
    ))
    .await
    .unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["ok"], true, "{reply}");
    // The feed is on by default.
    let push = next_json(&mut ws).await;
    assert_eq!(push["push"], "message");
    assert_eq!(push["data"]["simulated"], true);
    let seen = push["offset"].as_u64().unwrap();
    assert!(data.join("hub.sqlite3").exists());

    terminate(&child);
    let close = async {
        while let Some(Ok(_)) = ws.next().await {}
        ws.close_info().unwrap()
    };
    let info = timeout(WAIT, close).await.unwrap();
    assert_eq!(info.code, CloseCode::GOING_AWAY);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");

    // Started again on the same data: the ticks seen are still in history.
    let (mut child, line) = serve(&args);
    let port = line.rsplit(':').next().unwrap().to_string();
    let url = format!("wss://localhost:{port}/ws");
    let mut ws = ClientBuilder::new(&url)
        .danger_accept_invalid_certs(true)
        .connect()
        .await
        .unwrap();
    let request = json!({"id":1,"op":"history","channel":"ticker:AAPL","limit":1000});
    ws.send(Message::text(request.to_string())).await.unwrap();
    let reply = next_json(&mut ws).await;
    let offsets: Vec<u64> = reply["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert!(offsets.contains(&seen), "{seen} in {offsets:?}");
    assert!(reply["result"]["offset"].as_u64().unwrap() >= seen);
    drop(ws);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_with_an_unknown_key_is_refused() {
    let dir = temp_dir("config");
    let config = dir.join("duplex.toml");
    std::fs::write(&config, "[limits]\nrequests_per_sec = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requests_per_sec"), "{stderr}");
    assert!(out.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 request; the status code and the body.
fn http_post(addr: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[test]
fn the_publish_api_key_can_come_from_the_environment() {
    let dir = temp_dir("apikey");
    let data = dir.join("data");
    let (mut child, line) = serve_with_env(
        &["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()],
        &[("DUPLEX_API_KEY", "from-env")],
    );
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap()
        .to_string();
    let body = r#"{"channel":"chat:news","data":{"text":"from a back end"}}"#;
    assert_eq!(http_post(&addr, "/api/publish", Some("nope"), body).0, 401);
    let (status, reply) = http_post(&addr, "/api/publish", Some("from-env"), body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        serde_json::from_str::<Value>(&reply).unwrap(),
        json!({"offset": 1})
    );
    terminate(&child);
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

// The repository's configuration files, read as `duplex serve --config`
// reads them: the example states every limit's default and shows every
// `[auth]` key (which docs/PROTOCOL.md's table lists too), and the
// benchmarks' files parse to what their scripts expect.

#[test]
fn the_example_configuration_parses() {
    let config =
        duplex_hub::Config::from_toml(include_str!("../../../duplex.example.toml")).unwrap();
    assert!(config.namespaces.contains_key("chat"));
    assert_eq!(config.limits.send_queue, 1024);
    // The file states every limit's default.
    assert_eq!(config.limits, duplex_hub::config::LimitsConfig::default());
}

#[test]
fn every_auth_key_is_documented() {
    // Destructured so that a new field breaks the build here, until it
    // is listed (and documented).
    let duplex_hub::config::AuthConfig {
        hs256_secret: _,
        public_keys: _,
        jwks_url: _,
        jwks_refetch_secs: _,
        issuer: _,
        audience: _,
        leeway_secs: _,
        required: _,
        refresh_before_secs: _,
    } = duplex_hub::config::AuthConfig::default();
    let keys = [
        "hs256_secret",
        "public_keys",
        "jwks_url",
        "jwks_refetch_secs",
        "issuer",
        "audience",
        "leeway_secs",
        "required",
        "refresh_before_secs",
    ];
    let example = include_str!("../../../duplex.example.toml");
    let auth = example
        .split("\n[auth]\n")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("an [auth] table in duplex.example.toml");
    let protocol = include_str!("../../../docs/PROTOCOL.md");
    for key in keys {
        assert!(
            auth.lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
            "duplex.example.toml shows auth.{key}"
        );
        assert!(
            protocol.contains(&format!("| `auth.{key}` |")),
            "docs/PROTOCOL.md's configuration table has auth.{key}"
        );
    }
}

#[test]
fn the_benchmark_configurations_parse() {
    let fanout =
        duplex_hub::Config::from_toml(include_str!("../../../bench/hub-fanout.toml")).unwrap();
    assert!(fanout.namespaces["fanout"].publish);
    assert!(!fanout.namespaces["fanout"].presence);
    assert!(!fanout.feed.enabled);
    let cluster =
        duplex_hub::Config::from_toml(include_str!("../../../bench/cluster.toml")).unwrap();
    assert!(cluster.namespaces["fanout"].publish);
    assert!(!cluster.namespaces["fanout"].presence);
    assert!(!cluster.feed.enabled);
    assert_eq!(cluster.limits.send_queue, 16384);
    // The engine comes from bench/cluster.sh's `--redis`, not the file.
    assert_eq!(cluster.engine, duplex_hub::engine::EngineConfig::default());
    let docs =
        duplex_hub::Config::from_toml(include_str!("../../../bench/docs-bench.toml")).unwrap();
    assert_eq!(docs.limits.send_queue, 16384);
    assert_eq!(docs.docs.messages_per_second, 1000);
}
