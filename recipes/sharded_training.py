"""Sharded training for `distributed_check --engine fsdp2 | zero2 | zero3`: the tiny model of the check trained by a
plain AdamW loop, whole in one process or sharded under torchrun by torch's `fully_shard` (FSDP2) or DeepSpeed's
engine (ZeRO-2 / ZeRO-3, `recipes/accelerate/zero{2,3}.json`), with LoRA, a sharded checkpoint to resume from, and the
weights consolidated into a `from_pretrained` folder. accelerate runs neither engine on a CPU (recipes/README.md), so
this loop is how they are checked on one."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile

import torch

from ..errors import UserError
from .distributed_check import tiny_setup


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
    global_batch, losses = args.per_device_batch_size * world, []
    with tempfile.TemporaryDirectory() as tmp:
        model, processor, dataset = tiny_setup(tmp)
        model, optimizer = prepare(model, args.lora, engine, global_batch)
        collator = VideoLLMMoDCollator(processor, features_dir=tmp)
        for step in range(args.steps):
            if step == args.resume_at:  # as a job stopped here and restarted: its sharded checkpoint, fresh objects
                model, optimizer = resume(
                    model, optimizer, f"{args.output}.checkpoint", args.lora, engine, global_batch
                )
            rows = [dataset[(step * global_batch + k) % len(dataset)] for k in range(global_batch)]
            # the loss of the global batch: the sum over every process's tokens over their total count (padding
            # is labelled -100, so one collated batch counts what the rows count one by one)
            count = int((collator(rows)["labels"][:, 1:] != -100).sum())
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
        # every process waits for the others (process 0 saves and writes alone): one leaving gloo while another
        # still talks to it aborted ("terminate called without an active exception"), once in a CI run
        dist.barrier()
        dist.destroy_process_group()
    return 0


LEARNING_RATE = 1e-3


def with_lora(model, rank: int = 8):
    """The recipe's LoRA (`paper_lora.yaml`, whose rank is 128, at `rank`; alpha twice the rank): adapters on the
    language model's linears, the connector and routers trained fully."""
    from peft import LoraConfig, get_peft_model

    from .sft import LLM_LINEARS

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LLM_LINEARS,
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
