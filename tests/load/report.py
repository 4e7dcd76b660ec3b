#!/usr/bin/env python3
"""Turns ferrocable-bench JSON results into a markdown table or an SVG chart.

  report.py table DIR            one row per <server>.json in DIR
  report.py chart DIR OUT.svg    step-mode results: p95 and delivered/s against subscribers, one line per server
  report.py rounds DIR A/B...    rounds.sh results (DIR/round-N/<server>.json): each round's rate of every server,
                                 the ratio A ÷ B of each pair within each round, and the medians
  report.py kind                 this machine's kind, as baselines are keyed: "<cores> x <CPU model>"
  report.py figures BASELINE     the baseline figures of this machine's kind: "name<TAB>compare.sh arguments"
  report.py check BASELINE NAME DIR
                                 compares the figure NAME measured in DIR (compare.sh results, or rounds in
                                 DIR/round-N: the median over them) with the committed baseline of this machine's
                                 kind; exits 1 when a metric fell back by more than the baseline's tolerance
  report.py record BASELINE NAME DIR
                                 writes the medians measured in DIR as the baseline of NAME for this machine's kind
"""
import json
import pathlib
import sys


def load(directory):
    results = {}
    for path in sorted(pathlib.Path(directory).glob("*.json")):
        text = path.read_text().strip()
        if text:
            results[path.stem] = json.loads(text)
    return results


def fmt(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ms(seconds):
    return None if seconds is None else seconds * 1000.0


def rows_for(result):
    kind = result.get("scenario")
    cpu = result.get("cpu", {})
    if kind == "idle":
        return {
            "connections": result["connections"],
            "failed": result["failed"],
            "connects/s": result["connects_per_second"],
            "RSS/conn (bytes)": result["rss_per_connection_bytes"],
            **({"RSS/added conn (bytes)": result["rss_per_added_connection_bytes"]}
               if "rss_per_added_connection_bytes" in result else {}),
            "RSS after (MiB)": (result["server_rss_after_kib"] or 0) / 1024,
        }
    if kind == "sse":
        lat = result["latency"]
        return {
            "SSE clients": result["clients"],
            "failed": result["failed"],
            "RSS/client (bytes)": result["rss_per_client_bytes"],
            "RSS idle (MiB)": (result["server_rss_idle_kib"] or 0) / 1024,
            "delivered": f'{result["deliveries"]}/{result["expected_deliveries"]}',
            "delivered/s": result["deliveries_per_second"],
            "p50 ms": lat["p50_ms"],
            "p95 ms": lat["p95_ms"],
            "server CPU %": cpu.get("server_cpu_percent"),
        }
    if kind == "broadcast":
        lat = result["latency"]
        return {
            "subscribers": result["subscribers"],
            "published": result["published"],
            "delivered/s": result["delivered_per_second"],
            "p50 ms": lat["p50_ms"],
            "p95 ms": lat["p95_ms"],
            "p99 ms": lat["p99_ms"],
            "max ms": lat["max_ms"],
            "missing": result["missing"],
            "out of order": result["out_of_order"],
            **({"without position": result["without_position"]} if "without_position" in result else {}),
            "server CPU %": cpu.get("server_cpu_percent"),
        }
    if kind == "reconnect-storm":
        lat = result["catch_up_latency"]
        return {
            "clients": result["clients"],
            "missed each": result["missed_per_client"],
            "restored": result["restored"],
            "caught up": result["caught_up"],
            "all restored ms": ms(result["restored_seconds"]),
            "all caught up ms": ms(result["all_caught_up_seconds"]),
            "clients/s": result["per_second"],
            "p50 ms": lat["p50_ms"],
            "p95 ms": lat["p95_ms"],
            "not restored": result["not_restored"],
            "missing": result["missing_messages"],
            "duplicated": result["duplicated_messages"],
            "server CPU %": cpu.get("server_cpu_percent"),
        }
    if kind == "broadcast-step":
        last = result["steps"][-1] if result["steps"] else {}
        return {
            "largest N with p95 under limit": result["largest_passing_subscribers"],
            "p95 limit ms": result["p95_limit_ms"],
            "last step N": last.get("subscribers"),
            "last step p95 ms": last.get("latency", {}).get("p95_ms"),
        }
    if kind in ("connect", "perform"):
        lat = result["latency"]
        row = {
            "per second": result["per_second"],
            "p50 ms": lat["p50_ms"],
            "p95 ms": lat["p95_ms"],
            "p99 ms": lat["p99_ms"],
            "failed": result.get("failed", result.get("failures")),
            "server CPU %": cpu.get("server_cpu_percent"),
            **({"server CPU µs/client": result["server_cpu_us_per_client"]}
               if "server_cpu_us_per_client" in result else {}),
            "tool CPU %": cpu.get("tool_cpu_percent"),
            **({"backend CPU %": cpu["backend_cpu_percent"]} if "backend_cpu_percent" in cpu else {}),
        }
        return row
    if kind == "attack":
        closes = result["closes"]
        slowest = max((c["time_to_close"]["max_ms"] for c in closes), default=None)
        return {
            "sockets": sum(c["opened"] for c in closes),
            "never closed": sum(c["never_closed"] for c in closes),
            "close p50 s": max((c["time_to_close"]["p50_ms"] for c in closes), default=0) / 1000,
            "close max s": (slowest or 0) / 1000,
            "fds before": result["fds_before"],
            "fds peak": result["fds_peak"],
            "fds after": result["fds_after"],
            "broadcast RTT p95 ms": result["broadcast_round_trip"]["p95_ms"],
            "lost": result["broadcasts_lost"],
            "connect p95 ms": result["connect_to_welcome"]["p95_ms"],
            "connects failed": result["connects_failed"],
            "server CPU s": result.get("server_cpu_seconds"),
        }
    return {"result": json.dumps(result)[:80]}


def table(directory):
    results = load(directory)
    if not results:
        return "no results\n"
    rows = {name: rows_for(r) for name, r in results.items()}
    columns = list(next(iter(rows.values())).keys())
    out = ["| server | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for name, row in rows.items():
        out.append(f"| {name} | " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(out) + "\n"


def rate(result):
    return result.get("per_second", result.get("delivered_per_second", result.get("connects_per_second")))


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def rounds(directory, pairs):
    round_dirs = sorted(pathlib.Path(directory).glob("round-*"), key=lambda p: int(p.name.split("-")[1]))
    per_round = [(d.name, load(d)) for d in round_dirs]
    names = sorted({n for _, results in per_round for n in results})
    pairs = [tuple(p.split("/", 1)) for p in pairs]
    columns = [f"{n} /s" for n in names] + [f"{n} CPU % (server / tool)" for n in names]
    columns += [f"{a} ÷ {b}" for a, b in pairs]
    out = ["| round | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    rates = {n: [] for n in names}
    ratios = {p: [] for p in pairs}
    for label, results in per_round:
        cells = []
        for n in names:
            r = results.get(n)
            rates[n].append(rate(r) if r else None)
            cells.append(fmt(rate(r)) if r else "–")
        for n in names:
            cpu = (results.get(n) or {}).get("cpu", {})
            backend = f" / backend {fmt(cpu['backend_cpu_percent'])}" if "backend_cpu_percent" in cpu else ""
            cells.append(f"{fmt(cpu.get('server_cpu_percent'))} / {fmt(cpu.get('tool_cpu_percent'))}{backend}")
        for a, b in pairs:
            ra, rb = results.get(a), results.get(b)
            ratio = rate(ra) / rate(rb) if ra and rb and rate(rb) else None
            ratios[(a, b)].append(ratio)
            cells.append(f"{ratio:.2f}x" if ratio is not None else "–")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = [fmt(median(rates[n])) for n in names] + ["" for _ in names]
    for pair in pairs:
        med = median(ratios[pair])
        cells.append(f"**{med:.2f}x**" if med is not None else "–")
    out.append("| median | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def chart(directory, out_path):
    results = {n: r for n, r in load(directory).items() if r.get("scenario") == "broadcast-step"}
    width, height, pad = 720, 360, 60
    colors = ["#d9480f", "#1c7ed6", "#2b8a3e", "#862e9c"]
    series = {}
    for name, r in results.items():
        series[name] = [(s["subscribers"], s["latency"]["p95_ms"], s["delivered_per_second"]) for s in r["steps"]]
    xs = [p[0] for pts in series.values() for p in pts] or [1]
    p95s = [p[1] for pts in series.values() for p in pts] or [1]
    rates = [p[2] for pts in series.values() for p in pts] or [1]
    xmax, ymax, rmax = max(xs), max(p95s) * 1.1 or 1, max(rates) * 1.1 or 1

    def panel(title, index, yvals_max, pick, yoffset):
        parts = [f'<text x="{pad}" y="{yoffset - 8}" font-size="13">{title}</text>',
                 f'<line x1="{pad}" y1="{yoffset + height - pad}" x2="{width - 20}" y2="{yoffset + height - pad}" stroke="#888"/>',
                 f'<line x1="{pad}" y1="{yoffset}" x2="{pad}" y2="{yoffset + height - pad}" stroke="#888"/>',
                 f'<text x="{pad - 6}" y="{yoffset + 10}" font-size="10" text-anchor="end">{yvals_max:,.0f}</text>',
                 f'<text x="{width - 20}" y="{yoffset + height - pad + 14}" font-size="10" text-anchor="end">{xmax:,} subscribers</text>']
        for i, (name, pts) in enumerate(series.items()):
            coords = []
            for p in pts:
                x = pad + (width - pad - 20) * p[0] / xmax
                y = yoffset + (height - pad) * (1 - pick(p) / yvals_max)
                coords.append(f"{x:.1f},{y:.1f}")
            color = colors[i % len(colors)]
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(coords)}"/>')
            parts.append(f'<text x="{width - 150}" y="{yoffset + 16 + 14 * i}" font-size="11" fill="{color}">{name}</text>')
        return parts

    body = panel("p95 latency (ms)", 0, ymax, lambda p: p[1], 30) + panel(
        "delivered frames/s", 1, rmax, lambda p: p[2], 30 + height)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{2 * height + 20}" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>'] + body + ["</svg>"]
    pathlib.Path(out_path).write_text("\n".join(svg) + "\n")


def machine_kind(cpuinfo="/proc/cpuinfo", cores=None):
    """"<cores> x <CPU model>": figures are compared only with a baseline taken on the same kind of machine."""
    import os
    model = "unknown CPU"
    try:
        for line in pathlib.Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                model = " ".join(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return f"{cores or os.cpu_count()} x {model}"


def metric(result, path):
    """A metric of a result by dotted path (`latency.p95_ms`), or None."""
    value = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def measured(directory, server, paths):
    """The median of each metric of `server` over the rounds in `directory` (or its single result)."""
    root = pathlib.Path(directory)
    round_dirs = sorted(root.glob("round-*")) or [root]
    results = [load(d).get(server) for d in round_dirs]
    results = [r for r in results if r]
    return len(results), {p: median([metric(r, p) for r in results]) for p in paths}


def verdict(spec, now, tolerance):
    """(ok, change) for one metric: `higher` metrics may not fall below, `lower` ones not rise above, the baseline
    by more than the tolerance; a `lower` metric whose baseline is 0 (lost frames, failures) must stay 0."""
    base = spec["value"]
    if now is None:
        return False, "not measured"
    if spec["better"] == "lower" and base == 0:
        return now == 0, "stayed 0" if now == 0 else f"{now} (was 0)"
    change = (now - base) / base if base else 0.0
    worse = -change if spec["better"] == "higher" else change
    return worse <= tolerance, f"{change:+.1%}"


def check(baseline_path, name, directory, kind=None):
    """The comparison table of figure `name` and whether it holds."""
    baseline = json.loads(pathlib.Path(baseline_path).read_text())
    kind = kind or machine_kind()
    figures = {f["name"]: f for f in baseline.get("kinds", {}).get(kind, {}).get("figures", [])}
    if name not in figures:
        return False, f"no baseline for {name!r} on this machine kind ({kind}): record one with `report.py record`\n"
    figure = figures[name]
    tolerance = baseline.get("tolerance", 0.2)
    count, now = measured(directory, figure.get("server", "ferrocable"), figure["metrics"])
    if count == 0:
        return False, f"no {figure.get('server', 'ferrocable')} result in {directory}\n"
    out = [f"{name} on {kind}, median of {count} (tolerance {tolerance:.0%})", "",
           "| metric | baseline | now | change | |", "| --- | --- | --- | --- | --- |"]
    ok = True
    for path, spec in figure["metrics"].items():
        good, change = verdict(spec, now[path], tolerance)
        ok &= good
        out.append(f"| {path} ({spec['better']} is better) | {fmt(spec['value'])} | {fmt(now[path])} | {change} | "
                   f"{'ok' if good else '**regressed**'} |")
    return ok, "\n".join(out) + "\n"


def record(baseline_path, name, directory, kind=None):
    """Writes the medians measured in `directory` as the baseline of figure `name` for this machine's kind."""
    path = pathlib.Path(baseline_path)
    baseline = json.loads(path.read_text())
    kind = kind or machine_kind()
    figure = next(f for k in baseline["kinds"].values() for f in k["figures"] if f["name"] == name)
    count, now = measured(directory, figure.get("server", "ferrocable"), figure["metrics"])
    if count == 0 or any(v is None for v in now.values()):
        raise SystemExit(f"{directory} does not hold every metric of {name}")
    entry = baseline["kinds"].setdefault(kind, {"figures": []})
    figures = [f for f in entry["figures"] if f["name"] != name]
    metrics = {p: {**spec, "value": round(now[p], 2)} for p, spec in figure["metrics"].items()}
    figures.append({**figure, "metrics": metrics})
    entry["figures"] = figures
    path.write_text(json.dumps(baseline, indent=2, ensure_ascii=False) + "\n")


def figures(baseline_path, kind=None):
    baseline = json.loads(pathlib.Path(baseline_path).read_text())
    entry = baseline.get("kinds", {}).get(kind or machine_kind(), {})
    return "".join(f"{f['name']}\t{' '.join(f['args'])}\n" for f in entry.get("figures", []))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "table":
        sys.stdout.write(table(sys.argv[2]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "rounds":
        sys.stdout.write(rounds(sys.argv[2], sys.argv[3:]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "chart":
        chart(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2 and sys.argv[1] == "kind":
        print(machine_kind())
    elif len(sys.argv) == 3 and sys.argv[1] == "figures":
        sys.stdout.write(figures(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "check":
        held, text = check(*sys.argv[2:5])
        sys.stdout.write(text)
        sys.exit(0 if held else 1)
    elif len(sys.argv) == 5 and sys.argv[1] == "record":
        record(*sys.argv[2:5])
    else:
        sys.exit(__doc__)
