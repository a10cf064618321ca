"""Per-device training memory of a configuration, before launching: `videollm-mod train --config X.yaml --plan`.

For 1, 2, 4 and 8 devices under DDP, FSDP (full shard) and ZeRO-3, with the config's dtype, LoRA and checkpointing:

- parameters, counted exactly on a model built on the meta device (no weights are read);
- gradients and AdamW's two states, for the trainable parameters (LoRA adapters + `lora_modules_to_save`, or all but
  a frozen vision tower); FSDP and ZeRO-3 divide them, and the parameters, by the number of devices and gather one
  decoder layer at a time (twice: the one computing and the one prefetched); DDP keeps a bucketed copy of the
  gradients; ZeRO-3 keeps fp32 master weights beside bf16 ones;
- activations for one device's batch of streams of the configured length, as this recipe's step keeps them for the
  backward pass: per decoder layer the tensors a Llama layer saves (10 hidden-sized and 4 MLP-sized tensors per
  token; SDPA's own causal mask on a right-padded batch, a float `B x L x L` mask only under eager attention), at the
  routed layers over the kept tokens only (MoD), plus the final norm and the LM head; with activation checkpointing,
  the layer inputs plus one layer recomputed. The LM head is TRL's fused one, which projects the labelled positions
  in tiles and never holds the logits (`sft.trains_with_fused_head`); with another `stream_loss_weight` the model's
  own loss keeps the float32 logits of every position and their log-softmax, and their gradient is a transient of
  the backward pass (whose other tensors take the place of the activations it frees).

`python -m videollm_mod.recipes.memory_plan` compares it with peaks measured on this machine (`recipes/README.md`,
"How much memory?").
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch

ENGINES = ("DDP", "FSDP", "ZeRO-3")
DEVICES = (1, 2, 4, 8)
GIB = 2**30


@dataclass(frozen=True)
class TrainingShape:
    """What the plan depends on besides the model config."""

    batch: int = 1  # rows per device
    tokens: int = 4096  # tokens per row (the stream length)
    video_share: float = 0.9  # of those, the share that are frame placeholders (MoD routes them)
    weight_bytes: int = 4  # bytes per parameter (the model's dtype)
    activation_bytes: int = 4  # bytes per activation (2 under bf16 / fp16 autocast)
    lora_r: int | None = None  # LoRA rank on the targeted linears; None: full fine-tuning
    lora_target: str = ""  # regex of the targeted linears' names
    modules_to_save: tuple[str, ...] = ()  # trained fully beside the adapters (connector, router)
    train_vision_tower: bool = False  # full fine-tuning: the vision tower too
    checkpointing: bool = False  # activation checkpointing


def parameter_counts(config, shape: TrainingShape) -> dict[str, int]:
    """`total`, `trainable` and `largest_layer` (parameters of the largest decoder layer) of a model of `config`."""
    from modeling_videollm_mod import VideoLLMMoDForCausalLM

    with torch.device("meta"):
        model = VideoLLMMoDForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in layer.parameters()) for layer in model.model.layers)
    if shape.lora_r is None:
        frozen = 0 if shape.train_vision_tower else sum(p.numel() for p in model.model.vision_tower.parameters())
        return {"total": total, "trainable": total - frozen, "largest_layer": largest}
    trainable = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and re.fullmatch(shape.lora_target, name):
            trainable += shape.lora_r * (module.in_features + module.out_features)
        elif name.split(".")[-1] in shape.modules_to_save:
            trainable += sum(p.numel() for p in module.parameters())
    return {"total": total, "trainable": trainable, "largest_layer": largest}


def layer_activation_bytes(config, batch: int, tokens: int, kept: int | None = None, mask: bool = False) -> int:
    """What autograd keeps of one decoder layer for `batch` rows of `tokens` tokens, at activation size 1 byte: a
    routed layer runs over `kept` tokens and keeps nothing of full length (its router ranks every token without a
    gradient); `mask`: a float `B x 1 x L x L` mask (eager attention)."""
    text = config.text_config
    length = tokens if kept is None else kept
    per_token = 10 * text.hidden_size + 4 * text.intermediate_size
    return batch * (length * per_token + (length * length if mask else 0))


def activation_bytes(config, shape: TrainingShape) -> dict[str, int]:
    """`kept` (what the forward pass leaves for the backward pass), `transient` (the backward pass's extra) and
    `last_layer` (what the backward pass holds of the layer it differentiates last, beside every gradient)."""
    from .sft import trains_with_fused_head

    text, size = config.text_config, shape.activation_bytes
    video = int(shape.tokens * shape.video_share)
    kept_tokens = shape.tokens - video + round(video * config.mod_keep_ratio)
    mask = getattr(config, "_attn_implementation", None) == "eager"
    layers = [
        layer_activation_bytes(
            config, shape.batch, shape.tokens, kept_tokens if i in config.mod_layers else None, mask
        )
        for i in range(text.num_hidden_layers)
    ]
    head = 3 * shape.batch * shape.tokens * text.hidden_size * size  # the final norm's input and output, the head's
    # the model's own loss upcasts the logits of every position to float32 and keeps their log-softmax
    logits = 0 if trains_with_fused_head(config) else shape.batch * shape.tokens * text.vocab_size * 4
    if shape.checkpointing:  # each layer keeps its input; the one being recomputed keeps everything
        kept = shape.batch * shape.tokens * text.hidden_size * size * len(layers) + max(layers) * size
    else:
        kept = sum(layers) * size
    return {"kept": kept + head + 2 * logits, "transient": logits, "last_layer": layers[0] * size}


def plan(config, shape: TrainingShape) -> dict:
    """Bytes per device: `{engine: {devices: {"parameters", "gradients", "optimizer", "activations", "total"}}}`,
    with the parameter counts under `counts`."""
    counts = parameter_counts(config, shape)
    total, trainable, largest = counts["total"], counts["trainable"], counts["largest_layer"]
    w = shape.weight_bytes
    activations = activation_bytes(config, shape)
    acts = activations["kept"] + activations["transient"]
    table = {}
    for engine in ENGINES:
        table[engine] = {}
        for n in DEVICES:
            if engine == "DDP":
                parts = {"parameters": total * w, "gradients": 2 * trainable * w, "optimizer": 2 * trainable * w}
            else:
                gathered = 2 * largest * w
                master = trainable * 4 if engine == "ZeRO-3" and w < 4 else 0  # fp32 master weights
                states = 2 * trainable * (4 if engine == "ZeRO-3" else w)
                parts = {"parameters": total * w // n + gathered, "gradients": trainable * w // n,
                         "optimizer": (states + master) // n}  # fmt: skip
            parts["activations"] = acts
            parts["total"] = sum(parts.values())
            table[engine][n] = parts
    return {"counts": counts, "activations": activations, "engines": table}


def dense_plan(config, shape: TrainingShape) -> dict:
    """The plan of the same model without MoD (every layer dense), to compare."""
    dense = copy.deepcopy(config)
    dense.mod_layers = []
    return plan(dense, shape)


def format_plan(result: dict, config, shape: TrainingShape, dense: dict | None = None) -> str:
    """The table `train --plan` prints: total GiB per device for each engine and number of devices, then the same
    model without MoD when `dense` is given."""
    counts = result["counts"]
    routed = f"MoD in layers {list(config.mod_layers)}, r = {config.mod_keep_ratio}" if config.mod_layers else "dense"
    lines = [
        f"parameters {counts['total'] / 1e6:,.1f} M, trainable {counts['trainable'] / 1e6:,.1f} M "
        f"({'LoRA r = ' + str(shape.lora_r) if shape.lora_r else 'full fine-tuning'}); {routed}",
        f"per device: {shape.batch} row(s) x {shape.tokens} tokens ({shape.video_share:.0%} frame placeholders), "
        f"weights {shape.weight_bytes} B, activations {shape.activation_bytes} B, "
        f"checkpointing {'on' if shape.checkpointing else 'off'}; activations "
        f"{(result['activations']['kept'] + result['activations']['transient']) / GIB:.1f} GiB",
        "GiB per device " + "".join(f"{n:>9} dev" for n in DEVICES),
    ]
    tables = [("", result)] + ([(" dense", dense)] if dense is not None and config.mod_layers else [])
    for label, table in tables:
        for engine, by_devices in table["engines"].items():
            name = f"{engine}{label}"
            lines.append(f"{name:<14} " + "".join(f"{by_devices[n]['total'] / GIB:>13.1f}" for n in DEVICES))
    return "\n".join(lines)


def synthetic_batch(config, rows: int, frames: int, text: int) -> dict:
    """`rows` streams of `frames` frames then `text` text tokens, with random frame features: training inputs."""
    from modeling_videollm_mod.processing_videollm_mod import stream_frame_ids

    interval = config.frame_token_interval_id
    ids = stream_frame_ids(frames, config.video_token_id, config.frame_num_tokens, interval) + [interval]
    ids = torch.tensor([ids + [20 + k % 50 for k in range(text)]] * rows)
    labels = torch.where(ids == config.video_token_id, -100, ids)
    features = torch.randn(rows * frames, config.frame_num_tokens, config.vision_config.hidden_size)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "frame_features": features}


def planned_and_measured(config, rows: int, frames: int, text: int, checkpointing: bool) -> tuple[int, int]:
    """The plan for one device (AdamW's states and the activations) and the peak measured as `recipes/costs.py`
    measures it: the peak of the bytes held by tensors over the loaded model in a fresh process (`peak_tensor_bytes`,
    the counterpart of CUDA's `max_memory_allocated`); full fine-tuning in float32, with the recipe's loss."""
    from .costs import peak_training_memory

    inputs = synthetic_batch(config, rows, frames, text)
    tokens = inputs["input_ids"].shape[1]
    measured = peak_training_memory(config, inputs, checkpointing=checkpointing, trainers_loss=True)
    # Fed frame features, the vision tower gets no gradient. One process frees the gradients between steps
    # (`set_to_none`): the peak is either where the backward pass starts, every activation held, or where it ends,
    # every gradient held beside the first layer's activations (with checkpointing, the larger one).
    shape = TrainingShape(batch=rows, tokens=tokens, video_share=frames * config.frame_num_tokens / tokens,
                          checkpointing=checkpointing)  # fmt: skip
    result = plan(config, shape)
    one, activations = result["engines"]["DDP"][1], result["activations"]
    gradients = result["counts"]["trainable"] * shape.weight_bytes
    return one["optimizer"] + max(one["activations"], gradients + activations["last_layer"]), measured


def main() -> int:
    """Planned against measured peaks on small models (dense and MoD, with and without checkpointing)."""
    from videollm_mod.presets import tiny_config

    layouts = [(4, 256, 1024, 4, 40, 100), (8, 512, 4096, 2, 60, 200), (4, 256, 1024, 2, 120, 100)]
    print("layers x width, rows x tokens, MoD, checkpointing: planned / measured MiB (ratio)")
    for layers, width, vocab, rows, frames, text in layouts:
        for mod_layers in ([], list(range(1, layers, 2))):
            for checkpointing in (False, True):
                config = tiny_config(num_hidden_layers=layers, hidden_size=width, intermediate_size=int(2.6875 * width),
                                     vocab_size=vocab, mod_layers=mod_layers)  # fmt: skip
                planned, measured = planned_and_measured(config, rows, frames, text, checkpointing)
                tokens = frames * (config.frame_num_tokens + 1) + text
                print(f"{layers} x {width}, {rows} x {tokens}, {'MoD' if mod_layers else 'dense'}, "
                      f"{'on' if checkpointing else 'off'}: {planned / 2**20:.0f} / {measured / 2**20:.0f} "
                      f"({planned / measured:.2f})", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
