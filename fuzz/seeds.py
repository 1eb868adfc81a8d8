#!/usr/bin/env python3
"""Writes small seed corpora for the fuzz targets into fuzz/corpus/<target>/.

Run from anywhere: python3 fuzz/seeds.py. Existing files are overwritten; files
libFuzzer added are left alone. The seeds are valid (and a few invalid) frames
and handshakes, so that the fuzzer starts from inputs that get past the first
checks.
"""

import base64
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
M64 = (1 << 64) - 1


def sequence_mask_nonce(seed, n=16):
    """The bytes duplex_proto::rng::SequenceMask::new(seed).fill_bytes gives."""
    state = seed
    out = b""
    while len(out) < n:
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        out += struct.pack("<I", z & 0xFFFFFFFF)
    return out[:n]


def accept(key):
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(opcode, payload, fin=True, mask=None, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask is not None else 0
    if n <= 125:
        head = bytes([b0, mbit | n])
    elif n <= 0xFFFF:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + bytes(mask) + masked


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def streams(mask):
    """Frame sequences; mask=None for server-to-client frames."""
    m = mask
    close = lambda code, reason=b"": frame(0x8, struct.pack(">H", code) + reason, mask=m)
    return {
        "hello": frame(0x1, b"Hello", mask=m),
        "binary": frame(0x2, bytes(range(200)), mask=m),
        "long16": frame(0x2, b"x" * 300, mask=m),
        # A 64-bit length, cut short: the full 70 000-byte frame is a frame seed only.
        "long64-cut": frame(0x2, b"y" * 70000, mask=m)[:64],
        "fragments": frame(0x1, "h\u00e9".encode()[:2], fin=False, mask=m)
        + frame(0x9, b"ping", mask=m)
        + frame(0x0, "h\u00e9".encode()[2:] + "\u20ac".encode()[:1], fin=False, mask=m)
        + frame(0x0, "\u20ac".encode()[1:], mask=m),
        "ping-pong-close": frame(0x9, b"are you there", mask=m)
        + frame(0xA, b"", mask=m)
        + close(1000, b"bye")
        + frame(0x1, b"after close", mask=m),
        "close-empty": frame(0x8, b"", mask=m),
        "close-bad-code": close(1005),
        "close-bad-reason": close(1001, b"\xff"),
        "bad-utf8": frame(0x1, b"ok\xc3\x28", mask=m),
        "rsv": frame(0x1, b"x", mask=m, rsv=4),
        "unknown-op": frame(0x3, b"x", mask=m),
        "continuation-first": frame(0x0, b"x", mask=m),
        "nonminimal": bytes([0x82, (0x80 if m else 0) | 126, 0, 5]) + (bytes(m) if m else b"") + b"abcde",
    }


def main():
    server_mask = [0x37, 0xFA, 0x21, 0x3D]
    for name, wire in streams(server_mask).items():
        # flags 0x00: server, default limits; 0x0e: small limits and echo.
        write("decode", "server-" + name, bytes([0x00, 0x40, 0x01]) + wire)
        write("decode", "server-echo-" + name, bytes([0x0E, 0x40, 0x02]) + wire)
        write("frame", "server-" + name, bytes([0x00, 0x03]) + wire)
    for name, wire in streams(None).items():
        write("decode", "client-" + name, bytes([0x01, 0x40, 0x01]) + wire)
        write("decode", "client-frag-" + name, bytes([0xD1, 0x10, 0x03]) + wire)
        write("frame", "client-" + name, bytes([0x00, 0x02]) + wire)
    # One whole 64-bit-length frame per role, with max_frame_size 70 000 (flags 0x18).
    write("frame", "server-long64", bytes([0x18, 0x01]) + frame(0x2, b"y" * 70000, mask=server_mask))
    write("frame", "client-long64", bytes([0x18, 0x01]) + frame(0x2, b"y" * 70000))

    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    write(
        "handshake",
        "request",
        b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Protocol: chat, superchat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=\"15\", x-y\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
    )
    write(
        "handshake",
        "request-bad-version",
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    write("handshake", "post", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    client_key = base64.b64encode(sequence_mask_nonce(1))
    write(
        "handshake",
        "response",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept(client_key) + b"\r\n\r\n",
    )
    write(
        "handshake",
        "response-protocol",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept(client_key) + b"\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
    )
    write("handshake", "response-403", b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno")


if __name__ == "__main__":
    main()
