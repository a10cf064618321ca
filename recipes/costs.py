"""What a training step and a stream cost: step time side by side, FLOPs, peak memory, KV-cache bytes.

Shared by `benchmarks/mod_vs_dense.py` and the MoD study (`recipes.study_costs`). Times are only ever compared
between models measured in the same run, their steps interleaved (machine noise then hits both alike), as medians.

- step: forward + backward + AdamW on one batch of model inputs (`labels` included), with the loss that the SFT recipe
  trains with (`with_trainers_loss`: TRL's fused LM head, which projects only the labelled positions,
  `sft.fused_head_on_labelled_positions`);
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over forward + backward, with eager attention (the CPU SDPA
  kernel is invisible to the counter);
- peak memory: in a fresh process, `max_memory_allocated` on CUDA; on CPU the peak growth, over two steps, of the
  bytes held by tensors beyond the loaded model and inputs (activations, gradients, AdamW state: `peak_tensor_bytes`;
  not peak RSS, which holds the allocator's caching too and moves by +-5 % from one run to the next, too much for a
  ratio);
- KV-cache bytes: keys and values held after each frame of a stream fed frame by frame (with its interval token).

`narration_stream` is the synthetic narration layout these costs are measured on where a real batch is not the point:
what MoD saves depends on the share of tokens that are not vision tokens (routed layers keep all of those).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_videollm_mod.processing_videollm_mod import stream_frame_ids

NARRATION_WORDS = 6  # a narration: the response token, six words, EOS (the study's are 5 to 8 tokens)
NARRATION_PROMPT_TOKENS = 4  # BOS and three words before the first frame


def narration_stream(config, num_frames: int, narrate_every: int, rows: int = 1, seed: int = 0) -> dict:
    """Training inputs (`input_ids`, `labels`, `frame_features`) of `rows` synthetic narration streams of
    `num_frames` frames: a short prompt, then each frame's placeholders followed by its interval token, or by a
    narration after every `narrate_every`-th frame; every token but the placeholders is labelled. Random word ids and
    frame features: a step's cost does not depend on them."""
    if num_frames < 1 or narrate_every < 1 or rows < 1:
        raise ValueError(f"num_frames={num_frames}, narrate_every={narrate_every}, rows={rows}: each must be >= 1")
    generator = torch.Generator().manual_seed(seed)
    words = (20, config.text_config.vocab_size)  # ids past the special ones (`presets.TINY_IDS`, the study's)
    frame = [config.video_token_id] * config.frame_num_tokens
    streams = []
    for _ in range(rows):
        prompt = torch.randint(*words, (NARRATION_PROMPT_TOKENS - 1,), generator=generator).tolist()
        ids = [config.text_config.bos_token_id, *prompt]
        for f in range(num_frames):
            ids += frame
            if f % narrate_every == narrate_every - 1:
                narration = torch.randint(*words, (NARRATION_WORDS,), generator=generator).tolist()
                ids += [config.stream_response_token_id, *narration, config.text_config.eos_token_id]
            elif f < num_frames - 1:
                ids += [config.frame_token_interval_id]
        streams.append(ids)
    input_ids = torch.tensor(streams)
    features = torch.randn(rows * num_frames, config.frame_num_tokens, config.vision_config.hidden_size,
                           generator=generator)  # fmt: skip
    labels = input_ids.masked_fill(input_ids == config.video_token_id, -100)
    return {"input_ids": input_ids, "labels": labels, "frame_features": features}


def non_vision_share(
    input_ids: torch.Tensor, video_token_id: int, attention_mask: torch.Tensor | None = None
) -> float:
    """The share of a batch's real tokens that are not vision placeholders (what a routed layer keeps whole)."""
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    return 1 - int(((input_ids == video_token_id) & valid).sum()) / int(valid.sum())


def with_trainers_loss(model, inputs: dict) -> dict:
    """`inputs` that select the loss `recipes.sft` trains `model` with, patching `model` once: TRL's fused LM head
    where `stream_loss_weight` is 1 (`SFTTrainer` then computes the loss from the log-probabilities of the labelled
    positions, in tiles, and never builds the (B, L, V) logits), the model's own loss otherwise
    (`sft.trains_with_fused_head`, as `VideoLLMMoDSFTTrainer.compute_loss` decides)."""
    from .sft import trains_with_fused_head

    if not trains_with_fused_head(model.config):
        return inputs
    if not getattr(model, "has_trainers_loss", False):
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # the outputs `SFTTrainer` asks for
        model.has_trainers_loss = True
    return {**inputs, "fused_lm_head": True}


def train_step(model, optimizer, inputs: dict) -> None:
    from .sft import fused_head_on_labelled_positions

    with fused_head_on_labelled_positions():  # as the recipe's trainer computes its loss
        model(**inputs).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_step_times(models: dict, inputs: dict, steps: int, lr: float = 1e-5) -> dict[str, float]:
    """Median seconds of a training step of each model, the models' steps interleaved (the order reversed every
    other round); one warm-up step each is not timed. `inputs[name]` are the inputs of `models[name]`."""
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=lr) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for step in range(steps + 1):
        for name in names if step % 2 == 0 else names[::-1]:
            device = next(models[name].parameters()).device
            sync(device)
            start = time.perf_counter()
            train_step(models[name].train(), optimizers[name], inputs[name])
            sync(device)
            if step:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def count_flops(model, inputs: dict) -> int:
    """FLOPs of forward + backward (eager attention, so that its matrix products are counted)."""
    from transformers.utils import logging

    from .sft import fused_head_on_labelled_positions

    previous, verbosity = model.config._attn_implementation, logging.get_verbosity()
    logging.set_verbosity_error()  # each switch warns that the text sub-config has no sub-model of its own
    model.set_attn_implementation("eager")
    try:
        with FlopCounterMode(display=False) as counter, fused_head_on_labelled_positions():
            model(**inputs).loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.set_attn_implementation(previous)
        logging.set_verbosity(verbosity)
    return counter.get_total_flops()


def peak_tensor_bytes(step, *args) -> int:
    """The peak growth of the bytes held by tensors while `step(*args)` runs: each op's own allocations net of its
    frees (the profiler's memory events), accumulated in the order the ops start. On CPU the counterpart of CUDA's
    `max_memory_allocated`, free of the allocator's caching, which makes peak RSS vary from run to run."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step(*args)
    changes = []
    for event in profiler.events():
        # "[memory]" events are the frees (and allocations) outside any op; an op's event carries its own net bytes
        change = event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        if change:
            changes.append((event.time_range.start, change))
    running = peak = 0
    for _, change in sorted(changes, key=lambda c: c[0]):
        running += change
        peak = max(peak, running)
    return peak


def two_training_steps(model, optimizer, inputs: dict) -> None:
    train_step(model, optimizer, inputs)  # allocates the optimizer state, held from then on
    train_step(model, optimizer, inputs)


def resident_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc (reset at exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_training_memory(
    config,
    inputs: dict,
    device: str = "cpu",
    dtype: str = "float32",
    checkpointing: bool = False,
    trainers_loss: bool = False,
    lora_rank: int = 0,
) -> int:
    """Peak memory of training steps of a fresh model of `config` on `inputs`, measured in a fresh process (on CPU,
    tensor bytes; with activation checkpointing when `checkpointing`; with the SFT recipe's loss when
    `trainers_loss`, `with_trainers_loss`; with the recipe's LoRA adapters of `lora_rank` when it is not 0,
    `sharded_training.with_lora`)."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as folder:
        config.to_json_file(os.path.join(folder, "config.json"))
        save_file({k: v.contiguous() for k, v in inputs.items() if torch.is_tensor(v)}, os.path.join(folder, "inputs"))
        command = [
            sys.executable,
            "-m",
            "videollm_mod.recipes.costs",
            folder,
            device,
            dtype,
            str(int(checkpointing)),
            str(int(trainers_loss)),
            str(lora_rank),
        ]
        # run from the temporary folder: a source checkout in the working directory would shadow an installed
        # (non-editable) package, whose `videollm_mod.recipes` is not the checkout's `videollm_mod/`
        done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
        if done.returncode:
            lines = done.stderr.strip().splitlines() or ["no message"]
            raise RuntimeError(f"the peak-memory measurement failed ({' '.join(command[1:3])}): {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def _peak_memory_child(
    folder: str, device: str, dtype_name: str, checkpointing: str, trainers_loss: str, lora_rank: str
) -> None:
    """In a fresh process: one warm-up step, one measured step (CUDA) or two (CPU: `peak_tensor_bytes`); print
    JSON."""
    from safetensors.torch import load_file

    from modeling_videollm_mod import VideoLLMMoDConfig, VideoLLMMoDForCausalLM

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    model = VideoLLMMoDForCausalLM(VideoLLMMoDConfig.from_json_file(os.path.join(folder, "config.json")))
    model = model.to(device=device, dtype=dtype).train()
    if checkpointing == "1":
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    inputs = {k: v.to(device) for k, v in load_file(os.path.join(folder, "inputs")).items()}
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    if trainers_loss == "1":
        inputs = with_trainers_loss(model, inputs)  # before LoRA wraps the model, as `SFTTrainer` adds its head
    if int(lora_rank):
        from .sharded_training import with_lora

        model = with_lora(model, int(lora_rank))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    if device == "cuda":
        train_step(model, optimizer, inputs)  # allocates the optimizer state, as in any later step
        torch.cuda.reset_peak_memory_stats()
        train_step(model, optimizer, inputs)
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = peak_tensor_bytes(two_training_steps, model, optimizer, inputs)
    print(json.dumps({"peak_bytes": peak}))


@torch.no_grad()
def kv_bytes_by_frame(model, frame_features: torch.Tensor, video_token_id: int, interval_id: int) -> list[int]:
    """Bytes of keys and values in the cache after each frame of `frame_features` (T, F, D), fed one per forward as
    a stream holds it (the frame's placeholders, then its interval token)."""
    was_training = model.training
    model.eval()
    num_tokens = model.config.frame_num_tokens
    device = next(model.parameters()).device
    frame_ids = torch.tensor(
        [stream_frame_ids(1, video_token_id, num_tokens, interval_id) + [interval_id]], device=device
    )
    cache, held = None, []
    for frame in frame_features.to(device):
        cache = model(input_ids=frame_ids, frame_features=frame[None], cache=cache, use_cache=True).cache
        held.append(int(cache.valid_bytes().sum()))
    model.train(was_training)
    return held


if __name__ == "__main__":
    _peak_memory_child(*sys.argv[1:7])
