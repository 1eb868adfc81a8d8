//! The exchanges, shared by `interop_python.rs` and `interop_node.rs`: each
//! function is the body of one test, for one peer.
//!
//! Our client against their server: [`our_client_messages`],
//! [`their_fragmented_messages_arrive_whole`], [`ping_pong_both_ways`],
//! [`our_close_reaches_them`], [`their_close_reaches_us`],
//! [`our_client_over_tls`]. Their client against our server:
//! [`their_client_our_server`]. These run with compression off: the peers
//! decline or do not offer permessage-deflate, as [`our_client_messages`] and
//! [`their_client_our_server`] check. The same directions with compression
//! on are in [`deflate`].

use duplex::{
    ClientBuilder, ClientStream, CloseCode, CloseFrame, CloseStatus, Error, Message, WebSocket,
};
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    CLIENT_PROTOCOLS, ConnRecord, EchoServer, Peer, PeerServer, SERVER_PROTOCOLS, TestCert,
    assert_message, big_binary, big_text, describe, next_message, run_client, within,
};

pub mod deflate;

/// Our client's connection type.
pub type Client = WebSocket<ClientStream>;

/// Starts the peer's echo server speaking [`SERVER_PROTOCOLS`], over TLS with
/// `cert` if given, compression off.
pub async fn start_their_server(peer: Peer, cert: Option<&TestCert>) -> PeerServer {
    start_their_server_with(peer, cert, None).await
}

/// As [`start_their_server`], with permessage-deflate on as `deflate` says
/// (`--deflate SPEC`: `on`, or parameters such as
/// `server_no_context_takeover,client_max_window_bits=10`).
pub async fn start_their_server_with(
    peer: Peer,
    cert: Option<&TestCert>,
    deflate: Option<&str>,
) -> PeerServer {
    let mut args = Vec::new();
    if let Some(spec) = deflate {
        args.extend(["--deflate".to_owned(), spec.to_owned()]);
    }
    for protocol in SERVER_PROTOCOLS {
        args.extend(["--protocol".to_owned(), protocol.to_owned()]);
    }
    if let Some(cert) = cert {
        args.extend(["--cert".to_owned(), cert.cert_path()]);
        args.extend(["--key".to_owned(), cert.key_path()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    PeerServer::start(peer, &args).await
}

/// Our client's settings: [`CLIENT_PROTOCOLS`] offered, an `X-Peer: duplex`
/// header.
pub fn client(url: &str) -> ClientBuilder {
    ClientBuilder::new(url)
        .protocols(CLIENT_PROTOCOLS)
        .header("X-Peer", "duplex")
        .unwrap()
}

/// Connects, failing the test on an error or a timeout.
pub async fn connect(builder: ClientBuilder, what: &str) -> Client {
    within(what, builder.connect())
        .await
        .unwrap_or_else(|err| panic!("{what}: {err}"))
}

/// Sends `message`, failing the test on an error or a timeout.
pub async fn send<S>(ws: &mut WebSocket<S>, message: Message, what: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(what, ws.send(message))
        .await
        .unwrap_or_else(|err| panic!("{what}: sending failed: {err}"));
}

/// Sends `message` and checks that the next message is the same.
pub async fn echo<S>(ws: &mut WebSocket<S>, message: Message, what: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send(ws, message.clone(), what).await;
    let back = next_message(ws, what).await;
    assert_message(&back, &message, &format!("{what}: the echo"));
}

/// Sends a scripted command and returns the next message.
pub async fn ask<S>(ws: &mut WebSocket<S>, command: &str) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send(ws, Message::text(command), command).await;
    next_message(ws, command).await
}

// ----- our client, their server -----

/// Our client against their server: the subprotocol agreed and request headers
/// seen, then text, binary, empty and 16 MiB messages, and a burst of queued
/// messages, echoed back unchanged.
pub async fn our_client_messages(peer: Peer) {
    let server = start_their_server(peer, None).await;
    let url = format!("ws://127.0.0.1:{}/messages", server.port());
    let mut ws = connect(client(&url), "connecting").await;

    // We offer permessage-deflate (duplex's default); their server, with
    // compression off, declines: these messages cross uncompressed.
    assert_eq!(
        ws.deflate(),
        None,
        "compression agreed with compression off"
    );
    let reply = ask(&mut ws, "cmd:extensions").await;
    assert_message(
        &reply,
        &Message::text("extensions:"),
        "their answer's extensions",
    );

    assert_eq!(ws.protocol(), Some("chat.v2"), "the agreed subprotocol");
    let reply = ask(&mut ws, "cmd:protocol").await;
    assert_message(
        &reply,
        &Message::text("protocol:chat.v2"),
        "their view of the subprotocol",
    );
    let reply = ask(&mut ws, "cmd:header X-Peer").await;
    assert_message(
        &reply,
        &Message::text("header:duplex"),
        "our request header, as they saw it",
    );

    echo(&mut ws, Message::text("hello from duplex ☃"), "text").await;
    echo(
        &mut ws,
        Message::binary((0..=255).collect::<Vec<u8>>()),
        "binary",
    )
    .await;
    echo(&mut ws, Message::text(""), "empty text").await;
    echo(&mut ws, Message::binary(Vec::new()), "empty binary").await;
    echo(&mut ws, Message::binary(big_binary()), "16 MiB binary").await;
    echo(&mut ws, Message::text(big_text()), "16 MiB text").await;

    // A burst: queued without waiting, written together, echoed in order.
    let burst: Vec<Message> = (0..50)
        .map(|i| match i % 2 {
            0 => Message::text(format!("burst {i}")),
            _ => Message::binary(vec![i as u8; i * 100]),
        })
        .collect();
    for message in &burst {
        within("queueing the burst", ws.feed(message.clone()))
            .await
            .expect("feed");
    }
    within("flushing the burst", ws.flush())
        .await
        .expect("flush");
    for (i, message) in burst.iter().enumerate() {
        let back = next_message(&mut ws, "the burst's echoes").await;
        assert_message(&back, message, &format!("burst message {i}"));
    }

    within("closing", ws.close(CloseCode::NORMAL, "done"))
        .await
        .expect("close");
    assert!(ws.close_info().expect("closed").was_clean, "a clean close");
}

/// Their fragmented messages (text in 3 frames, binary in 3 frames) arrive
/// here whole, and the stream stays in step after them.
pub async fn their_fragmented_messages_arrive_whole(peer: Peer) {
    let server = start_their_server(peer, None).await;
    let url = format!("ws://127.0.0.1:{}/fragments", server.port());
    let mut ws = connect(client(&url), "connecting").await;

    let text = ask(&mut ws, "cmd:fragments").await;
    assert_message(
        &text,
        &Message::text("fragmented ☃ message"),
        "their fragmented text",
    );
    let binary = ask(&mut ws, "cmd:fragments-binary").await;
    assert_message(
        &binary,
        &Message::binary((0..10).collect::<Vec<u8>>()),
        "their fragmented binary",
    );
    echo(
        &mut ws,
        Message::text("after the fragments"),
        "a message after them",
    )
    .await;

    within("closing", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
}

/// Our fragmented messages reach them whole: text split inside a code point,
/// binary in three fragments with a ping between two of them, and a message
/// after them; their echo server sends each back as one message.
pub async fn our_fragmented_messages_arrive_whole(peer: Peer) {
    use duplex::Fragment;
    let server = start_their_server(peer, None).await;
    let url = format!("ws://127.0.0.1:{}/our-fragments", server.port());
    let mut ws = connect(client(&url), "connecting").await;

    let text = "fragments ☃ from duplex".as_bytes();
    // Byte 12 is inside the snowman (bytes 10..13).
    let (first, rest) = text.split_at(12);
    within("text fragments", async {
        ws.send_fragment(Fragment::Text, first.to_vec(), false)
            .await?;
        ws.send_fragment(Fragment::Continuation, rest.to_vec(), true)
            .await
    })
    .await
    .expect("sending text fragments");
    let back = next_message(&mut ws, "the text echo").await;
    assert_message(
        &back,
        &Message::text("fragments ☃ from duplex"),
        "our fragmented text",
    );

    let binary: Vec<u8> = (0..=255).collect();
    within("binary fragments", async {
        ws.send_fragment(Fragment::Binary, binary[..100].to_vec(), false)
            .await?;
        ws.send(Message::ping("between")).await?;
        ws.send_fragment(Fragment::Continuation, binary[100..200].to_vec(), false)
            .await?;
        ws.send_fragment(Fragment::Continuation, binary[200..].to_vec(), true)
            .await
    })
    .await
    .expect("sending binary fragments");
    let pong = next_message(&mut ws, "the pong").await;
    assert_message(
        &pong,
        &Message::pong("between"),
        "their pong between fragments",
    );
    let back = next_message(&mut ws, "the binary echo").await;
    assert_message(&back, &Message::binary(binary), "our fragmented binary");
    echo(
        &mut ws,
        Message::text("after the fragments"),
        "a message after them",
    )
    .await;

    within("closing", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
}

/// Our ping gets their pong with its payload; their ping is shown to us and
/// answered by duplex on its own, which they confirm.
pub async fn ping_pong_both_ways(peer: Peer) {
    let mut server = start_their_server(peer, None).await;
    let url = format!("ws://127.0.0.1:{}/ping", server.port());
    let mut ws = connect(client(&url), "connecting").await;

    send(&mut ws, Message::ping("rs-client-ping"), "our ping").await;
    let pong = next_message(&mut ws, "their pong").await;
    assert_message(&pong, &Message::pong("rs-client-ping"), "their pong");

    let payload = format!("{}-ping", peer.tag());
    let ping = ask(&mut ws, "cmd:ping").await;
    assert_message(&ping, &Message::ping(payload.clone()), "their ping");
    let confirmation = next_message(&mut ws, "their word that our pong came").await;
    assert_message(
        &confirmation,
        &Message::text(format!("pong:{payload}")),
        "their word that our pong came",
    );
    assert_eq!(server.expect_line("pong ").await, format!("pong {payload}"));

    within("closing", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
}

/// We close with 4000 "bye": the closing handshake completes (clean, their
/// echo of 4000), they report our code and reason, and nothing more can be
/// sent.
pub async fn our_close_reaches_them(peer: Peer) {
    let mut server = start_their_server(peer, None).await;
    let url = format!("ws://127.0.0.1:{}/our-close", server.port());
    let mut ws = connect(client(&url), "connecting").await;
    echo(&mut ws, Message::text("before the close"), "text").await;

    within("closing", ws.close(CloseCode(4000), "bye"))
        .await
        .unwrap_or_else(|err| panic!("close(4000, \"bye\") failed: {err}"));
    let info = ws.close_info().expect("closed after close()");
    assert!(info.was_clean, "the close handshake completed: {info:?}");
    assert_eq!(info.code, CloseCode(4000), "they echo our code: {info:?}");
    assert!(
        matches!(ws.received_close(), Some(CloseStatus::Frame(frame)) if frame.code == CloseCode(4000)),
        "their close frame: {:?}",
        ws.received_close()
    );
    assert_eq!(server.expect_line("closed ").await, "closed 4000 bye");

    let late = ws.send(Message::text("too late")).await;
    assert!(
        matches!(late, Err(Error::Closed { was_clean: true })),
        "sending after close: {late:?}"
    );
}

/// They close with 4001 "server says bye": we receive their close frame, the
/// stream ends without an error, and `received_close` and `close_info` tell
/// their code and reason; they see our echo of 4001 and their reason.
pub async fn their_close_reaches_us(peer: Peer) {
    let mut server = start_their_server(peer, None).await;
    let url = format!("ws://127.0.0.1:{}/their-close", server.port());
    let mut ws = connect(client(&url), "connecting").await;

    let want = CloseFrame::new(CloseCode(4001), "server says bye");
    let close = ask(&mut ws, "cmd:close 4001 server says bye").await;
    assert_message(&close, &Message::Close(Some(want.clone())), "their close");
    match within("the end of the stream", ws.recv()).await {
        None => {}
        Some(Ok(message)) => panic!("after their close: {}", describe(&message)),
        Some(Err(err)) => panic!("after their close, an error: {err}"),
    }
    assert_eq!(ws.received_close(), Some(&CloseStatus::Frame(want)));
    let info = ws.close_info().expect("closed");
    assert_eq!(info.code, CloseCode(4001), "{info:?}");
    assert_eq!(info.reason, "server says bye", "{info:?}");
    assert!(info.was_clean, "{info:?}");
    assert_eq!(
        server.expect_line("closed ").await,
        "closed 4001 server says bye"
    );
}

/// wss:// with a self-signed certificate: refused until trusted; trusted with
/// `tls_root`, the core exchange (subprotocol, text, binary, 16 MiB, a
/// fragmented message, close with a code and reason) works over TLS.
pub async fn our_client_over_tls(peer: Peer) {
    let cert = TestCert::generate();
    let mut server = start_their_server(peer, Some(&cert)).await;
    let url = format!("wss://localhost:{}/tls", server.port());

    let untrusted = within("connecting untrusted", client(&url).connect()).await;
    match untrusted {
        Err(Error::Tls {
            server_name: Some(name),
            ..
        }) if name == "localhost" => {}
        Err(other) => panic!("an untrusted certificate must fail with a TLS error, not: {other}"),
        Ok(_) => panic!("an untrusted self-signed certificate was accepted"),
    }

    let mut ws = connect(
        client(&url).tls_root(cert.cert_der.clone()),
        "connecting with the root",
    )
    .await;
    assert!(ws.get_ref().is_tls());
    assert_eq!(ws.protocol(), Some("chat.v2"), "the agreed subprotocol");
    echo(&mut ws, Message::text("secret ☃"), "text over TLS").await;
    echo(
        &mut ws,
        Message::binary((0..=255).collect::<Vec<u8>>()),
        "binary over TLS",
    )
    .await;
    echo(
        &mut ws,
        Message::binary(big_binary()),
        "16 MiB binary over TLS",
    )
    .await;
    let text = ask(&mut ws, "cmd:fragments").await;
    assert_message(
        &text,
        &Message::text("fragmented ☃ message"),
        "their fragmented text over TLS",
    );

    within("closing", ws.close(CloseCode(4000), "bye"))
        .await
        .unwrap_or_else(|err| panic!("close over TLS failed: {err}"));
    let info = ws.close_info().expect("closed");
    assert!(info.was_clean && info.code == CloseCode(4000), "{info:?}");
    assert_eq!(server.expect_line("closed ").await, "closed 4000 bye");
}

// ----- their client, our server -----

/// Their client runs its scenario against our server (ws://, or wss:// with a
/// self-signed certificate it trusts through its CA file) and must pass every
/// step; then what our side received is checked, connection by connection.
/// Their client offers no compression (our server would accept it): every
/// connection runs uncompressed.
pub async fn their_client_our_server(peer: Peer, tls: bool) {
    let cert = tls.then(TestCert::generate);
    let server = EchoServer::start(cert.as_ref().map(TestCert::server_config)).await;
    let url = match &cert {
        None => format!("ws://127.0.0.1:{}", server.port()),
        Some(_) => format!("wss://{}:{}", peer.tls_host(), server.port()),
    };
    let mut args = vec![url.clone()];
    if let Some(cert) = &cert {
        args.extend([
            "--ca".to_owned(),
            cert.cert_path(),
            "--scenario".to_owned(),
            "tls".to_owned(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_client(peer, &args).await;
    if !run.status.success() {
        // Our side's view helps tell whose fault it is.
        eprintln!("our server's records: {:#?}", server.records());
    }
    run.assert_success();

    check_main(peer, &server.record("/main").await, false);
    if tls {
        return;
    }
    check_other_steps(&server, false).await;
}

/// What our server must have received on the `/server-closes` and
/// `/no-protocol` connections of their `full` scenario, compressed or not.
pub(crate) async fn check_other_steps(server: &EchoServer, deflate: bool) {
    let closes = server.record("/server-closes").await;
    check_compression(&closes, deflate);
    assert!(closes.errors.is_empty(), "{closes:?}");
    assert_eq!(
        closes.commands(),
        ["cmd:close 4001 server says bye"],
        "{closes:?}"
    );
    assert!(
        matches!(&closes.received_close, Some(CloseStatus::Frame(frame)) if frame.code == CloseCode(4001)),
        "they echo our close code 4001: {closes:?}"
    );
    let info = closes.close_info.clone().expect("closed");
    assert!(info.was_clean && info.code == CloseCode(4001), "{closes:?}");

    let plain = server.record("/no-protocol").await;
    check_compression(&plain, deflate);
    assert!(plain.errors.is_empty(), "{plain:?}");
    assert_eq!(plain.protocol, None, "no common subprotocol: {plain:?}");
    assert_eq!(plain.commands(), ["cmd:header X-Peer"], "{plain:?}");
    let info = plain.close_info.clone().expect("closed");
    assert!(
        info.was_clean && info.code == CloseCode::NORMAL,
        "{plain:?}"
    );
}

/// Fails the test unless compression is on (`deflate`) or off on this
/// connection, as our side saw it: the agreed parameters, our answer.
#[track_caller]
pub(crate) fn check_compression(record: &ConnRecord, deflate: bool) {
    if deflate {
        assert!(
            record.deflate.is_some(),
            "compression not agreed on {}: {record:?}",
            record.path
        );
        assert!(
            record
                .extensions_answered
                .as_deref()
                .is_some_and(|answer| answer.starts_with("permessage-deflate")),
            "our answer on {}: {record:?}",
            record.path
        );
    } else {
        assert_eq!(record.deflate, None, "compression agreed: {record:?}");
        assert_eq!(
            record.extensions_offered(),
            None,
            "their client offered extensions: {record:?}"
        );
        assert_eq!(record.extensions_answered, None, "{record:?}");
    }
}

/// What our server must have received on their `/main` connection; with
/// `deflate`, compressed, after their `cmd:extensions`.
pub(crate) fn check_main(peer: Peer, main: &ConnRecord, deflate: bool) {
    check_compression(main, deflate);
    assert!(main.errors.is_empty(), "errors on our side: {main:?}");
    assert_eq!(main.protocol.as_deref(), Some("chat.v2"), "{main:?}");
    assert_eq!(
        main.headers.get("x-peer").and_then(|v| v.to_str().ok()),
        Some(peer.client_header()),
        "their request header"
    );

    let hello = match peer {
        Peer::Python => "hello from python ☃",
        Peer::Node => "hello from node ☃",
    };
    let want = [
        Message::text(hello),
        Message::binary((0..=255).collect::<Vec<u8>>()),
        Message::text(""),
        Message::binary(big_binary()),
        Message::text(big_text()),
        // Sent in 3 frames each: here whole.
        Message::text("fragmented ☃ message"),
        Message::binary((0..6).collect::<Vec<u8>>()),
    ];
    let got = main.data_messages();
    assert_eq!(
        got.len(),
        want.len(),
        "their data messages: {:?}",
        got.iter().map(|m| describe(m)).collect::<Vec<_>>()
    );
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_message(got, want, &format!("their data message {i}"));
    }
    let commands: &[&str] = if deflate {
        &["cmd:extensions", "cmd:protocol", "cmd:ping"]
    } else {
        &["cmd:protocol", "cmd:ping"]
    };
    assert_eq!(main.commands(), commands, "{main:?}");
    let their_ping = Message::ping(format!("{}-client-ping", peer.tag()));
    assert!(main.received.contains(&their_ping), "their ping: {main:?}");
    assert!(
        main.received.contains(&Message::pong("rs-ping")),
        "their pong to our ping: {main:?}"
    );

    let want_close = CloseFrame::new(CloseCode(4002), "client says bye");
    assert_eq!(
        main.received_close,
        Some(CloseStatus::Frame(want_close)),
        "{main:?}"
    );
    let info = main.close_info.clone().expect("closed");
    assert_eq!(info.code, CloseCode(4002), "{main:?}");
    assert_eq!(info.reason, "client says bye", "{main:?}");
    assert!(info.was_clean, "{main:?}");
}
