#!/usr/bin/env python3
"""The tables of a bench/compare.sh report, from the results folder of a run.

    bench/report.py bench/results/<date> [CLIENT_CPU_LIMIT] [DEFLATE] [STEAL_LIMIT]

compare.sh calls it once every run is done; run it again on a results folder
to print the same tables without rerunning anything.
"""
import csv, json, os, statistics, sys

if len(sys.argv) < 2:
    sys.exit("usage: bench/report.py RESULTS_DIR [CLIENT_CPU_LIMIT] [DEFLATE]")
results = sys.argv[1]
cpu_limit = float(sys.argv[2]) if len(sys.argv) > 2 else 90.0
deflate = (sys.argv[3] if len(sys.argv) > 3 else "1") == "1"
# A run whose server or client CPU lost more than this share of the window to
# the hypervisor (steal time) is flagged, and left out of the quiet rounds.
steal_limit = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0

runs, labels, flags = {}, {}, []
def num(x):
    if x is None:
        return "–"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}"

def client_bound(cpu, server_cpu):
    # The load generator, not the server, may be the limit: its core was as
    # busy as the server's, or nearly full.
    if server_cpu is None:
        return cpu > cpu_limit
    return cpu >= server_cpu or cpu > 98

with open(os.path.join(results, "runs.tsv")) as f:
    for row in csv.DictReader(f, delimiter="\t"):
        section, case, server = row["section"], int(row["case"]), row["server"]
        labels[(section, case)] = row["label"]
        key = (section, case, server)
        # Servers in the order of the first round, which starts with the first.
        runs.setdefault(key, {"label": row["server_label"], "runs": [], "rounds": {}})
        where = (f"{row['label']}, {row['server_label']}"
                 f"{' (deflate)' if section == 'deflate' else ''}, round {row['round']}")
        data = None
        if row["status"] == "ok":
            try:
                with open(os.path.join(results, row["json"])) as j:
                    data = json.load(j)
                float(data["messages_per_sec"]), float(data["latency_us"]["p50"]), float(data["latency_us"]["p99"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                flags.append(f"{where}: no usable JSON ({err!r}); run left out")
                data = None
        else:
            flags.append(f"{where}: {row['status']}; run left out")
        if data is not None:
            try:
                with open(os.path.join(results, row["json"][:-len(".json")] + ".server-cpu")) as c:
                    data["server_cpu_percent"] = float(c.read().strip())
            except (OSError, ValueError):
                data["server_cpu_percent"] = None
            try:
                with open(os.path.join(results, row["json"][:-len(".json")] + ".steal")) as st:
                    data["steal_percent"] = max(float(v) for v in st.read().split())
            except (OSError, ValueError):
                data["steal_percent"] = None
            steal = data["steal_percent"]
            if steal is not None and steal > steal_limit:
                flags.append(f"{where}: the hypervisor took {steal:.0f}% of a CPU's time "
                             f"(steal): left out of the quiet rounds")
            cpu = data.get("client_cpu_percent")
            server_cpu = data.get("server_cpu_percent")
            if cpu is not None and client_bound(cpu, server_cpu):
                flags.append(f"{where}: the client used {cpu:.0f}% of its CPU and the server "
                             f"{num(server_cpu)}%: the load generator may be the bottleneck")
            if data.get("errors", 0):
                flags.append(f"{where}: {data['errors']} errors reported by the load generator")
        runs[key]["runs"].append(data)
        if data is not None:
            runs[key]["rounds"][row["round"]] = data["messages_per_sec"]
            if data["steal_percent"] is not None and data["steal_percent"] <= steal_limit:
                runs[key].setdefault("quiet", {})[row["round"]] = data["messages_per_sec"]

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def summary(key):
    if key not in runs:
        return None
    all_runs = runs[key]["runs"]
    ok = [d for d in all_runs if d is not None]
    if not ok:
        return None
    return {
        "n": len(ok), "of": len(all_runs),
        "mps": med([d["messages_per_sec"] for d in ok]),
        "p50": med([d["latency_us"]["p50"] for d in ok]),
        "p99": med([d["latency_us"]["p99"] for d in ok]),
        "cpu": med([d.get("client_cpu_percent") for d in ok]),
        "server_cpu": med([d.get("server_cpu_percent") for d in ok]),
        "steal": med([d.get("steal_percent") for d in ok]),
        "hot": any(client_bound(d.get("client_cpu_percent") or 0, d.get("server_cpu_percent"))
                   for d in ok),
    }

def table(section, ratio_title, ratio_of):
    print(f"| case | server | messages/s | p50 µs | p99 µs | server CPU % | client CPU % | steal % | {ratio_title} |")
    extra = ratio_title.count("|")
    print("| --- | --- |" + " ---: |" * (7 + extra))
    for case in sorted({c for (s, c) in labels if s == section}):
        first = True
        for key in [k for k in runs if k[0] == section and k[1] == case]:
            shown = labels[(section, case)] if first else ""
            first = False
            name = runs[key]["label"]
            s = summary(key)
            if s is None:
                print(f"| {shown} | {name} | failed | – | – | – | – | – | – |" + " – |" * extra)
                continue
            mps = num(s["mps"]) + (" ⚠" if s["hot"] else "")
            if s["n"] != s["of"]:
                mps += f" ({s['n']} of {s['of']} runs)"
            print(f"| {shown} | {name} | {mps} | {num(s['p50'])} | {num(s['p99'])} "
                  f"| {num(s['server_cpu'])} | {num(s['cpu'])} | {num(s['steal'])} | {ratio_of(key, s)} |")
    print()

def ratio(a, b):
    return f"{a['mps'] / b['mps']:.2f}" if a and b and a["mps"] and b["mps"] else "–"

def paired(key, rounds="rounds"):
    # duplex over this server round by round: the two ran minutes apart at
    # most, so a machine that drifts over the whole run moves both alike.
    mine = runs.get(("plain", key[1], "duplex"), {}).get(rounds, {})
    theirs = runs[key].get(rounds, {})
    ratios = [mine[r] / theirs[r] for r in mine if r in theirs and theirs[r]]
    if not ratios:
        return "–"
    shown = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
    return shown + (f", {len(ratios)} rounds" if rounds == "quiet" else "")

print("## Echo, no compression")
print()
print("Medians over the rounds. duplex ÷ server: duplex's median messages/s over that "
      "server's (above 1: duplex echoed more). Round by round: duplex's messages/s over "
      "the server's in the same round, the median of those ratios and their range, which "
      "shows how far apart runs minutes apart can be on this machine; quiet rounds: the same "
      f"over the rounds in which neither run lost more than {steal_limit:.0f}% of a CPU to the "
      "hypervisor. Server and client CPU: the share of its core each "
      "used over the measurement window. Steal: the larger of the two CPUs' steal time, "
      "in percent of the window (time the hypervisor ran something else). "
      "⚠: in at least one round the client's core was "
      "as busy as the server's (or over 98%), so the figure may be the load generator's "
      "limit rather than the server's.")
print()
table("plain", "duplex ÷ server | round by round: median (range) | quiet rounds",
      lambda key, s: "— | — | —" if key[2] == "duplex"
      else f"{ratio(summary(('plain', key[1], 'duplex')), s)} | {paired(key)} | {paired(key, 'quiet')}")

print("## Echo with permessage-deflate")
print()
print("Only duplex: tokio-tungstenite 0.30 (tungstenite 0.30), tokio-websockets 0.13 and "
      "fastwebsockets 0.10 have no permessage-deflate (no feature for it; their servers "
      "decline the offer), so there is nothing to compare it with.")
print()
if any(k[0] == "deflate" for k in runs):
    print("Client and server both compress (`duplex bench --deflate` sends compressible "
          "JSON-like text; `duplex echo` without `--no-deflate`). ÷ no compression: these "
          "messages/s over duplex's without compression, same case.")
    print()
    table("deflate", "÷ no compression",
          lambda key, s: ratio(s, summary(("plain", key[1], "duplex"))))
elif not deflate:
    print("Skipped (DEFLATE=0).")
    print()
else:
    print("Skipped (duplex not in SERVERS).")
    print()

print("## Flags")
print()
if flags:
    for f in flags:
        print(f"- {f}")
else:
    print(f"None: every run succeeded, no errors, the client under {cpu_limit:.0f}% CPU.")
print()
