//! The limits per client address over real sockets: clients bound to
//! different loopback source addresses, the connection count, the handshake
//! rate, the trusted-proxy rule, and their metrics.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use duplex::{ClientBuilder, WebSocket};
use duplex_hub::Config;
use http::StatusCode;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout};

use crate::common::{TestHub, WAIT};

fn config(limits: &str, server: &str) -> Config {
    Config::from_toml(&format!(
        "[feed]\nenabled = false\n[server]\n{server}\n[limits]\n{limits}\n"
    ))
    .unwrap()
}

/// A TCP connection to the hub from the loopback address `source`.
async fn tcp_from(source: &str, hub: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    timeout(WAIT, socket.connect(hub))
        .await
        .expect("connect in time")
        .unwrap_or_else(|err| panic!("connect from {source} to {hub}: {err}"))
}

/// The WebSocket handshake from `source` to `path`, with extra headers.
async fn ws_from(
    source: &str,
    hub: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WebSocket<TcpStream>, duplex::Error> {
    let tcp = tcp_from(source, hub).await;
    let mut builder = ClientBuilder::new(format!("ws://{hub}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value).unwrap();
    }
    timeout(WAIT, builder.connect_on(tcp))
        .await
        .expect("the handshake ends in time")
}

/// The status, `Retry-After` and body of a refused handshake.
fn refusal(result: Result<WebSocket<TcpStream>, duplex::Error>) -> (StatusCode, u64, String) {
    match result {
        Ok(_) => panic!("the handshake was accepted"),
        Err(duplex::Error::Rejected(response)) => {
            let retry = response
                .headers()
                .get("retry-after")
                .expect("a Retry-After header")
                .to_str()
                .unwrap()
                .parse()
                .expect("Retry-After in seconds");
            let body = String::from_utf8_lossy(response.body()).into_owned();
            (response.status(), retry, body)
        }
        Err(err) => panic!("not an HTTP refusal: {err}"),
    }
}

async fn metric(hub: &TestHub, name: &str) -> u64 {
    hub.metric(name).await as u64
}

async fn wait_for_connections(hub: &TestHub, expected: u64) {
    timeout(WAIT, async {
        while metric(hub, "duplex_connections").await != expected {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("duplex_connections never reached {expected}"));
}

#[tokio::test]
async fn connections_per_address() {
    let mut hub = TestHub::start(config("max_connections_per_ip = 3", "")).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(ws_from("127.0.0.2", hub.addr, "/ws", &[]).await.unwrap());
    }
    let (status, retry, body) = refusal(ws_from("127.0.0.2", hub.addr, "/ws", &[]).await);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry, 5);
    assert!(body.contains("limits.max_connections_per_ip = 3"), "{body}");
    // The documents count in the same total.
    let (status, _, _) = refusal(ws_from("127.0.0.2", hub.addr, "/docs/notes", &[]).await);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Another address has its own count.
    let other = ws_from("127.0.0.3", hub.addr, "/ws", &[]).await.unwrap();

    // Closing one lets another in.
    let mut first = open.remove(0);
    first.close(duplex::CloseCode::NORMAL, "").await.unwrap();
    drop(first);
    wait_for_connections(&hub, 3).await;
    let again = timeout(WAIT, async {
        loop {
            match ws_from("127.0.0.2", hub.addr, "/ws", &[]).await {
                Ok(ws) => break ws,
                Err(_) => sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("a slot is given back when a connection ends");
    assert!(ws_from("127.0.0.2", hub.addr, "/ws", &[]).await.is_err());

    assert!(
        metric(
            &hub,
            "duplex_refused_handshakes_total{reason=\"connections\"}"
        )
        .await
            >= 3
    );
    assert_eq!(
        metric(&hub, "duplex_refused_handshakes_total{reason=\"rate\"}").await,
        0
    );
    assert_eq!(metric(&hub, "duplex_tracked_client_ips").await, 2);

    // Every connection gone: the table is empty again.
    drop((open, other, again));
    wait_for_connections(&hub, 0).await;
    timeout(WAIT, async {
        while metric(&hub, "duplex_tracked_client_ips").await != 0 {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the entries go with their connections");
    hub.stop().await;
}

#[tokio::test]
async fn a_refused_upgrade_gives_its_slot_back() {
    let mut hub = TestHub::start(config("max_connections_per_ip = 1", "")).await;
    // Admitted, then refused by the upgrade (no Sec-WebSocket-Key): the
    // slot must not stay taken.
    let mut tcp = tcp_from("127.0.0.4", hub.addr).await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        hub.addr
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes())
        .await
        .unwrap();
    let mut head = vec![0u8; 12];
    timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut head),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&head, b"HTTP/1.1 400", "{}", String::from_utf8_lossy(&head));
    let ws = ws_from("127.0.0.4", hub.addr, "/ws", &[]).await.unwrap();
    drop(ws);
    wait_for_connections(&hub, 0).await;
    hub.stop().await;
}

#[tokio::test]
async fn handshake_rate_per_address() {
    let mut hub = TestHub::start(config(
        "handshakes_per_second_per_ip = 1\nhandshake_burst_per_ip = 3",
        "",
    ))
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(ws_from("127.0.0.5", hub.addr, "/ws", &[]).await.unwrap());
    }
    let (status, retry, body) = refusal(ws_from("127.0.0.5", hub.addr, "/ws", &[]).await);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry, 1);
    assert!(
        body.contains("limits.handshakes_per_second_per_ip = 1"),
        "{body}"
    );
    // Refused before the token is looked at: a bad one still gets 429.
    let (status, _, _) = refusal(ws_from("127.0.0.5", hub.addr, "/ws?token=x.y.z", &[]).await);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Another address is not slowed down.
    open.push(ws_from("127.0.0.6", hub.addr, "/ws", &[]).await.unwrap());
    // After the wait it says, a handshake gets in again.
    sleep(Duration::from_secs(retry) + Duration::from_millis(50)).await;
    open.push(ws_from("127.0.0.5", hub.addr, "/ws", &[]).await.unwrap());
    assert_eq!(
        metric(&hub, "duplex_refused_handshakes_total{reason=\"rate\"}").await,
        2
    );
    assert!(metric(&hub, "duplex_connections_refused_total").await >= 2);
    // Gone before the shutdown: a client that reads nothing would not answer
    // its close frame, and hold the shutdown for the close timeout.
    drop(open);
    hub.stop().await;
}

#[tokio::test]
async fn through_a_trusted_proxy_each_client_counts() {
    let mut hub = TestHub::start(config(
        "max_connections_per_ip = 1",
        "trusted_proxies = [\"127.0.0.1\"]",
    ))
    .await;
    let a = [("X-Forwarded-For", "198.51.100.7")];
    let b = [("X-Forwarded-For", "198.51.100.8")];
    let a_ws = ws_from("127.0.0.1", hub.addr, "/ws", &a).await.unwrap();
    let b_ws = ws_from("127.0.0.1", hub.addr, "/ws", &b).await.unwrap();
    let (status, _, _) = refusal(ws_from("127.0.0.1", hub.addr, "/ws", &a).await);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(metric(&hub, "duplex_tracked_client_ips").await, 2);
    // Gone before the shutdown: clients that read nothing would not answer
    // their close frames, and hold the shutdown for the close timeout.
    drop((a_ws, b_ws));
    hub.stop().await;

    // Without the trust, the header is ignored: both share the peer's count.
    let mut hub = TestHub::start(config("max_connections_per_ip = 1", "")).await;
    let a_ws = ws_from("127.0.0.1", hub.addr, "/ws", &a).await.unwrap();
    let (status, _, body) = refusal(ws_from("127.0.0.1", hub.addr, "/ws", &b).await);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(metric(&hub, "duplex_tracked_client_ips").await, 1);
    assert_eq!(
        metric(
            &hub,
            "duplex_refused_handshakes_total{reason=\"connections\"}"
        )
        .await,
        1
    );
    drop(a_ws);
    hub.stop().await;
}
