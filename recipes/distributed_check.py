"""Check that data-parallel training gives the loss curve of one process with the same global batch.

    python -m videollm_mod.recipes.distributed_check --output one.json --per-device-batch-size 4
    accelerate launch --config_file recipes/accelerate/cpu_ddp.yaml -m videollm_mod.recipes.distributed_check \
        --output two.json --per-device-batch-size 2
    python -m videollm_mod.recipes.distributed_check --compare one.json two.json

Trains a tiny VideoLLM-MoD (pre-computed features, MoD on the odd layers) with the recipe's trainer on a small
deterministic stream dataset for a few steps and writes the logged losses (main process only), with the number of
processes, the global batch and the engine that actually ran. `--engine fsdp2 | zero2 | zero3` trains the same model
sharded by torch's FSDP2 or DeepSpeed instead, in a plain loop (`sharded_training.py`). `--compare` refuses two runs
whose global batches differ: a launch that did not start the processes it was meant to (`accelerate launch --cpu`
starts one; a GPU config such as `fsdp.yaml` starts its `num_processes` and, on a CPU, runs plain DDP) would otherwise
read as a training bug.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile

import torch

from ..errors import UserError

TEXTS = ["C sees a red circle appear.", "C sees the red circle move left.", "C sees the blue square disappear."]


def tiny_rows(num_rows: int, seed: int = 0) -> list[dict]:
    """Narration-like rows: an unlearned first frame, the instruction, then (stream, narration) pairs."""
    rng = random.Random(seed)
    rows = []
    for i in range(num_rows):
        conversation = [
            {"role": "stream", "content": "", "time": 0.0, "learn": 0, "num_frames": 1},
            {"role": "user", "content": "Narrate.", "time": 0.0, "learn": 0, "num_frames": 0},
        ]
        frames = 1
        for _ in range(rng.randint(1, 3)):
            n = rng.randint(1, 4)
            frames += n
            conversation.append({"role": "stream", "content": "", "time": 0.0, "learn": n, "num_frames": n})
            conversation.append({"role": "assistant", "content": rng.choice(TEXTS), "time": 0.0, "learn": 1, "num_frames": 0})  # fmt: skip
        rows.append(
            {"video_uid": f"v{i}", "video": f"v{i}.mp4", "fps": 2.0, "start_frame": 0, "stop_frame": frames,
             "num_frames": frames, "conversation": conversation}
        )  # fmt: skip
    return rows


def tiny_setup(features_dir: str, num_rows: int = 16, seed: int = 0, videos: bool = False, **config_overrides):
    """(model, processor, dataset) for recipe tests: tiny config, BPE tokenizer, and per row pre-computed features
    (`{uid}.safetensors`) or, with `videos`, a random 2-fps video (`{uid}.mp4`) written to `features_dir`."""
    from datasets import Dataset
    from safetensors.torch import save_file

    from modeling_videollm_mod import VideoLLMMoDForCausalLM
    from modeling_videollm_mod.processing_videollm_mod import VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor
    from videollm_mod.presets import tiny_config
    from videollm_mod.tokenizer_tools import build_stream_tokenizer, stream_token_ids

    tokenizer = build_stream_tokenizer([*TEXTS, "Narrate."], vocab_size=120)
    config = tiny_config(vocab_size=len(tokenizer), **stream_token_ids(tokenizer), **config_overrides)
    processor = VideoLLMMoDProcessor(
        image_processor=VideoLLMMoDFrameProcessor(size=config.vision_config.image_size),
        tokenizer=tokenizer,
        frame_num_tokens=config.frame_num_tokens,
        system_prompt="",
    )
    rows = tiny_rows(num_rows, seed)
    generator = torch.Generator().manual_seed(seed)
    for row in rows:
        if videos:
            from videollm_mod.data_scripts._video import write_video

            size = config.vision_config.image_size
            pixels = torch.randint(0, 256, (row["num_frames"], size, size, 3), generator=generator, dtype=torch.uint8)
            write_video(os.path.join(features_dir, row["video"]), pixels.numpy(), fps=2.0)
            continue
        features = torch.randn(row["num_frames"], config.frame_num_tokens, config.vision_config.hidden_size, generator=generator)  # fmt: skip
        save_file({"features": features}, os.path.join(features_dir, f"{row['video_uid']}.safetensors"))
    torch.manual_seed(seed)
    model = VideoLLMMoDForCausalLM(config)
    return model, processor, Dataset.from_list(rows)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output")
    parser.add_argument("--per-device-batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compare", nargs=2, metavar=("ONE", "TWO"))
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument(
        "--engine",
        choices=["trainer", "fsdp2", "zero2", "zero3"],
        default="trainer",
        help="trainer: the recipe's SFTTrainer (DDP under accelerate); fsdp2: the model sharded with torch's "
        "fully_shard (each decoder layer, routed ones with their router, then the root), trained by a plain AdamW "
        "loop (torchrun; accelerate runs FSDP only on accelerators); zero2 / zero3: DeepSpeed's engine with "
        "recipes/accelerate/zero2.json / zero3.json, the same loop (torchrun; pip install deepspeed) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--save", default=None, help="with fsdp2 / zero2 / zero3: write the consolidated model to this folder"
    )
    parser.add_argument(
        "--lora", action="store_true", help="with fsdp2 / zero2 / zero3: train LoRA adapters (the recipe's targets)"
    )
    parser.add_argument(
        "--resume-at",
        type=int,
        default=None,
        metavar="STEP",
        help="with fsdp2 / zero2 / zero3: before this step, save a sharded checkpoint (OUTPUT.checkpoint) and go on from it with a new "
        "model and optimizer, as a restarted job",
    )
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare, rtol=args.rtol)

    if args.engine != "trainer":
        from .sharded_training import run_sharded

        return run_sharded(args)

    from trl import SFTConfig

    from videollm_mod.recipes.sft import VideoSFTScriptArguments, build_trainer

    with tempfile.TemporaryDirectory() as tmp:
        model, processor, dataset = tiny_setup(tmp)
        training_args = SFTConfig(
            output_dir=os.path.join(tmp, "out"), max_steps=args.steps, per_device_train_batch_size=args.per_device_batch_size,
            learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
            activation_checkpointing=False, seed=0, data_seed=0,
        )  # fmt: skip
        trainer = build_trainer(model, processor, dataset, training_args, VideoSFTScriptArguments(features_dir=tmp))
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        if trainer.is_world_process_zero() and args.output:
            processes = trainer.accelerator.num_processes
            run = {"losses": losses, "world_size": processes, "per_device_batch_size": args.per_device_batch_size,
                   "global_batch": processes * args.per_device_batch_size,
                   "engine": str(trainer.accelerator.distributed_type.value)}  # fmt: skip
            with open(args.output, "w") as f:
                json.dump(run, f)
            print(
                f"{processes} process(es) x {args.per_device_batch_size} rows, engine {run['engine']}: {args.output}"
            )
    return 0


def compare(one_file: str, two_file: str, rtol: float) -> int:
    """Exit status 0 when the loss curves agree within `rtol` (relative), 1 otherwise; a `UserError` when the two runs
    do not have the same global batch (nothing to compare)."""
    one, two = (json.load(open(path)) for path in (one_file, two_file))
    if one["global_batch"] != two["global_batch"]:
        described = [f"{path}: {run['world_size']} process(es) x {run['per_device_batch_size']} rows"
                     for path, run in ((one_file, one), (two_file, two))]  # fmt: skip
        raise UserError(f"different global batches ({'; '.join(described)}): the launch did not start the processes "
                        "meant (accelerate launch --cpu starts one; use recipes/accelerate/cpu_ddp.yaml)")  # fmt: skip
    diff = max(abs(a - b) / abs(a) for a, b in zip(one["losses"], two["losses"], strict=True))
    for path, run in ((one_file, one), (two_file, two)):
        print(f"{path} ({run['world_size']} x {run['per_device_batch_size']}, {run['engine']}): {run['losses']}")
    print(f"max relative difference: {diff:.2e} (tolerance {rtol:g})")
    return 0 if diff <= rtol else 1


if __name__ == "__main__":
    from ..cli import run

    raise SystemExit(run("distributed_check", main, sys.argv[1:]))
