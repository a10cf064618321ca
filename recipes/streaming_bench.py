"""StreamingBench (THUNLP-MT/StreamingBench): its question files and its scoring as `src/data/count.py` computes it.

Question files (`questions_{real,omni,sqa,proactive}.json`) are lists of videos, each with `video_path` and
`questions` (`sqa`: lists of such videos, one per contextual chain). A question is asked at its `time_stamp`
("HH:MM:SS", "MM:SS" and forms such as "00:00:8", which the official scripts read as the sum of each field times a
power of 60); the official protocol cuts the clip from `time_stamp - context_time` (60 s by default) to it. The model's
answer is stored in the question under the model's name (the official result file is the question file with those
answers filled in); a proactive answer is `{"dialog_history": [{"time": seconds, "content": text}, ...]}`.

Scoring keeps `count.py`'s rules, quirks included, so that numbers compare:
- multiple choice (real, omni, sqa): the answer's first character must equal the answer letter; a question without
  an answer from the model is not counted (`count.py` skips it in sqa and fails on an empty string elsewhere; here it
  is skipped everywhere);
- proactive: the last turn of the dialog must come within +-2 s (inclusive) of `ground_truth_time_stamp`
  (`time_accuracy`), and, if so, contain `ground_truth_output` (`answer_accuracy`);
- accuracies per `task_type`; real and omni add a `total` row over every question.
"""

from __future__ import annotations

from collections import defaultdict

from ..errors import UserError
from ..files import read_json

TASKS = ("real", "omni", "sqa", "proactive")
CONTEXT_TIME = 60  # seconds of video before a question's time, as the official `--context_time`


def parse_time_stamp(text, where: str) -> int:
    """Seconds of "HH:MM:SS" / "MM:SS" / "SS" as the official scripts read them; any other form is a `UserError`."""
    try:
        return sum(int(x) * 60**i for i, x in enumerate(reversed(str(text).split(":"))))
    except ValueError:
        raise UserError(f"{where}: time stamp {text!r} is not [HH:]MM:SS as the official scripts read it") from None


def videos_of(data, task: str) -> list[dict]:
    """The videos of a question file, flattened (`sqa` holds lists of videos)."""
    return [video for chain in data for video in chain] if task == "sqa" else list(data)


def read_questions(path: str, task: str) -> list:
    """A question (or result) file of `task`, each question checked for the fields its scoring and its protocol
    need; a problem is one `UserError` naming the file and the question."""
    if task not in TASKS:
        raise UserError(f"task {task!r}: StreamingBench's tasks are {', '.join(TASKS)}")
    data = read_json(path, "question file")
    fields = ("task_type", "time_stamp") + (
        ("question", "ground_truth_time_stamp", "ground_truth_output")
        if task == "proactive"
        else ("question", "answer")
    )
    for v, video in enumerate(videos_of(data, task)):
        if not isinstance(video, dict) or "questions" not in video:
            raise UserError(f"{path}: video {v} has no 'questions'")
        for q, question in enumerate(video["questions"]):
            where = f"{path}: video {video.get('video_path', v)}, question {q}"
            for field in fields:
                if question.get(field) is None:
                    raise UserError(f"{where}: no {field!r}")
            for field in ("time_stamp", "ground_truth_time_stamp"):
                if field in question:
                    parse_time_stamp(question[field], f"{where}, {field}")
    return data


def score(data, task: str, model: str) -> dict[str, dict]:
    """`count.py`'s statistics of `model`'s answers: per task type `total` and `correct` / `accuracy` (proactive:
    `time_correct`, `time_accuracy`, `answer_correct`, `answer_accuracy`)."""
    stats: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    for video in videos_of(data, task):
        for question in video["questions"]:
            answer = question.get(model)
            if not answer:
                continue
            kind = question["task_type"]
            stats[kind]["total"] += 1
            if task == "proactive":
                last = answer["dialog_history"][-1]
                if -2 <= last["time"] - parse_time_stamp(question["ground_truth_time_stamp"], "") <= 2:
                    stats[kind]["time_correct"] += 1
                    stats[kind]["answer_correct"] += int(question["ground_truth_output"] in last["content"])
                continue
            correct = int(answer[0] == question["answer"])
            stats[kind]["correct"] += correct
            if task != "sqa":
                stats["total"]["total"] += 1
                stats["total"]["correct"] += correct
    for counts in stats.values():
        if task == "proactive":
            for name in ("time", "answer"):
                counts[f"{name}_accuracy"] = counts[f"{name}_correct"] / counts["total"] if counts["total"] else 0
        else:
            counts["accuracy"] = counts["correct"] / counts["total"] if counts["total"] else 0
    return {kind: dict(counts) for kind, counts in stats.items()}
