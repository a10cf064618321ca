"""Capacity warm-up for Mixture-of-Depths training: routed layers start by processing every vision token and anneal
linearly to the model's keep ratio `r` over the first part of training.

The official VideoLLM-MoD code holds this schedule (`mod_warmup_steps`, capacity annealed from 1 to r) but leaves it
commented out; here it is an option of the SFT recipe (`--mod_capacity_warmup FRACTION`). A fresh router chooses
arbitrary tokens; with the warm-up the layers first learn on whole frames, while the router's gate already trains.
"""

from __future__ import annotations

from transformers import TrainerCallback


def warmup_keep_ratio(step: int, warmup_steps: int, target: float) -> float:
    """The keep ratio at `step` (0-based): 1 at step 0, `target` from `warmup_steps` on, linear in between."""
    if step >= warmup_steps:
        return target
    return 1.0 - (1.0 - target) * step / warmup_steps


class CapacityWarmup(TrainerCallback):
    """Set `config.mod_keep_ratio` before each training step; restore the target when training ends (the saved
    model and every later forward use the target).

    Args:
        config: the model's `VideoLLMMoDConfig` (the object the model reads at each forward).
        fraction: the share of the training steps over which the ratio anneals, in [0, 1).
    """

    def __init__(self, config, fraction: float):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"mod_capacity_warmup={fraction} must lie in [0, 1)")
        self.config = config
        self.fraction = fraction
        self.target = config.mod_keep_ratio

    def on_step_begin(self, args, state, control, **kwargs):
        warmup_steps = round(self.fraction * state.max_steps)
        self.config.mod_keep_ratio = warmup_keep_ratio(state.global_step, warmup_steps, self.target)

    def on_train_end(self, args, state, control, **kwargs):
        self.config.mod_keep_ratio = self.target


__all__ = ["CapacityWarmup", "warmup_keep_ratio"]
