#!/usr/bin/env python3
"""An application backend for the hub's hooks ([proxy]), standard library only.

    python3 tests/backend/backend.py [--port N]

Prints "listening on 127.0.0.1:PORT" once it listens.

- GET /login?user=NAME: sets the session cookie sid=... (HttpOnly, Path=/).
- POST /duplex/connect: allows a request whose headers.cookie carries a
  known sid (user NAME, channels ["chat:*"], info {"name": NAME}); else
  denies with unauthorized.
- POST /duplex/subscribe: denies channel "chat:secret" to user "bob".
- POST /duplex/publish: adds "checked": true to object data; denies data
  whose text contains "spam".
- POST /slow/...: answers after SLOW seconds (3), past the hub's timeout.
- POST /fail/...: answers 500.
- POST /hold/...: answers after HOLD seconds (1.5), for the in-flight bound.
- POST /garbage/...: answers 200 with a body that is not JSON.
- POST /empty/...: answers 200 with {}, neither result nor error.
- GET /log: the hook requests received, as a JSON list.
"""

import argparse
import json
import secrets
import sys
import threading
import time
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

SLOW = 3.0
HOLD = 1.5
MAX_BODY = 1 << 20

sessions = {}
log = []
lock = threading.Lock()


def session_user(request):
    cookie = (request.get("headers") or {}).get("cookie", "")
    jar = SimpleCookie()
    try:
        jar.load(cookie)
    except Exception:
        return None
    sid = jar.get("sid")
    with lock:
        return sessions.get(sid.value) if sid else None


def connect(request):
    user = session_user(request)
    if user is None:
        return {"error": {"code": "unauthorized", "message": "no session: log in at /login"}}
    return {"result": {"user": user, "channels": ["chat:*"], "info": {"name": user}}}


def subscribe(request):
    if request.get("user") == "bob" and request.get("channel") == "chat:secret":
        return {"error": {"code": "forbidden", "message": "bob may not read chat:secret"}}
    return {"result": {}}


def publish(request):
    data = request.get("data")
    if "spam" in json.dumps(data):
        return {"error": {"code": 4001, "message": "no spam here"}}
    if isinstance(data, dict):
        data = dict(data, checked=True)
    return {"result": {"data": data}}


HOOKS = {"connect": connect, "subscribe": subscribe, "publish": publish}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def answer(self, status, body, headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/login":
            user = parse_qs(url.query).get("user", [""])[0]
            if not user:
                return self.answer(400, "GET /login?user=NAME\n")
            sid = secrets.token_hex(16)
            with lock:
                sessions[sid] = user
            return self.answer(
                200,
                f"logged in as {user}\n",
                [
                    ("Set-Cookie", f"sid={sid}; HttpOnly; Path=/"),
                    ("Content-Type", "text/plain"),
                ],
            )
        if url.path == "/log":
            with lock:
                body = json.dumps(log)
            return self.answer(200, body, [("Content-Type", "application/json")])
        self.answer(404, "not found\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self.answer(413, "too big\n")
        try:
            request = json.loads(self.rfile.read(length))
        except ValueError:
            return self.answer(400, "not JSON\n")
        with lock:
            log.append({"path": self.path, "request": request})
        parts = self.path.strip("/").split("/")
        if parts[0] == "slow":
            time.sleep(SLOW)
        elif parts[0] == "hold":
            time.sleep(HOLD)
        elif parts[0] == "fail":
            return self.answer(500, "broken\n")
        elif parts[0] == "garbage":
            return self.answer(200, "<html>not JSON</html>", [("Content-Type", "text/html")])
        elif parts[0] == "empty":
            return self.answer(200, "{}", [("Content-Type", "application/json")])
        hook = HOOKS.get(parts[-1])
        if hook is None or hook.__name__ != request.get("op"):
            return self.answer(404, "not found\n")
        self.answer(200, json.dumps(hook(request)), [("Content-Type", "application/json")])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
