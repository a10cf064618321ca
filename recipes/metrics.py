"""Streaming and COIN metrics of VideoLLM-online (`LiveMixin.stream_evaluate`, `COINBenchmark.compute_metrics`).

Streaming metrics are computed per sample (batch size 1), teacher-forced through the model's streaming engine (the
sample is pushed into a session turn by turn, `ForcedStream`; its logits are those of one forward over the sample),
per dialogue turn (a turn ends after each eos), then averaged over turns and over samples:

- LM-PPL: `exp(mean CE)` over the turn's labelled text positions (`]\\n`, `Assistant`, `:`, the reply, eos).
- LM-Correctness: the fraction of those positions predicted right (argmax) before the first error.
- TimeDiff: how many frames too early (> 0) or too late (< 0) the model replies, in seconds (`|frame_diff| / fps`);
  a late reply is found by feeding up to `min(#frames of the next turn, #frames of this turn - 1)` future frames after
  the turn's last learned frame ("late-response probing"). The probed frames are the ones that follow that frame in
  the video. The original takes them from a running count of earlier turns' frames instead, which differs in two
  live-chat layouts: a turn whose last frames are not learned (the original's cache ends at the last learned frame
  but its probe starts after the turn's last frame, skipping the frames between) and a turn after one with no
  labels (the original skips that turn's frames in its count, so it probes frames from the past).
- Fluency: the fraction of the turn's decision + text tokens predicted right in a row.

A frame "fires" (the model speaks) by the streaming rule, `modeling_videollm_mod.speaks`: the interval token is not
the argmax after its last placeholder, or its probability is below `threshold` (the original evaluation used 0:
argmax only; its demo 0.725).

Labels follow the HF convention (aligned with `input_ids`, shifted here): the target of the prediction made at
position `t` is `labels[t + 1]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from modeling_videollm_mod import CacheBudget, speaks

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------------------------------------------
# per-turn pieces (pure functions on tensors, tested by hand)


def early_frame_diff(fires: torch.Tensor) -> int | None:
    """Frames too early of the first firing among a turn's decisions (the last one is the ground-truth reply frame):
    `N - first - 1` (0 = on time); `None` if no decision fires (a late reply)."""
    fired = fires.nonzero()
    if len(fired) == 0:
        return None
    return int(len(fires) - fired[0, 0] - 1)


def late_frame_diff(probe_fires: torch.Tensor) -> int:
    """`-(index + 1)` of the first firing among the appended future frames, or `-len(probe_fires)` if none fires."""
    fired = probe_fires.nonzero()
    return -int(fired[0, 0] + 1) if len(fired) else -len(probe_fires)


def lm_turn_metrics(lm_logits: torch.Tensor, lm_targets: torch.Tensor) -> tuple[float, int]:
    """`(perplexity, correct_prefix)`: `exp(mean CE)` and the number of targets predicted right before the first
    error (all of them if none is wrong). lm_logits (N, V), lm_targets (N,)."""
    ppl = math.exp(F.cross_entropy(lm_logits.float(), lm_targets).item())
    wrong = (lm_logits.argmax(-1) != lm_targets).nonzero()
    correct_prefix = int(wrong[0, 0]) if len(wrong) else len(lm_targets)
    return ppl, correct_prefix


def fluency(frame_diff: int, num_stream: int, num_lm: int, lm_correct_prefix: int) -> float:
    """Proportion of consecutive right predictions over a turn's decision and text tokens.

    On time: (decisions + correct text prefix) / total; early by d frames: (decisions - d) / total; late: (decisions
    - 1) / total (every silent decision was right but the reply frame).
    """
    total = num_stream + num_lm
    if frame_diff == 0:
        return (num_stream + lm_correct_prefix) / total
    if frame_diff > 0:
        return (num_stream - frame_diff) / total
    return (num_stream - 1) / total


# ----------------------------------------------------------------------------------------------------------------
# decision policies: `((N, V) probabilities, (N,) frame indices) -> (N,) bool fires`


def model_fire_policy(interval_id: int, threshold: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The model's own decisions (`speaks`)."""
    return lambda probs, frames: speaks(probs, interval_id, threshold)


def periodic_fires(frames: torch.Tensor, rate: float, phase: float) -> torch.Tensor:
    """Fires evenly spaced at `rate` per frame: frame f fires when `f * rate + phase` passes an integer before
    `(f + 1) * rate + phase` (phase in [0, 1) shifts the pattern)."""
    return torch.floor((frames + 1) * rate + phase) > torch.floor(frames * rate + phase)


# ----------------------------------------------------------------------------------------------------------------
# one sample through a model


@dataclass
class StreamMetrics:
    """Per-sample means over turns (a sample without any turn of a kind gets the original's neutral value)."""

    lm_ppl: float
    frame_diff: float
    fluency: float
    lm_correctness: float
    num_turns: int


def _mean(values: list[float], empty: float) -> float:
    return sum(values) / len(values) if values else empty


def forcing_session(model, processor, **kwargs):
    """A one-stream session that holds a whole ground-truth sample, its positions as fed (no eviction: the logits
    are those of one forward over the sample)."""
    budget = CacheBudget(max_tokens=model.config.text_config.max_position_embeddings, positions="original")
    return model.stream_session(processor, budget=budget, **kwargs)


class ForcedStream:
    """One ground-truth sample pushed through a session of the model's own streaming engine (`StreamEngine.force`),
    fed as far as the metrics ask, turn by turn: `logits(stop)` are those of every position before `stop`,
    `probe(cut, first, num)` those of the decisions after frames `first .. first + num - 1` of the sample fed after
    its first `cut` tokens, as if the reply never happened (`StreamEngine.probe`). The cache holds the whole sample
    (positions as fed), so the logits are those of one forward over it."""

    def __init__(self, model, processor, input_ids: torch.LongTensor, frames: torch.Tensor, key: str):
        config = model.config
        self.ids, self.frames, self.key = input_ids[0], frames, key
        self.video_id, self.frame_tokens = config.video_token_id, config.frame_num_tokens
        eos_id = config.text_config.eos_token_id
        self.eos_ids = set(eos_id if isinstance(eos_id, list) else [eos_id])
        self.session = forcing_session(model, processor)
        self.fed, self._logits = 0, torch.zeros(0, config.text_config.vocab_size)

    def _frames_before(self, stop: int) -> int:
        return int((self.ids[:stop] == self.video_id).sum()) // self.frame_tokens

    def logits(self, stop: int) -> torch.Tensor:
        """(stop, V) float32 logits on the CPU (the model runs where it lives)."""
        if stop > self.fed:
            first, last = self._frames_before(self.fed), self._frames_before(stop)
            frames = self.frames[first:last] if last > first else None
            new = self.session.force(0, self.ids[self.fed : stop].tolist(), frames, self.key)
            self._logits, self.fed = torch.cat([self._logits, new.float().cpu()]), stop
        return self._logits[:stop]

    def probe(self, cut: int, first: int, num: int) -> torch.Tensor:
        """(num, V) float32 logits of the probed decisions; the stream must be fed up to `cut`, not beyond."""
        self.logits(cut)
        if self.fed != cut:
            raise ValueError(f"a probe after token {cut} needs the stream fed up to it; it was fed up to {self.fed}")
        return self.session.probe(0, self.frames[first : first + num], self.key).float().cpu()


@torch.no_grad()
def stream_evaluate(
    model,
    processor,
    input_ids: torch.LongTensor,
    labels: torch.LongTensor,
    frame_features: torch.Tensor | None = None,
    pixel_values_videos: torch.Tensor | None = None,
    threshold: float = 0.0,
    fire_policy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> StreamMetrics:
    """VideoLLM-online's `stream_evaluate` for one sample with a [`VideoLLMMoDForCausalLM`], through its streaming
    engine (`ForcedStream`).

    Args:
        input_ids, labels: (1, L); labels aligned with `input_ids` (-100 = no loss). Decisions are the labels right
            after the last placeholder of each learned frame.
        frame_features / pixel_values_videos: (T, ...) the sample's frames in sequence order (exactly one of them).
        threshold: the decision threshold of `speaks` (0: argmax only, the original's evaluation).
        fire_policy: replaces the model's decisions, `((N, V) probabilities, (N,) index of each decision's frame in
            the sample) -> (N,) bool fires`, for timing baselines (never speak, speak at random or periodically); the
            text metrics stay the model's.
    """
    if input_ids.shape[0] != 1:
        raise ValueError(f"stream_evaluate takes one sample at a time; got a batch of {input_ids.shape[0]}")
    if (frame_features is None) == (pixel_values_videos is None):
        raise ValueError("pass exactly one of frame_features or pixel_values_videos")
    frames = frame_features if frame_features is not None else pixel_values_videos
    key = "frame_features" if frame_features is not None else "pixel_values_videos"
    if fire_policy is None:
        fire_policy = model_fire_policy(model.config.frame_token_interval_id, threshold)
    return forced_stream_metrics(ForcedStream(model, processor, input_ids, frames, key), labels, fire_policy)


def forced_stream_metrics(stream, labels: torch.LongTensor, fire_policy) -> StreamMetrics:
    """The metrics of one sample from a `ForcedStream` (or any object with its attributes and methods)."""
    ids, video_id, frame_tokens = stream.ids, stream.video_id, stream.frame_tokens
    # targets[t] = what the prediction at position t should be (the original's pre-shifted labels)
    targets = torch.cat([labels[0, 1:], labels.new_full((1,), IGNORE_INDEX)])
    is_eos = torch.isin(ids, torch.tensor(sorted(stream.eos_ids), device=ids.device))
    # Turns end after each eos; tokens after the last eos belong to no turn (as in the original).
    stops = (is_eos.nonzero()[:, 0] + 1).tolist()
    starts = [0] + stops[:-1]
    frames_before = torch.cumsum(ids == video_id, 0) // frame_tokens  # frames completed up to and including t

    lm_ppls, frame_diffs, fluencies, correctness = [], [], [], []
    for turn, (start, stop) in enumerate(zip(starts, stops, strict=True)):
        turn_ids, turn_targets = ids[start:stop], targets[start:stop]
        learn = turn_targets != IGNORE_INDEX
        if not learn.any():
            continue
        stream_mask = (turn_ids == video_id) & learn
        lm_mask = learn & ~stream_mask
        turn_frames = int((turn_ids == video_id).sum()) // frame_tokens

        if stream_mask.any():  # the decisions come before the turn's text: read them, and probe, at the cut
            cut = start + int(stream_mask.nonzero()[-1, 0]) + 1
            decision_frames = frames_before[start:stop][stream_mask] - 1
            decisions = stream.logits(cut)[start:cut][stream_mask[: cut - start]]
            frame_diff = early_frame_diff(fire_policy(decisions.softmax(-1), decision_frames))
            if frame_diff is None:
                frame_diff = 0
                if turn < len(starts) - 1:
                    next_ids = ids[starts[turn + 1] : stops[turn + 1]]
                    num_probe = min(int((next_ids == video_id).sum()) // frame_tokens, turn_frames - 1)
                    if num_probe > 0:
                        first = int(frames_before[cut - 1])
                        probed = stream.probe(cut, first, num_probe)
                        frame_diff = late_frame_diff(fire_policy(probed.softmax(-1), first + torch.arange(num_probe)))
            frame_diffs.append(abs(frame_diff))

        if lm_mask.any():
            turn_logits = stream.logits(stop)[start:stop]
            ppl, lm_correct = lm_turn_metrics(turn_logits[lm_mask], turn_targets[lm_mask])
            num_lm = int(lm_mask.sum())
            lm_ppls.append(ppl)
            correctness.append(lm_correct / num_lm)
            if stream_mask.any():
                fluencies.append(fluency(frame_diff, int(stream_mask.sum()), num_lm, lm_correct))

    return StreamMetrics(
        lm_ppl=_mean(lm_ppls, 1.0),
        frame_diff=_mean(frame_diffs, 0.0),
        fluency=_mean(fluencies, 1.0),
        lm_correctness=_mean(correctness, 1.0),
        num_turns=len(lm_ppls),
    )


def aggregate_stream_metrics(samples: Sequence[StreamMetrics], fps: float) -> dict[str, float]:
    """Mean over samples: `lm_ppl`, `time_diff` (seconds), `fluency`, `lm_correctness`."""
    if not samples:
        raise ValueError("no samples to aggregate")
    n = len(samples)
    return {
        "lm_ppl": sum(s.lm_ppl for s in samples) / n,
        "time_diff": sum(s.frame_diff for s in samples) / n / fps,
        "fluency": sum(s.fluency for s in samples) / n,
        "lm_correctness": sum(s.lm_correctness for s in samples) / n,
    }


# ----------------------------------------------------------------------------------------------------------------
# COIN accuracies


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; cost 1). Written here to avoid a C dependency for short labels."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def fuzzy_match(text: str, categories: Sequence[str]) -> str:
    """The category nearest to `text` by edit distance (ties: the alphabetically first, as `min` over pairs)."""
    return min((levenshtein(text, c), c) for c in categories)[1]


def coin_match(prediction: str, label: str, categories: Sequence[str]) -> tuple[bool, bool]:
    """`(exact, right)` for one answer as COIN scores it: the prediction, lower-cased with its trailing '.' stripped,
    is exact if it equals the label, and right if it is exact or its nearest category is the label."""
    prediction = prediction.lower().rstrip(".")
    exact = prediction == label
    return exact, exact or fuzzy_match(prediction, categories) == label


def coin_accuracy(predictions: Sequence[str], labels: Sequence[str], categories: Sequence[str]) -> float:
    """Step / Next / Task accuracy: the share of right answers in [0, 1] (`coin_match`: exact or fuzzy; the paper
    gives it in percent)."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"need as many predictions as labels (> 0); got {len(predictions)} and {len(labels)}")
    correct = sum(coin_match(p, label, categories)[1] for p, label in zip(predictions, labels, strict=True))
    return correct / len(labels)


def coin_procedure_accuracy(
    predictions: Sequence[str], labels: Sequence[Sequence[str]], categories: Sequence[str]
) -> float:
    """Procedure / Task-procedure accuracy in [0, 1], step by step: each prediction line keeps the text after its
    last ". " (the "k. " prefix) and is zipped with the label steps (missing lines are not counted, as in the
    original); a step is right if it equals the label or its nearest category does."""
    correct = total = 0
    for prediction, label_steps in zip(predictions, labels, strict=True):
        for line, label in zip(prediction.split("\n"), label_steps, strict=False):
            step = line.split(". ")[-1]
            correct += step == label or fuzzy_match(step, categories) == label
            total += 1
    if total == 0:
        raise ValueError("no step to score")
    return correct / total


__all__ = [
    "ForcedStream",
    "StreamMetrics",
    "aggregate_stream_metrics",
    "coin_accuracy",
    "coin_match",
    "coin_procedure_accuracy",
    "early_frame_diff",
    "fluency",
    "forced_stream_metrics",
    "forcing_session",
    "fuzzy_match",
    "late_frame_diff",
    "levenshtein",
    "lm_turn_metrics",
    "model_fire_policy",
    "periodic_fires",
    "stream_evaluate",
]
