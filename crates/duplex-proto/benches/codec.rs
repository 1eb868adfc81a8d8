//! Micro-benchmarks of the hot paths: decoding and unmasking client frames on the
//! server, masking alone, UTF-8 validation, and encoding server frames.
//!
//! Run: `cargo bench -p duplex-proto --bench codec`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::frame::{Frame, FrameHeader, OpCode};
use duplex_proto::mask::apply_mask;
use duplex_proto::utf8::Utf8Validator;
use duplex_proto::{Connection, Limits, Message};

const SIZES: [(usize, &str); 4] = [
    (20, "20B"),
    (1024, "1KiB"),
    (16 * 1024, "16KiB"),
    (1024 * 1024, "1MiB"),
];

/// Enough masked client frames of `size` bytes to make about 1 MiB of input.
fn client_frames(opcode: OpCode, payload: &[u8]) -> (BytesMut, usize) {
    let count = (1 << 20) / payload.len().max(1);
    let count = count.clamp(1, 50_000);
    let mut wire = BytesMut::new();
    for i in 0..count {
        let frame = Frame {
            header: FrameHeader {
                mask: Some((i as u32).wrapping_mul(0x9e37_79b9).to_ne_bytes()),
                ..FrameHeader::new(opcode, payload.len() as u64)
            },
            payload: Bytes::copy_from_slice(payload),
        };
        frame.encode(&mut wire);
    }
    (wire, count)
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_unmask");
    for (size, name) in SIZES {
        for (opcode, kind) in [(OpCode::Binary, "binary"), (OpCode::Text, "text")] {
            let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
            let (wire, count) = client_frames(opcode, &payload);
            group.throughput(Throughput::Bytes((size * count) as u64));
            group.bench_function(format!("{kind}/{name}"), |b| {
                b.iter_batched_ref(
                    || {
                        let mut conn = Connection::server(Limits::default());
                        conn.receive(&wire);
                        conn
                    },
                    |conn| {
                        let mut n = 0;
                        while let Some(message) = conn.next_message().unwrap() {
                            black_box(&message);
                            n += 1;
                        }
                        assert_eq!(n, count);
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for (size, name) in SIZES {
        let mut data = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter(|| apply_mask(black_box(&mut data), black_box([1, 2, 3, 4])))
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    let mixed = "ascii text, ελληνικά, 日本語, emoji 🎉 ";
    for (size, name) in SIZES {
        let ascii: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let mut multi = mixed.repeat(size / mixed.len() + 1);
        let mut cut = size.min(multi.len());
        while !multi.is_char_boundary(cut) {
            cut -= 1;
        }
        multi.truncate(cut);
        group.throughput(Throughput::Bytes(size as u64));
        for (kind, input) in [("ascii", &ascii[..]), ("mixed", multi.as_bytes())] {
            group.bench_function(format!("{kind}/{name}"), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(input)).unwrap();
                    v.finish().unwrap();
                })
            });
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_server");
    for (size, name) in SIZES {
        let payload = Bytes::from(vec![b'x'; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            let mut conn = Connection::server(Limits::default());
            b.iter(|| {
                conn.send(Message::Binary(payload.clone())).unwrap();
                while let Some(chunk) = conn.take_output() {
                    black_box(chunk);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, mask, utf8, encode);
criterion_main!(benches);
