//! What permessage-deflate costs a connection in memory, at each window size,
//! with and without context takeover: heap measured by a counting allocator.
//!
//! Run: `cargo run --release -p duplex-proto --example deflate_memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use duplex_proto::deflate::DeflateParams;
use duplex_proto::rng::SequenceMask;
use duplex_proto::{Connection, Limits, Message};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

#[allow(unsafe_code)]
// SAFETY: every call is passed straight to the system allocator; only a counter
// of live bytes is kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn params(bits: u8, no_context_takeover: bool) -> DeflateParams {
    DeflateParams {
        local_no_context_takeover: no_context_takeover,
        remote_no_context_takeover: no_context_takeover,
        local_max_window_bits: bits,
        remote_max_window_bits: bits,
        level: 6,
        threshold: 0,
    }
}

/// The heap a server connection holds, between messages, for its compressor
/// and for its decompressor, after one 16 KiB message each way.
fn measure(bits: u8, no_context_takeover: bool, message: &Message) -> (isize, isize) {
    let mut server = Connection::server(Limits::default());
    server.set_deflate(params(bits, no_context_takeover));
    let mut client =
        Connection::client_with_mask_source(Limits::default(), Box::new(SequenceMask::new(1)));
    client.set_deflate(params(bits, no_context_takeover));
    client.send(message.clone()).unwrap();
    let mut wire = Vec::new();
    while let Some(chunk) = client.take_output() {
        wire.extend_from_slice(&chunk);
    }

    let before = live();
    server.send(message.clone()).unwrap();
    while server.take_output().is_some() {}
    let compressor = live() - before;

    let before = live();
    server.receive(&wire);
    let received = server.next_message().unwrap().unwrap();
    drop(received);
    let decompressor = live() - before;
    (compressor, decompressor)
}

fn main() {
    let text: String = (0..400)
        .map(|i| {
            format!(
                "{{\"channel\":\"ticker\",\"symbol\":\"AC{}\",\"price\":{}.25}}\n",
                i % 40,
                100 + i
            )
        })
        .collect();
    let message = Message::text(text);
    println!("message: {} bytes of JSON lines\n", message.len());
    println!(
        "| window bits | compressor, context kept | decompressor, context kept | compressor, no context takeover | decompressor, no context takeover |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for bits in 9..=15 {
        let (c, d) = measure(bits, false, &message);
        let (cn, dn) = measure(bits, true, &message);
        println!(
            "| {bits} | {} | {} | {} | {} |",
            kib(c),
            kib(d),
            kib(cn),
            kib(dn)
        );
    }
}

fn kib(bytes: isize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}
