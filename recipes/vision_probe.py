"""Linear probes of frame embeddings: does a vision tower tell shapes, colours and motion apart?

    python -m videollm_mod.recipes.vision_probe --model videollm_mod/demo --resolution 48
    python -m videollm_mod.recipes.vision_probe --model runs/demo/siglip/vision_tower --frame-token-pooled 3 3

The instrument behind the demo's diagnosis (`recipes/README.md`): synthetic videos (`data_scripts.synthetic`, seeds of
their own) are decoded at `--fps` and encoded as the video model sees them (its frame preprocessing, its vision tower,
its frame pooling: `precompute_features.load_encoder`); a multinomial logistic regression on the flattened frame
tokens is fitted on the first half of the videos and scored (balanced accuracy, chance = 1 / classes) on the other:

- `shape`, `color`: frames showing exactly one shape;
- `motion`: consecutive frames with the same shapes on screen, labelled with the direction of the move completed
  between them or `none`; the probe reads both frames' tokens and their difference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

from ..loading import add_model_arguments

TASKS = ("shape", "color", "motion")


def probe_examples(paths: dict, fps: float, encoder) -> dict[str, tuple[list, list, list]]:
    """`{task: (features, labels, video_index)}` over the Ego4D-style videos of a synthetic dataset."""
    from modeling_videollm_mod import load_video
    from videollm_mod.data_scripts.synthetic import Event, object_states

    events = json.load(open(paths["events"]))
    examples = {task: ([], [], []) for task in TASKS}

    def add(task, feature, label, index):
        for column, value in zip(examples[task], (feature, label, index), strict=True):
            column.append(value)

    for index, video_uid in enumerate(sorted(events)):
        video_events = [Event.from_dict(e) for e in events[video_uid]]
        frames, times = load_video(os.path.join(paths["ego4d_videos"], f"{video_uid}.mp4"), fps)
        tokens = encoder(torch.from_numpy(frames)).flatten(1)  # (T, F * D)
        shown = [[s for s in object_states(video_events, float(t)) if s["scale"] >= 1] for t in times]
        for i, t in enumerate(times):
            if len(shown[i]) == 1:
                add("shape", tokens[i], shown[i][0]["shape"], index)
                add("color", tokens[i], shown[i][0]["color"], index)
            if i == 0 or len(shown[i]) != len(shown[i - 1]):
                continue
            between = [e for e in video_events if times[i - 1] < e.narration_time <= t]
            if all(e.kind == "move" for e in between):
                label = between[0].direction if between else "none"
                add("motion", torch.cat([tokens[i - 1], tokens[i], tokens[i] - tokens[i - 1]]), label, index)
    return examples


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = 1e-3, steps=200):
    """Multinomial logistic regression (standardised inputs, L2), fitted with L-BFGS; returns a predict function.
    Written here because a probe is a few lines of torch and scikit-learn is not a dependency."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda z: (((z - mean) / std) @ weight + bias).argmax(-1)


def balanced_accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present of the fraction of their examples predicted right (chance: 1 / classes)."""
    return float(torch.stack([(predictions[labels == c] == c).float().mean() for c in labels.unique()]).mean())


def probe_accuracies(examples: dict, held_out_from: int) -> dict[str, dict[str, float]]:
    """Per task: the probe's held-out balanced accuracy (fitted on videos `< held_out_from`), chance (1 / classes)
    and the number of held-out examples."""
    results = {}
    for task, (features, labels, videos) in examples.items():
        classes = sorted(set(labels))
        x, videos = torch.stack(features).float(), torch.tensor(videos)
        y = torch.tensor([classes.index(label) for label in labels])
        train, test = videos < held_out_from, videos >= held_out_from
        predict = fit_linear_probe(x[train], y[train], len(classes))
        results[task] = {
            "probe": balanced_accuracy(predict(x[test]), y[test]),
            "chance": 1 / len(classes),
            "held_out_examples": int(test.sum()),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vision_probe", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, required=True, help="VideoLLM-MoD model or SiglipVisionModel folder")
    parser.add_argument("--frame-token-pooled", type=int, nargs=2, default=None, metavar=("HP", "WP"))
    parser.add_argument("--num-videos", type=int, default=40, help="half fit the probes, half score them")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=90210, help="of the probe videos (not a training seed)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from videollm_mod.data_scripts.precompute_features import load_encoder
    from videollm_mod.data_scripts.synthetic import generate_dataset

    pooled = tuple(args.frame_token_pooled) if args.frame_token_pooled else None
    encoder = load_encoder(
        args.model, pooled, trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle
    )
    with tempfile.TemporaryDirectory() as folder:
        paths = generate_dataset(
            os.path.join(folder, "probe"), num_videos=args.num_videos, seconds=args.seconds, fps=2 * args.fps,
            resolution=args.resolution, seed=args.seed, num_coin_videos=0, val_fraction=0.0, test_fraction=0.0,
        )  # fmt: skip
        examples = probe_examples(paths, args.fps, encoder)
    print(json.dumps({"model": args.model, **probe_accuracies(examples, args.num_videos // 2)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
