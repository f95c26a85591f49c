"""The benchmark suite, in one command: every figure beside its reference, measured in this run.

    .venv/bin/python bench/run.py            # about 13 minutes on a 2-core machine
    .venv/bin/python bench/run.py --quick    # under 3: fewer runs, smaller backlogs, 10 s windows

Writes bench/results.json and bench/results.png and prints the table. Needs the `bench` extra
(`pip install -e '.[bench]'`: the PostHog SDK as the reference, matplotlib for the plot).
Figures are medians of repeated runs on a shared machine: the load average is printed and kept
with them. SIDECAR_COMMAND runs the suite against another build (as `sidecar_dev.driver` reads it).

Modules: ingest.py, drain.py, latency.py, start.py (uses startup.py), footprint.py; the events
come from profiles.py (`small` page views, and events as posthog-js makes them); the fast
capture server (fastserver.py) and the SDK runner (sdk_worker.py) are their own processes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import common
import drain
import footprint
import ingest
import latency
import start
from fastserver import CaptureCounter
from profiles import POSTHOG_JS_VERSION

from sidecar_dev.driver import sidecar_command

MIB = 2**20


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _row(figure: str, unit: str, sidecar: Any, reference: str = "", ref: Any = None, *,
         target: str = "", higher_is_better: bool = True, n: Any = None) -> dict[str, Any]:
    value = sidecar if isinstance(sidecar, int | float) else None
    ref_value = ref if isinstance(ref, int | float) else None
    ratio = common.ratio(value, ref_value) if value is not None and ref_value else None
    return {"figure": figure, "unit": unit, "sidecar": value, "reference": reference,
            "reference_value": ref_value, "ratio": ratio, "target": target,
            "higher_is_better": higher_is_better, "n": n}


def _ingest_rows(ing: dict[str, Any]) -> list[dict[str, Any]]:
    """Per profile: each batch and level beside the sqlite3 ceiling at the same sync level, then
    the largest batch at each level beside the SDK's `capture()`."""
    rows = []
    levels = ing.get("levels", [])
    for profile, prof in ing.get("profiles", {}).items():
        tag = "" if profile == "small" else f" {profile}"
        for batch, data in prof["batches"].items():
            for level in levels:
                sync = "full" if level == "full" else "normal"
                rows.append(_row(f"Ingest{tag}, batch {batch}, {level}", "events/s",
                                 data["levels"][level]["eps"], f"sqlite3 ceiling, sync {sync}",
                                 data["ceiling"][sync]["eps"],
                                 target=">= 50,000" if batch == "50" and level != "normal"
                                 and profile == "small" else "", n=data["runs"]))
        sdk = prof["sdk"]
        top = prof["batches"].get(str(sdk["batch"]))
        if not top:
            continue
        for level in levels:
            rows.append(_row(f"Ingest{tag}, batch {sdk['batch']}, {level}", "events/s",
                             top["levels"][level]["eps"], "SDK capture() (memory only)",
                             sdk["capture_eps"],
                             target=">= 4x SDK" if level != "normal" and profile == "small"
                             else "", n=top["runs"]))
    return rows


def _drain_posthog_js_rows(dr: dict[str, Any]) -> list[dict[str, Any]]:
    """The posthog-js profile's drain at batch 50: rate, bytes and peak memory beside the SDK."""
    if not dr:
        return []
    b, n = dr["batch"], _get(dr, "sidecar", "runs")
    name = f"{dr['backlog']:,} posthog-js"
    return [
        _row(f"Drain {name}, batch {b}", "events/s", _get(dr, "sidecar", "eps"),
             "SDK gzip=True", _get(dr, "sdk_gzip", "eps"), n=n),
        _row(f"Wire bytes/event posthog-js, batch {b}", "bytes",
             _get(dr, "sidecar", "body_bytes_per_event"), "SDK gzip=True",
             _get(dr, "sdk_gzip", "body_bytes_per_event"), higher_is_better=False),
        _row(f"Wire bytes/event posthog-js, batch {b}", "bytes",
             _get(dr, "sidecar", "body_bytes_per_event"), "SDK gzip=False",
             _get(dr, "sdk_plain", "body_bytes_per_event"), higher_is_better=False),
        _row(f"RSS peak draining {name}", "MiB", (_get(dr, "sidecar", "peak_rss") or 0) / MIB
             or None, "SDK holding them", (_get(dr, "sdk_gzip", "peak_rss") or 0) / MIB or None,
             higher_is_better=False, n=n),
    ]


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The printed (and plotted) table, from the results."""
    f = results["figures"]
    rows = []
    rows += _ingest_rows(f.get("ingest") or {})
    dr = f.get("drain") or {}
    if dr:
        b, big = dr["batch"], dr["big_batch"]
        rows.append(_row(f"Drain {dr['backlog']:,}, batch {b}", "events/s",
                         _get(dr, "sidecar", "eps"), "SDK gzip=True", _get(dr, "sdk_gzip", "eps"),
                         target=">= 50,000, >= 4x SDK", n=_get(dr, "sidecar", "runs")))
        rows.append(_row(f"Drain {dr['backlog']:,}, batch {b}", "events/s",
                         _get(dr, "sidecar", "eps"), "SDK gzip=False",
                         _get(dr, "sdk_plain", "eps"), n=_get(dr, "sidecar", "runs")))
        ceiling = dr.get("stack_ceiling")
        if ceiling:
            rows.append(_row(f"Stack ceiling, batch {b}: HTTP only", "events/s",
                             ceiling["http_only"], "SDK gzip=True", _get(dr, "sdk_gzip", "eps")))
            rows.append(_row(f"Stack ceiling, batch {b}: + store hop", "events/s",
                             ceiling["with_hop"], "SDK gzip=True", _get(dr, "sdk_gzip", "eps")))
        rows.append(_row(f"Drain {dr['backlog']:,}, batch {big}", "events/s",
                         _get(dr, "sidecar_big", "eps"), f"SDK gzip, flush_at={big}",
                         _get(dr, "sdk_gzip_big", "eps"), n=_get(dr, "sidecar_big", "runs")))
        rows.append(_row(f"Wire bytes/event, batch {b}", "bytes",
                         _get(dr, "sidecar", "body_bytes_per_event"), "SDK gzip=True",
                         _get(dr, "sdk_gzip", "body_bytes_per_event"), higher_is_better=False))
        rows.append(_row(f"Wire bytes/event, batch {b}", "bytes",
                         _get(dr, "sidecar", "body_bytes_per_event"), "SDK gzip=False",
                         _get(dr, "sdk_plain", "body_bytes_per_event"), higher_is_better=False))
        rows.append(_row(f"Wire bytes/event, batch {big}", "bytes",
                         _get(dr, "sidecar_big", "body_bytes_per_event"), "SDK gzip=True",
                         _get(dr, "sdk_gzip_big", "body_bytes_per_event"),
                         higher_is_better=False))
    rows += _drain_posthog_js_rows(f.get("drain_posthog_js") or {})
    lat = f.get("latency") or {}
    fp = f.get("footprint") or {}
    if lat:
        p50 = _get(lat, "sidecar", "arrival", "p50_ms")
        p99 = _get(lat, "sidecar", "arrival", "p99_ms")
        sends = _get(lat, "sidecar", "arrival", "n")
        rows.append(_row("Latency p50, online idle", "ms", p50, "floor: direct POST",
                         _get(lat, "floor", "p50_ms"), target="< 5 ms", higher_is_better=False,
                         n=sends))
        rows.append(_row("Latency p99, online idle", "ms", p99, "floor: direct POST",
                         _get(lat, "floor", "p99_ms"), higher_is_better=False, n=sends))
        if _get(fp, "sdk_latency", "n"):
            rows.append(_row("Latency p50, online idle", "ms",
                             _get(lat, "sidecar", "arrival", "p50_ms"),
                             f"SDK defaults (n={_get(fp, 'sdk_latency', 'n')})",
                             _get(fp, "sdk_latency", "p50_ms"), higher_is_better=False,
                             n=sends))
    st = f.get("start") or {}
    ping = st.get("spawn_to_ping") or {}
    python_ms = _get(ping, "python -m sidecar", "median_ms")
    for label, data in ping.items():
        rows.append(_row(f"Start, spawn -> ping, {label}", "ms", data["median_ms"],
                         "python -m sidecar" if label != "python -m sidecar" else "",
                         python_ms if label != "python -m sidecar" else None,
                         target="< 300 ms" if label == "one-file" else "",
                         higher_is_better=False, n=data["runs"]))
    backlog = st.get("backlog") or {}
    for label in ("python -m sidecar", "one-file"):
        if label in backlog:
            short = "python -m" if label == "python -m sidecar" else label
            rows.append(_row(f"Start, {backlog['events']:,} queued -> delivered, {short}",
                             "s", backlog[label]["delivered_s"],
                             "SDK: fresh process + flush",
                             _get(backlog, "sdk", "delivered_s"), higher_is_better=False,
                             n=len(backlog[label]["delivered_runs"])))
    if fp:
        rows.append(_row("RSS idle", "MiB", (fp.get("idle_rss") or 0) / MIB or None,
                         "SDK process, idle", (fp.get("sdk_rss") or 0) / MIB or None,
                         target="< 45 MiB", higher_is_better=False))
    if dr:
        rows.append(_row(f"RSS peak draining {dr['backlog']:,}", "MiB",
                         (_get(dr, "sidecar", "peak_rss") or 0) / MIB or None,
                         "SDK holding them", (_get(dr, "sdk_gzip", "peak_rss") or 0) / MIB or None,
                         target="< 80 MiB", higher_is_better=False, n=_get(dr, "sidecar", "runs")))
    if fp:
        window = fp["window_s"]
        rows.append(_row(f"CPU idle, empty queue ({window:.0f} s)", "ms/min",
                         _get(fp, "idle", "cpu_ms_per_min"), target="0",
                         higher_is_better=False))
        rows.append(_row(f"CPU offline, queued ({window:.0f} s)", "ms/min",
                         _get(fp, "offline", "cpu_ms_per_min"), target="backoff only",
                         higher_is_better=False))
    return rows


def _fmt(value: Any, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "events/s":
        return f"{value:,.0f}"
    if unit in ("ms", "ms/min") and value < 10:
        return f"{value:.2f}"
    if unit == "s":
        return f"{value:.2f}"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def print_table(results: dict[str, Any]) -> None:
    """The table on stdout, and the notes under it."""
    meta = results["meta"]
    print()
    print(f"telemetry-sidecar benchmarks  {meta['date']}  {meta['nproc']} x {meta['cpu_model']}"
          f"  Python {meta['python']}  {'QUICK' if results['quick'] else 'full'} run"
          f"  ({results['duration_s']:.0f} s)")
    print(f"load average (1 min) during the run: {min(results['loads']):.2f} .. "
          f"{max(results['loads']):.2f} on {meta['nproc']} cores: other work shares the machine")
    print()
    header = (f"{'figure':<44} {'unit':>8} {'sidecar':>10}  {'reference':<30} {'ref':>10} "
              f"{'ratio':>7} {'n':>3}  target")
    print(header)
    print("-" * len(header))
    for row in results["table"]:
        ratio = row["ratio"]
        ratio_text = ""
        if ratio is not None and not math.isnan(ratio):
            ratio_text = f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"
        print(f"{row['figure']:<44} {row['unit']:>8} {_fmt(row['sidecar'], row['unit']):>10}  "
              f"{row['reference']:<30} {_fmt(row['reference_value'], row['unit']):>10} "
              f"{ratio_text:>7} {row.get('n') or '':>3}  {row['target']}")
    print()
    for note in results["notes"]:
        print(f"- {note}")
    for name, error in results["errors"].items():
        print(f"! {name} failed: {error.splitlines()[-1]}")


def _ingest_notes(ing: dict[str, Any]) -> list[str]:
    """What the ingest rows measured: events, levels, CPU and syncs per call."""
    if not ing:
        return []
    out = []
    profiles = ing.get("profiles", {})
    if "small" in profiles:
        out.append(f"events 'small': realistic $pageview, {profiles['small']['event_bytes']:.0f} "
                   "bytes mean as sent (uuid and timestamp set by the app), properties varying")
    if "posthog-js" in profiles:
        out.append(f"events 'posthog-js': as posthog-js {POSTHOG_JS_VERSION} builds them in a "
                   f"Tauri webview and the client's bridge hands them on, "
                   f"{profiles['posthog-js']['event_bytes']:,.0f} bytes mean, ~56 properties, "
                   "$pageview/$autocapture/app events/$pageleave/$exception and $identify with "
                   "$set_once (bench/profiles.py); the SDK gets $set/$set_once in properties")
    out.append("levels: full = --durability full (the default: the WAL synced at each grouped "
               "commit), normal = --durability normal (synced at checkpoints); sqlite3 "
               "ceilings at synchronous=FULL and NORMAL, one transaction per line")
    for note in (ing.get("levels_note"), ing.get("syncs_note")):
        if note:
            out.append(note)
    sdk_version = next((p["sdk"]["version"] for p in profiles.values() if p["sdk"]["version"]),
                       None)
    out.append(f"SDK capture(): {ing.get('sdk_note', '')}; posthog {sdk_version}")
    for profile, prof in profiles.items():
        cpu = []
        syncs = []
        for batch, data in prof["batches"].items():
            for level, figures in data["levels"].items():
                cpu.append(f"b{batch} {level} {figures['cpu_us_per_event']:.1f}")
                if figures.get("syncs"):
                    syncs.append(f"b{batch} {level} {figures['syncs']['syncs_per_call']:.3f}")
        out.append(f"sidecar CPU per ingested {profile} event (us, its own process, "
                   "user+sys): " + ", ".join(cpu))
        if syncs:
            out.append(f"syncs (fsync+fdatasync) per ph_send_batch call, {profile} (strace, one "
                       "extra run per level after the timed ones): " + ", ".join(syncs))
    return out


def notes(results: dict[str, Any]) -> list[str]:
    """What a reader needs to read the table right."""
    f = results["figures"]
    out = ["n: runs (latency: sends) behind the sidecar's median; each reference was measured "
           "in turns with it, in the same run"]
    if results["quick"]:
        p = results["plan"]
        out.append(f"--quick: backlogs {p['backlog']:,} and posthog-js "
                   f"{p['posthog_js_backlog']:,} (not 100,000), footprint windows "
                   f"{p['window_s']:.0f} s (not 60 s), fewer runs; figures are rougher")
    out += _ingest_notes(f.get("ingest") or {})
    dr = f.get("drain")
    if dr:
        cap = dr["server_capacity"]
        out.append("fast server capacity (one raw keep-alive client): "
                   + ", ".join(f"batch {b}: {c['eps']:,.0f} events/s" for b, c in cap.items())
                   + f"; the sidecar's drain at batch 50 is "
                   f"{common.ratio(dr['sidecar']['eps'], cap['50']['eps']) * 100:.0f}% of it")
        ceiling = dr.get("stack_ceiling")
        if ceiling:
            out.append(f"stack ceiling (bench/ceiling.py, no queue, {ceiling['requests']:,} "
                       f"requests a round): the sidecar's HTTP attempt alone "
                       f"{ceiling['runs']['http_only']}, plus one trio.to_thread hop a request "
                       f"{ceiling['runs']['with_hop']} events/s; the sidecar's drain reaches "
                       f"{common.ratio(dr['sidecar']['eps'], ceiling['with_hop']) * 100:.0f}% "
                       "of the latter")
        side = dr["sidecar"]["detail"]
        if side:
            cpu = common.median([r["cpu_us_per_event"] for r in side])
            out.append(f"sidecar drain CPU: {cpu:.1f} us/event; runs (events/s): "
                       f"{dr['sidecar']['eps_runs']}, SDK gzip {dr['sdk_gzip']['eps_runs']}, "
                       f"SDK plain {dr['sdk_plain']['eps_runs']}")
        fill = dr.get("fill", {}).get("rates_by_tenth")
        if fill:
            out.append(f"ingest while the queue deepens (filling the {dr['backlog']:,} backlog, "
                       f"events/s by tenth): {fill}")
        out.append("uncompressed JSON per event on the wire: sidecar "
                   f"{_get(dr, 'sidecar', 'detail')[0]['json_bytes_per_event']:.0f} B, SDK "
                   f"{_get(dr, 'sdk_plain', 'detail')[0]['json_bytes_per_event']:.0f} B (the "
                   "SDK adds $python_*, $os_version, $os_distro, $geoip_disable, $is_server, "
                   "and overwrites the event's own $os with the host's)")
        dups = [r["duplicates"] for r in side]
        if any(dups):
            out.append(f"duplicates delivered during drain runs: {dups}")
    js = f.get("drain_posthog_js")
    if js and js.get("sidecar"):
        side = js["sidecar"]["detail"]
        out.append(f"posthog-js drain, batch {js['batch']}: runs (events/s) sidecar "
                   f"{js['sidecar']['eps_runs']}, SDK gzip {_get(js, 'sdk_gzip', 'eps_runs')}"
                   f", SDK plain {_get(js, 'sdk_plain', 'eps_runs')}; uncompressed JSON per "
                   f"event sidecar {side[0]['json_bytes_per_event']:,.0f} B, SDK "
                   f"{_get(js, 'sdk_plain', 'json_bytes_per_event') or float('nan'):,.0f} B; "
                   f"sidecar drain CPU "
                   f"{common.median([r['cpu_us_per_event'] for r in side]):.1f} us/event; fast "
                   f"server capacity {js['server_capacity']['50']['eps']:,.0f} events/s")
        dups = [r["duplicates"] for r in side]
        if any(dups):
            out.append(f"duplicates delivered during posthog-js drain runs: {dups}")
    fp = f.get("footprint")
    if fp:
        out.append(f"wake-ups (voluntary context switches, all threads) in the "
                   f"{fp['window_s']:.0f} s window: idle {fp['idle']['wakeups']} "
                   f"({fp['idle']['wakeups_per_s']:.1f}/s), offline {fp['offline']['wakeups']} "
                   f"({fp['offline']['wakeups_per_s']:.1f}/s); threads at start/end: idle "
                   f"{fp['idle']['threads']}, offline {fp['offline']['threads']} (a thread that "
                   "exits takes its wake-ups along); CPU from "
                   "/proc schedstat (ns), psutil ticks: idle "
                   f"{fp['idle']['cpu_ms_ticks']:.0f} ms, "
                   f"offline {fp['offline']['cpu_ms_ticks']:.0f} ms")
        if fp.get("sdk_latency", {}).get("n"):
            out.append("SDK latency: " + fp["sdk_latency"]["note"]
                       + f"; samples (ms) {fp['sdk_latency']['samples_ms']}")
    ping = _get(f, "start", "spawn_to_ping")
    if ping:
        out.append("spawn -> ping CPU time (process tree; far less load-sensitive than the wall "
                   "clock): " + ", ".join(f"{k} {v['cpu_ms']:.0f} ms" for k, v in ping.items())
                   + "; one-file built " + str(_get(ping, "one-file", "built")))
    lat = f.get("latency")
    if lat:
        out.append(f"time to the ph_send_batch answer (what the app waits for): p50 "
                   f"{lat['sidecar']['answer']['p50_ms']:.2f} ms, p99 "
                   f"{lat['sidecar']['answer']['p99_ms']:.2f} ms")
    return out


def main() -> int:
    """Run every figure, write the JSON and the PNG, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="under 3 minutes, rougher figures")
    parser.add_argument("--only", action="append", default=[],
                        choices=["ingest", "drain", "drain_posthog_js", "latency", "start",
                                 "footprint"],
                        help="run only these figures (repeatable)")
    parser.add_argument("--out", default=str(common.BENCH / "results"),
                        help="path without suffix for the .json and .png")
    parser.add_argument("--from-json", metavar="JSON",
                        help="measure nothing: rebuild the table, plot and JSON of an earlier run")
    args = parser.parse_args()
    if args.from_json:
        earlier: dict[str, Any] = json.loads(Path(args.from_json).read_text())
        earlier["table"] = table_rows(earlier)
        earlier["notes"] = notes(earlier)
        earlier["errors"].pop("plot", None)  # drawn again below
        import plot

        plot.render(earlier, Path(args.out).with_suffix(".png"))
        Path(args.out).with_suffix(".json").write_text(
            json.dumps(earlier, indent=1, default=str) + "\n")
        print_table(earlier)
        return 0
    plan = common.Plan.quick_plan() if args.quick else common.Plan.full()
    started = time.monotonic()
    results: dict[str, Any] = {
        "meta": common.machine(),
        "quick": plan.quick,
        "plan": {k: v for k, v in vars(plan).items()},
        "sidecar_command": sidecar_command(),
        "figures": {},
        "errors": {},
        "loads": [common.load_average()],
    }
    with CaptureCounter() as server:
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("ingest", lambda: ingest.run(plan, server.url)),
            ("drain", lambda: drain.run(plan, server)),
            ("drain_posthog_js", lambda: drain.run(plan, server, "posthog-js")),
            ("latency", lambda: latency.run(plan, server)),
            ("start", lambda: start.run(plan, server)),
            ("footprint", lambda: footprint.run(plan, server)),
        ]
        for name, step in steps:
            if args.only and name not in args.only:
                continue
            common.log(f"{name} ...")
            step_started = time.monotonic()
            try:
                results["figures"][name] = step()
                results["figures"][name]["elapsed_s"] = time.monotonic() - step_started
            except Exception:
                results["errors"][name] = traceback.format_exc()
                common.log(f"{name} FAILED:\n{results['errors'][name]}")
            results["loads"].append(common.load_average())
            common.log(f"{name} done in {time.monotonic() - step_started:.0f} s")
    results["duration_s"] = time.monotonic() - started
    results["table"] = table_rows(results)
    results["notes"] = notes(results)
    out = Path(args.out)
    try:
        import plot

        plot.render(results, out.with_suffix(".png"))
    except Exception:
        results["errors"]["plot"] = traceback.format_exc()
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print_table(results)
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
