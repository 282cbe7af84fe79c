"""The fleet report's plot: utilisation of every host, round by round (matplotlib).

The utilisation band is shaded; failures are marked where they happened and
demand changes as dotted lines. PNG or SVG by the file's suffix; the file is
the same for the same report (no dates or random ids in it).

Errors: RuntimeError when matplotlib (the ``cluster`` extra) is missing;
ValueError for a suffix other than .png or .svg; OSError when the file
cannot be written.
"""

from __future__ import annotations

from pathlib import Path

from spgs.fleet.report import FleetReport

FORMATS = (".png", ".svg")


def plot_report(report: FleetReport, path: Path, *, band: tuple[float, float]) -> Path:
    """Draw ``report`` into ``path``; returns it."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: the plot is .png or .svg")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("the plot needs matplotlib (the cluster extra): pip install '.[cluster]'") from exc
    matplotlib.rcParams["svg.hashsalt"] = "spk-fleet"
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    rounds = [r.round for r in report.history]
    ax.axhspan(band[0], band[1], color="0.93", label=f"band {band[0]:g}–{band[1]:g}")
    for host in report.hosts:
        values = [r.hosts[host]["utilisation"] if host in r.hosts else float("nan") for r in report.history]
        ax.plot(rounds, values, marker=".", linewidth=1.2, label=host)
    for event in report.of_kind("failed"):
        ax.axvline(event["round"], color="red", linewidth=1)
        ax.annotate(f"{event['host']} fails", (event["round"], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", color="red", fontsize=8)  # fmt: skip
    for event in report.of_kind("demand_changed"):
        ax.axvline(event["round"], color="0.5", linestyle=":", linewidth=1)
    ax.set_xlabel(f"round ({report.round_ticks:,} ticks of virtual time each)")
    ax.set_ylabel("utilisation (load / capacity)")
    imbalance = report.metrics.get("fleet_imbalance_after")
    ax.set_title(f"fleet {report.name}: load per host (imbalance after: {imbalance})")
    if len(report.hosts) <= 16:  # beyond, the lines speak for themselves
        ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    metadata: dict[str, str | None] = {"Date": None} if suffix == ".svg" else {"Software": None}
    fig.savefig(path, format=suffix[1:], metadata=metadata)
    plt.close(fig)
    return path
