"""The Python `websockets` peer of duplex's interop tests (tests/interop_python.rs).

Two modes:

    peer.py server [--protocol P]... [--cert PEM --key PEM] [--deflate SPEC]
        An echo server on 127.0.0.1 (a free port). Prints `listening on PORT`
        once it accepts connections, then one line per event:
        `pong <payload>` when a pong answers its ping, and
        `closed <code> <reason>` when a connection ends (code and reason of the
        close frame it received from the client, `closed 1006 ` if none).
        Text messages starting with `cmd:` are commands, anything else is
        echoed:
          cmd:close CODE REASON   close with this code and reason
          cmd:fragments           send "fragmented ☃ message" as 3 text frames
          cmd:fragments-binary    send bytes 0..9 as 3 binary frames
          cmd:fragments-ping      as cmd:fragments, with a ping "mid-message"
                                  between the first two frames
          cmd:ping                ping with payload "py-ping"; once the pong
                                  with that payload arrives, send
                                  "pong:py-ping"
          cmd:protocol            send "protocol:<the agreed subprotocol>"
          cmd:header NAME         send "header:<value of request header NAME>"
          cmd:extensions          send "extensions:<the Sec-WebSocket-Extensions
                                  response header it sent>" (empty if none)

    peer.py client URL [--ca PEM] [--scenario full|tls|json] [--deflate SPEC]
        Runs a scenario against a server that speaks the same commands (the
        tests' duplex server), one connection per step at URL + /<step>.
        Exits 0 if every check passed, 1 with a message on stderr at the first
        that did not. With --deflate, every step must negotiate
        permessage-deflate and prints `extensions <step> <the response's
        Sec-WebSocket-Extensions>`; `full` then adds the steps `json` (500
        similar JSON messages, then a 256 KiB one) and `big` (a 16 MiB JSON-like
        text and a 16 MiB binary that compress partly). `json` runs that step
        alone.

Compression (permessage-deflate) is off unless --deflate is given. SPEC is `on`
(websockets' defaults, `compression="deflate"`: a server then answers with
server_max_window_bits=12 and client_max_window_bits=12) or a comma-separated
list of ServerPerMessageDeflateFactory / ClientPerMessageDeflateFactory
parameters, e.g. `server_no_context_takeover,client_max_window_bits=10` (a
parameter without a value is True).
"""

import argparse
import asyncio
import ssl
import struct
import sys
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

MAX_SIZE = 64 * 1024 * 1024
BIG = 16 * 1024 * 1024
STEP_TIMEOUT = 20
JSON_MESSAGES = 500
JSON_TAIL = 256 * 1024


# ----- compression -----


def compression_options(spec, factory):
    """The `compression` and `extensions` arguments of serve() or connect()."""
    if spec is None:
        return {"compression": None}
    if spec == "on":
        return {"compression": "deflate"}
    params = {}
    for item in spec.split(","):
        name, _, value = item.strip().partition("=")
        params[name] = int(value) if value else True
    return {"compression": None, "extensions": [factory(**params)]}


def json_message(i):
    """Message i of the `json` step; the same in every peer and in the tests."""
    return (
        f'{{"seq":{i},"type":"update","user":"user-{i % 7}",'
        f'"items":[{{"id":{i},"qty":{i % 5}}},{{"id":{i + 1},"qty":{(i + 1) % 5}}}],'
        f'"note":"duplex interop over permessage-deflate ☃"}}'
    )


def json_text(size):
    """Fixed-length JSON-like lines with a counter and a scrambled value, as many
    whole lines as fit in `size` bytes: it compresses, but only partly."""

    def line(n):
        return (
            f'{{"seq":{n:08d},"user":"user-{n % 1000:03d}","event":"tick ☃",'
            f'"value":{n * 7919 % 1000003:07d}}}\n'
        )

    count = size // len(line(0).encode())
    return "".join(line(n) for n in range(count))


def partly_random_binary(size):
    """16-byte records: a big-endian counter, a multiplicative hash of it (high
    entropy), 8 repeated bytes; `size` must be a multiple of 16."""
    record = struct.Struct(">II8s")
    pads = [bytes([k]) * 8 for k in range(251)]
    return b"".join(
        record.pack(n, (n * 2654435761) & 0xFFFFFFFF, pads[n % 251]) for n in range(size // 16)
    )


# ----- server -----


async def command(ws, text):
    name, _, arg = text.partition(" ")
    if name == "close":
        code, _, reason = arg.partition(" ")
        await ws.close(int(code), reason)
    elif name == "fragments":
        await ws.send(["frag", "mented ", "☃ message"])
    elif name == "fragments-ping":
        # A ping between the frames of a (compressed, if agreed) message.
        async def parts():
            yield "frag"
            await ws.ping(b"mid-message")
            yield "mented "
            yield "☃ message"

        await ws.send(parts())
    elif name == "fragments-binary":
        await ws.send([bytes(range(0, 3)), bytes(range(3, 7)), bytes(range(7, 10))])
    elif name == "ping":
        waiter = await ws.ping(b"py-ping")
        await asyncio.wait_for(waiter, STEP_TIMEOUT)
        print("pong py-ping", flush=True)
        await ws.send("pong:py-ping")
    elif name == "protocol":
        await ws.send(f"protocol:{ws.subprotocol}")
    elif name == "header":
        await ws.send(f"header:{ws.request.headers.get(arg, '')}")
    elif name == "extensions":
        await ws.send(f"extensions:{ws.response.headers.get('Sec-WebSocket-Extensions', '')}")
    else:
        await ws.send(f"error:unknown command {name}")


async def handler(ws):
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("cmd:"):
                await command(ws, message[4:])
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        rcvd = ws.protocol.close_rcvd
        if rcvd is None:
            print("closed 1006 ", flush=True)
        else:
            print(f"closed {rcvd.code} {rcvd.reason}", flush=True)


async def run_server(args):
    tls = None
    if args.cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.cert, args.key)
    async with serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=args.protocol or None,
        max_size=MAX_SIZE,
        ping_interval=None,
        ssl=tls,
        **compression_options(args.deflate, ServerPerMessageDeflateFactory),
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        await server.serve_forever()


# ----- client -----


class Failed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failed(what)


def show(value):
    text = repr(value)
    return text if len(text) < 120 else f"{text[:100]}... ({len(value)} long)"


class Client:
    def __init__(self, base, ca, deflate):
        self.base = base.rstrip("/")
        self.tls = ssl.create_default_context(cafile=ca) if ca else None
        self.deflate = deflate

    def connect(self, step, protocols=("x-unknown", "chat.v2")):
        return connect(
            f"{self.base}/{step}",
            subprotocols=list(protocols),
            max_size=MAX_SIZE,
            ping_interval=None,
            ssl=self.tls,
            open_timeout=STEP_TIMEOUT,
            close_timeout=STEP_TIMEOUT,
            additional_headers={"X-Peer": "python-websockets"},
            **compression_options(self.deflate, ClientPerMessageDeflateFactory),
        )

    def negotiated(self, ws, step):
        """With --deflate: checks permessage-deflate was agreed on this
        connection and prints the server's answer. Returns it."""
        answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        if self.deflate is not None:
            agreed = [type(e).__name__ for e in ws.protocol.extensions]
            check(
                answer.startswith("permessage-deflate") and agreed == ["PerMessageDeflate"],
                f"compression not agreed: the server answered {answer!r}, extensions {agreed}",
            )
            print(f"extensions {step} {answer}", flush=True)
        return answer

    async def check_server_view(self, ws, answer):
        """The server's own report of the extensions it answered must be what
        arrived here."""
        back = await self.ask(ws, "cmd:extensions")
        check(back == f"extensions:{answer}", f"the server says {show(back)}, we got {answer!r}")

    async def echo(self, ws, message, what):
        await ws.send(message)
        back = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
        check(type(back) is type(message), f"{what}: echo came back as {type(back).__name__}")
        check(back == message, f"{what}: echo differs: sent {show(message)}, got {show(back)}")

    async def ask(self, ws, command):
        await ws.send(command)
        return await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)

    async def step_main(self):
        async with self.connect("main") as ws:
            check(ws.subprotocol == "chat.v2", f"agreed subprotocol {ws.subprotocol!r}, wanted 'chat.v2'")
            answer = self.negotiated(ws, "main")
            if self.deflate is not None:
                await self.check_server_view(ws, answer)
            back = await self.ask(ws, "cmd:protocol")
            check(back == "protocol:chat.v2", f"server says {show(back)}")
            await self.echo(ws, "hello from python ☃", "text")
            await self.echo(ws, bytes(range(256)), "binary")
            await self.echo(ws, "", "empty text")
            await self.echo(ws, (bytes(range(251)) * (BIG // 251 + 1))[:BIG], "16 MiB binary")
            unit = "duplex ☃ héllo 𝄞 "
            await self.echo(ws, unit * (BIG // len(unit.encode())), "16 MiB text")
            # A fragmented message: websockets sends one frame per item.
            await ws.send(["frag", "mented ", "☃ message"])
            back = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
            check(back == "fragmented ☃ message", f"fragmented text echoed as {show(back)}")
            await ws.send([b"\x00\x01", b"\x02\x03\x04", b"\x05"])
            back = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
            check(back == bytes(range(6)), f"fragmented binary echoed as {show(back)}")
            # Our ping: the pong must carry its payload.
            waiter = await ws.ping(b"py-client-ping")
            await asyncio.wait_for(waiter, STEP_TIMEOUT)
            # The server's ping: websockets answers it; the server reports the pong.
            back = await self.ask(ws, "cmd:ping")
            check(back == "pong:rs-ping", f"after cmd:ping the server says {show(back)}")
            await ws.close(4002, "client says bye")
            check(ws.close_code == 4002, f"close answered with code {ws.close_code}, wanted 4002")

    async def step_server_closes(self):
        async with self.connect("server-closes") as ws:
            self.negotiated(ws, "server-closes")
            await ws.send("cmd:close 4001 server says bye")
            try:
                message = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
                raise Failed(f"wanted the server's close, got {show(message)}")
            except ConnectionClosed as closed:
                rcvd = closed.rcvd
                check(rcvd is not None, "the connection ended without a close frame")
                check(rcvd.code == 4001, f"close code {rcvd.code}, wanted 4001")
                check(rcvd.reason == "server says bye", f"close reason {rcvd.reason!r}")
                check(closed.sent is not None and closed.sent.code == 4001, f"close not echoed: {closed.sent}")
            await ws.wait_closed()
            check(ws.close_code == 4001 and ws.close_reason == "server says bye",
                  f"close_code {ws.close_code} close_reason {ws.close_reason!r}")

    async def step_no_common_protocol(self):
        async with self.connect("no-protocol", protocols=("x-unknown",)) as ws:
            check(ws.subprotocol is None, f"agreed subprotocol {ws.subprotocol!r}, wanted none")
            self.negotiated(ws, "no-protocol")
            back = await self.ask(ws, "cmd:header X-Peer")
            check(back == "header:python-websockets", f"server says {show(back)}")
            await ws.close()
            check(ws.close_code == 1000, f"close answered with code {ws.close_code}, wanted 1000")

    async def step_json(self):
        """Many similar JSON messages (context takeover at its best), echoed one
        by one, then one larger than any window."""
        async with self.connect("json") as ws:
            await self.check_server_view(ws, self.negotiated(ws, "json"))
            for i in range(JSON_MESSAGES):
                await self.echo(ws, json_message(i), f"JSON message {i}")
            await self.echo(ws, json_text(JSON_TAIL), "256 KiB JSON text")
            await ws.close()
            check(ws.close_code == 1000, f"close answered with code {ws.close_code}, wanted 1000")

    async def step_big(self):
        """16 MiB messages that compress only partly."""
        async with self.connect("big") as ws:
            self.negotiated(ws, "big")
            await self.echo(ws, json_text(BIG), "16 MiB JSON text")
            await self.echo(ws, partly_random_binary(BIG), "16 MiB binary")
            await ws.close()
            check(ws.close_code == 1000, f"close answered with code {ws.close_code}, wanted 1000")

    async def run(self, scenario):
        steps = [("main", self.step_main)]
        if scenario == "full":
            steps += [
                ("server-closes", self.step_server_closes),
                ("no-protocol", self.step_no_common_protocol),
            ]
            if self.deflate is not None:
                steps += [("json", self.step_json), ("big", self.step_big)]
        elif scenario == "json":
            steps = [("json", self.step_json)]
        for name, step in steps:
            started = time.monotonic()
            try:
                await asyncio.wait_for(step(), 4 * STEP_TIMEOUT)
            except Failed as failure:
                raise Failed(f"step {name}: {failure}") from None
            except Exception as error:
                raise Failed(f"step {name}: {type(error).__name__}: {error}") from error
            print(f"ok {name} ({time.monotonic() - started:.2f} s)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("server")
    server.add_argument("--protocol", action="append")
    server.add_argument("--cert")
    server.add_argument("--key")
    server.add_argument("--deflate")
    client = modes.add_parser("client")
    client.add_argument("url")
    client.add_argument("--ca")
    client.add_argument("--scenario", choices=["full", "tls", "json"], default="full")
    client.add_argument("--deflate")
    args = parser.parse_args()

    if args.mode == "server":
        try:
            asyncio.run(run_server(args))
        except KeyboardInterrupt:
            pass
        return 0
    try:
        asyncio.run(Client(args.url, args.ca, args.deflate).run(args.scenario))
    except Failed as failure:
        print(f"python client: FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    print("python client: all steps passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
