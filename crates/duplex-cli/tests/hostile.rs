//! Hostile input against `duplex echo` over raw TCP: every kind of bad byte gets
//! the close code or HTTP status that names it, and the server goes on serving.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Echo, REQUEST, expect_close, expect_eof, frame, open, read_frame, read_head, tcp};

#[test]
fn echoes_text_and_binary_unchanged() {
    let echo = Echo::start(&[]);
    let mut ws = open(echo.addr);
    ws.write_all(&frame(0x81, "héllo".as_bytes())).unwrap();
    assert_eq!(read_frame(&mut ws), (0x81, "héllo".as_bytes().to_vec()));
    ws.write_all(&frame(0x82, &[0, 255, 7])).unwrap();
    assert_eq!(read_frame(&mut ws), (0x82, vec![0, 255, 7]));
    // A fragmented message comes back whole.
    ws.write_all(&frame(0x01, b"frag")).unwrap();
    ws.write_all(&frame(0x89, b"ping")).unwrap();
    ws.write_all(&frame(0x80, b"mented")).unwrap();
    assert_eq!(read_frame(&mut ws), (0x8a, b"ping".to_vec()));
    assert_eq!(read_frame(&mut ws), (0x81, b"fragmented".to_vec()));
    ws.write_all(&frame(0x88, &[0x03, 0xe8])).unwrap();
    expect_close(&mut ws, 1000);
}

#[test]
fn invalid_utf8_gets_1007() {
    let echo = Echo::start(&[]);
    let mut ws = open(echo.addr);
    ws.write_all(&frame(0x81, b"bad \xff")).unwrap();
    expect_close(&mut ws, 1007);
}

#[test]
fn invalid_utf8_is_caught_mid_fragment_before_the_frame_ends() {
    let echo = Echo::start(&[]);
    let mut ws = open(echo.addr);
    ws.write_all(&frame(0x01, b"fine so far ")).unwrap();
    let mut second = b"\xc3\x28".to_vec();
    second.extend(vec![b'x'; 100_000]);
    let second = frame(0x80, &second);
    // Only the start of the second fragment is sent; the rest never is.
    ws.write_all(&second[..20]).unwrap();
    expect_close(&mut ws, 1007);
}

#[test]
fn unmasked_client_frame_gets_1002() {
    let echo = Echo::start(&[]);
    let mut ws = open(echo.addr);
    ws.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    expect_close(&mut ws, 1002);
}

#[test]
fn protocol_violations_get_1002() {
    let echo = Echo::start(&[]);
    for bad in [
        frame(0x83, b""),           // unknown opcode
        frame(0xc1, b"x"),          // RSV1 without an extension
        frame(0x09, b""),           // fragmented ping
        frame(0x80, b"x"),          // continuation without a message
        frame(0x88, &[0x03]),       // 1-byte close payload
        frame(0x88, &[0x03, 0xed]), // close code 1005 on the wire
    ] {
        let mut ws = open(echo.addr);
        ws.write_all(&bad).unwrap();
        expect_close(&mut ws, 1002);
    }
}

#[test]
fn oversized_messages_get_1009_from_the_header() {
    let echo = Echo::start(&["--max-message-size", "1K"]);
    // One frame over the limit: only its header is sent.
    let mut ws = open(echo.addr);
    let big = frame(0x82, &[0u8; 2000]);
    ws.write_all(&big[..8]).unwrap();
    expect_close(&mut ws, 1009);
    // Fragments that add up past the limit.
    let mut ws = open(echo.addr);
    ws.write_all(&frame(0x02, &[0u8; 700])).unwrap();
    ws.write_all(&frame(0x80, &[0u8; 700])).unwrap();
    expect_close(&mut ws, 1009);
    // A length field claiming 2^62 bytes, with default limits.
    let echo = Echo::start(&[]);
    let mut ws = open(echo.addr);
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    ws.write_all(&header).unwrap();
    expect_close(&mut ws, 1009);
}

#[test]
fn a_garbage_handshake_gets_400() {
    let echo = Echo::start(&[]);
    let mut stream = tcp(echo.addr);
    stream
        .write_all(&[
            0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
        ])
        .unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
}

#[test]
fn a_plain_get_gets_426_and_a_post_405() {
    let echo = Echo::start(&[]);
    let mut stream = tcp(echo.addr);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 426 "), "{head}");
    assert!(head.contains("sec-websocket-version: 13"), "{head}");

    let mut stream = tcp(echo.addr);
    let post = String::from_utf8_lossy(REQUEST).replacen("GET", "POST", 1);
    stream.write_all(post.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
}

#[test]
fn oversized_headers_get_431() {
    let echo = Echo::start(&[]);
    let mut stream = tcp(echo.addr);
    let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nCookie: ".to_vec();
    request.extend(vec![b'a'; 20_000]);
    // The server answers as soon as the limit is passed; it may stop reading.
    let _ = stream.write_all(&request);
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
}

#[test]
fn an_incomplete_handshake_times_out() {
    let echo = Echo::start(&["--handshake-timeout", "0.5"]);
    let mut stream = tcp(echo.addr);
    stream.write_all(b"GET / HTTP/1.1\r\nHost: loc").unwrap();
    let started = Instant::now();
    expect_eof(&mut stream);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

#[test]
fn random_bytes_never_take_the_server_down() {
    let mut echo = Echo::start(&["--threads", "2"]);
    // A deterministic generator: the same bytes every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let mut ws = if round % 3 == 0 {
            tcp(echo.addr)
        } else {
            open(echo.addr)
        };
        let len = (next() % 400) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = ws.write_all(&bytes);
        let _ = ws.shutdown(std::net::Shutdown::Write);
        // Whatever the server answers, it must end the connection.
        let mut sink = Vec::new();
        let _ = ws.read_to_end(&mut sink);
    }
    assert!(echo.is_running(), "the server died");
    let mut ws = open(echo.addr);
    ws.write_all(&frame(0x81, b"still here")).unwrap();
    assert_eq!(read_frame(&mut ws), (0x81, b"still here".to_vec()));
}
