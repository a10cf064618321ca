"""Check that data-parallel training gives the loss curve of one process with the same global batch.

    python -m videollm_mod.recipes.distributed_check --output one.json --per-device-batch-size 4
    accelerate launch --config_file recipes/accelerate/cpu_ddp.yaml -m videollm_mod.recipes.distributed_check \
        --output two.json --per-device-batch-size 2
    python -m videollm_mod.recipes.distributed_check --compare one.json two.json

Trains a tiny VideoLLM-MoD (pre-computed features, MoD on the odd layers) with the recipe's trainer on a small
deterministic stream dataset for a few steps and writes the logged losses (main process only), with the number of
processes, the global batch and the engine that actually ran. `--compare` refuses two runs whose global batches
differ: a launch that did not start the processes it was meant to (`accelerate launch --cpu` starts one; a GPU config
such as `fsdp.yaml` starts its `num_processes` and, on a CPU, runs plain DDP) would otherwise read as a training bug.
"""

from __future__ import annotations

import argparse
import importlib.util
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
    parser.add_argument("--save", default=None, help="with fsdp2: write the consolidated model to this folder")
    parser.add_argument("--lora", action="store_true", help="with fsdp2: train LoRA adapters (the recipe's targets)")
    parser.add_argument(
        "--resume-at",
        type=int,
        default=None,
        metavar="STEP",
        help="with fsdp2: before this step, save a sharded checkpoint (OUTPUT.checkpoint) and go on from it with a new "
        "model and optimizer, as a restarted job",
    )
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare, rtol=args.rtol)

    if args.engine != "trainer":
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


def run_sharded(args) -> int:
    """The fsdp2 / zero2 / zero3 engines: one process (no torchrun) trains the unsharded model on the global batch with
    AdamW; under torchrun each process shards the model (torch's `fully_shard`, or DeepSpeed's engine) and takes its
    part of the batch. The loss of each step is the loss of the whole global batch (token sums all-reduced), so both
    runs log the same curve."""
    import torch.distributed as dist

    from .collator import VideoLLMMoDCollator

    distributed = "RANK" in os.environ
    deepspeed = args.engine.startswith("zero")
    if deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise UserError(
            f"--engine {args.engine} needs DeepSpeed, not a dependency of this package: pip install deepspeed"
        )
    if distributed:
        if deepspeed:
            import deepspeed as ds

            ds.init_distributed(dist_backend="gloo")
        else:
            dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    engine = args.engine if distributed else "NO"
    with tempfile.TemporaryDirectory() as tmp:
        model, processor, dataset = tiny_setup(tmp)
        model, optimizer = prepare(model, args.lora, engine, args.per_device_batch_size * world)
        collator = VideoLLMMoDCollator(processor, features_dir=tmp)
        global_batch, losses = args.per_device_batch_size * world, []
        for step in range(args.steps):
            if step == args.resume_at:  # as a job stopped here and restarted: its sharded checkpoint, fresh objects
                model, optimizer = resume(
                    model, optimizer, f"{args.output}.checkpoint", args.lora, engine, global_batch
                )
            rows = [dataset[(step * global_batch + k) % len(dataset)] for k in range(global_batch)]
            # the loss of the global batch: the sum over every process's tokens over their total count
            count = sum(int((collator([row])["labels"][:, 1:] != -100).sum()) for row in rows)
            mine = collator(rows[rank * args.per_device_batch_size : (rank + 1) * args.per_device_batch_size])
            loss = model(**mine, use_cache=False, num_items_in_batch=count).loss
            if engine.startswith("zero"):
                model.backward(loss * world)  # the engine averages the gradients over the processes
                model.step()
            else:
                (loss * world).backward()  # fully_shard averages the gradients over the processes
                optimizer.step()
                optimizer.zero_grad()
            total = loss.detach().clone()
            if distributed:
                dist.all_reduce(total)
            losses.append(total.item())
        if args.save:
            save_consolidated(model, args.save, args.lora, engine, rank)
    if rank == 0 and args.output:
        run = {"losses": losses, "world_size": world, "per_device_batch_size": args.per_device_batch_size,
               "global_batch": global_batch, "engine": engine.upper()}  # fmt: skip
        with open(args.output, "w") as f:
            json.dump(run, f)
        print(f"{world} process(es) x {args.per_device_batch_size} rows, engine {run['engine']}: {args.output}")
    if distributed:
        dist.destroy_process_group()
    return 0


LEARNING_RATE = 1e-3


def with_lora(model):
    """The recipe's LoRA (`paper_lora.yaml` at rank 8): adapters on the language model's linears, the connector and
    routers trained fully."""
    from peft import LoraConfig, get_peft_model

    from .sft import LLM_LINEARS

    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=LLM_LINEARS,
                                            modules_to_save=["connector", "router"]))  # fmt: skip


def shard(model, distributed: bool):
    """The model in training mode; under torchrun sharded with `fully_shard`: each decoder layer (a routed layer's
    router is inside it, sharded and gathered with it; with LoRA, its adapters too), then the root."""
    from torch.distributed.fsdp import fully_shard

    if distributed:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        for layer in base.model.layers:
            fully_shard(layer)
        fully_shard(model)
    return model.train()


def deepspeed_config(stage: int, global_batch: int, world: int) -> dict:
    """`recipes/accelerate/zero{stage}.json` with its "auto" values filled as the Trainer fills them for this loop (no
    accumulation, no clipping, float32) and the loop's AdamW (torch's, its defaults)."""
    from importlib.resources import files

    config = json.loads(files("videollm_mod.recipes.accelerate").joinpath(f"zero{stage}.json").read_text())
    filled = {"train_batch_size": global_batch, "train_micro_batch_size_per_gpu": global_batch // world,
              "gradient_accumulation_steps": 1, "gradient_clipping": 0.0, "bf16": {"enabled": False},
              "fp16": {"enabled": False}}  # fmt: skip
    zero = {k: (500_000_000 if v == "auto" else v) for k, v in config["zero_optimization"].items()}
    optimizer = {"type": "AdamW", "params": {"lr": LEARNING_RATE, "betas": [0.9, 0.999], "eps": 1e-8,
                                             "weight_decay": 0.01, "torch_adam": True}}  # fmt: skip
    return {**config, **filled, "zero_optimization": zero, "optimizer": optimizer}


def prepare(model, lora: bool, engine: str, global_batch: int):
    """`(model, optimizer)`: the model with LoRA when `lora`, then sharded by `engine` (FSDP2 with torch's AdamW, or
    DeepSpeed's engine with its own, the optimizer returned then None), or left whole ("NO")."""
    model.model.vision_tower.requires_grad_(False)  # as the recipe on pre-computed features: it gets no gradient
    model = with_lora(model) if lora else model
    trainable = [p for p in model.parameters() if p.requires_grad]
    if engine.startswith("zero"):
        import deepspeed
        import torch.distributed as dist

        config = deepspeed_config(int(engine[-1]), global_batch, dist.get_world_size())
        model, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=config)
        model.train()  # the engine's train() returns nothing
        return model, None
    model = shard(model, engine == "fsdp2")  # fully_shard swaps the parameters for sharded ones: list them again
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)


def resume(model, optimizer, folder: str, lora: bool, engine: str, global_batch: int):
    """Save the model and optimizer as a sharded checkpoint (torch.distributed.checkpoint: one file per process), then
    load it into a new model of other random weights and a new optimizer, as a restarted job does; returns them."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from modeling_videollm_mod import VideoLLMMoDForCausalLM

    torch.manual_seed(1234)
    if engine.startswith("zero"):  # DeepSpeed's own sharded checkpoint (its optimizer and partitions)
        model.save_checkpoint(folder)
        fresh, _ = prepare(VideoLLMMoDForCausalLM(model.module.config), lora, engine, global_batch)
        fresh.load_checkpoint(folder)
        return fresh, None
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=folder)
    model, optimizer = prepare(VideoLLMMoDForCausalLM(model.config), lora, engine, global_batch)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    # partial: the new optimizer holds a (zero) state for parameters that never had a gradient (the vision tower,
    # unused on pre-computed features), which the saved one lacks; AdamW skips them either way
    dcp.load(state, checkpoint_id=folder, planner=dcp.DefaultLoadPlanner(allow_partial_load=True))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return model, optimizer


def save_consolidated(model, folder: str, lora: bool, engine: str, rank: int) -> None:
    """The full (unsharded) weights, gathered from every process, saved by process 0 as a `from_pretrained` folder
    (with LoRA, the adapters merged into the weights)."""
    if engine.startswith("zero"):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        model.save_checkpoint(f"{folder}.zero")  # every process writes its partitions
        state = get_fp32_state_dict_from_zero_checkpoint(f"{folder}.zero") if rank == 0 else None
        model = model.module
    elif engine == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = model.state_dict()
    if rank == 0:
        # A fresh unsharded model saves it: saving the sharded one would copy torch's FSDP modules as its code.
        from modeling_videollm_mod import VideoLLMMoDForCausalLM

        plain = VideoLLMMoDForCausalLM(model.config)
        plain = with_lora(plain) if lora else plain
        plain.load_state_dict(state)
        plain = plain.merge_and_unload() if lora else plain
        plain.save_pretrained(folder)


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
