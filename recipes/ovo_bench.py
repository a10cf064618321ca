"""OVO-Bench (JoeLeelyf/OVO-Bench): its annotation file, and its offline scoring as `utils/OVOBenchScore.py` computes it.

Items are grouped as the official `main.py` groups them: backward tracing (EPM, ASI, HLD) and real-time perception
(STU, OJR, ATR, ACR, OCR, FPD) are multiple-choice questions asked at `realtime`; forward active responding (REC, SSR,
CRR) probes the model at each `test_info[i].realtime`. The official protocol is offline: the clip is cut at that time
and the model asked again. A result file is the official one: `{"backward": [...], "realtime": [...], "forward":
[...]}`, backward/real-time results with `task`, `response` and `ground_truth` (the option letter), forward items with
their `test_info` entries holding `response`.

Scoring keeps the official script's rules, quirks included, so that numbers compare:
- a multiple-choice result scores 1 when the letter occurs anywhere in the response (`"B. A cat"` holds `A`), 0 for no
  response;
- REC: every digit of the response joined must equal `count` (`"1 or 2"` reads 12);
- SSR / CRR: exactly `N` / `Y` for probes of type 0 / 1, else `No` / `Yes` anywhere in the response, case-sensitive;
- a task's score is the mean of its items (forward: of its probes); a group's average the mean of its tasks'; the
  total the mean of every task's score (not of the three groups).
"""

from __future__ import annotations

import re
from statistics import mean

from ..errors import UserError
from ..files import read_json

GROUPS = {
    "backward": ("EPM", "ASI", "HLD"),
    "realtime": ("STU", "OJR", "ATR", "ACR", "OCR", "FPD"),
    "forward": ("REC", "SSR", "CRR"),
}
GROUP_OF = {task: group for group, tasks in GROUPS.items() for task in tasks}
# What each task's annotation needs besides `id`, `video` and `task`.
FIELDS = {**{t: ("question", "options", "gt", "realtime") for t in GROUPS["backward"] + GROUPS["realtime"]},
          "REC": ("activity", "test_info"), "SSR": ("test_info",), "CRR": ("question", "answer", "test_info")}  # fmt: skip
PROBE_FIELDS = {"REC": ("realtime", "count"), "SSR": ("realtime", "step", "type"), "CRR": ("realtime", "type")}


def read_annotations(path: str) -> dict[str, list[dict]]:
    """The annotation file (`ovo_bench_new.json`: a list of items) grouped as `main.py` groups it; a missing file,
    an unknown task or a missing field is one `UserError` naming the file and the item."""
    items = read_json(path, "annotation file")
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a list of items, got {type(items).__name__}")
    grouped = {group: [] for group in GROUPS}
    for index, item in enumerate(items):
        where = f"{path}: item {item.get('id', index) if isinstance(item, dict) else index}"
        task = item.get("task") if isinstance(item, dict) else None
        if task not in GROUP_OF:
            raise UserError(f"{where}: task {task!r} is not an OVO-Bench task ({', '.join(GROUP_OF)})")
        for field in ("id", "video", *FIELDS[task]):
            if item.get(field) is None:
                raise UserError(f"{where} ({task}): no {field!r}")
        for probe, info in enumerate(item.get("test_info") or []):
            for field in PROBE_FIELDS.get(task, ()):
                if not isinstance(info, dict) or info.get(field) is None:
                    raise UserError(f"{where} ({task}): test_info[{probe}] has no {field!r}")
        grouped[GROUP_OF[task]].append(item)
    return grouped


def choice_score(response: str | None, ground_truth: str) -> int:
    return 0 if response is None else int(ground_truth in response)


def count_score(response: str | None, count) -> int:
    return 0 if response is None else int("".join(re.findall(r"\d+", response)) == str(count))


def yes_no_score(response: str | None, kind: int) -> int:
    if (response == "N" and kind == 0) or (response == "Y" and kind == 1):
        return 1
    return 0 if response is None else int(("No" if kind == 0 else "Yes") in response)


def task_scores(results: dict[str, list[dict]]) -> dict[str, list[int]]:
    """Every task's item (or probe) scores, tasks in order of first appearance."""
    scores: dict[str, list[int]] = {}
    for group in ("backward", "realtime"):
        for result in results.get(group, []):
            scores.setdefault(result["task"], []).append(choice_score(result["response"], result["ground_truth"]))
    for item in results.get("forward", []):
        task = item["task"]
        for info in item["test_info"]:
            if task == "REC":
                score = count_score(info.get("response"), info["count"])
            else:
                score = yes_no_score(info.get("response"), info["type"])
            scores.setdefault(task, []).append(score)
    return scores


def score(results: dict[str, list[dict]]) -> dict:
    """The official numbers of a result file: per task accuracy, per group average, total average (in [0, 1])."""
    scores = task_scores(results)
    tasks = {task: mean(values) for task, values in scores.items() if values}
    groups = {group: mean(tasks[t] for t in tasks if GROUP_OF[t] == group) for group in GROUPS
              if any(GROUP_OF[t] == group for t in tasks)}  # fmt: skip
    return {"tasks": tasks, "groups": groups, "total": mean(tasks.values()) if tasks else None,
            "items": {task: len(values) for task, values in scores.items()}}  # fmt: skip


def report(numbers: dict) -> str:
    """The official script's lines (percentages, two decimals)."""
    lines = []
    for group, title in (("backward", "Backward"), ("realtime", "Realtime"), ("forward", "Forward")):
        if group not in numbers["groups"]:
            continue
        lines += [f"Task: {t}, Acc: {100 * v:.2f}" for t, v in numbers["tasks"].items() if GROUP_OF[t] == group]
        lines.append(f"{title} Avg.: {100 * numbers['groups'][group]:.2f}")
    if numbers["total"] is not None:
        lines.append(f"Total Avg.: {100 * numbers['total']:.2f}")
    return "\n".join(lines)


def read_results(path: str) -> dict[str, list[dict]]:
    """An official result file; a missing file or a result without its fields is one `UserError`."""
    results = read_json(path, "result file")
    if not isinstance(results, dict) or not set(results) <= set(GROUPS):
        raise UserError(f"{path}: expected an object with 'backward', 'realtime' and 'forward' results")
    for group, items in results.items():
        for index, item in enumerate(items):
            fields = ("task", "test_info") if group == "forward" else ("task", "response", "ground_truth")
            missing = [f for f in fields if f not in item]
            if missing:
                raise UserError(f"{path}: {group} result {item.get('id', index)} has no {missing[0]!r}")
    return results
