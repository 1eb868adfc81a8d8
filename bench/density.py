#!/usr/bin/env python3
"""Connection density and connection storms against one `duplex serve`.

Starts `duplex serve` (pinned to CPU 0) on a free loopback port, and loads
it from several `crowd` processes (bench/crowd, pinned to CPU 1), each
connecting from its own 127.0.0.x source address. Publications go through
the HTTP publish API. Every server and loader is stopped by the script.

    bench/density.py [--only density,storm,presence] [--clients 19000]
                     [--loaders 4] [--storm 10000] [--presence 5000]

Three parts, each with a fresh server:

- density: CLIENTS subscribers of one channel (presence off) from LOADERS
  processes; the server's resident memory before and after (per connection,
  and projected to one million); then PUBLICATIONS single publications of
  SIZE bytes, one at a time, each timed from the moment the API call is sent
  to the moment the last subscriber has read it (wall clock, one machine).
- storm: STORM clients connect and subscribe at once (every handshake
  started together); connections accepted per second (wall clock) and per
  second of the server's CPU time. Then every connection is dropped at once,
  MISSED publications are made while they are gone, and all reconnect at
  once, subscribing with `since`: the time until every one is subscribed
  with what it missed, the publications recovered, and the history reads the
  hub made for them (duplex_history_reads_total) against the ones merged
  into a read already under way (duplex_history_reads_merged_total).
- presence: PRESENCE clients join one channel at once with presence on,
  once with join/leave pushes (the default) and once with `join_leave =
  false`: the pushes the server sent, the connections it closed as slow
  consumers (1008), and the time until all were subscribed.

Prints Markdown tables; the raw figures go to bench/results/density-<date>/.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
API_KEY = "density-bench"

# Seconds between the last connection (or publication) and a reading of
# the server's memory: jemalloc, duplex's allocator, returns unused pages
# after 10 s.
SETTLE = 12

CONFIG = """\
[server]
api_key = "{key}"

[limits]
requests_per_second = 1000000
burst = 1000000
send_queue = 1024

[namespaces.crowd]
presence = {presence}
join_leave = {join_leave}
publish = true
history_size = 1000
history_ttl_secs = 0
max_subscribers = 100000

[feed]
enabled = false
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A `duplex serve` process with its own data folder and configuration."""

    def __init__(self, duplex, presence=False, join_leave=True):
        self.dir = tempfile.mkdtemp(prefix="duplex-density-")
        config = os.path.join(self.dir, "duplex.toml")
        with open(config, "w") as f:
            f.write(CONFIG.format(key=API_KEY, presence=str(presence).lower(),
                                  join_leave=str(join_leave).lower()))
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", duplex, "serve", "--listen", "127.0.0.1:0",
             "--data", os.path.join(self.dir, "data"), "--config", config],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            preexec_fn=raise_nofile)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            sys.exit(f"duplex serve did not start: {line!r}")
        self.addr = line.split("://", 1)[1].split()[0].rstrip("/")
        self.host, port = self.addr.rsplit(":", 1)
        self.port = int(port)

    def publish(self, channel, data):
        """Publishes through the API; returns (offset, the time it was sent)."""
        body = json.dumps({"channel": channel, "data": data})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        sent = time.time_ns()
        conn.request("POST", "/api/publish", body,
                     {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"publish: {response.status} {text}")
        return json.loads(text)["offset"], sent

    def metrics(self):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    values[name] = float(value)
                except ValueError:
                    pass
        return values

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def raise_nofile():
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Loader:
    """A `crowd` process: `clients` hub clients from one source address."""

    def __init__(self, crowd, server, clients, source, channel="crowd:all"):
        self.proc = subprocess.Popen(
            ["taskset", "-c", "1", crowd, "--url", f"ws://{server.addr}/ws",
             "--clients", str(clients), "--channel", channel, "--bind", source],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.expect("ready")

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, event):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"crowd ended before {event!r}")
        answer = json.loads(line)
        if answer.get("event") != event:
            raise RuntimeError(f"crowd answered {answer}, expected {event!r}")
        return answer

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# Source addresses per loader: each address has its own ports, so that no
# one address runs short of them (or makes the kernel search long for a free
# one) when thousands of clients connect again at once.
ADDRESSES = 8


def loaders_for(crowd, server, total, count):
    sizes = [total // count + (1 if i < total % count else 0) for i in range(count)]
    return [Loader(crowd, server, n, ",".join(f"127.0.{1 + i}.{2 + a}" for a in range(ADDRESSES)))
            for i, n in enumerate(sizes)]


def everyone(loaders, command, event):
    """Sends `command` to every loader at once; returns their answers."""
    for loader in loaders:
        loader.send(command)
    return [loader.expect(event) for loader in loaders]


def connect(loaders):
    started = time.monotonic()
    answers = everyone(loaders, "connect", "connected")
    return {
        "clients": sum(a["clients"] for a in answers),
        "errors": sum(a["errors"] for a in answers),
        "recovered": sum(a["recovered"] for a in answers),
        "seconds": max(a["seconds"] for a in answers),
        "wall": time.monotonic() - started,
    }


def density(args, out):
    server = Server(args.duplex)
    loaders = []
    try:
        base = rss_kib(server.proc.pid)
        loaders = loaders_for(args.crowd, server, args.clients, args.loaders)
        joined = connect(loaders)
        # jemalloc gives the pages the handshakes used back after 10 s.
        time.sleep(SETTLE)
        held = rss_kib(server.proc.pid)
        per = (held - base) * 1024 / max(joined["clients"], 1)
        times = []
        for i in range(args.publications):
            offset, sent = server.publish("crowd:all", {"n": i, "pad": "x" * args.size})
            answers = everyone(loaders, f"wait {offset} 60", "reached")
            missing = sum(a["missing"] for a in answers)
            last = max(a["last_ns"] for a in answers)
            first = min(a["first_ns"] for a in answers if a["first_ns"])
            times.append({"first_ms": (first - sent) / 1e6, "last_ms": (last - sent) / 1e6,
                          "missing": missing})
            time.sleep(0.5)
        time.sleep(SETTLE)
        after = rss_kib(server.proc.pid)
        result = {"clients": joined["clients"], "connect_errors": joined["errors"],
                  "connect_seconds": joined["seconds"], "rss_base_kib": base,
                  "rss_held_kib": held, "rss_after_kib": after,
                  "bytes_per_connection": per,
                  "bytes_per_connection_after": (after - base) * 1024 / max(joined["clients"], 1),
                  "publications": times}
    finally:
        for loader in loaders:
            loader.stop()
        server.stop()
    json.dump(result, open(os.path.join(out, "density.json"), "w"), indent=1)
    n = result["clients"]
    last = sorted(t["last_ms"] for t in times)
    million_gib = result["bytes_per_connection_after"] * 1e6 / 2**30
    print(f"\n### Density: {n:,} subscribed connections, one `duplex serve`\n")
    print("| connections | connect errors | server RSS before → held → after publications | bytes per connection held, after | one publication of {0} B to all: first, last (median; max) | missing | 1,000,000 connections at this cost |".format(args.size))
    print("| ---: | ---: | --- | --- | --- | ---: | ---: |")
    print(f"| {n:,} | {result['connect_errors']} | {base:,} → {held:,} → {after:,} KiB "
          f"| {per:,.0f}, {result['bytes_per_connection_after']:,.0f} "
          f"| {sorted(t['first_ms'] for t in times)[len(times) // 2]:.1f} ms, "
          f"{last[len(last) // 2]:.1f} ms ({last[-1]:.1f} ms) "
          f"| {sum(t['missing'] for t in times)} | {million_gib:.1f} GiB |")


def storm(args, out):
    server = Server(args.duplex)
    loaders = []
    try:
        loaders = loaders_for(args.crowd, server, args.storm, 2)
        cpu0 = cpu_seconds(server.proc.pid)
        first = connect(loaders)
        cpu1 = cpu_seconds(server.proc.pid)
        for i in range(args.before):
            offset, _ = server.publish("crowd:all", {"n": i})
        everyone(loaders, f"wait {offset} 60", "reached")
        everyone(loaders, "drop", "dropped")
        # The server sees every connection end before the publications.
        deadline = time.monotonic() + 60
        while server.metrics().get("duplex_subscriptions", 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        for i in range(args.missed):
            offset, _ = server.publish("crowd:all", {"missed": i})
        m0 = server.metrics()
        cpu2 = cpu_seconds(server.proc.pid)
        again = connect(loaders)
        cpu3 = cpu_seconds(server.proc.pid)
        m1 = server.metrics()
        reached = everyone(loaders, f"wait {offset} 60", "reached")
    finally:
        for loader in loaders:
            loader.stop()
        server.stop()
    reads = m1.get("duplex_history_reads_total", 0) - m0.get("duplex_history_reads_total", 0)
    merged = (m1.get("duplex_history_reads_merged_total", 0)
              - m0.get("duplex_history_reads_merged_total", 0))
    result = {"connect": first, "connect_cpu": cpu1 - cpu0, "reconnect": again,
              "reconnect_cpu": cpu3 - cpu2, "history_reads": reads, "history_reads_merged": merged,
              "missing_after_recovery": sum(a["missing"] for a in reached)}
    json.dump(result, open(os.path.join(out, "storm.json"), "w"), indent=1)
    print(f"\n### Storms: {args.storm:,} clients at once, one `duplex serve` on one core\n")
    print("| storm | clients | errors | until all subscribed | accepted per second | per second of server CPU | publications recovered | history reads made, merged |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r, cpu in (("connect and subscribe", first, cpu1 - cpu0),
                         (f"reconnect with since ({args.missed} missed each)", again, cpu3 - cpu2)):
        recovered = f"{r['recovered']:,}" if name.startswith("reconnect") else ""
        reads_cell = f"{reads:.0f}, {merged:.0f}" if name.startswith("reconnect") else ""
        print(f"| {name} | {r['clients']:,} | {r['errors']} | {r['seconds']:.2f} s "
              f"| {r['clients'] / r['seconds']:,.0f} | {r['clients'] / max(cpu, 0.01):,.0f} "
              f"| {recovered} | {reads_cell} |")


def presence(args, out):
    rows = []
    for join_leave in (True, False):
        server = Server(args.duplex, presence=True, join_leave=join_leave)
        loaders = []
        try:
            loaders = loaders_for(args.crowd, server, args.presence, 2)
            m0 = server.metrics()
            cpu0 = cpu_seconds(server.proc.pid)
            joined = connect(loaders)
            time.sleep(2)
            cpu1 = cpu_seconds(server.proc.pid)
            m1 = server.metrics()
        finally:
            for loader in loaders:
                loader.stop()
            server.stop()
        delta = lambda name: m1.get(name, 0) - m0.get(name, 0)
        rows.append({"join_leave": join_leave, "joined": joined,
                     "messages_out": delta("duplex_messages_out_total"),
                     "dropped": delta("duplex_dropped_connections_total"),
                     "subscriptions": m1.get("duplex_subscriptions", 0),
                     "server_cpu": cpu1 - cpu0})
    json.dump(rows, open(os.path.join(out, "presence.json"), "w"), indent=1)
    print(f"\n### Presence storm: {args.presence:,} clients join one channel at once (presence on)\n")
    print("| join_leave | subscribed at the end | closed as slow consumers (1008) | frames the server sent | server CPU | until all answered |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {str(r['join_leave']).lower()} | {r['subscriptions']:,.0f} | {r['dropped']:,.0f} "
              f"| {r['messages_out']:,.0f} | {r['server_cpu']:.2f} s | {r['joined']['seconds']:.2f} s |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duplex", default=os.path.join(ROOT, "target/release/duplex"))
    parser.add_argument("--crowd", default=os.path.join(BENCH, "target/release/crowd"))
    parser.add_argument("--only", default="density,storm,presence")
    parser.add_argument("--clients", type=int, default=19000, help="density: connections")
    parser.add_argument("--loaders", type=int, default=4, help="density: crowd processes")
    parser.add_argument("--publications", type=int, default=5, help="density: publications timed")
    parser.add_argument("--size", type=int, default=64, help="density: bytes of data")
    parser.add_argument("--storm", type=int, default=10000, help="storm: clients")
    parser.add_argument("--before", type=int, default=10, help="storm: publications before the drop")
    parser.add_argument("--missed", type=int, default=10, help="storm: publications while dropped")
    parser.add_argument("--presence", type=int, default=5000, help="presence: clients")
    args = parser.parse_args()
    for path in (args.duplex, args.crowd):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release -p duplex-cli; "
                     "cargo build --release --manifest-path bench/Cargo.toml -p crowd")
    raise_nofile()
    out = os.path.join(BENCH, "results", "density-" + time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime()))
    os.makedirs(out, exist_ok=True)
    parts = args.only.split(",")
    for part in parts:
        {"density": density, "storm": storm, "presence": presence}[part](args, out)
    print(f"\nraw results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
