//! The exchanges with permessage-deflate (RFC 7692) on at both ends, shared by
//! `interop_python.rs` and `interop_node.rs`. Each checks that compression
//! was really agreed: on our side with `WebSocket::deflate` (the parameters,
//! field by field), on theirs with their own report (`cmd:extensions` on their
//! server, the `extensions <step> <answer>` lines of their client), and the
//! `Sec-WebSocket-Extensions` offer and answer as they crossed the wire (seen
//! through a [`Tap`]).
//!
//! Our client against their server: [`our_client_messages`],
//! [`our_client_reduced_offer`], [`our_client_their_limits`],
//! [`our_client_saves_bytes`]. Their client against our server:
//! [`their_client_messages`], [`their_client_reduced_offer`],
//! [`their_client_our_limits`].
//!
//! The content is chosen to compress only partly ([`json_text`],
//! [`partly_random_binary`]) and, for context takeover, to be many similar
//! messages ([`json_message`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use duplex::{ClientBuilder, CloseCode, DeflateConfig, DeflateParams, Message, WebSocket};
use tokio::net::TcpStream;

use super::{ask, check_main, check_other_steps, client, echo, send, start_their_server_with};
use crate::{
    BIG, ConnRecord, EchoServer, JSON_MESSAGES, JSON_TAIL, Peer, Tap, TapCounts, assert_message,
    describe, json_message, json_text, next_message, partly_random_binary, run_client, within,
};

/// The header that carries the offer and the answer.
const EXTENSIONS: &str = "sec-websocket-extensions";

/// Our client's connection when it runs through a [`Tap`].
pub type TappedClient = WebSocket<Tap<TcpStream>>;

/// Connects to their server at 127.0.0.1:`port` through a [`Tap`], with
/// `ClientBuilder::connect_on`, failing the test on an error or a timeout.
pub async fn connect_tapped(
    builder: ClientBuilder,
    port: u16,
    what: &str,
) -> (TappedClient, Arc<TapCounts>) {
    let tcp = within(what, TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap_or_else(|err| panic!("{what}: TCP connect: {err}"));
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let tap = Tap::new(tcp);
    let counts = tap.counts();
    let ws = within(what, builder.connect_on(tap))
        .await
        .unwrap_or_else(|err| {
            panic!(
                "{what}: {err} (offer {:?}, answer {:?})",
                counts.written_header(EXTENSIONS),
                counts.read_header(EXTENSIONS)
            )
        });
    (ws, counts)
}

/// The parameters of an extension header value as a set, so that two values
/// compare whatever their order and spacing:
/// `{"permessage-deflate", "client_max_window_bits=10", ...}`.
pub fn params_of(header: &str) -> BTreeSet<String> {
    header
        .split(';')
        .map(|param| param.trim().to_ascii_lowercase().replace(' ', ""))
        .filter(|param| !param.is_empty())
        .collect()
}

/// A [`DeflateParams`] at the default level, from one end's view.
fn params(
    local_no_context_takeover: bool,
    remote_no_context_takeover: bool,
    local_max_window_bits: u8,
    remote_max_window_bits: u8,
    threshold: usize,
) -> DeflateParams {
    DeflateParams {
        local_no_context_takeover,
        remote_no_context_takeover,
        local_max_window_bits,
        remote_max_window_bits,
        level: DeflateConfig::default().level,
        threshold,
    }
}

/// Fails the test unless compression is on at both ends of our client's
/// connection as expected: their answer as it arrived is `want_answer` (order
/// of the parameters aside), our agreed parameters are `want`, and their own
/// report of their answer (`cmd:extensions`) is what arrived.
async fn assert_agreed(
    ws: &mut TappedClient,
    counts: &TapCounts,
    want_answer: &str,
    want: DeflateParams,
) {
    let offer = counts.written_header(EXTENSIONS);
    let answer = counts.read_header(EXTENSIONS);
    let context = format!("our offer {offer:?}, their answer {answer:?}");
    assert!(
        offer
            .as_deref()
            .is_some_and(|offer| offer.starts_with("permessage-deflate")),
        "we offered no compression ({context})"
    );
    let answer = answer.unwrap_or_else(|| panic!("they declined compression ({context})"));
    assert_eq!(
        params_of(&answer),
        params_of(want_answer),
        "their answer ({context})"
    );
    assert_eq!(
        ws.deflate(),
        Some(&want),
        "our agreed parameters ({context})"
    );
    let reply = ask(ws, "cmd:extensions").await;
    assert_message(
        &reply,
        &Message::text(format!("extensions:{answer}")),
        &format!("their report of their answer ({context})"),
    );
}

/// Sends the [`JSON_MESSAGES`] similar JSON messages one by one, checking
/// every echo: with context takeover, each builds on the ones before, at both
/// ends.
async fn json_messages(ws: &mut TappedClient) {
    for i in 0..JSON_MESSAGES {
        echo(
            ws,
            Message::text(json_message(i)),
            &format!("JSON message {i}"),
        )
        .await;
    }
}

/// Closes with 1000 and checks that the close was clean.
async fn close(ws: &mut TappedClient) {
    within("closing", ws.close(CloseCode::NORMAL, "done"))
        .await
        .expect("close");
    let info = ws.close_info().expect("closed");
    assert!(info.was_clean, "a clean close: {info:?}");
}

// ----- our client, their server -----

/// What their server answers our default offer when it runs with its
/// library's defaults, and the parameters that follow for our client.
fn their_default_answer(peer: Peer, threshold: usize) -> (&'static str, DeflateParams) {
    match peer {
        // websockets' server limits both windows to 12 bits by default.
        Peer::Python => (
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
            params(false, false, 12, 12, threshold),
        ),
        Peer::Node => (
            "permessage-deflate",
            params(false, false, 15, 15, threshold),
        ),
    }
}

/// Our client against their server, compression on at both ends (their
/// library's defaults, ours with a threshold of 0 so that even the smallest
/// messages are compressed): text, binary, empty, their compressed fragmented
/// messages, a ping, 16 MiB of JSON-like text and 16 MiB of binary that
/// compress only partly, then 500 similar JSON messages (context takeover),
/// each echoed back unchanged.
pub async fn our_client_messages(peer: Peer) {
    let server = start_their_server_with(peer, None, Some("on")).await;
    let url = format!("ws://127.0.0.1:{}/deflate", server.port());
    let builder = client(&url).deflate(DeflateConfig::default().threshold(0));
    let (mut ws, counts) = connect_tapped(builder, server.port(), "connecting").await;
    let (answer, want) = their_default_answer(peer, 0);
    assert_agreed(&mut ws, &counts, answer, want).await;
    assert_eq!(ws.protocol(), Some("chat.v2"), "the agreed subprotocol");

    echo(&mut ws, Message::text("hello from duplex ☃"), "text").await;
    echo(
        &mut ws,
        Message::binary((0..=255).collect::<Vec<u8>>()),
        "binary",
    )
    .await;
    echo(&mut ws, Message::text(""), "empty text").await;
    echo(&mut ws, Message::binary(Vec::new()), "empty binary").await;

    let text = ask(&mut ws, "cmd:fragments").await;
    assert_message(
        &text,
        &Message::text("fragmented ☃ message"),
        "their fragmented text, compressed",
    );
    let binary = ask(&mut ws, "cmd:fragments-binary").await;
    assert_message(
        &binary,
        &Message::binary((0..10).collect::<Vec<u8>>()),
        "their fragmented binary, compressed",
    );
    let ping = ask(&mut ws, "cmd:fragments-ping").await;
    assert_message(
        &ping,
        &Message::ping("mid-message"),
        "their ping amid a compressed message",
    );
    let text = next_message(&mut ws, "the message around their ping").await;
    assert_message(
        &text,
        &Message::text("fragmented ☃ message"),
        "their fragmented text around a ping, compressed",
    );
    send(&mut ws, Message::ping("between compressed"), "our ping").await;
    let pong = next_message(&mut ws, "their pong").await;
    assert_message(&pong, &Message::pong("between compressed"), "their pong");

    echo(
        &mut ws,
        Message::text(json_text(BIG)),
        "16 MiB JSON-like text",
    )
    .await;
    echo(
        &mut ws,
        Message::binary(partly_random_binary(BIG)),
        "16 MiB partly random binary",
    )
    .await;
    json_messages(&mut ws).await;
    close(&mut ws).await;
}

/// Our client asks for less from their server at its defaults, twice: first
/// `server_no_context_takeover` with our window limited to 10 bits, then
/// `client_no_context_takeover` with their window limited to 9 bits. They
/// agree, the parameters on our side are what was negotiated, and the JSON
/// messages, a 256 KiB text and a 1 MiB binary, larger than any window, echo
/// unchanged.
pub async fn our_client_reduced_offer(peer: Peer) {
    let server = start_their_server_with(peer, None, Some("on")).await;
    let url = format!("ws://127.0.0.1:{}/reduced-offer", server.port());
    let ours = DeflateConfig::default()
        .server_no_context_takeover(true)
        .client_max_window_bits(10);
    let theirs = DeflateConfig::default()
        .client_no_context_takeover(true)
        .server_max_window_bits(9);
    let offers = match peer {
        // websockets limits the windows it is not asked about to 12 bits.
        Peer::Python => [
            (
                ours,
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; \
                 client_max_window_bits=10",
                params(false, true, 10, 12, 64),
            ),
            (
                theirs,
                "permessage-deflate; client_no_context_takeover; server_max_window_bits=9; \
                 client_max_window_bits=12",
                params(true, false, 12, 9, 64),
            ),
        ],
        Peer::Node => [
            (
                ours,
                "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
                params(false, true, 10, 15, 64),
            ),
            (
                theirs,
                "permessage-deflate; client_no_context_takeover; server_max_window_bits=9",
                params(true, false, 15, 9, 64),
            ),
        ],
    };
    for (config, answer, want) in offers {
        let builder = client(&url).deflate(config);
        let (mut ws, counts) = connect_tapped(builder, server.port(), "connecting").await;
        assert_agreed(&mut ws, &counts, answer, want).await;
        larger_than_windows(&mut ws).await;
        close(&mut ws).await;
    }
}

/// The JSON messages, then a 256 KiB text and a 1 MiB binary.
async fn larger_than_windows(ws: &mut TappedClient) {
    json_messages(ws).await;
    echo(
        ws,
        Message::text(json_text(JSON_TAIL)),
        "256 KiB JSON-like text",
    )
    .await;
    echo(
        ws,
        Message::binary(partly_random_binary(1 << 20)),
        "1 MiB partly random binary",
    )
    .await;
}

/// Their server imposes its limits (no context takeover either way, its
/// window 10 bits, ours 9) on our default offer: our client follows them, as
/// its parameters show, and the exchange of [`our_client_reduced_offer`]
/// works under them.
pub async fn our_client_their_limits(peer: Peer) {
    let spec = "server_no_context_takeover,client_no_context_takeover,\
                server_max_window_bits=10,client_max_window_bits=9";
    let server = start_their_server_with(peer, None, Some(spec)).await;
    let url = format!("ws://127.0.0.1:{}/their-limits", server.port());
    let (mut ws, counts) = connect_tapped(client(&url), server.port(), "connecting").await;
    let answer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                  server_max_window_bits=10; client_max_window_bits=9";
    assert_agreed(&mut ws, &counts, answer, params(true, true, 9, 10, 64)).await;
    larger_than_windows(&mut ws).await;
    close(&mut ws).await;
}

/// Bytes that crossed one connection while the JSON messages were exchanged.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    /// Bytes we read: their frames (their compressor's work).
    read: u64,
    /// Bytes we wrote: our frames (our compressor's work).
    written: u64,
}

/// Connects with `builder`, checks compression is on (`want`) or off, then
/// counts the bytes of the JSON messages' exchange.
async fn json_traffic(builder: ClientBuilder, port: u16, want: Option<DeflateParams>) -> Traffic {
    let (mut ws, counts) = connect_tapped(builder, port, "connecting").await;
    assert_eq!(ws.deflate(), want.as_ref(), "our agreed parameters");
    let reply = ask(&mut ws, "cmd:extensions").await;
    let on = reply
        .as_text()
        .is_some_and(|r| r.len() > "extensions:".len());
    assert_eq!(
        on,
        want.is_some(),
        "their report of compression: {}",
        describe(&reply)
    );
    let (read, written) = (counts.read(), counts.written());
    json_messages(&mut ws).await;
    let traffic = Traffic {
        read: counts.read() - read,
        written: counts.written() - written,
    };
    close(&mut ws).await;
    traffic
}

/// The wire really is compressed, and context is really taken over or not as
/// agreed: the same 500 JSON messages, counted through a [`Tap`], take
/// several times fewer bytes each way with compression than without, and at
/// least twice fewer with context takeover than with
/// `server_no_context_takeover` and `client_no_context_takeover`.
pub async fn our_client_saves_bytes(peer: Peer) {
    let server = start_their_server_with(peer, None, Some("on")).await;
    let url = format!("ws://127.0.0.1:{}/bytes", server.port());
    let port = server.port();
    let (_, on_params) = their_default_answer(peer, 64);

    let off = json_traffic(client(&url).no_deflate(), port, None).await;
    let on = json_traffic(client(&url), port, Some(on_params)).await;
    let no_takeover = DeflateConfig::default()
        .server_no_context_takeover(true)
        .client_no_context_takeover(true);
    let reset_params = DeflateParams {
        local_no_context_takeover: true,
        remote_no_context_takeover: true,
        ..on_params
    };
    let reset = json_traffic(client(&url).deflate(no_takeover), port, Some(reset_params)).await;

    let payload: usize = (0..JSON_MESSAGES).map(|i| json_message(i).len()).sum();
    eprintln!(
        "{}: {JSON_MESSAGES} JSON messages, {payload} bytes of payload each way; bytes read / \
         written: uncompressed {off:?}, compressed {on:?}, without context takeover {reset:?}",
        peer.name()
    );
    let (off_read, off_written) = (off.read, off.written);
    assert!(
        off_read >= payload as u64 && off_written >= payload as u64,
        "uncompressed, the payload crosses whole: {off:?}"
    );
    assert!(
        off_read >= 4 * on.read,
        "their compressor: {off_read} bytes uncompressed, {} compressed",
        on.read
    );
    assert!(
        off_written >= 4 * on.written,
        "our compressor: {off_written} bytes uncompressed, {} compressed",
        on.written
    );
    assert!(
        reset.read >= 2 * on.read && reset.written >= 2 * on.written,
        "context takeover must pay off: with it {on:?}, without {reset:?}"
    );
}

// ----- their client, our server -----

/// Fails the test unless our server agreed on `want` on this connection,
/// answering `want_answer` to their offer `want_offer` (order of the
/// parameters aside), and their client printed the same answer for `step`.
#[track_caller]
fn check_agreed(
    record: &ConnRecord,
    lines: &[(String, String)],
    step: &str,
    want_offer: &str,
    want_answer: &str,
    want: DeflateParams,
) {
    let offer = record.extensions_offered();
    let answer = record.extensions_answered.clone();
    let context = format!(
        "{}: their offer {offer:?}, our answer {answer:?}",
        record.path
    );
    assert_eq!(
        offer.as_deref().map(params_of),
        Some(params_of(want_offer)),
        "their offer ({context})"
    );
    assert_eq!(
        answer.as_deref().map(params_of),
        Some(params_of(want_answer)),
        "our answer ({context})"
    );
    assert_eq!(
        record.deflate,
        Some(want),
        "our agreed parameters ({context})"
    );
    let theirs: Vec<&String> = lines
        .iter()
        .filter(|(s, _)| s == step)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        theirs,
        [answer.as_ref().expect("checked above")],
        "the answer their client got ({context})"
    );
}

/// Checks the `/json` connection: the JSON messages and the 256 KiB text
/// arrived whole and in order, compressed at least `ratio` to 1 on the wire.
#[track_caller]
fn check_json(record: &ConnRecord, ratio: u64) {
    assert!(record.errors.is_empty(), "errors on our side: {record:?}");
    assert_eq!(record.commands(), ["cmd:extensions"], "{record:?}");
    let mut want: Vec<Message> = (0..JSON_MESSAGES)
        .map(|i| Message::text(json_message(i)))
        .collect();
    want.push(Message::text(json_text(JSON_TAIL)));
    let got = record.data_messages();
    assert_eq!(got.len(), want.len(), "their messages: {record:?}");
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_message(got, want, &format!("their message {i} on /json"));
    }
    check_clean_close(record);
    let payload: usize = want.iter().map(Message::len).sum();
    eprintln!(
        "{}: {} bytes read for {payload} bytes of payload",
        record.path, record.bytes_read
    );
    assert!(
        record.bytes_read * ratio <= payload as u64,
        "compressed {ratio} to 1 at least: {} bytes read for {payload} bytes of payload",
        record.bytes_read
    );
}

#[track_caller]
fn check_clean_close(record: &ConnRecord) {
    let info = record.close_info.clone().expect("closed");
    assert!(
        info.was_clean && info.code == CloseCode::NORMAL,
        "{record:?}"
    );
}

/// What their client offers with its library's defaults.
const THEIR_DEFAULT_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Their client runs its whole scenario with compression on (its library's
/// defaults; `--deflate on`) against our server at its defaults: the steps
/// without compression (the same content: text, binary, empty, 16 MiB,
/// fragmented, pings, closes) pass compressed, then 500 similar JSON messages
/// and 16 MiB of partly compressible text and binary; our side checks, on
/// every connection, that compression was agreed and what it received.
pub async fn their_client_messages(peer: Peer) {
    let server = EchoServer::start(None).await;
    let url = format!("ws://127.0.0.1:{}", server.port());
    let run = run_client(peer, &[&url, "--deflate", "on"]).await;
    if !run.status.success() {
        eprintln!("our server's records: {:#?}", server.records());
    }
    run.assert_success();
    eprintln!("the {} client's report:\n{}", peer.name(), run.stdout);
    let lines = run.extension_lines();
    let want = params(false, false, 15, 15, 64);

    for step in ["main", "server-closes", "no-protocol", "json", "big"] {
        let record = server.record(&format!("/{step}")).await;
        check_agreed(
            &record,
            &lines,
            step,
            THEIR_DEFAULT_OFFER,
            "permessage-deflate",
            want,
        );
    }
    check_main(peer, &server.record("/main").await, true);
    check_other_steps(&server, true).await;
    check_json(&server.record("/json").await, 4);

    let big = server.record("/big").await;
    assert!(big.errors.is_empty(), "errors on our side: {big:?}");
    let want = [
        Message::text(json_text(BIG)),
        Message::binary(partly_random_binary(BIG)),
    ];
    let got = big.data_messages();
    assert_eq!(got.len(), want.len(), "their messages: {big:?}");
    for (got, want) in got.iter().zip(&want) {
        assert_message(got, want, "their 16 MiB message");
    }
    check_clean_close(&big);
    let payload: usize = want.iter().map(Message::len).sum();
    assert!(
        big.bytes_read * 2 <= payload as u64,
        "compressed 2 to 1 at least: {} bytes read for {payload} bytes of payload",
        big.bytes_read
    );
}

/// Their client asks for less (`client_no_context_takeover`, our window
/// limited to 10 bits) from our server at its defaults: our parameters are
/// what was negotiated, and their `json` step passes under them.
pub async fn their_client_reduced_offer(peer: Peer) {
    let server = EchoServer::start(None).await;
    let url = format!("ws://127.0.0.1:{}", server.port());
    let spec = "client_no_context_takeover,server_max_window_bits=10";
    let run = run_client(peer, &[&url, "--scenario", "json", "--deflate", spec]).await;
    if !run.status.success() {
        eprintln!("our server's records: {:#?}", server.records());
    }
    run.assert_success();
    let record = server.record("/json").await;
    check_agreed(
        &record,
        &run.extension_lines(),
        "json",
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; \
         client_max_window_bits",
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
        params(false, true, 10, 15, 64),
    );
    check_json(&record, 2);
}

/// Our server imposes its limits (no context takeover either way, its window 9
/// bits, theirs 10) on their client's default offer: they follow them, and
/// their `json` step passes under them.
pub async fn their_client_our_limits(peer: Peer) {
    let config = DeflateConfig::default()
        .server_no_context_takeover(true)
        .client_no_context_takeover(true)
        .server_max_window_bits(9)
        .client_max_window_bits(10);
    let server = EchoServer::start_with(None, Some(config)).await;
    let url = format!("ws://127.0.0.1:{}", server.port());
    let run = run_client(peer, &[&url, "--scenario", "json", "--deflate", "on"]).await;
    if !run.status.success() {
        eprintln!("our server's records: {:#?}", server.records());
    }
    run.assert_success();
    let record = server.record("/json").await;
    check_agreed(
        &record,
        &run.extension_lines(),
        "json",
        THEIR_DEFAULT_OFFER,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=9; client_max_window_bits=10",
        params(true, true, 9, 10, 64),
    );
    check_json(&record, 2);
}
