#!/usr/bin/env python3
"""What the Redis engine keeps in Redis, measured: memory per channel and per
publication of its history, and per presence entry.

Starts its own redis-server on a free loopback port (no persistence) and one
`duplex serve --redis` node, publishes through the node's HTTP API, and reads
Redis's `INFO memory` (used_memory) before and after, and `MEMORY USAGE` of
one channel's keys. Stops both by itself.

    bench/cluster_memory.py [--duplex target/release/duplex] [--channels 200]
                            [--publications 100] [--size 100] [--history 100]

The figures go into docs/CLUSTER.md with this command.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis(port, *args):
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def used_memory(port):
    redis(port, "MEMORY", "PURGE")
    for line in redis(port, "INFO", "memory").splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    raise RuntimeError("no used_memory in INFO memory")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duplex", default="target/release/duplex")
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--publications", type=int, default=100, help="per channel")
    parser.add_argument("--size", type=int, default=100, help="bytes of data")
    parser.add_argument("--history", type=int, default=100, help="history_size")
    args = parser.parse_args()
    if not os.path.exists(args.duplex):
        sys.exit(f"{args.duplex} is missing: cargo build --release -p duplex-cli")

    tmp = tempfile.mkdtemp(prefix="duplex-cluster-memory-")
    rport, hport = free_port(), free_port()
    config = os.path.join(tmp, "duplex.toml")
    with open(config, "w") as f:
        f.write(
            f"""[server]
api_key = "k"
[feed]
enabled = false
[namespaces.m]
history_size = {args.history}
history_ttl_secs = 0
presence = false
"""
        )
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", tmp],
                stdout=subprocess.DEVNULL,
            )
        )
        for _ in range(100):
            try:
                if redis(rport, "PING") == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.05)
        node = subprocess.Popen(
            [args.duplex, "serve", "--listen", f"127.0.0.1:{hport}", "--data",
             os.path.join(tmp, "data"), "--config", config,
             "--redis", f"redis://127.0.0.1:{rport}/0"],
            stdout=subprocess.PIPE, text=True,
        )
        procs.append(node)
        node.stdout.readline()  # listening on ...

        before = used_memory(rport)
        conn = http.client.HTTPConnection("127.0.0.1", hport)
        data = "x" * max(0, args.size - 2)
        body_of = lambda ch: json.dumps({"channel": f"m:c{ch}", "data": data})
        for p in range(args.publications):
            for ch in range(args.channels):
                conn.request("POST", "/api/publish", body_of(ch),
                             {"Authorization": "Bearer k", "Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    sys.exit(f"publish failed: {response.status}")
        after = used_memory(rport)
        kept = min(args.publications, args.history)
        total = after - before
        stream = int(redis(rport, "MEMORY", "USAGE", "duplex:h:{m:c0}", "SAMPLES", "0"))
        offset = int(redis(rport, "MEMORY", "USAGE", "duplex:o:{m:c0}"))
        result = {
            "channels": args.channels,
            "publications_per_channel": args.publications,
            "kept_per_channel": kept,
            "data_bytes": args.size,
            "used_memory_delta_bytes": total,
            "per_channel_bytes": round(total / args.channels),
            "per_kept_publication_bytes": round(total / (args.channels * kept)),
            "one_history_stream_bytes": stream,
            "one_offset_key_bytes": offset,
            "redis_version": redis(rport, "INFO", "server").split("redis_version:")[1].split()[0],
        }
        print(json.dumps(result, indent=2))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
