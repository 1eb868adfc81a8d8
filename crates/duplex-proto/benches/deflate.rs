//! permessage-deflate throughput: compressing messages on send, inflating them
//! on receive, both through a `Connection`, with context takeover (the steady
//! state of a long-lived connection). Throughput counts uncompressed bytes.
//!
//! Run: `cargo bench -p duplex-proto --bench deflate`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::deflate::DeflateParams;
use duplex_proto::rng::SequenceMask;
use duplex_proto::{Connection, Limits, Message};

const SIZES: [(usize, &str); 3] = [(1024, "1KiB"), (16 * 1024, "16KiB"), (1024 * 1024, "1MiB")];

fn params(level: u32) -> DeflateParams {
    DeflateParams {
        local_no_context_takeover: false,
        remote_no_context_takeover: false,
        local_max_window_bits: 15,
        remote_max_window_bits: 15,
        level,
        threshold: 0,
    }
}

/// JSON price updates, the kind of text a live-data feed sends: repetitive in
/// shape, varying in values.
fn json(size: usize, first: u64) -> String {
    let mut text = String::with_capacity(size + 100);
    let mut i = first;
    while text.len() < size {
        let price = (i.wrapping_mul(2_654_435_761) % 100_000) as f64 / 100.0;
        text.push_str(&format!(
            "{{\"channel\":\"ticker:AC{}\",\"offset\":{i},\"data\":{{\"price\":{price},\"volume\":{}}}}}\n",
            i % 50,
            i * 7 % 1000
        ));
        i += 1;
    }
    text.truncate(size);
    text
}

fn compress(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate_compress");
    for level in [1, 6] {
        for (size, name) in SIZES {
            // Distinct messages in turn: an identical message repeated would
            // compress to one back-reference and flatter the figures.
            let messages: Vec<Message> = (0..64)
                .map(|n| Message::text(json(size, n * 1_000_003)))
                .collect();
            let mut next = messages.iter().cycle();
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(format!("level{level}/{name}"), |b| {
                let mut server = Connection::server(Limits::default());
                server.set_deflate(params(level));
                b.iter(|| {
                    let message = next.next().unwrap();
                    server.send(message.clone()).unwrap();
                    while let Some(chunk) = server.take_output() {
                        black_box(chunk);
                    }
                })
            });
        }
    }
    group.finish();
}

fn inflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate_inflate");
    for (size, name) in SIZES {
        // 64 messages compressed by a client with context takeover, as one
        // stream of frames for the server to inflate.
        let mut client =
            Connection::client_with_mask_source(Limits::default(), Box::new(SequenceMask::new(7)));
        client.set_deflate(params(6));
        let count = (64 << 20) / size / 64;
        let count = count.clamp(1, 64);
        for n in 0..count {
            client
                .send(Message::text(json(size, n as u64 * 1_000_003)))
                .unwrap();
        }
        let mut wire = Vec::new();
        while let Some(chunk) = client.take_output() {
            wire.extend_from_slice(&chunk);
        }
        group.throughput(Throughput::Bytes((size * count) as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    let mut server = Connection::server(Limits::default());
                    server.set_deflate(params(6));
                    server.receive(&wire);
                    server
                },
                |server| {
                    let mut n = 0;
                    while let Some(message) = server.next_message().unwrap() {
                        black_box(&message);
                        n += 1;
                    }
                    assert_eq!(n, count);
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, compress, inflate);
criterion_main!(benches);
