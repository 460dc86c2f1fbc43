"""PNG plots of a flash-sale run (matplotlib, the ``bench`` extra): every design of the run side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"railbook": "tab:blue", "naive": "tab:orange"}


def draw(results: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """Write the plots into ``out``; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    designs = list(results)

    fig, axes = plt.subplots(1, len(designs), figsize=(6.5 * len(designs), 4), squeeze=False, sharey=True)
    for ax, design in zip(axes[0], designs, strict=True):
        s = results[design]["figures"]["series"]
        ax.step(range(len(s["accepted"])), s["accepted"], where="post", label="orders accepted/s (202)")
        ax.step(
            range(len(s["committed_tickets"])),
            s["committed_tickets"],
            where="post",
            label="tickets committed/s (database)",
        )
        ax.step(
            range(len(s["tickets_seen"])),
            s["tickets_seen"],
            where="post",
            linestyle="--",
            label="tickets/s as passengers see them",
        )
        ax.set_title(design)
        ax.set_xlabel("seconds from the sale's start")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("per second")
    written.append(_save(fig, out / "flash-sale-throughput.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    for design in designs:
        queue = results[design]["figures"]["series"]["queue"]
        ax.plot([q[0] for q in queue], [q[1] for q in queue], label=design, color=COLOURS.get(design))
    ax.set_title("orders accepted but not yet committed (queue depth)")
    ax.set_xlabel("seconds from the sale's start")
    ax.set_ylabel("orders")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(fig, out / "flash-sale-queue.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    for design in designs:
        rows = results[design]["figures"]["series"]["post_ms_by_second"]
        x = [r[0] for r in rows]
        colour = COLOURS.get(design)
        ax.plot(x, [r[1] for r in rows], color=colour, label=f"{design} p50")
        ax.plot(x, [r[2] for r in rows], color=colour, linestyle="--", label=f"{design} p90")
        ax.plot(x, [r[3] for r in rows], color=colour, linestyle=":", label=f"{design} p99")
    ax.set_title("POST /orders latency by the second it was sent")
    ax.set_xlabel("seconds from the sale's start")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    written.append(_save(fig, out / "flash-sale-latency.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    for design in designs:
        values = sorted(results[design]["figures"]["series"]["time_to_known_s"])
        if values:
            ax.plot(
                values,
                [(k + 1) / len(values) for k in range(len(values))],
                label=design,
                color=COLOURS.get(design),
                drawstyle="steps-post",
            )
    ax.set_title("time from the 202 answer until the passenger saw a final status (polling every 1 s)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("share of accepted orders")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(fig, out / "flash-sale-time-to-known.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
