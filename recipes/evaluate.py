"""Streaming metrics of a VideoLLM-MoD on a prepared dataset split (`videollm-mod evaluate`).

    videollm-mod evaluate --model modeling_videollm_mod/demo --dataset runs/demo/narration --config raw --split val \
        --video-root runs/demo/synthetic/ego4d/v2/full_scale --threshold 0.725 --baselines

Prints LM-PPL, TimeDiff (seconds), Fluency and LM-Correctness (`recipes.metrics`, VideoLLM-online's definitions,
teacher-forced, one sample at a time) as JSON; with `--baselines` also for two timing baselines that keep the model's
text predictions: never speak, and speak at random frames at the ground truth's rate.
"""

from __future__ import annotations

import argparse
import json

import torch

from .collator import VideoLLMMoDCollator
from .metrics import aggregate_stream_metrics, frame_fires, stream_evaluate


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
    threshold: float = 0.0,
    baselines: bool = False,
    seed: int = 0,
) -> dict:
    """`{"model": metrics}` (+ `"never_speak"`, `"random_same_rate"` with `baselines`) over the rows of `dataset`."""
    model.eval()
    collator = VideoLLMMoDCollator(processor, video_root=video_root, features_dir=features_dir)
    interval = model.config.frame_token_interval_id
    policies = {"model": lambda probs: frame_fires(probs, interval, threshold)}
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


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or Hub repo (default: the shipped demo model)")
    parser.add_argument("--dataset", required=True, help="prepared dataset folder or Hub id (data_scripts)")
    parser.add_argument("--config", default=None, help="dataset config (e.g. raw, refined)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--video-root", default=None, help="folder of the rows' videos (raw frames)")
    parser.add_argument("--features-dir", default=None, help="folder of pre-computed {video_uid}.safetensors")
    parser.add_argument("--threshold", type=float, default=0.0, help="fire when P(interval) < threshold (0: argmax)")
    parser.add_argument("--baselines", action="store_true", help="also never-speak and random-timing baselines")
    parser.add_argument("--max-samples", type=int, default=None)
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoProcessor

    from .sft import load_prepared_dataset

    if args.model is None:
        import os

        import modeling_videollm_mod

        args.model = os.path.join(os.path.dirname(modeling_videollm_mod.__file__), "demo")
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    dataset = load_prepared_dataset(args.dataset, args.config)[args.split]
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    metrics = evaluate_streams(
        model, processor, dataset, args.video_root, args.features_dir, args.threshold, args.baselines
    )
    print(json.dumps({"model": args.model, "split": args.split, "threshold": args.threshold, **metrics}, indent=1))
    return metrics


if __name__ == "__main__":
    main()
