//! A client and a server from duplex-proto, wired back to back in memory: the
//! opening handshake, a few messages each way, and the closing handshake, with
//! the bytes that cross the wire printed as they go.
//!
//! Run: `cargo run -p duplex-proto --example in_memory`

use bytes::BytesMut;
use duplex_proto::handshake::{self, ClientRequest};
use duplex_proto::rng::ThreadRngMask;
use duplex_proto::{CloseCode, Connection, Limits, Message};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Limits::default();

    let (request, client_hs) = ClientRequest::new("ws://localhost/chat".parse()?)
        .protocol("chat.v1")
        .build(&mut ThreadRngMask)?;
    let mut wire = BytesMut::new();
    handshake::write_request(&request, &mut wire);
    println!(
        "client -> server ({} bytes):\n{}",
        wire.len(),
        String::from_utf8_lossy(&wire)
    );

    let (request, _) = handshake::parse_request(&wire, &config)?.ok_or("incomplete request")?;
    let upgrade = handshake::validate_request(&request)?;
    let response = upgrade.response(upgrade.protocols().first().map(String::as_str), &[])?;
    let mut wire = BytesMut::new();
    handshake::write_response(&response, &mut wire);
    println!(
        "server -> client ({} bytes):\n{}",
        wire.len(),
        String::from_utf8_lossy(&wire)
    );

    let (response, _) = handshake::parse_response(&wire, &config)?.ok_or("incomplete response")?;
    let negotiated = client_hs.validate(&response)?;
    println!("negotiated subprotocol: {:?}\n", negotiated.protocol);

    let mut client = Connection::client(config.clone());
    let mut server = Connection::server(config);

    client.send(Message::text("Hello, server"))?;
    client.send(Message::binary(vec![1, 2, 3]))?;
    client.send(Message::ping(&b"are you there?"[..]))?;
    transfer("client", &mut client, &mut server);
    while let Some(message) = server.next_message()? {
        println!("server received {message:?}");
        if let Message::Text(text) = message {
            server.send(Message::text(format!("echo: {text}")))?;
        }
    }

    server.close(CloseCode::NORMAL, "done")?;
    transfer("server", &mut server, &mut client);
    while let Some(message) = client.next_message()? {
        println!("client received {message:?}");
    }
    transfer("client", &mut client, &mut server);
    while let Some(message) = server.next_message()? {
        println!("server received {message:?}");
    }

    // The server closes the transport first; the client then sees end of input.
    assert!(server.should_close_transport());
    server.transport_closed();
    client.receive_eof();
    client.next_message()?;
    println!(
        "\nclient: {:?}, {:?}",
        client.ready_state(),
        client.close_info()
    );
    println!(
        "server: {:?}, {:?}",
        server.ready_state(),
        server.close_info()
    );
    Ok(())
}

/// Moves `from`'s output to `to`, printing it in hex.
fn transfer(name: &str, from: &mut Connection, to: &mut Connection) {
    while let Some(chunk) = from.take_output() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        println!("{name} sends {} bytes: {}", chunk.len(), hex.join(" "));
        to.receive(&chunk);
    }
}
