"""The PNG: the main figures as bar charts, sidecar beside its reference, targets as lines."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

SIDECAR = "#1f77b4"
REFERENCE = "#ff7f0e"
OTHER = "#9e9e9e"
MIB = 2**20


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not math.isnan(value) else 0.0


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _bars(ax: Axes, labels: list[str], values: list[float], colors: list[str],
          fmt: str = "{:,.0f}") -> None:
    bars = ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    for bar, value in zip(bars, values, strict=True):
        if value:
            ax.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)


def _target(ax: Axes, value: float, text: str) -> None:
    ax.axhline(value, color="red", linestyle="--", linewidth=0.8, label=text)
    ax.legend(fontsize=7, loc="best", frameon=False)


def _missing(ax: Axes, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)


def _ingest(ax: Axes, ing: dict[str, Any] | None) -> None:
    small = _get(ing, "profiles", "small")
    if not ing or not small:
        _missing(ax, "Ingest")
        return
    labels, values, colors = [], [], []
    for batch, data in small["batches"].items():
        for level in ing["levels"]:
            labels.append(f"{level}\nb{batch}")
            values.append(_num(data["levels"][level]["eps"]))
            colors.append(SIDECAR)
        labels.append(f"sqlite\nFULL b{batch}")
        values.append(_num(data["ceiling"]["full"]["eps"]))
        colors.append(OTHER)
    labels.append("SDK\ncapture()")
    values.append(_num(small["sdk"]["capture_eps"]))
    colors.append(REFERENCE)
    _bars(ax, labels, values, colors)
    _target(ax, 50_000, "target 50k (batch 50)")
    ax.set_title("Ingest: events/s acknowledged, by --durability (sqlite = raw ceiling)",
                 fontsize=9)


def _posthog_js(rate_ax: Axes, bytes_ax: Axes, ing: dict[str, Any] | None,
                dr: dict[str, Any] | None) -> None:
    prof = _get(ing, "profiles", "posthog-js")
    if not prof and not dr:
        _missing(rate_ax, "posthog-js events")
        _missing(bytes_ax, "posthog-js bytes per event")
        return
    labels, values, colors = [], [], []
    if prof and ing:
        top = prof["batches"].get(str(prof["sdk"]["batch"]), {})
        for level in ing["levels"]:
            labels.append(f"ingest\n{level}")
            values.append(_num(_get(top, "levels", level, "eps")))
            colors.append(SIDECAR)
        labels.append("SDK\ncapture()")
        values.append(_num(prof["sdk"]["capture_eps"]))
        colors.append(REFERENCE)
    if dr:
        labels += ["drain\nsidecar", "drain\nSDK gzip"]
        values += [_num(_get(dr, "sidecar", "eps")), _num(_get(dr, "sdk_gzip", "eps"))]
        colors += [SIDECAR, REFERENCE]
    _bars(rate_ax, labels, values, colors)
    size = f", {prof['event_bytes']:,.0f} B/event" if prof else ""
    rate_ax.set_title(f"posthog-js events{size}: events/s at batch 50", fontsize=9)
    if not dr:
        _missing(bytes_ax, "posthog-js bytes per event")
        return
    keys = [("sidecar", "sidecar", SIDECAR), ("sdk_gzip", "SDK gzip", REFERENCE),
            ("sdk_plain", "SDK plain", REFERENCE)]
    _bars(bytes_ax, [k[1] for k in keys],
          [_num(_get(dr, k[0], "body_bytes_per_event")) for k in keys], [k[2] for k in keys],
          "{:,.1f}")
    bytes_ax.set_title("posthog-js: request body bytes per event, batch 50", fontsize=9)


def _drain(drain_ax: Axes, bytes_ax: Axes, dr: dict[str, Any] | None) -> None:
    if not dr:
        _missing(drain_ax, "Drain")
        _missing(bytes_ax, "Bytes per event")
        return
    b, big = dr["batch"], dr["big_batch"]
    keys = [("sidecar", f"sidecar\nbatch {b}", SIDECAR),
            ("sdk_gzip", f"SDK gzip\nflush_at {b}", REFERENCE),
            ("sdk_plain", f"SDK plain\nflush_at {b}", REFERENCE),
            ("sidecar_big", f"sidecar\nbatch {big}", SIDECAR),
            ("sdk_gzip_big", f"SDK gzip\nflush_at {big}", REFERENCE)]
    labels = [k[1] for k in keys]
    colors = [k[2] for k in keys]
    _bars(drain_ax, labels, [_num(_get(dr, k[0], "eps")) for k in keys], colors)
    _target(drain_ax, 50_000, "target 50k")
    drain_ax.set_title(f"Drain {dr['backlog']:,} queued events: events/s", fontsize=9)
    _bars(bytes_ax, labels, [_num(_get(dr, k[0], "body_bytes_per_event")) for k in keys],
          colors, "{:,.1f}")
    bytes_ax.set_title("Request body bytes on the wire per event (lower is better)", fontsize=9)


def _latency(ax: Axes, lat: dict[str, Any] | None, fp: dict[str, Any]) -> None:
    if not lat:
        _missing(ax, "Latency")
        return
    labels = ["sidecar\np50", "sidecar\np99", "direct POST\np50", "direct POST\np99"]
    values = [_num(_get(lat, "sidecar", "arrival", "p50_ms")),
              _num(_get(lat, "sidecar", "arrival", "p99_ms")),
              _num(_get(lat, "floor", "p50_ms")), _num(_get(lat, "floor", "p99_ms"))]
    colors = [SIDECAR, SIDECAR, OTHER, OTHER]
    if _get(fp, "sdk_latency", "n"):
        labels.append(f"SDK p50\n(n={fp['sdk_latency']['n']})")
        values.append(_num(fp["sdk_latency"]["p50_ms"]))
        colors.append(REFERENCE)
    _bars(ax, labels, values, colors, "{:,.1f}")
    ax.set_yscale("log")
    _target(ax, 5, "target p50 5 ms")
    ax.set_title("Latency: write -> event at server, ms (log)", fontsize=9)


def _start(ax: Axes, st: dict[str, Any] | None) -> None:
    if not st:
        _missing(ax, "Start")
        return
    ping = st["spawn_to_ping"]
    labels = [f"{k.replace(' sidecar', '')}\nto ping" for k in ping]
    values = [_num(v["median_ms"]) for v in ping.values()]
    colors = [SIDECAR] * len(values)
    backlog = st.get("backlog", {})
    for key, label, color in (("python -m sidecar", "python -m\n5k delivered", SIDECAR),
                              ("one-file", "one-file\n5k delivered", SIDECAR),
                              ("sdk", "SDK fresh\n5k delivered", REFERENCE)):
        if key in backlog:
            labels.append(label)
            values.append(_num(backlog[key]["delivered_s"]) * 1e3)
            colors.append(color)
    _bars(ax, labels, values, colors)
    _target(ax, 300, "target one-file 300 ms")
    ax.set_title("Start: spawn -> ping, and -> 5,000 backlog delivered (ms)", fontsize=9)


def _memory(ax: Axes, fp: dict[str, Any], dr: dict[str, Any] | None) -> None:
    if not fp and not dr:
        _missing(ax, "Footprint")
        return
    labels = ["sidecar\nidle", "SDK\nidle"]
    values = [_num(fp.get("idle_rss")) / MIB, _num(fp.get("sdk_rss")) / MIB]
    colors = [SIDECAR, REFERENCE]
    if dr:
        labels += ["sidecar\ndraining", "SDK holding\nbacklog"]
        values += [_num(_get(dr, "sidecar", "peak_rss")) / MIB,
                   _num(_get(dr, "sdk_gzip", "peak_rss")) / MIB]
        colors += [SIDECAR, REFERENCE]
    _bars(ax, labels, values, colors, "{:,.1f}")
    ax.axhline(45, color="red", linestyle=":", linewidth=0.8, label="target idle 45")
    _target(ax, 80, "target draining 80")
    title = "Resident memory, MiB"
    if fp:
        title += (f"; CPU idle {_num(_get(fp, 'idle', 'cpu_ms_per_min')):.0f} ms/min, "
                  f"offline {_num(_get(fp, 'offline', 'cpu_ms_per_min')):.0f} ms/min")
    ax.set_title(title, fontsize=9)


def render(results: dict[str, Any], path: Path) -> None:
    """Draw the eight panels and save them to `path`."""
    f = results["figures"]
    meta = results["meta"]
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    (ingest_ax, drain_ax, bytes_ax, js_ax), (latency_ax, start_ax, memory_ax, js_bytes_ax) = axes
    fp = f.get("footprint") or {}
    _ingest(ingest_ax, f.get("ingest"))
    _drain(drain_ax, bytes_ax, f.get("drain"))
    _latency(latency_ax, f.get("latency"), fp)
    _start(start_ax, f.get("start"))
    _memory(memory_ax, fp, f.get("drain"))
    _posthog_js(js_ax, js_bytes_ax, f.get("ingest"), f.get("drain_posthog_js"))
    loads = results.get("loads") or [float("nan")]
    fig.suptitle(
        f"telemetry-sidecar vs references (blue: sidecar, orange: PostHog Python SDK, grey: "
        f"floor/ceiling) - {meta['date']} - {meta['nproc']} x {meta['cpu_model']} - Python "
        f"{meta['python']} - load {min(loads):.1f}..{max(loads):.1f}"
        + (" - QUICK run" if results.get("quick") else ""),
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
