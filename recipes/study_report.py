"""The MoD study's results as a table and plots (`python -m videollm_mod.recipes.mod_study --report`).

Reads `{results_dir}/runs/*.json` (one per variant and seed) and `{results_dir}/costs/*.json` (one per variant),
writes `{results_dir}/RESULTS.md` (mean and spread over seeds, costs relative to dense) and two figures:
`quality_vs_cost.png` (free-running F1 and content accuracy against FLOPs, step time and peak memory) and
`kv_bytes.png` (KV-cache bytes against stream length). Variants appear in the order of `mod_study.VARIANTS`.
"""

from __future__ import annotations

import glob
import json
import os
import statistics

from ..errors import UserError

# (column, where in a run's `quality`, higher is better)
QUALITY = [
    ("F1", ("free_running", "model", "f1"), True),
    ("content acc.", ("free_running", "model", "content_accuracy"), True),
    ("blind F1", ("free_running", "blind", "f1"), False),
    ("lag (s)", ("free_running", "model", "mean_abs_lag"), False),
    ("answers", ("livechat", "model", "answer_accuracy"), True),
    ("blind answers", ("livechat", "blind", "answer_accuracy"), False),
    ("TimeDiff (s)", ("teacher_forced", "model", "time_diff"), False),
    ("LM-PPL", ("teacher_forced", "model", "lm_ppl"), False),
    ("Fluency", ("teacher_forced", "model", "fluency"), True),
    ("LM-Corr.", ("teacher_forced", "model", "lm_correctness"), True),
    ("COIN step", ("coin", "step", "model", "accuracy"), True),
    ("COIN next", ("coin", "next", "model", "accuracy"), True),
    ("COIN task", ("coin", "task", "model", "accuracy"), True),
]
COSTS = [("FLOPs", "flops"), ("step time", "step_seconds"), ("peak memory", "peak_memory_bytes")]


def dig(record: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def load_results(results_dir: str) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """`({variant: [run, ...]}, {variant: costs})` of the files written so far."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "runs", "*.json"))):
        run = json.load(open(path))
        runs.setdefault(run["variant"], []).append(run)
    costs = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "costs", "*.json"))):
        record = json.load(open(path))
        costs[record["variant"]] = record
    return runs, costs


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def quality_summary(runs: list[dict]) -> dict[str, tuple[float, float, int]]:
    """`{column: (mean, spread, seeds)}` over the runs of one variant."""
    out = {}
    for column, path, _ in QUALITY:
        values = [v for v in (dig(run["quality"], path) for run in runs) if v is not None]
        if values:
            out[column] = (*mean_spread(values), len(values))
    return out


def cost_ratios(costs: dict) -> dict[str, float]:
    """The variant's costs over dense's, measured in the same run; KV bytes per frame and frames held too."""
    name = costs["variant"]
    ratios = {label: costs[key][name] / costs[key]["dense"] for label, key in COSTS}
    kv = costs["kv_bytes_by_frame"]
    ratios["KV bytes"] = kv[name][-1] / kv["dense"][-1]
    ratios["frames held"] = costs["frames_held"][name] / costs["frames_held"]["dense"]
    return ratios


def layout_ratios(costs: dict) -> list[tuple[str, float, dict[str, float]]]:
    """`(layout, non-vision share, {cost: variant / dense})` of the study's batch, then of each synthetic narration
    layout (`study_costs.layout_costs`), those measured; [] for cost files written before the layouts were."""
    name = costs["variant"]
    points = [("the study's batch", costs["batch"].get("non_vision_share"), costs)]
    points += [(narration_label(c["narrate_every"]), c["non_vision_share"], c) for c in costs.get("by_layout", [])]
    if len(points) == 1 or points[0][1] is None:
        return []
    return [(label, share, {c: m[key][name] / m[key]["dense"] for c, key in COSTS}) for label, share, m in points]


def narration_label(every: int) -> str:
    return "a narration every frame" if every == 1 else f"a narration every {every} frames"


def layout_table(costs: dict[str, dict]) -> str:
    """Per variant, its cost ratios against the share of non-vision tokens (`layout_ratios`)."""
    lines = []
    for name in ordered(costs):
        points = layout_ratios(costs[name])
        if not points or name == "dense":
            continue
        lines += [f"**{name}**", "", "| layout | non-vision share | " + " | ".join(f"{c} ×" for c, _ in COSTS) + " |",
                  "|---|---|" + "---|" * len(COSTS)]  # fmt: skip
        for label, share, ratios in sorted(points, key=lambda p: -p[1]):
            lines.append(f"| {label} | {share:.3f} | " + " | ".join(f"{ratios[c]:.3f}" for c, _ in COSTS) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_cost_vs_share(costs: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COSTS), figsize=(4.2 * len(COSTS), 3.8), squeeze=False)
    for col, (label, _) in enumerate(COSTS):
        ax = axes[0][col]
        for name in ordered(costs):
            points = layout_ratios(costs[name])
            if not points or name == "dense":
                continue
            synthetic = sorted(points[1:], key=lambda p: p[1])
            line = ax.plot([p[1] for p in synthetic], [p[2][label] for p in synthetic], "o-", label=name)[0]
            ax.plot(points[0][1], points[0][2][label], "*", markersize=12, color=line.get_color())
        ax.set_xlabel("share of tokens that are not vision tokens")
        ax.set_ylabel(f"{label} / dense")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Cost against the token mix (lines: synthetic narration batches; stars: the study's batch)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ordered(names) -> list[str]:
    from .mod_study import VARIANTS

    return [n for n in VARIANTS if n in names] + sorted(n for n in names if n not in VARIANTS)


def format_cell(summary: tuple[float, float, int] | None) -> str:
    if summary is None:
        return "-"
    mean, spread, n = summary
    return f"{mean:.3f} ± {spread:.3f}" if n > 1 else f"{mean:.3f}"


def markdown_table(runs: dict[str, list[dict]], costs: dict[str, dict]) -> str:
    names = ordered(set(runs) | set(costs))
    summaries = {name: quality_summary(runs.get(name, [])) for name in names}
    # a measure no run has (COIN where the plan has no COIN videos) gets no column
    columns = [c for c, _, _ in QUALITY if any(c in summary for summary in summaries.values())]
    cost_columns = [label for label, _ in COSTS] + ["KV bytes", "frames held"]
    header = ["variant", "seeds", *columns, *[f"{c} ×" for c in cost_columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        summary = summaries[name]
        ratios = cost_ratios(costs[name]) if name in costs else {}
        cells = [name, str(len(runs.get(name, [])))]
        cells += [format_cell(summary.get(column)) for column in columns]
        cells += [f"{ratios[c]:.3f}" if c in ratios else "-" for c in cost_columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_time_ratios(runs: dict[str, list[dict]]) -> dict[str, float]:
    """Mean wall time of a variant's training runs over dense's (same data and steps; a noisy machine)."""
    if "dense" not in runs:
        return {}
    dense = statistics.fmean(r["training"]["seconds"] for r in runs["dense"])
    return {name: statistics.fmean(r["training"]["seconds"] for r in rs) / dense for name, rs in runs.items()}


def plot_quality_vs_cost(runs, costs, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ordered(set(runs) & set(costs))]
    fig, axes = plt.subplots(2, len(COSTS), figsize=(4.2 * len(COSTS), 7.5), squeeze=False)
    for row, (column, _, _) in enumerate(QUALITY[:2]):
        for col, (label, _) in enumerate(COSTS):
            ax = axes[row][col]
            for name in names:
                summary = quality_summary(runs[name]).get(column)
                if summary is None:
                    continue
                x = cost_ratios(costs[name])[label]
                ax.errorbar(x, summary[0], yerr=summary[1], fmt="o", capsize=3)
                ax.annotate(name, (x, summary[0]), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_xlabel(f"{label} / dense")
            ax.set_ylabel(f"free-running {column}")
            ax.grid(alpha=0.3)
    fig.suptitle("Quality against cost (mean ± spread over seeds; costs measured beside dense)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_kv_bytes(costs, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ordered(costs):
        held = costs[name]["kv_bytes_by_frame"][name]
        ax.plot(range(1, len(held) + 1), [b / 2**20 for b in held], label=name)
    budget = next(iter(costs.values()))["kv_budget_bytes"] / 2**20 if costs else None
    if budget:
        ax.axhline(budget, color="k", linestyle=":", linewidth=1, label=f"{budget:g} MiB budget")
    ax.set_xlabel("frames in the stream")
    ax.set_ylabel("KV-cache MiB")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results_dir: str) -> str:
    """Write `RESULTS.md` and the figures; returns the markdown."""
    from ..files import write_text_atomically

    runs, costs = load_results(results_dir)
    if not runs and not costs:
        raise UserError(f"--results-dir {results_dir}: no result files yet (runs/*.json, costs/*.json)")
    text = ["# MoD study: results so far", "", markdown_table(runs, costs), ""]
    times = training_time_ratios(runs)
    if times:
        text += ["Training wall time over dense (mean of the seeds' SFT runs, which may have shared the machine with "
                 "other jobs: the step-time column is the cost measurement): "
                 + ", ".join(f"{n} {times[n]:.2f}" for n in ordered(times)), ""]  # fmt: skip
    if runs and costs:
        plot_quality_vs_cost(runs, costs, os.path.join(results_dir, "quality_vs_cost.png"))
        text += ["![quality against cost](quality_vs_cost.png)", ""]
    if costs:
        plot_kv_bytes(costs, os.path.join(results_dir, "kv_bytes.png"))
        text += ["![KV bytes against stream length](kv_bytes.png)", ""]
    layouts = layout_table(costs)
    if layouts:
        plot_cost_vs_share(costs, os.path.join(results_dir, "cost_vs_token_mix.png"))
        text += ["## Cost against the token mix", "",
                 "Costs over dense's on the study's batch and, in the same run, on synthetic narration batches of the "
                 "same shape (`costs.narration_stream`): a routed layer keeps every non-vision token.", "",
                 layouts, "![cost against the token mix](cost_vs_token_mix.png)", ""]  # fmt: skip
    markdown = "\n".join(text)
    write_text_atomically(os.path.join(results_dir, "RESULTS.md"), markdown)
    return markdown
