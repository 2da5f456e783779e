#!/usr/bin/env python3
"""Turn benches/run.sh's results.jsonl files into the Markdown tables of BENCHMARKS.md.

usage: benches/report.py RESULTS.jsonl [MORE.jsonl ...]
       benches/report.py --attach-syscalls STRACE_SUMMARY DURATION < CELL.json

(The second form, used by run.sh --strace, adds strace -c's counts to a cell's
result as "syscalls" and its unit of work as "units".)

Each cell is the median over the runs; "×" is the ratio to direct; the last
column is albatross's ratio to the best peer (nginx, haproxy, caddy) in the
metric's own direction (↑ higher is better, ↓ lower is better), or, when a
baseline albatross binary ran as target `base`, albatross's ratio to it. A second table
gives the spread, (max - min) / median in %, and a third the CPU busy during
the measured window.
"""
import json
import statistics
import sys

TARGETS = ["direct", "nginx", "haproxy", "caddy", "base", "albatross",
           "nginx_logs", "haproxy_logs", "albatross_logs"]
PEERS = ["nginx", "haproxy", "caddy"]
LOG_PEERS = ["nginx_logs", "haproxy_logs"]


def logs_ratios(meds, direction):
    """With logs on: albatross_logs ÷ albatross (the cost of logging), and
    albatross_logs ÷ the best peer with its log on."""
    on, off = meds.get("albatross_logs"), meds.get("albatross")
    cost = f"{on / off:.2f}×" if on is not None and off else "n/a"
    peers = [meds[p] for p in LOG_PEERS if meds.get(p) is not None]
    if on is None or not peers:
        return cost + " | n/a"
    best = max(peers) if direction == "up" else min(peers)
    return cost + " | " + (f"{on / best:.2f}×" if best else "n/a")

# (cell, key, label, direction, format)
ROWS = [
    ("hs_ws", "rate", "handshake ws, C=32: handshakes/s", "up", "{:,.0f}"),
    ("hs_ws", "p99_ms", "handshake ws, C=32: p99 ms", "down", "{:.2f}"),
    ("hs_wss", "rate", "handshake wss, C=32: handshakes/s", "up", "{:,.0f}"),
    ("hs_wss", "p99_ms", "handshake wss, C=32: p99 ms", "down", "{:.2f}"),
    ("rtt100", "rate", "rtt ws, C=100, 64 B: msg/s", "up", "{:,.0f}"),
    ("rtt100", "p50_us", "rtt ws, C=100, 64 B: p50 µs", "down", "{:,.0f}"),
    ("rtt100", "p99_us", "rtt ws, C=100, 64 B: p99 µs", "down", "{:,.0f}"),
    ("rtt100", "p999_us", "rtt ws, C=100, 64 B: p99.9 µs", "down", "{:,.0f}"),
    ("rtt1", "rate", "rtt ws, C=1, 64 B: msg/s", "up", "{:,.0f}"),
    ("rtt1", "p50_us", "rtt ws, C=1, 64 B: p50 µs", "down", "{:,.0f}"),
    ("rtt1", "p99_us", "rtt ws, C=1, 64 B: p99 µs", "down", "{:,.0f}"),
    ("rtt1", "p999_us", "rtt ws, C=1, 64 B: p99.9 µs", "down", "{:,.0f}"),
    ("tput", "sent_mb_s", "throughput ws, C=1, 64 KiB frames: MB/s sent", "up", "{:,.0f}"),
    ("tput", "echoed_mb_s", "throughput ws, C=1, 64 KiB frames: MB/s echoed back", "up", "{:,.0f}"),
    ("tput_wss", "sent_mb_s", "throughput wss, C=1, 64 KiB frames: MB/s sent", "up", "{:,.0f}"),
    ("tput_wss", "echoed_mb_s", "throughput wss, C=1, 64 KiB frames: MB/s echoed back", "up", "{:,.0f}"),
    ("idle_ws", "alive", "idle ws: connections alive after hold (of N)", "up", "{:,.0f}"),
    ("idle_ws", "rss_kib_per_conn", "idle ws: proxy RSS KiB per connection", "down", "{:.1f}"),
    ("idle_wss", "alive", "idle wss: connections alive after hold (of N)", "up", "{:,.0f}"),
    ("idle_wss", "rss_kib_per_conn", "idle wss: proxy RSS KiB per connection", "down", "{:.1f}"),
    ("http", "rate", "HTTP GET keep-alive (wrk -t1 -c64): req/s", "up", "{:,.0f}"),
    ("http", "p99_ms", "HTTP GET keep-alive (wrk -t1 -c64): p99 ms", "down", "{:.2f}"),
]

CPU_ROWS = [
    ("hs_ws", "proxy_us_per_handshake", "handshake ws: proxy CPU µs per handshake", "{:,.0f}"),
    ("hs_wss", "proxy_us_per_handshake", "handshake wss: proxy CPU µs per handshake", "{:,.0f}"),
    ("rtt100", "proxy_us_per_message", "rtt ws C=100: proxy CPU µs per message echoed", "{:.1f}"),
    ("rtt1", "proxy_us_per_message", "rtt ws C=1: proxy CPU µs per message echoed", "{:.1f}"),
    ("tput", "proxy_us_per_mb", "throughput ws: proxy CPU µs per MB each way", "{:,.0f}"),
    ("tput_wss", "proxy_us_per_mb", "throughput wss: proxy CPU µs per MB each way", "{:,.0f}"),
    ("http", "proxy_us_per_request", "HTTP keep-alive: proxy CPU µs per request", "{:.1f}"),
]

BUSY_CELLS = [
    ("hs_ws", "handshake ws"),
    ("hs_wss", "handshake wss"),
    ("rtt100", "rtt ws C=100"),
    ("rtt1", "rtt ws C=1"),
    ("tput", "throughput ws"),
    ("tput_wss", "throughput wss"),
    ("http", "HTTP keep-alive"),
]


def attach_syscalls(summary_path, duration):
    """Reads a cell's JSON on stdin and prints it with strace -c's counts per call and
    the number of units of work (handshakes, messages or requests) they were spent on."""
    cell = json.loads(sys.stdin.read() or "null")
    if not isinstance(cell, dict):
        print(json.dumps(cell))
        return
    calls = {}
    try:
        with open(summary_path) as f:
            for line in f:
                parts = line.split()
                # "% time  seconds  usecs/call  calls  [errors]  syscall"
                if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                    calls[parts[-1]] = int(parts[3])
    except OSError:
        pass
    units = cell.get("handshakes") or cell.get("messages")
    if units is None and cell.get("rate"):
        units = cell["rate"] * float(duration)
    cell["syscalls"] = calls
    cell["units"] = units
    print(json.dumps(cell))


SYSCALL_CELLS = [
    ("hs_ws", "per ws handshake"),
    ("hs_wss", "per wss handshake"),
    ("rtt1", "per message echoed, C=1"),
    ("rtt100", "per message echoed, C=100"),
    ("http", "per keep-alive request"),
]


def syscall_tables(data, present, out):
    """System calls per unit of work, from run.sh --strace."""
    for cell, label in SYSCALL_CELLS:
        per = {}
        for t in present:
            rs = [r for r in data.get((t, cell), []) if r.get("syscalls") and r.get("units")]
            if not rs:
                continue
            names = set().union(*(r["syscalls"] for r in rs))
            per[t] = {n: med([r["syscalls"].get(n, 0) / r["units"] for r in rs]) for n in names}
        if not per:
            continue
        targets = [t for t in present if t in per]
        names = sorted(set().union(*(per[t] for t in targets)),
                       key=lambda n: -max(per[t].get(n, 0) for t in targets))
        out.append("")
        out.append(f"System calls {label} (strace -c, median over runs):")
        out.append("")
        out.append("| call | " + " | ".join(targets) + " |")
        out.append("|---|" + "---:|" * len(targets))
        out.append("| **all** | " + " | ".join(f"**{sum(per[t].values()):.2f}**" for t in targets) + " |")
        for n in names:
            if max(per[t].get(n, 0) for t in targets) < 0.01:
                continue
            out.append(f"| {n} | " + " | ".join(f"{per[t].get(n, 0):.2f}" for t in targets) + " |")


def load(paths):
    data = {}  # (target, cell) -> list of result dicts
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                if rec.get("result"):
                    data.setdefault((rec["target"], rec["cell"]), []).append(rec["result"])
    return data


def values(data, target, cell, key):
    return [r[key] for r in data.get((target, cell), []) if isinstance(r.get(key), (int, float))]


def med(vs):
    return statistics.median(vs) if vs else None


def spread(vs):
    if len(vs) < 2:
        return None
    m = statistics.median(vs)
    return 100.0 * (max(vs) - min(vs)) / m if m else 0.0


def main(paths):
    data = load(paths)
    present = [t for t in TARGETS if any(k[0] == t for k in data)]
    runs = max((len(v) for v in data.values()), default=0)
    out = []
    head = "| scenario: metric | " + " | ".join(present)
    if "albatross" in present:
        head += " | " + ratio_label(present)
    logs = "albatross_logs" in present
    if logs:
        head += " | logs on ÷ off | albatross_logs ÷ best peer with logs"
    out.append(head + " |")
    out.append("|---|" + "---:|" * (len(present) + ("albatross" in present) + 2 * logs))
    for cell, key, label, direction, fmt in ROWS:
        meds = {t: med(values(data, t, cell, key)) for t in present}
        if all(v is None for v in meds.values()):
            continue
        d = meds.get("direct")
        cells = []
        for t in present:
            v = meds[t]
            if v is None:
                cells.append("n/a")
                continue
            s = fmt.format(v)
            if t != "direct" and d and key not in ("alive",):
                s += f" ({v / d:.2f}×)"
            cells.append(s)
        arrow = "↑" if direction == "up" else "↓"
        row = f"| {label} {arrow} | " + " | ".join(cells)
        if "albatross" in present:
            row += " | " + best_ratio(meds, direction)
        if logs:
            row += " | " + logs_ratios(meds, direction)
        out.append(row + " |")

    out.append("")
    out.append("Proxy CPU time per unit of work (utime + stime of the proxy process, CPU-µs; lower is better):")
    out.append("")
    cpu_targets = [t for t in present if t != "direct"]
    head = "| scenario | " + " | ".join(cpu_targets)
    if "albatross" in cpu_targets:
        head += " | " + ratio_label(cpu_targets)
    if logs:
        head += " | logs on ÷ off | albatross_logs ÷ best peer with logs"
    out.append(head + " |")
    out.append("|---|" + "---:|" * (len(cpu_targets) + ("albatross" in cpu_targets) + 2 * logs))
    for cell, key, label, fmt in CPU_ROWS:
        meds = {t: med(values(data, t, cell, key)) for t in cpu_targets}
        if all(v is None for v in meds.values()):
            continue
        cells = [fmt.format(meds[t]) if meds[t] is not None else "n/a" for t in cpu_targets]
        row = f"| {label} | " + " | ".join(cells)
        if "albatross" in cpu_targets:
            row += " | " + best_ratio(meds, "down")
        if logs:
            row += " | " + logs_ratios(meds, "down")
        out.append(row + " |")

    out.append("")
    out.append("The kernel's share of the proxy's CPU (stime ÷ (utime + stime), %):")
    out.append("")
    out.append("| scenario | " + " | ".join(cpu_targets) + " |")
    out.append("|---|" + "---:|" * len(cpu_targets))
    for cell, label in BUSY_CELLS:
        cells = [med(values(data, t, cell, "proxy_sys_pct")) for t in cpu_targets]
        if all(c is None for c in cells):
            continue
        out.append(f"| {label} | " + " | ".join("n/a" if c is None else f"{c:.0f}" for c in cells) + " |")

    out.append("")
    out.append("CPU busy during the measured window, proxy / client + echo target (% of one CPU; "
               "wrk's own CPU is not counted):")
    out.append("")
    out.append("| scenario | " + " | ".join(present) + " |")
    out.append("|---|" + "---:|" * len(present))
    for cell, label in BUSY_CELLS:
        cells = []
        for t in present:
            p = med(values(data, t, cell, "proxy_cpu_pct"))
            c = med(values(data, t, cell, "client_cpu_pct"))
            if p is None and c is None:
                cells.append("n/a")
            else:
                cells.append(f"{'–' if p is None else f'{p:.0f}'} / {'–' if c is None else f'{c:.0f}'}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    out.append("")
    out.append(f"Spread over {runs} run(s): (max − min) ÷ median, %:")
    out.append("")
    out.append("| scenario: metric | " + " | ".join(present) + " |")
    out.append("|---|" + "---:|" * len(present))
    for cell, key, label, direction, fmt in ROWS + [(c, k, l, "down", f) for c, k, l, f in CPU_ROWS]:
        sps = {t: spread(values(data, t, cell, key)) for t in present}
        if all(v is None for v in sps.values()):
            continue
        cells = ["n/a" if v is None else f"{v:.0f}" for v in sps.values()]
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    syscall_tables(data, present, out)

    # Errors, if any.
    errs = []
    for (t, cell), rs in sorted(data.items()):
        for r in rs:
            n = r.get("errors") or r.get("open_errors") or 0
            if n:
                errs.append(f"- {t} {cell}: {n} errors" + (f" ({r['first_error']})" if r.get("first_error") else ""))
            if cell.startswith("idle") and r.get("alive", 0) < r.get("conns", 0):
                errs.append(f"- {t} {cell}: {r.get('alive')} of {r.get('conns')} alive after the hold")
    if errs:
        out.append("")
        out.append("Errors seen:")
        out.extend(errs)
    print("\n".join(out))


def ratio_label(present):
    return "albatross ÷ base" if "base" in present else "albatross ÷ best peer"


def best_ratio(meds, direction):
    a = meds.get("albatross")
    if "base" in meds:
        base = meds.get("base")
        return f"{a / base:.2f}×" if a is not None and base else "n/a"
    peers = [meds[p] for p in PEERS if meds.get(p) is not None]
    if a is None or not peers:
        return "n/a"
    best = max(peers) if direction == "up" else min(peers)
    if not best:
        return "n/a"
    return f"{a / best:.2f}×"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--attach-syscalls":
        attach_syscalls(sys.argv[2], sys.argv[3])
        sys.exit(0)
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1:])
