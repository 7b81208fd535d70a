"""The results table (text) and chart (PNG) of a benchmark run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MB = 1024 * 1024


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _spread(stat: dict[str, Any] | None, fmt: str = "{:,.0f}") -> str:
    if not stat:
        return "-"
    if stat["min"] == stat["max"]:
        return _num(stat["median"], fmt)
    return f"{_num(stat['median'], fmt)} ({_num(stat['min'], fmt)}-{_num(stat['max'], fmt)})"


def table(results: dict[str, Any]) -> str:
    s = results["summary"]
    meta = results["meta"]
    lines = [
        f"edgemeta benchmark: {meta['runs']} run(s), median (min-max); "
        f"{meta['cpus']} CPUs, {meta['fs']} at {meta['tmp_dir']}; {meta['git']}",
        "load average at start / end: "
        + " / ".join(
            ", ".join(f"{x:.2f}" for x in meta.get(key) or ())
            for key in ("loadavg_start", "loadavg_end")
        ),
        "",
    ]
    if "mqtt" in s:
        m = s["mqtt"]
        cfg = results["config"]
        lines += [
            f"MQTT, QoS 1 end to end, ~{cfg['size']} B content, window {cfg['window']}, "
            f"{cfg['duration']:g} s measured after {cfg['warmup']:g} s warm-up",
            f"{'':34}{'msgs/s':>22}  {'CPU us/msg':>10}  {'CPU %core':>9}  {'lost':>5}"
            f"  {'other load':>10}",
        ]
        rows = [
            ("load generator ceiling (no hop)", "ceiling"),
            ("echo: paho forwarder", "echo"),
            ("edgemeta: store+fsync+forward+OK", "edgemeta"),
        ]
        for label, key in rows:
            tp = m["throughput"][key]
            who = "loadgen" if key == "ceiling" else key
            cpu = m["cpu_us_per_msg"].get(who, {}).get(key)
            share = m["cpu_share"].get(who, {}).get(key)
            lines.append(
                f"{label:34}{_spread(tp):>22}  {_num(cpu):>10}  "
                f"{_num(share, '{:.0%}'):>9}  {m['lost'][key]:>5}"
                f"  {_num(m.get('other_cores', {}).get(key), '{:.2f} cores'):>10}"
            )
        lines.append(
            f"{'  edgemeta OK answers':34}{_spread(m['answer_rate']):>22}"
            f"  (broker CPU us/msg: echo {_num(m['cpu_us_per_msg']['broker'].get('echo'))}, "
            f"edgemeta {_num(m['cpu_us_per_msg']['broker'].get('edgemeta'))})"
        )
        ratio = m["ratio"]
        lines += [
            f"ratio edgemeta/echo, median of per-run ratios: {ratio['median']:.2f} "
            f"(runs: {', '.join(f'{r:.2f}' for r in ratio['runs'])})",
            f"load generator CPU at its ceiling: "
            f"{_num(m['cpu_share']['loadgen']['ceiling'], '{:.0%}')} of a core "
            f"({_num(m['ceiling_over_echo'], '{:.1f}')}x echo's throughput)",
        ]
        b = m.get("batches")
        if b and b.get("commits"):
            lines.append(
                f"edgemeta batch per commit (journal) at full load: mean {b['mean']:.1f}, "
                f"p50 {b['p50']}, p90 {b['p90']}, max {b['max']} ({b['commits']} commits)"
            )
        lines += [
            "",
            f"latency at a steady {cfg['rate']:g} msgs/s, publish -> forward on <prefix>/hub, ms",
            f"{'':34}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}  {'CPU %core':>9}  {'lost':>5}",
        ]
        latency_rows = (
            ("load generator alone (no hop)", "ceiling"),
            ("echo", "echo"),
            ("edgemeta", "edgemeta"),
        )
        for label, key in latency_rows:
            lat = m["latency"][key]
            share = m["latency_cpu_share"].get(key)
            lines.append(
                f"{label:34}"
                + "".join(f"{_num(lat[q]['median'], '{:.2f}'):>9}" for q in ("p50", "p90", "p99"))
                + f"{_num(lat['max']['median'], '{:.2f}'):>9}"
                + f"  {_num(share, '{:.0%}'):>9}  {m['latency_lost'][key]:>5}"
            )
        b = m.get("latency_batches")
        if b and b.get("commits"):
            lines.append(
                f"edgemeta batch per commit at {cfg['rate']:g} msgs/s: mean {b['mean']:.2f}, "
                f"max {b['max']}"
            )
        lines.append("")
    if "store" in s:
        st = s["store"]
        lines += [
            "MetaStore over DurableStorage (fsync on), ~1 KB values; us per put incl. its commit",
            f"{'records':>8}{'open s':>8}{'RSS MB':>8}{'peak MB':>8}"
            f"{'update':>10}{'insert':>10}{'upd g64':>10}{'ins g64':>10}",
        ]
        for n, row in st["sizes"].items():
            lines.append(
                f"{int(n):>8,}{_num(row['startup_s']['median'], '{:.3f}'):>8}"
                f"{_num(row['rss_open']['median'] / MB, '{:.0f}'):>8}"
                f"{_num(row['rss_peak']['median'] / MB, '{:.0f}'):>8}"
                + "".join(
                    f"{_num(row[k]['median'], '{:,.1f}'):>10}"
                    for k in (
                        "put_update_commit_each_us",
                        "put_insert_commit_each_us",
                        "put_update_group64_us",
                        "put_insert_group64_us",
                    )
                )
            )
        tiny = st.get("tinydb")
        if tiny:
            lines.append(
                f"stock TinyDB JSONStorage at {tiny['n']:,} records: update "
                f"{_num(tiny['put_update_commit_each_us']['median'], '{:,.0f}')} us, insert "
                f"{_num(tiny['put_insert_commit_each_us']['median'], '{:,.0f}')} us per write"
            )
        lines.append(
            f"RSS of a process with the imports and no store: {st['baseline_rss'] / MB:.0f} MB; "
            f"fdatasync alone: {_num(st.get('fdatasync_us'), '{:.0f}')} us"
        )
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    panels = ("mqtt" in s) * 2 + ("store" in s)
    if not panels:
        return
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4), squeeze=False)
    ax_iter = iter(axes[0])
    colours = {"ceiling": "#9e9e9e", "echo": "#4c72b0", "edgemeta": "#dd8452"}
    if "mqtt" in s:
        m = s["mqtt"]
        ax = next(ax_iter)
        keys = ["echo", "edgemeta"]
        medians = [m["throughput"][k]["median"] for k in keys]
        ax.bar(keys, medians, color=[colours[k] for k in keys], width=0.6)
        for i, k in enumerate(keys):
            runs = m["throughput"][k]["runs"]
            ax.scatter([i] * len(runs), runs, color="black", s=10, zorder=3)
            ax.annotate(
                f"{medians[i]:,.0f}",
                (i, max(runs)),
                xytext=(0, 5),
                textcoords="offset points",
                ha="center",
            )
        ax.set_ylim(0, max(max(m["throughput"][k]["runs"]) for k in keys) * 1.2)
        ceiling = m["throughput"]["ceiling"]["median"]
        ax.set_title(f"throughput, QoS 1 (edgemeta/echo = {m['ratio']['median']:.2f})")
        ax.set_xlabel(f"load generator ceiling, no hop: {ceiling:,.0f} msgs/s")
        ax.set_ylabel("msgs/s (median, dots = rounds)")

        ax = next(ax_iter)
        qs = ["p50", "p90", "p99", "max"]
        width = 0.27
        for j, k in enumerate(["ceiling", "echo", "edgemeta"]):
            vals = [m["latency"][k][q]["median"] or 0 for q in qs]
            xs = [i + (j - 1) * width for i in range(len(qs))]
            label = "load generator alone" if k == "ceiling" else k
            ax.bar(xs, vals, width, label=label, color=colours[k])
        ax.set_xticks(range(len(qs)), qs)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"latency at {results['config']['rate']:g} msgs/s")
        ax.legend()
    if "store" in s:
        ax = next(ax_iter)
        sizes = list(s["store"]["sizes"])
        series = [
            ("put_update_commit_each_us", "update, commit each"),
            ("put_insert_commit_each_us", "insert, commit each"),
            ("put_update_group64_us", "update, group of 64"),
        ]
        width = 0.26
        for j, (key, label) in enumerate(series):
            vals = [s["store"]["sizes"][n][key]["median"] for n in sizes]
            ax.bar([i + (j - 1) * width for i in range(len(sizes))], vals, width, label=label)
        ax.set_xticks(range(len(sizes)), [f"{int(n):,}" for n in sizes])
        top = max(s["store"]["sizes"][n][key]["median"] for n in sizes for key, _label in series)
        ax.set_ylim(0, top * 1.45)
        tiny = s["store"].get("tinydb", {}).get("put_update_commit_each_us")
        note = f"; stock TinyDB at 1,000: {tiny['median']:,.0f} us" if tiny else ""
        ax.set_xlabel(f"records{note}")
        ax.set_ylabel("us per durable put")
        ax.set_title("MetaStore write cost (fsync)")
        ax.legend(fontsize=8, loc="upper center", ncols=2)
    fig.suptitle(f"edgemeta benchmark, {results['meta']['started']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
