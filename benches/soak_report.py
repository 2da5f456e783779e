#!/usr/bin/env python3
"""Judges and reports the soak suite's scenarios (driven by benches/soak.sh).

    soak_report.py record SCENARIO DIR RUN_ID COMMIT   # one JSON line on stdout
    soak_report.py summary < LINE                      # its one-line summary
    soak_report.py table RESULTS.jsonl RUN_ID          # the run's Markdown table

DIR holds what soak.sh collected for the scenario: wsbench's JSON outputs, extra.txt
(key=value lines), samples.txt ("seconds rss_kib open_tunnels" every few seconds) and
metrics-end.txt (the admin listener's /metrics at the end).
"""
import json
import os
import statistics
import sys


def load_json(d, name):
    try:
        with open(os.path.join(d, name)) as f:
            text = f.read().strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def load_extra(d):
    out = {}
    try:
        with open(os.path.join(d, "extra.txt")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                try:
                    out[k] = int(v)
                except ValueError:
                    try:
                        out[k] = float(v)
                    except ValueError:
                        out[k] = v
    except OSError:
        pass
    return out


def load_samples(d):
    out = []
    try:
        with open(os.path.join(d, "samples.txt")) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    try:
                        out.append((float(parts[0]), int(parts[1]), int(parts[2])))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def load_metrics(d):
    """Series name with labels -> value."""
    out = {}
    try:
        with open(os.path.join(d, "metrics-end.txt")) as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                name, _, value = line.rstrip().rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def metric_sum(m, prefix, label=""):
    return int(sum(v for k, v in m.items()
                   if (k == prefix or k.startswith(prefix + "{")) and label in k))


def closed_by_cause(m):
    out = {}
    for k, v in m.items():
        if k.startswith("albatross_tunnel_closed_count_total{") and v:
            cause = k.split('cause="', 1)[1].split('"', 1)[0] if 'cause="' in k else "?"
            out[cause] = int(v)
    return out


def mib(kib):
    return None if kib is None else round(kib / 1024, 1)


def merge_tallies(*ds):
    out = {}
    for d in ds:
        for k, v in (d or {}).items():
            out[k] = out.get(k, 0) + v
    return out


class Judge:
    def __init__(self):
        self.failed = []

    def check(self, ok, what):
        if not ok:
            self.failed.append(what)
        return ok


def rec_idle_wss(d, x, j):
    idle = load_json(d, "idle.json")
    samples = load_samples(d)
    conns = idle.get("conns", 0)
    opened = idle.get("opened", 0)
    alive = idle.get("alive", 0)
    rss = [x.get("rss_start_kib"), idle.get("rss_open_kib"), idle.get("rss_held_kib"),
           idle.get("rss_after_echo_kib")]
    peak = max([r for r in rss if r] + [s[1] for s in samples] or [0])
    held = [s[2] for s in samples if s[2] > 0]
    tunnels_seen = (min(held[1:]), max(held[1:])) if len(held) > 1 else (None, None)
    j.check(idle != {}, "wsbench idle produced no result")
    j.check(opened == conns and idle.get("open_errors", 1) == 0, f"{conns - opened} tunnels did not open")
    j.check(alive == conns, f"{conns - alive} tunnels did not echo at the end")
    j.check(x.get("albatross_alive") == 1, "albatross was not running at the end")
    fig = {
        "tunnels": conns, "opened": opened, "open_secs": idle.get("open_secs"),
        "hold_secs": idle.get("hold_secs"), "echo_ok": alive, "echo_failed": conns - alive,
        "first_error": idle.get("first_error"),
        "open_tunnels_gauge_min_max_while_held": tunnels_seen,
        "rss_start_kib": rss[0], "rss_open_kib": rss[1], "rss_held_kib": rss[2],
        "rss_end_kib": rss[3], "rss_peak_kib": peak,
        "rss_kib_per_tunnel": idle.get("rss_kib_per_conn"),
        "tunnel_closed_by_cause": closed_by_cause(load_metrics(d)),
    }
    counted = f"{conns} wss tunnels held {round((idle.get('hold_secs') or 0) / 60, 1)} min; echo at the end"
    result = f"{alive} OK, {conns - alive} failed (opened {opened})"
    summary = (f"idle_wss: {opened}/{conns} opened, held {idle.get('hold_secs')} s, {alive} echoed, "
               f"{conns - alive} failed; RSS {mib(rss[0])} -> {mib(rss[1])} (open) -> {mib(rss[3])} MiB (end), "
               f"peak {mib(peak)} MiB")
    return fig, counted, result, (rss[0], peak, rss[3]), summary


def rss_under_load(d, x):
    """RSS while a load ran (samples up to load_end_secs): the level after warm-up (the
    median of the samples between 20% and 30% of the run, at least the first from 20%
    on), the end, the peak, whether the end stays within 5% of the warm level, the
    slope after 30% (KiB/min), and the samples counted."""
    samples = load_samples(d)
    load_end = x.get("load_end_secs") or (samples[-1][0] if samples else 0)
    during = [s for s in samples if s[0] <= load_end + 0.01]
    warm = [s[1] for s in during if 0.2 * load_end <= s[0] <= 0.3 * load_end]
    if not warm:
        warm = [s[1] for s in during if s[0] >= 0.2 * load_end][:1]
    warm_level = statistics.median(warm) if warm else None
    end = during[-1][1] if during else None
    peak = max([s[1] for s in during] or [0])
    flat = bool(warm_level and end and end <= warm_level * 1.05)
    late = [s for s in during if s[0] >= 0.3 * load_end]
    slope = None
    if len(late) >= 3:
        ts = [s[0] for s in late]
        rs = [s[1] for s in late]
        mt, mr = statistics.mean(ts), statistics.mean(rs)
        den = sum((t - mt) ** 2 for t in ts)
        if den:
            slope = round(sum((t - mt) * (r - mr) for t, r in zip(ts, rs)) / den * 60, 1)
    return warm_level, end, peak, flat, slope, len(during)


def rss_figures(x, warm_level, end, peak, flat, slope, n):
    """The figures of rss_under_load's answer, with the start and after-load readings."""
    return {
        "rss_start_kib": x.get("rss_start_kib"), "rss_warm_kib": warm_level,
        "rss_peak_kib": peak, "rss_end_kib": end, "rss_after_load_kib": x.get("rss_after_load_kib"),
        "rss_end_over_warm": round(end / warm_level, 4) if warm_level and end else None,
        "rss_slope_kib_per_min_after_warmup": slope, "flat": flat, "samples": n,
    }


def rec_churn(d, x, j):
    ws = load_json(d, "ws.json")
    wss = load_json(d, "wss.json")
    warm_level, end, peak, flat, slope, n = rss_under_load(d, x)
    hs = ws.get("handshakes", 0) + wss.get("handshakes", 0)
    errs = ws.get("errors", 0) + wss.get("errors", 0)
    j.check(ws != {} and wss != {}, "a wsbench handshake run produced no result")
    j.check(errs == 0, f"{errs} handshake errors")
    j.check(flat, "RSS not flat (end more than 5% above the level after warm-up)")
    j.check(x.get("albatross_alive") == 1, "albatross was not running at the end")
    fig = {
        "ws_handshakes": ws.get("handshakes"), "ws_errors": ws.get("errors"),
        "ws_rate": ws.get("rate"), "ws_p99_ms": ws.get("p99_ms"),
        "wss_handshakes": wss.get("handshakes"), "wss_errors": wss.get("errors"),
        "wss_rate": wss.get("rate"), "wss_p99_ms": wss.get("p99_ms"),
        **rss_figures(x, warm_level, end, peak, flat, slope, n),
        "access_log_lines": x.get("access_log_lines"), "log_dropped_lines": x.get("log_dropped_lines"),
        "tunnel_closed_by_cause": closed_by_cause(load_metrics(d)),
    }
    minutes = x.get("minutes")
    counted = f"{minutes} min of ws + wss handshake churn (connect, upgrade, echo, close)"
    result = (f"{hs} handshakes ({ws.get('handshakes')} ws, {wss.get('handshakes')} wss), {errs} errors; "
              f"RSS {'flat' if flat else 'NOT flat'}: end/warm {fig['rss_end_over_warm']}")
    summary = (f"churn: {hs} handshakes, {errs} errors; RSS start {mib(x.get('rss_start_kib'))}, "
               f"warm {mib(warm_level)}, peak {mib(peak)}, end {mib(end)}, after load "
               f"{mib(x.get('rss_after_load_kib'))} MiB; flat={flat} (end/warm {fig['rss_end_over_warm']}, "
               f"slope {slope} KiB/min)")
    return fig, counted, result, (x.get("rss_start_kib"), peak, end), summary


def rec_h2(d, x, j):
    h2 = load_json(d, "h2.json")
    warm_level, end, peak, flat, slope, n = rss_under_load(d, x)
    statuses = h2.get("statuses") or {}
    errors = h2.get("errors") or {}
    requests = h2.get("requests", 0)
    ok = statuses.get("200", 0)
    conns = h2.get("conns") or 0
    goaways = h2.get("goaways", 0)
    # ALB's GOAWAY after 10,000 requests: each connection lives that many at most.
    expected_goaways = requests // 10000 - conns if conns else 0
    j.check(h2 != {}, "the wsbench h2 run produced no result")
    j.check(requests > 0, "no HTTP/2 request was answered")
    j.check(not errors, f"stream or connection errors: {errors}")
    j.check(ok == requests, f"answers other than 200: {statuses}")
    j.check(goaways >= expected_goaways,
            f"{goaways} GOAWAYs for {requests} requests on {conns} connections")
    per_conn = h2.get("requests_per_ended_conn")
    j.check(not per_conn or per_conn[0] >= 10000,
            f"a connection ended after {per_conn and per_conn[0]} requests, before ALB's 10,000")
    j.check(flat, "RSS not flat (end more than 5% above the level after warm-up)")
    j.check(x.get("albatross_alive") == 1, "albatross was not running at the end")
    fig = {
        "requests": requests, "statuses": statuses, "errors": errors,
        "conns": conns, "streams": h2.get("streams"), "rate": h2.get("rate"),
        "connections_opened": h2.get("connections"), "goaways": goaways,
        "goaway_then_client_write_error": h2.get("goaway_then_io"),
        "requests_per_ended_conn_min_max": per_conn,
        **rss_figures(x, warm_level, end, peak, flat, slope, n),
        "access_log_lines": x.get("access_log_lines"), "log_dropped_lines": x.get("log_dropped_lines"),
    }
    minutes = x.get("minutes")
    counted = (f"{minutes} min of HTTP/2 GETs over TLS, {conns} connections x "
               f"{h2.get('streams')} streams, connections reopened after each GOAWAY")
    err_total = sum(errors.values())
    result = (f"{requests} requests, {ok} answered 200, {err_total} errors; {goaways} GOAWAYs over "
              f"{h2.get('connections')} connections ({h2.get('goaway_then_io')} of them a client write "
              f"failing after it); RSS {'flat' if flat else 'NOT flat'}: "
              f"end/warm {fig['rss_end_over_warm']}")
    summary = (f"h2: {requests} requests ({ok} x 200), {err_total} errors, {goaways} GOAWAYs; RSS start "
               f"{mib(x.get('rss_start_kib'))}, warm {mib(warm_level)}, peak {mib(peak)}, end {mib(end)} MiB; "
               f"flat={flat} (end/warm {fig['rss_end_over_warm']}, slope {slope} KiB/min)")
    return fig, counted, result, (x.get("rss_start_kib"), peak, end), summary


def mixed_parts(*runs):
    statuses = merge_tallies(*[r.get("http", {}).get("statuses") for r in runs])
    errors = merge_tallies(*[r.get("http", {}).get("errors") for r in runs])
    t = [r.get("tunnels", {}) for r in runs]
    return {
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "http_errors": errors,
        "by_target": merge_tallies(*[r.get("http", {}).get("by_target") for r in runs]),
        "server_closes": sum(r.get("http", {}).get("server_closes", 0) for r in runs),
        "tunnels": sum(x.get("requested", 0) for x in t),
        "tunnels_opened": sum(x.get("opened", 0) for x in t),
        "tunnel_open_errors": merge_tallies(*[x.get("open_errors") for x in t]),
        "tunnel_echoes_ok": sum(x.get("echoes_ok", 0) for x in t),
        "tunnel_failures_by_target": merge_tallies(*[x.get("failures_by_target") for x in t]),
        "tunnel_failure_kinds": merge_tallies(*[x.get("failure_kinds") for x in t]),
        "tunnels_reopened": sum(x.get("reopened", 0) for x in t),
        "tunnel_reopen_errors": merge_tallies(*[x.get("reopen_errors") for x in t]),
        "tunnels_final_ok": sum(x.get("final_ok", 0) for x in t),
        "tunnels_final_failed": merge_tallies(*[x.get("final_failed") for x in t]),
        "events": [e for r in runs for e in r.get("events", [])][:20],
    }


def rss_from_samples(samples):
    if not samples:
        return (None, None, None)
    return (samples[0][1], max(s[1] for s in samples), samples[-1][1])


def rec_targets(d, x, j):
    plain, tls, after = load_json(d, "plain.json"), load_json(d, "tls.json"), load_json(d, "after.json")
    m = mixed_parts(plain, tls)
    a = mixed_parts(after)
    j.check(plain != {} and tls != {}, "a wsbench mixed run produced no result")
    j.check(set(m["statuses"]) <= {"200", "502"}, f"statuses other than 200/502: {m['statuses']}")
    j.check(not m["http_errors"], f"HTTP errors: {m['http_errors']}")
    j.check(not m["tunnel_open_errors"], f"tunnels that did not open: {m['tunnel_open_errors']}")
    j.check(set(m["tunnel_failures_by_target"]) <= {"t1"},
            f"tunnels to targets never killed failed: {m['tunnel_failures_by_target']}")
    j.check(all("502" in k for k in m["tunnel_reopen_errors"]),
            f"reopen errors other than 502: {m['tunnel_reopen_errors']}")
    j.check(not m["tunnels_final_failed"], f"tunnels failing the final echo: {m['tunnels_final_failed']}")
    j.check(x.get("healthy_hosts_end") == 3, f"healthy hosts at the end: {x.get('healthy_hosts_end')}")
    j.check(isinstance(x.get("healthy_after_secs"), float) and x["healthy_after_secs"] >= 0,
            "t1 not healthy within 60 s of its last restart")
    j.check(set(a["statuses"]) == {"200"} and not a["http_errors"],
            f"after the run: {a['statuses']} {a['http_errors']}")
    j.check({"t1", "t2", "t3"} <= set(a["by_target"]), f"after the run, answered by {a['by_target']}")
    j.check(x.get("albatross_alive") == 1, "albatross was not running at the end")
    met = load_metrics(d)
    m.update({
        "kills": x.get("kills"), "healthy_after_secs": x.get("healthy_after_secs"),
        "healthy_hosts_end": x.get("healthy_hosts_end"),
        "after": {"statuses": a["statuses"], "errors": a["http_errors"], "by_target": a["by_target"]},
        "target_connection_errors": metric_sum(met, "albatross_target_connection_error_count_total"),
        "tunnel_closed_by_cause": closed_by_cause(met),
        "access_log_lines": x.get("access_log_lines"), "log_dropped_lines": x.get("log_dropped_lines"),
    })
    rss = rss_from_samples(load_samples(d))
    n502 = m["statuses"].get("502", 0)
    closed = sum(m["tunnel_failures_by_target"].values())
    counted = f"HTTP + 300 ws/wss tunnels over 3 targets; t1 SIGKILLed and restarted {x.get('kills')}x"
    result = (f"{m['requests']} requests: {m['statuses'].get('200', 0)} × 200, {n502} × 502, "
              f"{sum(m['http_errors'].values())} errors; {closed} tunnels closed (all to t1), "
              f"{sum(m['tunnels_final_failed'].values())} failed at the end; 3/3 healthy "
              f"{x.get('healthy_after_secs')} s after the last restart")
    summary = (f"targets: {m['requests']} requests {m['statuses']}, errors {m['http_errors']}; tunnels closed "
               f"{m['tunnel_failures_by_target']}, reopened {m['tunnels_reopened']}, final "
               f"{m['tunnels_final_ok']} ok {m['tunnels_final_failed']}; healthy {x.get('healthy_hosts_end')}")
    return m, counted, result, rss, summary


def rec_reload(d, x, j):
    plain, tls = load_json(d, "plain.json"), load_json(d, "tls.json")
    m = mixed_parts(plain, tls)
    samples = load_samples(d)
    steady = [s[2] for s in samples if 12 <= s[0] <= (samples[-1][0] - 6 if samples else 0)]
    gauge = (min(steady), max(steady)) if steady else (None, None)
    j.check(plain != {} and tls != {}, "a wsbench mixed run produced no result")
    j.check(set(m["statuses"]) <= {"200", "202"}, f"statuses other than 200/202: {m['statuses']}")
    j.check({"200", "202"} <= set(m["statuses"]), "both configs' fixed responses not seen")
    j.check(not m["http_errors"], f"HTTP errors: {m['http_errors']}")
    j.check(not m["tunnel_open_errors"], f"tunnels that did not open: {m['tunnel_open_errors']}")
    j.check(not m["tunnel_failures_by_target"], f"tunnels dropped: {m['tunnel_failures_by_target']}")
    j.check(m["tunnels_final_ok"] == m["tunnels"], f"{m['tunnels'] - m['tunnels_final_ok']} tunnels failed the final echo")
    j.check(x.get("tunnels_listed_end") == m["tunnels"], f"GET /tunnels listed {x.get('tunnels_listed_end')}")
    j.check(gauge == (m["tunnels"], m["tunnels"]), f"open-tunnel gauge during the reloads {gauge}")
    j.check(x.get("reloads_logged", 0) >= 0.9 * x.get("hups", 0) > 0,
            f"{x.get('reloads_logged')} reloads logged for {x.get('hups')} SIGHUPs")
    j.check(x.get("reload_errors_logged") == 0, f"{x.get('reload_errors_logged')} error lines logged")
    j.check(x.get("albatross_alive") == 1, "albatross was not running at the end")
    m.update({
        "hups": x.get("hups"), "reloads_logged": x.get("reloads_logged"),
        "reload_errors_logged": x.get("reload_errors_logged"),
        "tunnels_listed_start": x.get("tunnels_listed_start"), "tunnels_listed_end": x.get("tunnels_listed_end"),
        "open_tunnel_gauge_min_max": gauge,
        "tunnel_closed_by_cause": closed_by_cause(load_metrics(d)),
        "access_log_lines": x.get("access_log_lines"), "log_dropped_lines": x.get("log_dropped_lines"),
    })
    rss = rss_from_samples(samples)
    bad = sum(m["http_errors"].values()) + sum(v for k, v in m["statuses"].items() if k not in ("200", "202"))
    counted = f"HTTP + {m['tunnels']} ws/wss tunnels; {x.get('hups')} SIGHUPs, two configs in turn"
    result = (f"{m['requests']} requests ({m['statuses']}), {bad} failed; "
              f"{sum(m['tunnel_failures_by_target'].values())} tunnels dropped, {m['tunnels_final_ok']}/{m['tunnels']} "
              f"echo at the end, /tunnels {x.get('tunnels_listed_end')}; {x.get('reloads_logged')} reloads")
    summary = (f"reload: {x.get('hups')} SIGHUPs, {x.get('reloads_logged')} reloads logged; {m['requests']} requests "
               f"{m['statuses']}, errors {m['http_errors']}; tunnels dropped {m['tunnel_failures_by_target']}, final "
               f"{m['tunnels_final_ok']}/{m['tunnels']}, listed {x.get('tunnels_listed_end')}, gauge {gauge}")
    return m, counted, result, rss, summary


def rec_shutdown(d, x, j):
    rounds = []
    try:
        with open(os.path.join(d, "rounds.jsonl")) as f:
            rounds = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        pass
    timeout = x.get("shutdown_timeout", 30)
    bound = timeout + 1.0
    j.check(len(rounds) > 0, "no round ran")
    by_mode = {}
    total = complete = accepted_late = refused = 0
    for r in rounds:
        n = r.get("round")
        mode = r.get("mode")
        conns = r.get("conns", 0)
        total += conns
        complete += r.get("complete", 0)
        probes = r.get("probes", {})
        refused += probes.get("refused", 0)
        accepted_late += sum(v for k, v in probes.items() if not k.startswith("first_") and k != "refused")
        j.check("complete" in r, f"round {n}: no result")
        j.check(r.get("in_flight_at_signal") == conns, f"round {n}: {r.get('in_flight_at_signal')} of {conns} in flight at the signal")
        j.check(r.get("complete") == conns, f"round {n}: {conns - r.get('complete', 0)} incomplete {r.get('incomplete')}")
        j.check(r.get("first_accepted_after_250ms_secs") is None,
                f"round {n}: a new connection accepted {r.get('first_accepted_after_250ms_secs')} s after SIGTERM")
        ex = r.get("exit_secs")
        j.check(ex is not None and ex <= bound, f"round {n} ({mode}): exit after {ex} s (bound {bound})")
        j.check(r.get("exit_code") == 0, f"round {n}: exit code {r.get('exit_code')}")
        j.check(r.get("tunnel_echo_during_drain_ok") == r.get("tunnels"), f"round {n}: tunnels not echoing while draining")
        s = by_mode.setdefault(mode, {"rounds": 0, "exit_secs": [], "last_response_secs": [], "tunnel_ends": {}})
        s["rounds"] += 1
        if ex is not None:
            s["exit_secs"].append(ex)
        s["last_response_secs"].append(r.get("last_response_after_signal_secs"))
        s["tunnel_ends"] = merge_tallies(s["tunnel_ends"], r.get("tunnel_ends"))
    for s in by_mode.values():
        e = s.pop("exit_secs")
        s["exit_secs_min_max"] = (round(min(e), 2), round(max(e), 2)) if e else None
        lr = [v for v in s.pop("last_response_secs") if v is not None]
        s["last_response_after_signal_secs_max"] = round(max(lr), 2) if lr else None
    fig = {
        "rounds": len(rounds), "shutdown_timeout": timeout, "slow_response_ms": x.get("delay_ms"),
        "requests_in_flight": total, "complete": complete,
        "new_connections_refused": refused, "new_connections_accepted_after_250ms": accepted_late,
        "by_mode": by_mode, "deadline_lines_logged": x.get("deadline_lines_logged"),
        "failed_rounds": [r.get("round") for r in rounds if r.get("complete") != r.get("conns")],
    }
    exits = [r.get("exit_secs") for r in rounds if r.get("exit_secs") is not None]
    counted = (f"{len(rounds)} SIGTERMs, each with 50 requests of {x.get('delay_ms')} ms in flight "
               f"(+20 tunnels every other round); shutdown_timeout {timeout} s")
    modes = "; ".join(f"{k} {v['exit_secs_min_max']}" for k, v in by_mode.items())
    result = (f"{complete}/{total} complete; new connections: {refused} refused, {accepted_late} accepted; "
              f"exit after (s, min–max): {modes}")
    summary = (f"shutdown: {len(rounds)} rounds, {complete}/{total} responses complete, {refused} probes refused, "
               f"{accepted_late} accepted after 250 ms; exit s {modes}; max {max(exits) if exits else None}")
    return fig, counted, result, (None, None, None), summary


RECORDERS = {
    "idle_wss": rec_idle_wss, "churn": rec_churn, "targets": rec_targets,
    "reload": rec_reload, "shutdown": rec_shutdown, "h2": rec_h2,
}


def record(sc, d, run_id, commit):
    x = load_extra(d)
    j = Judge()
    fig, counted, result, rss, summary = RECORDERS[sc](d, x, j)
    line = {
        "run": run_id, "commit": commit, "scenario": sc, "minutes": x.get("minutes"),
        "started": x.get("started"), "finished": x.get("finished"),
        "pass": not j.failed, "failed_checks": j.failed,
        "counted": counted, "result": result,
        "rss_kib": {"start": rss[0], "peak": rss[1], "end": rss[2]},
        "figures": fig, "summary": summary,
    }
    print(json.dumps(line))


def summary():
    r = json.loads(sys.stdin.readline())
    verdict = "PASS" if r["pass"] else "FAIL: " + "; ".join(r["failed_checks"])
    print(f"{verdict} | {r['summary']}")


def table(path, run_id):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                if r.get("run") == run_id:
                    rows.append(r)
    print("| scenario | minutes | what was counted | result | albatross RSS start / peak / end (MiB) | verdict |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        rss = r.get("rss_kib", {})
        rss_text = " / ".join("–" if rss.get(k) is None else f"{mib(rss[k])}" for k in ("start", "peak", "end"))
        verdict = "pass" if r["pass"] else "**FAIL**: " + "; ".join(r["failed_checks"])
        print(f"| {r['scenario']} | {r['minutes']} | {r['counted']} | {r['result']} | {rss_text} | {verdict} |")


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "record" and len(sys.argv) == 6:
        record(*sys.argv[2:6])
    elif cmd == "summary":
        summary()
    elif cmd == "table" and len(sys.argv) == 4:
        table(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
