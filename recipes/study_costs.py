"""The cost of each variant of the MoD study, measured side by side with the dense model in one run (`recipes.costs`).

On one training batch of the study (its first `batch_size` narration rows, the shared features), a fresh model of the
variant and of the dense layout: training step time (interleaved steps, medians), FLOPs of forward + backward, peak
training memory (each in a fresh process); then the KV-cache bytes after each frame of a stream fed frame by frame,
and how many frames fit in `plan.kv_budget_bytes` (`plan.cost_steps` timed steps, `plan.kv_frames` frames).

The same step time, FLOPs and memory are then measured on synthetic narration batches of the same shape
(`costs.narration_stream`, a narration after every n-th frame for each n of `plan.cost_layouts`): what MoD saves
depends on the share of tokens that are not vision tokens (a routed layer keeps those whole), and this curve says
where the study's batch stands against vision-heavier streams. Written to
`{results_dir}/costs/{variant}.json`.
"""

from __future__ import annotations

import json
import logging
import os

import torch

logger = logging.getLogger(__name__)


def cost_path(results_dir: str, variant: str) -> str:
    return os.path.join(results_dir, "costs", f"{variant}.json")


def measure_variant_costs(plan, shared, variant, results_dir: str) -> dict:
    """Measure and write the costs of `variant` against dense; returns them."""
    from ..files import write_text_atomically
    from .collator import VideoLLMMoDCollator
    from .costs import kv_bytes_by_frame, non_vision_share
    from .mod_study import VARIANTS, build_model, load_split, plan_rows, training_texts

    path = cost_path(results_dir, variant.name)
    logger.info("%s: measuring costs against dense", variant.name)
    rows = plan_rows(plan, load_split(shared, "train"))
    texts = training_texts([rows])
    models, processor = {}, None
    for name in dict.fromkeys(["dense", variant.name]):
        models[name], processor = build_model(plan, VARIANTS[name], texts, shared.tower, seed=0)
    collator = VideoLLMMoDCollator(processor, features_dir=shared.features["train"])
    batch = collator([rows[i] for i in range(min(plan.batch_size, len(rows)))])
    training = training_costs(models, batch, plan.cost_steps)

    from safetensors.torch import load_file

    stream = sorted(os.listdir(shared.features["test"]))[0]
    features = load_file(os.path.join(shared.features["test"], stream))["features"].float()
    features = features.repeat(-(-plan.kv_frames // len(features)), 1, 1)[: plan.kv_frames]
    kv = {
        name: kv_bytes_by_frame(model, features, processor.video_token_id, processor.frame_token_interval_id)
        for name, model in models.items()
    }
    costs = {
        "variant": variant.name,
        "batch": {
            "rows": len(batch["input_ids"]),
            "tokens": int(batch["attention_mask"].sum()),
            "frames": len(batch["frame_features"]),
            "non_vision_share": non_vision_share(
                batch["input_ids"], processor.video_token_id, batch["attention_mask"]
            ),
        },  # fmt: skip
        **training,
        "kv_bytes_by_frame": kv,
        "kv_budget_bytes": plan.kv_budget_bytes,
        "frames_held": {name: sum(b <= plan.kv_budget_bytes for b in held) for name, held in kv.items()},
        "by_layout": layout_costs(models, plan, batch["input_ids"].shape),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text_atomically(path, json.dumps(costs, indent=1) + "\n")
    return costs


def training_costs(models: dict, batch: dict, steps: int) -> dict:
    """Step seconds (interleaved, medians), FLOPs and peak memory of each model on `batch`, with the loss the study
    trains with (`costs.with_trainers_loss`)."""
    from .costs import count_flops, interleaved_step_times, peak_training_memory, with_trainers_loss

    inputs = {name: with_trainers_loss(model, {**batch, "use_cache": False}) for name, model in models.items()}
    return {
        "step_seconds": interleaved_step_times(models, inputs, steps),
        "flops": {name: count_flops(model, inputs[name]) for name, model in models.items()},
        "peak_memory_bytes": {
            name: peak_training_memory(model.config, batch, trainers_loss=True) for name, model in models.items()
        },
    }


def layout_costs(models: dict, plan, shape: tuple[int, int]) -> list[dict]:
    """`training_costs` on a synthetic narration batch of `shape` (rows, tokens) for each `plan.cost_layouts` n (a
    narration after every n-th frame), with the batch's share of non-vision tokens."""
    from .costs import NARRATION_PROMPT_TOKENS, NARRATION_WORDS, narration_stream, non_vision_share

    config = next(iter(models.values())).config
    rows, length = shape
    out = []
    for every in plan.cost_layouts:
        tokens_per_frame = config.frame_num_tokens + 1 + (NARRATION_WORDS + 1) / every
        frames = max(1, int((length - NARRATION_PROMPT_TOKENS) / tokens_per_frame))
        batch = narration_stream(config, frames, every, rows=rows)
        logger.info("layout: a narration every %d frames, %d frames per row", every, frames)
        out.append({"narrate_every": every, "frames_per_row": frames, "tokens_per_row": batch["input_ids"].shape[1],
                    "non_vision_share": non_vision_share(batch["input_ids"], config.video_token_id),
                    **training_costs(models, batch, plan.cost_steps)})  # fmt: skip
    return out
