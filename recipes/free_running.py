"""Free-running narration: each row's video streamed through a session at the real threshold, the model conditioned
on its own replies (never on the reference's), and what it says scored against the row's replies
(`recipes.event_metrics`: precision, recall, F1, lag, content accuracy). Teacher-forced metrics flatter a model that
cannot recover from its own mistakes; these do not.

Protocol per row: the row's frames `[start_frame, stop_frame)` at their video times (`i / fps`), its user messages
pushed as queries at their times (a narration row's instruction is answered after its first frame, as in training),
8 frames per forward while the model is silent (identical to frame by frame), `batch_size` rows at a time in one
batched session (with greedy decoding, identical to one at a time). References: the row's assistant messages.

Baselines on the same rows (`baselines=True`):

- `never_speak`: no reply;
- `random_same_rate`, `periodic_same_rate`: the model's own replies (not its answers to queries, which stay put)
  moved to random / evenly spaced frames of the stream, as many as it made, texts in their order: only the timing
  differs;
- `blind`: the same model and protocol with every frame black. The gap to it measures what the model sees.

Rows with questions (a user message after the instruction, answered at its time in the reference: the live-chat
rows) also score the answers (`answer_accuracy`, `event_metrics.answer_matches`) of the model and of `blind`, in all
(with `answers_right` and the 95 % `answer_interval`, `event_metrics.wilson_interval`) and by question
(`answers_by_question`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import torch

from modeling_videollm_mod import DEFAULT_THRESHOLD, StreamEvent, VideoLLMMoDBatchStreamSession, load_video

from .blind import black_like
from .event_metrics import aggregate_event_scores, answer_matches, score_events, wilson_interval
from .generation_settings import SENTENCE_TOKENS


def row_frames(row: dict, video_root: str | None, features_dir: str | None) -> tuple[str, torch.Tensor]:
    """The row's frames for a session: `("features", (T, F, D))` from `features_dir`, else `("frames", uint8
    (T, H, W, 3))` decoded from `video_root` by the model's sampler."""
    start, stop = row["start_frame"], row["stop_frame"]
    if features_dir is not None:
        from ..data_scripts.precompute_features import read_features

        return "features", read_features(features_dir, row["video_uid"])[start:stop]
    frames, _ = load_video(os.path.join(video_root, row["video"]), fps=row["fps"], start_frame=start, stop_frame=stop)
    return "frames", torch.from_numpy(frames)


def narrate_streams(
    model,
    processor,
    streams: list[dict],
    threshold: float = DEFAULT_THRESHOLD,
    max_new_tokens: int = SENTENCE_TOKENS,
    chunk_size: int = 8,
) -> VideoLLMMoDBatchStreamSession:
    """Stream several videos at once through one batched session (with greedy decoding each stream says what it says
    alone). Each of `streams` is `{"times", "queries": [(time, text)], "frames": (T, H, W, 3) uint8 or "features":
    (T, F, D)}`; returns the session, whose `streams[r]` hold each stream's `events` (user queries and the assistant's
    replies, in order) and `decisions`."""
    session = model.batch_stream_session(processor, len(streams), threshold=threshold, max_new_tokens=max_new_tokens,
                                         chunk_size=chunk_size)  # fmt: skip
    for r, stream in enumerate(streams):
        for time, text in stream["queries"]:
            session.push_query(r, text, time)
    key = "frames" if "frames" in streams[0] else "features"
    session.push_frames(times=[stream["times"] for stream in streams], **{key: [stream[key] for stream in streams]})
    session.flush()
    return session


def split_replies(events: list[StreamEvent]) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """`(spontaneous replies, answers to queries)` as `(time, text)`: an answer is the reply right after a query."""
    spontaneous, answers = [], []
    for previous, event in zip([None, *events], events, strict=False):
        if event.role == "assistant":
            (answers if previous is not None and previous.role == "user" else spontaneous).append(
                (event.time, event.text)
            )
    return spontaneous, answers


def questions_of(conversation: list[dict]) -> list[tuple[float, str, str]]:
    """`(time, question, reference answer)` of each user message after the row's first (its instruction) that the
    next message answers at the same time."""
    users = [i for i, m in enumerate(conversation) if m["role"] == "user"]
    return [
        (conversation[i]["time"], conversation[i]["content"], conversation[i + 1]["content"])
        for i in users[1:]
        if i + 1 < len(conversation)
        and conversation[i + 1]["role"] == "assistant"
        and conversation[i + 1]["time"] == conversation[i]["time"]
    ]


def answers_to(events: list[StreamEvent], queries: Sequence[tuple[float, str]]) -> list[str | None]:
    """The answer to each query `(time, text)` pushed into a stream: the event right after the query's user event
    (the engine answers a query at once), each user event answering one query, so that a question asked twice gets
    each of its answers; None where the stream holds no such query or no answer after it."""
    asked = [i for i, event in enumerate(events) if event.role == "user"]
    answers = []
    for query in queries:
        index = next((i for i in asked if (events[i].time, events[i].text) == tuple(query)), None)
        follows = events[index + 1] if index is not None and index + 1 < len(events) else None
        answers.append(follows.text if follows is not None and follows.role == "assistant" else None)
        if index is not None:
            asked.remove(index)
    return answers


def right_answers(events: list[StreamEvent], questions: list[tuple[float, str, str]]) -> list[bool]:
    """Whether each `(time, question, reference)` got the reference's answer (`answer_matches`) in `events`."""
    answers = answers_to(events, [(time, text) for time, text, _ in questions])
    return [
        answer is not None and answer_matches(answer, reference)
        for answer, (_, _, reference) in zip(answers, questions, strict=True)
    ]


def retimed(replies: list[tuple[float, str]], times: list[float], rng: random.Random | None):
    """The replies' texts at other frames of the stream: random ones (`rng`), or evenly spaced (`rng=None`)."""
    n = len(replies)
    if n == 0:
        return []
    if rng is None:
        frames = [min(int((k + 0.5) * len(times) / n), len(times) - 1) for k in range(n)]
    else:
        frames = sorted(rng.sample(range(len(times)), min(n, len(times))))
    return [(times[f], text) for f, (_, text) in zip(frames, replies, strict=False)]


@torch.no_grad()
def stream_predictions(
    model,
    processor,
    dataset,
    video_root: str | None = None,
    features_dir: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    blind: bool = False,
    max_new_tokens: int = SENTENCE_TOKENS,
    plot_dir: str | None = None,
    batch_size: int = 1,
) -> list[dict]:
    """Stream each row of `dataset` (see the module docstring), `batch_size` rows at a time in one batched session,
    and return one prediction record per row, all that `score_predictions` needs: `video_uid`, the frame `times`, the
    row's `references` `[time, text]` and `questions` `[time, question, answer]`, the `events` said
    `[time, role, text]` and, with `blind`, those said fed black frames (`blind_events`). With `plot_dir`, the
    timeline of each row's stream is drawn there."""
    if video_root is None and features_dir is None:
        raise ValueError("give video_root (raw frames) or features_dir (pre-computed features)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    model.eval()
    records = []
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        streams = []
        for row in rows:
            key, frames = row_frames(row, video_root, features_dir)
            times = [(row["start_frame"] + i) / row["fps"] for i in range(len(frames))]
            queries = [(m["time"], m["content"]) for m in row["conversation"] if m["role"] == "user"]
            streams.append({"times": times, "queries": queries, key: frames})
        run = dict(model=model, processor=processor, threshold=threshold, max_new_tokens=max_new_tokens)
        said = narrate_streams(streams=streams, **run)
        if blind:
            black = [{**s, key: black_like(model, processor, key, s[key])} for s in streams]
            blind_said = narrate_streams(streams=black, **run)
        for r, row in enumerate(rows):
            references = [(m["time"], m["content"]) for m in row["conversation"] if m["role"] == "assistant"]
            stream = said.streams[r]
            if plot_dir is not None:
                draw_row(plot_dir, start + r, row, stream.decisions, threshold, stream.events,
                         [time for time, _ in references])  # fmt: skip
            record = {"video_uid": row.get("video_uid"), "times": streams[r]["times"], "references": references,
                      "questions": questions_of(row["conversation"]), "events": stream.events}  # fmt: skip
            if blind:
                record["blind_events"] = blind_said.streams[r].events
            records.append(record)
    return records


def score_predictions(records: list[dict], baselines: bool = False, seed: int = 0, tolerance: float = 1.0) -> dict:
    """`{policy: aggregate_event_scores(...)}` over the prediction records of `stream_predictions` (or read back from
    their JSON lines): the model's entry also has `speak_rate`, its spontaneous replies per frame; `baselines` scores
    never speaking, the model's replies re-timed at random and periodic frames, and `blind` (the records must hold
    `blind_events`)."""
    rng = random.Random(seed)
    scores = {name: [] for name in ("model", *(("never_speak", "random_same_rate", "periodic_same_rate", "blind")
                                               if baselines else ()))}  # fmt: skip
    num_frames = num_spontaneous = 0
    by_question = {"model": {}, "blind": {}}  # {policy: {question: {"right": ..., "asked": ...}}}
    for record in records:
        events = [StreamEvent(*event) for event in record["events"]]
        times, questions = record["times"], [tuple(q) for q in record["questions"]]
        references = [tuple(reference) for reference in record["references"]]
        spontaneous, answers = split_replies(events)
        scores["model"].append(score_events(sorted(spontaneous + answers), references, tolerance))
        tally_answers(by_question["model"], events, questions)
        num_frames, num_spontaneous = num_frames + len(times), num_spontaneous + len(spontaneous)
        if not baselines:
            continue
        scores["never_speak"].append(score_events([], references, tolerance))
        for name, retime_rng in (("random_same_rate", rng), ("periodic_same_rate", None)):
            replies = sorted(retimed(spontaneous, times, retime_rng) + answers)
            scores[name].append(score_events(replies, references, tolerance))
        blind = [StreamEvent(*event) for event in record["blind_events"]]
        scores["blind"].append(score_events(sorted(sum(split_replies(blind), [])), references, tolerance))
        tally_answers(by_question["blind"], blind, questions)
    results = {name: aggregate_event_scores(s) for name, s in scores.items()}
    results["model"]["speak_rate"] = num_spontaneous / max(num_frames, 1)
    for name, tally in by_question.items():  # questions about the stream (`questions_of`), answered free-running
        if tally:
            asked, right = (sum(counts[key] for counts in tally.values()) for key in ("asked", "right"))
            results[name]["questions"], results[name]["answer_accuracy"] = asked, right / asked
            results[name]["answers_right"], results[name]["answer_interval"] = right, wilson_interval(right, asked)
            results[name]["answers_by_question"] = dict(sorted(tally.items()))
    return results


def tally_answers(tally: dict[str, dict], events: list[StreamEvent], questions: list[tuple[float, str, str]]):
    """Count each question's answer into `tally[question] = {"right": ..., "asked": ...}`."""
    for (_, question, _), right in zip(questions, right_answers(events, questions), strict=True):
        counts = tally.setdefault(question, {"right": 0, "asked": 0})
        counts["right"] += right
        counts["asked"] += 1


def evaluate_free_running(
    model,
    processor,
    dataset,
    video_root: str | None = None,
    features_dir: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    baselines: bool = False,
    seed: int = 0,
    tolerance: float = 1.0,
    max_new_tokens: int = SENTENCE_TOKENS,
    plot_dir: str | None = None,
    batch_size: int = 1,
) -> dict:
    """`score_predictions` of `stream_predictions` over the rows of `dataset` (see the module docstring)."""
    records = stream_predictions(model, processor, dataset, video_root, features_dir, threshold, baselines,
                                 max_new_tokens, plot_dir, batch_size)  # fmt: skip
    return score_predictions(records, baselines, seed, tolerance)


def draw_row(folder: str, index: int, row: dict, decisions, threshold: float, events, ground_truth: list[float]):
    """The timeline of row `index`'s stream as `{folder}/{index:04d}-{video_uid}.png`."""
    from ..timeline import save_timeline

    name = f"{index:04d}-{row.get('video_uid') or os.path.splitext(os.path.basename(row['video']))[0]}"
    save_timeline(os.path.join(folder, f"{name}.png"), decisions, threshold, events, ground_truth, title=name)


__all__ = [
    "answers_to",
    "evaluate_free_running",
    "narrate_streams",
    "questions_of",
    "retimed",
    "row_frames",
    "score_predictions",
    "split_replies",
    "stream_predictions",
]
