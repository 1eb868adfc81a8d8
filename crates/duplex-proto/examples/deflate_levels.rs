//! What each compression level buys on the traffic a real-time server sends:
//! 100,000 small JSON messages (a ticker feed) through one connection with
//! context takeover. Prints bytes on the wire, the ratio, and messages
//! compressed per second on one core.
//!
//! Run: `cargo run --release -p duplex-proto --example deflate_levels`

use std::time::Instant;

use duplex_proto::deflate::DeflateParams;
use duplex_proto::{Connection, Limits, Message};

const MESSAGES: u64 = 100_000;

fn update(i: u64) -> String {
    let price = (i.wrapping_mul(2_654_435_761) % 100_000) as f64 / 100.0;
    format!(
        "{{\"push\":\"message\",\"channel\":\"ticker:AC{}\",\"offset\":{i},\
         \"data\":{{\"symbol\":\"AC{}\",\"price\":{price},\"volume\":{}}}}}",
        i % 50,
        i % 50,
        i * 7 % 1000
    )
}

fn main() {
    let updates: Vec<String> = (0..MESSAGES).map(update).collect();
    let raw: usize = updates.iter().map(String::len).sum();
    println!(
        "{MESSAGES} messages, {raw} bytes of JSON (average {} bytes)\n",
        raw as u64 / MESSAGES
    );
    println!("| level | bytes sent | ratio | messages/s |");
    println!("| --- | --- | --- | --- |");
    for level in [1, 3, 6, 9] {
        let mut server = Connection::server(Limits::default());
        server.set_deflate(DeflateParams {
            local_no_context_takeover: false,
            remote_no_context_takeover: false,
            local_max_window_bits: 15,
            remote_max_window_bits: 15,
            level,
            threshold: 0,
        });
        let mut sent = 0;
        let started = Instant::now();
        for text in &updates {
            server.send(Message::text(text.as_str())).unwrap();
            while let Some(chunk) = server.take_output() {
                sent += chunk.len();
            }
        }
        let rate = MESSAGES as f64 / started.elapsed().as_secs_f64();
        println!(
            "| {level} | {sent} | {:.2} | {:.0} |",
            raw as f64 / sent as f64,
            rate
        );
    }
}
