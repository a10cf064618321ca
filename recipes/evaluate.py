"""Streaming metrics of a VideoLLM-MoD on a prepared dataset split (`videollm-mod evaluate`).

    videollm-mod evaluate --dataset runs/quickstart/narration --config raw --split val \
        --video-root runs/quickstart/synthetic/ego4d/v2/full_scale --threshold 0.725 --baselines   # the demo model

Prints LM-PPL, TimeDiff (seconds), Fluency and LM-Correctness (`recipes.metrics`, VideoLLM-online's definitions,
teacher-forced, one sample at a time) as JSON; with `--baselines` also for two timing baselines that keep the model's
text predictions: never speak, and speak at random frames at the ground truth's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from modeling_videollm_mod import DEFAULT_THRESHOLD, speaks

from ..errors import UserError
from .collator import VideoLLMMoDCollator
from .metrics import aggregate_stream_metrics, stream_evaluate


def speak_rate(dataset) -> float:
    """Fraction of learned frames at which the ground truth speaks."""
    replies = frames = 0
    for row in dataset:
        for message in row["conversation"]:
            frames += message["learn"] if message["role"] == "stream" else 0
            replies += bool(message["role"] == "assistant" and message["learn"])
    return replies / max(frames, 1)


@torch.no_grad()
def evaluate_streams(
    model,
    processor,
    dataset,
    video_root: str | None = None,
    features_dir: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    baselines: bool = False,
    seed: int = 0,
) -> dict:
    """`{"model": metrics}` (+ `"never_speak"`, `"random_same_rate"` with `baselines`) over the rows of `dataset`."""
    model.eval()
    collator = VideoLLMMoDCollator(processor, video_root=video_root, features_dir=features_dir)
    interval = model.config.frame_token_interval_id
    policies = {"model": lambda probs: speaks(probs, interval, threshold)}
    if baselines:
        generator = torch.Generator().manual_seed(seed)
        rate = speak_rate(dataset)
        policies["never_speak"] = lambda probs: torch.zeros(len(probs), dtype=torch.bool)
        policies["random_same_rate"] = lambda probs: torch.rand(len(probs), generator=generator) < rate
    results = {name: [] for name in policies}
    for row in dataset:
        batch = collator([row])
        frames = {k: batch[k] for k in ("frame_features", "pixel_values_videos") if k in batch}
        for name, policy in policies.items():
            sample = stream_evaluate(model, batch["input_ids"], batch["labels"], fire_policy=policy, **frames)
            results[name].append(sample)
    fps = dataset[0]["fps"]
    return {name: aggregate_stream_metrics(samples, fps) for name, samples in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="videollm-mod evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or Hub repo (default: the shipped demo model)")
    parser.add_argument("--dataset", required=True, help="prepared dataset folder or Hub id (videollm-mod data ...)")
    parser.add_argument("--config", default=None, help="dataset config (e.g. raw, refined)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--video-root", default=None, help="folder of the rows' videos (raw frames)")
    parser.add_argument("--features-dir", default=None, help="folder of pre-computed {video_uid}.safetensors")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="decision threshold, as in narrate: a frame fires when P(interval) < THRESHOLD or the interval is not "
        "the most probable token (0 = argmax, the original evaluation)",
    )
    parser.add_argument("--baselines", action="store_true", help="also never-speak and random-timing baselines")
    parser.add_argument(
        "--answer-accuracy",
        action="store_true",
        help="instead: answer each row's question after its stream, scored against its `label` (COIN step / next / "
        "task, Ego-Exo4D keystep: exact and fuzzy accuracy, recipes/answer_accuracy.py; --baselines: blind, "
        "majority, random label)",
    )
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--output", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold {args.threshold} must lie in [0, 1]")
    if args.video_root is None and args.features_dir is None:
        parser.error("give --video-root (raw frames) or --features-dir (pre-computed features)")
    for name in ("video_root", "features_dir"):
        folder = getattr(args, name)
        if folder is not None and not os.path.isdir(folder):
            parser.error(f"--{name.replace('_', '-')} {folder}: no such folder")

    from ..data_scripts._hub import load_prepared_dataset
    from ..loading import load_model_and_processor, resolve_model

    dataset = load_prepared_dataset(args.dataset, args.config, "--dataset")
    if args.split not in dataset:
        raise UserError(f"--split {args.split!r}: {args.dataset} has the splits {sorted(dataset)}")
    dataset = dataset[args.split]
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    model, processor = load_model_and_processor(args.model, device="cpu", dtype=torch.float32)
    if args.answer_accuracy:
        from .answer_accuracy import evaluate_answers

        metrics = evaluate_answers(model, processor, dataset, args.video_root, args.features_dir, args.baselines)
    else:
        metrics = evaluate_streams(
            model, processor, dataset, args.video_root, args.features_dir, args.threshold, args.baselines
        )
    report = {
        "model_path": resolve_model(args.model),
        "dataset": args.dataset,
        "config": args.config,
        "split": args.split,
        "rows": len(dataset),
        "threshold": args.threshold,
        "results": metrics,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        write_text_atomically(args.output, text + "\n")
    return 0


def write_text_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod evaluate", main, sys.argv[1:]))
