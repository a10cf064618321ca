"""The cost of each variant of the MoD study, measured side by side with the dense model in one run (`recipes.costs`).

On one training batch of the study (its first `batch_size` narration rows, the shared features), a fresh model of the
variant and of the dense layout: training step time (interleaved steps, medians), FLOPs of forward + backward, peak
training memory (each in a fresh process); then the KV-cache bytes after each frame of a stream fed frame by frame,
and how many frames fit in `plan.kv_budget_bytes` (`plan.cost_steps` timed steps, `plan.kv_frames` frames). Written to `{results_dir}/costs/{variant}.json`.
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
    from .costs import count_flops, interleaved_step_times, kv_bytes_by_frame, peak_training_memory
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
    inputs = {**batch, "use_cache": False}
    step_time = interleaved_step_times(models, {name: inputs for name in models}, plan.cost_steps)
    flops = {name: count_flops(model, inputs) for name, model in models.items()}
    memory = {name: peak_training_memory(model.config, batch) for name, model in models.items()}

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
        },  # fmt: skip
        "step_seconds": step_time,
        "flops": flops,
        "peak_memory_bytes": memory,
        "kv_bytes_by_frame": kv,
        "kv_budget_bytes": plan.kv_budget_bytes,
        "frames_held": {name: sum(b <= plan.kv_budget_bytes for b in held) for name, held in kv.items()},
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text_atomically(path, json.dumps(costs, indent=1) + "\n")
    return costs
