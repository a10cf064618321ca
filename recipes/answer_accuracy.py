"""Answer accuracy on question-answer rows: the model answers each row's question after its stream, scored as COIN.

For prepared datasets whose rows end with the answer to a question about the stream and carry it in a `label` column
(one lower-cased label per row): COIN step / next / task (`prepare_coin`), Ego-Exo4D keysteps (`prepare_egoexo4d`).
`videollm-mod evaluate --answer-accuracy` runs it. As VideoLLM-online's COIN evaluation (`COINBenchmark`,
`generate_after_embed`): the row's conversation without its last (assistant) turn, the generation prompt
`\\nAssistant:`, greedy decoding through the model's streaming engine until eos (at most `max_new_tokens` tokens);
the decoded answer, stripped of surrounding spaces (the original keeps the leading space, which only its fuzzy match
forgives), is scored by `metrics.coin_match`:

- `exact`: the answer, lower-cased and without its trailing period, equals the label;
- `accuracy`: exact, or the label is the category nearest to the answer by edit distance (COIN's accuracy).

Both are shares of the rows in [0, 1], as every metric of `evaluate` (the paper's tables give them in percent).

The categories are the labels of the evaluated split, as the original builds them from the split's annotations.
Baselines on the same rows (`baselines=True`): `blind` (the same model fed black frames), `majority` (always the
split's most frequent label: the best any constant answer can score there) and `random_label` (a category drawn
uniformly, seeded).
"""

from __future__ import annotations

import random
from collections import Counter

import torch
from transformers import GenerationConfig

from ..errors import UserError
from .blind import black_like
from .collator import VideoLLMMoDCollator, prepare_row
from .generation_settings import LABEL_TOKENS
from .metrics import coin_match, forcing_session


def row_label(row: dict, index: int) -> str:
    """The row's single label; a `UserError` naming the row for a dataset without one label per row."""
    label = row.get("label")
    if not isinstance(label, list) or len(label) != 1:
        raise UserError(
            f"row {index} ({row.get('video_uid', '?')}): answer accuracy needs a `label` column with one label per "
            f"row (COIN step / next / task, Ego-Exo4D keystep); got {label!r}"
        )
    return label[0]


def question_inputs(processor, row: dict, frames: dict) -> dict[str, torch.Tensor]:
    """Model inputs of the row's question: `input_ids` (1, L) = the conversation without its answer + `\\nAssistant:`,
    and the row's frames (`pixel_values_videos` (T, 3, S, S) or `frame_features` (T, F, D)).

    Args:
        frames: how the row's frames are found (`VideoLLMMoDCollator.frames_of`).
    """
    conversation = list(row["conversation"])
    if not conversation or conversation[-1]["role"] != "assistant":
        raise UserError(f"row {row.get('video_uid', '?')}: the conversation must end with the assistant's answer")
    question = {**row, "conversation": conversation[:-1]}
    prepared = prepare_row(processor, question, **frames)  # the row's frames, decoded or sliced as for training
    ids = processor(question["conversation"], add_generation_prompt=True, return_labels=False)["input_ids"]
    return {"input_ids": ids, **{k: v for k, v in prepared.items() if k in ("pixel_values_videos", "frame_features")}}


def black_frames(model, processor, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same inputs with every frame black, in the same form (the blind baseline, `recipes/blind.py`)."""
    return {k: v if k == "input_ids" else black_like(model, processor, k, v) for k, v in inputs.items()}


@torch.no_grad()
def generate_answer(model, processor, inputs: dict[str, torch.Tensor], max_new_tokens: int = LABEL_TOKENS) -> str:
    """Greedy answer to one question (`question_inputs`), decoded without special tokens and surrounding spaces, by
    the model's streaming engine (`StreamEngine.complete`)."""
    greedy = GenerationConfig(do_sample=False)
    session = forcing_session(model, processor, max_new_tokens=max_new_tokens, generation_config=greedy)
    key = next(k for k in inputs if k != "input_ids")
    return session.complete(0, inputs["input_ids"][0].tolist(), inputs[key], key).text


def score(predictions: list[str], labels: list[str], categories: list[str]) -> dict[str, float]:
    """`exact` and `accuracy` (exact or fuzzy): shares of the rows in [0, 1] (`metrics.coin_match`)."""
    matches = [coin_match(p, label, categories) for p, label in zip(predictions, labels, strict=True)]
    return {
        "exact": sum(exact for exact, _ in matches) / len(matches),
        "accuracy": sum(right for _, right in matches) / len(matches),
    }


def evaluate_answers(
    model,
    processor,
    dataset,
    video_root: str | None = None,
    features_dir: str | None = None,
    baselines: bool = False,
    seed: int = 0,
    max_new_tokens: int = LABEL_TOKENS,
) -> dict[str, dict[str, float]]:
    """`{"model": {"exact", "accuracy"}}` (+ `"blind"`, `"majority"`, `"random_label"` with `baselines`) over the
    rows of `dataset`."""
    model.eval()
    labels = [row_label(row, i) for i, row in enumerate(dataset)]
    if not labels:
        raise UserError("the split has no rows to answer")
    categories = sorted(set(labels))
    collator = VideoLLMMoDCollator(processor, video_root=video_root, features_dir=features_dir)
    predictions: dict[str, list[str]] = {"model": [], "blind": []}
    for row in dataset:
        inputs = question_inputs(processor, row, collator.frames_of(row))
        predictions["model"].append(generate_answer(model, processor, inputs, max_new_tokens))
        if baselines:
            predictions["blind"].append(
                generate_answer(model, processor, black_frames(model, processor, inputs), max_new_tokens)
            )
    results = {"model": score(predictions["model"], labels, categories)}
    if baselines:
        counts = Counter(labels)
        majority = min(categories, key=lambda c: (-counts[c], c))  # ties: the alphabetically first
        rng = random.Random(seed)
        results["blind"] = score(predictions["blind"], labels, categories)
        results["majority"] = score([majority] * len(labels), labels, categories)
        results["random_label"] = score([rng.choice(categories) for _ in labels], labels, categories)
    return results


__all__ = ["black_frames", "evaluate_answers", "generate_answer", "question_inputs", "row_label", "score"]
