"""PNG plots of a benchmark run (matplotlib, the ``bench`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .results import ArmRun, group_runs, total_of
from .scenarios import SCENARIO_TITLES


def plot(runs: Sequence[ArmRun], out_dir: Path, max_tokens: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    sequential = [
        r
        for r in runs
        if r.scenario != "concurrent"
        and r.max_tokens == max_tokens
        and r.repeat == 1
        and r.phase == "cold"
    ]
    scenarios = list(dict.fromkeys(r.scenario for r in sequential))
    if scenarios:
        fig, axes = plt.subplots(
            len(scenarios), 1, figsize=(9, 3.2 * len(scenarios)), squeeze=False
        )
        for ax, scenario in zip(axes[:, 0], scenarios, strict=True):
            for run in (r for r in sequential if r.scenario == scenario):
                xs = [x.index for x in run.tasks]
                ax.plot(xs, [x.ttft or 0 for x in run.tasks], marker="o", label=run.arm)
            ax.set_title(SCENARIO_TITLES[scenario])
            ax.set_xlabel("request #")
            ax.set_ylabel("TTFT (s)")
            ax.set_yscale("log")
            ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "ttft_per_request.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    groups = group_runs([r for r in runs if r.max_tokens == max_tokens])
    if groups:
        scen = list(dict.fromkeys(k[0] for k in groups))
        arms = list(dict.fromkeys(k[2] for k in groups))
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / len(arms)
        for j, arm in enumerate(arms):
            heights = [
                total_of(groups[(s, max_tokens, arm)]) if (s, max_tokens, arm) in groups else 0
                for s in scen
            ]
            ax.bar([i + j * width for i in range(len(scen))], heights, width, label=arm)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(scen))], scen)
        ax.set_ylabel("total time (s)")
        ax.set_title(f"Total time per scenario and arm (max_tokens={max_tokens})")
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "total_time_per_scenario.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
