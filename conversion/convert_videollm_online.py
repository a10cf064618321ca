"""Convert a VideoLLM-online checkpoint (PEFT LoRA adapter + connector over a Llama base, SigLIP frames) to this
package's layout: merged weights in sharded safetensors, config, generation config, processor, remote code, card.

    videollm-mod convert --adapter chenjoya/videollm-online-8b-v1plus \
        --base meta-llama/Meta-Llama-3-8B-Instruct --vision google/siglip-large-patch16-384 \
        --output videollm-online-8b-v1plus-hf [--mod] [--dtype bfloat16] [--max-shard-size 5GB]
    videollm-mod convert --write-example runs/original    # a tiny random original-format checkpoint, to try it offline

Every source tensor is either mapped by `KEY_RULES` or dropped on purpose by a rule that says why; an unmatched
source key, a target parameter with no source, a shape that does not fit, or a LoRA factor without its partner aborts
the conversion with the list of keys, before anything is written. LoRA factors are merged as
`W + (alpha / r) * B @ A` in float32, a block of rows at a time. Tensors are read one at a time and written one
shard at a time, so memory stays near one output shard plus the largest tensor. The output folder is written under
a temporary name and renamed when complete.

The placeholder `<v>` keeps the original's id (the vocabulary size, 128256 for Llama-3): it has no row in the
embedding or in `lm_head`, so the softmax over the vocabulary, on which the streaming threshold is computed, is the
original one.
"""

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modeling_videollm_mod.processing_videollm_mod import FRAME_INTERVAL, STREAM_RESPONSE, VIDEO_TOKEN

from ..files import atomic_output_folder
from .checkpoint_io import ConversionError, ShardWriter, TensorSource, copy_remote_code, parse_size, resolve_folder

# live1+ (the released VideoLLM-online-8B-v1+): 1 + 3x3 tokens per frame (`reference/videollm-online.md` 1.2-1.4).
LIVE1_PLUS_FRAME_TOKEN_POOLED = [3, 3]
# What is known of the released adapter's training (its card is not part of the adapter files).
KNOWN_ADAPTERS = {
    "chenjoya/videollm-online-8b-v1plus": {
        "datasets": ["chenjoya/videollm-online-chat-ego4d-134k"],
        "training_data": "VideoLLM-online-8B-v1+ was trained on Ego4D Narration Stream (113K) and Ego4D GoalStep "
        "Stream (21K) at 2 fps, videos up to 10 minutes.",
    }
}
MERGE_BLOCK_BYTES = 64 * 2**20  # float32 bytes of one block of merged rows


@dataclass(frozen=True)
class Rule:
    """`pattern` (full match on a source key) -> `target` (a `re` template), in one of the roles:
    "weight" (the target's value), "lora_A" / "lora_B" (merged into the target), "drop" (kept out, for `reason`)."""

    source: str  # "base", "adapter" or "vision"
    pattern: str
    target: str | None
    role: str
    reason: str = ""


# The key-mapping table. PEFT saves adapter keys as `base_model.model.<module>.lora_A.weight` and the trained copy of a
# `modules_to_save` module as `base_model.model.connector.<param>`; the unrenamed in-memory forms (`.default`) are
# accepted too. Base Llama keys are already this package's names.
KEY_RULES = [
    Rule("base", r"model\.(embed_tokens\.weight|norm\.weight|layers\.\d+\..+)", r"model.\1", "weight"),
    Rule("base", r"lm_head\.weight", "lm_head.weight", "weight"),
    Rule("base", r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", None, "drop", "RoPE buffer, recomputed"),
    Rule("adapter", r"base_model\.model\.(.+)\.lora_A(?:\.default)?\.weight", r"\1.weight", "lora_A"),
    Rule("adapter", r"base_model\.model\.(.+)\.lora_B(?:\.default)?\.weight", r"\1.weight", "lora_B"),
    # Saved by PEFT because the target regex names lm_head; it equals the frozen base lm_head and replaces it.
    Rule("adapter", r"base_model\.model\.(.+)\.base_layer\.weight", r"\1.weight", "weight"),
    Rule(
        "adapter",
        r"base_model\.model\.connector\.(?:modules_to_save\.default\.)?0\.(weight|bias)",
        r"model.connector.linear_1.\1",
        "weight",
    ),
    Rule(
        "adapter",
        r"base_model\.model\.connector\.(?:modules_to_save\.default\.)?2\.(weight|bias)",
        r"model.connector.linear_2.\1",
        "weight",
    ),
    Rule("adapter", r"base_model\.model\.connector\.original_module\..+", None, "drop", "untrained connector copy"),
    # SigLIP: a full SiglipModel or an older SiglipVisionModel save `vision_model.*`; transformers 5 saves the vision
    # model's own names without that prefix.
    Rule("vision", r"vision_model\.(.+)", r"model.vision_tower.\1", "weight"),
    Rule("vision", r"((?:embeddings|encoder|post_layernorm|head)\..+)", r"model.vision_tower.\1", "weight"),
    Rule("vision", r"text_model\..+", None, "drop", "SigLIP text tower, unused"),
    Rule("vision", r"logit_(?:scale|bias)", None, "drop", "SigLIP contrastive logit scale/bias, unused"),
]
# Parameters that no source provides: freshly initialised routers of `--mod` layers, to be fine-tuned.
FRESH_TARGET = re.compile(r"model\.layers\.\d+\.router\.(weight|bias)")


@dataclass
class TargetPlan:
    """Where the value of one target parameter comes from."""

    shape: tuple[int, ...]
    weight: tuple[str, str] | None = None  # (source name, key)
    lora_A: tuple[str, str] | None = None
    lora_B: tuple[str, str] | None = None
    superseded: list[tuple[str, str]] = field(default_factory=list)  # weights replaced by a later rule's source


@dataclass
class ConversionPlan:
    targets: dict[str, TargetPlan]
    dropped: dict[str, list[str]]  # source name -> keys dropped on purpose (with the reason)
    lora_scaling: dict[str, float]


def match_rule(source: str, key: str) -> tuple[Rule, str | None] | None:
    for rule in KEY_RULES:
        if rule.source == source:
            match = re.fullmatch(rule.pattern, key)
            if match:
                return rule, (match.expand(rule.target) if rule.target is not None else None)
    return None


def read_adapter_config(folder: Path):
    """The adapter's `LoraConfig`, with the settings this merge supports checked."""
    from peft import LoraConfig

    file = folder / "adapter_config.json"
    if not file.is_file():
        raise ConversionError(f"no adapter_config.json in {folder}: not a PEFT adapter folder")
    raw = json.loads(file.read_text())
    if raw.get("peft_type") != "LORA":
        raise ConversionError(f"{file}: peft_type={raw.get('peft_type')!r}; only LORA adapters can be merged")
    config = LoraConfig.from_pretrained(str(folder))
    unsupported = {
        "use_dora": config.use_dora,
        "fan_in_fan_out": config.fan_in_fan_out,
        "alpha_pattern": config.alpha_pattern,
        "rank_pattern": config.rank_pattern,
        "bias": config.bias != "none",
        "layer_replication": config.layer_replication,
    }
    bad = {name: value for name, value in unsupported.items() if value}
    if bad:
        raise ConversionError(f"{file}: unsupported LoRA settings {bad}")
    if set(config.modules_to_save or []) - {"connector"}:
        raise ConversionError(f"{file}: modules_to_save={config.modules_to_save}; only the connector is known")
    return config


def expected_lora_modules(lora_config, base: TensorSource) -> list[str]:
    """The base model's Linear modules that the adapter's `target_modules` selects, by PEFT's own matching rule."""
    from peft.tuners.tuners_utils import check_target_module_exists

    linears = [
        k.removesuffix(".weight") for k, i in base.infos.items() if k.endswith("_proj.weight") and len(i.shape) == 2
    ]
    linears += ["lm_head"]
    return [name for name in linears if check_target_module_exists(lora_config, name)]


def build_plan(
    sources: dict[str, TensorSource],
    target_shapes: dict[str, tuple[int, ...]],
    lora_config,
    tie_word_embeddings: bool = False,
) -> ConversionPlan:
    """Match every source key to a target parameter; raise a `ConversionError` listing every problem found."""
    targets = {key: TargetPlan(shape) for key, shape in target_shapes.items()}
    unexpected, dropped, unknown_targets, wrong_shapes = [], {}, [], []
    for name, source in sources.items():
        for key, info in source.infos.items():
            found = match_rule(name, key)
            if found is None:
                unexpected.append(f"{name}: {key}")
                continue
            rule, target = found
            if rule.role == "drop":
                dropped.setdefault(name, []).append(f"{key} ({rule.reason})")
                continue
            if target not in targets:
                unknown_targets.append(f"{name}: {key} -> {target}")
                continue
            plan = targets[target]
            if rule.role == "weight":
                if info.shape != plan.shape:
                    wrong_shapes.append(
                        f"{name}: {key} has shape {list(info.shape)}, {target} needs {list(plan.shape)}"
                    )
                if plan.weight is not None:
                    # The adapter's saved base layer (adapter sources come after the base) replaces the base's.
                    plan.superseded.append(plan.weight)
                plan.weight = (name, key)
            else:
                setattr(plan, rule.role, (name, key))

    lm_head = targets.get("lm_head.weight")
    if lm_head is not None and lm_head.weight is None and tie_word_embeddings:
        lm_head.weight = ("base", "model.embed_tokens.weight")  # a tied base saves no lm_head
    missing = [k for k, p in targets.items() if p.weight is None and not FRESH_TARGET.fullmatch(k)]
    if lora_config is not None:
        for module in expected_lora_modules(lora_config, sources["base"]):
            plan = targets.get(f"{module}.weight")
            for role in ("lora_A", "lora_B"):
                if plan is not None and getattr(plan, role) is None:
                    missing.append(f"adapter: base_model.model.{module}.{role}.weight")

    scaling = {}
    for key, plan in targets.items():
        if (plan.lora_A is None) != (plan.lora_B is None):
            have = plan.lora_A or plan.lora_B
            missing.append(f"adapter: the partner of {have[1]}")
            continue
        if plan.lora_A is None:
            continue
        a, b = sources["adapter"].infos[plan.lora_A[1]].shape, sources["adapter"].infos[plan.lora_B[1]].shape
        if len(plan.shape) != 2 or len(a) != 2 or len(b) != 2 or a[0] != b[1] or (b[0], a[1]) != plan.shape:
            wrong_shapes.append(
                f"adapter: {plan.lora_B[1]} {list(b)} @ {plan.lora_A[1]} {list(a)} != {key} {list(plan.shape)}"
            )
            continue
        rank = a[0]
        scaling[key] = lora_config.lora_alpha / (math.sqrt(rank) if lora_config.use_rslora else rank)

    problems = [
        ("source keys that no rule maps", unexpected),
        ("source keys that map to no parameter of the target model (unknown target modules)", unknown_targets),
        ("missing keys", missing),
        ("wrong shapes", wrong_shapes),
    ]
    message = "\n".join(f"{title}:\n  " + "\n  ".join(keys) for title, keys in problems if keys)
    if message:
        raise ConversionError(f"cannot convert the checkpoint.\n{message}")
    return ConversionPlan(targets, dropped, scaling)


def merged_weight(plan: TargetPlan, sources: dict[str, TensorSource], scaling: float, dtype: torch.dtype):
    """The target's value: the source weight, plus `scaling * B @ A` computed in float32 one block of rows at a time
    (so that an lm_head-sized update never exists in float32 as a whole)."""
    weight = sources[plan.weight[0]].get(plan.weight[1])
    if plan.lora_A is None:
        return weight.to(dtype)
    lora_a = sources["adapter"].get(plan.lora_A[1]).float()  # (r, in)
    lora_b = sources["adapter"].get(plan.lora_B[1]).float()  # (out, r)
    out = torch.empty(weight.shape, dtype=dtype)
    rows = max(1, MERGE_BLOCK_BYTES // (4 * weight.shape[1]))
    for start in range(0, weight.shape[0], rows):
        block = slice(start, start + rows)
        out[block] = torch.addmm(weight[block].float(), lora_b[block], lora_a, alpha=scaling).to(dtype)
    return out


def fresh_router(shape: tuple[int, ...], key: str, std: float, generator: torch.Generator, dtype: torch.dtype):
    """A new router parameter: weight ~ N(0, initializer_range), bias 0 (transformers' Linear initialisation)."""
    if key.endswith(".bias"):
        return torch.zeros(shape, dtype=dtype)
    return (torch.randn(shape, generator=generator) * std).to(dtype)


def build_config(
    base_folder: Path,
    vision_folder: Path,
    mod_layers: list[int] | None,
    mod_keep_ratio: float,
    token_ids: dict[str, int],
    frame_token_pooled: list[int],
    dtype: torch.dtype,
):
    from transformers import AutoConfig

    from modeling_videollm_mod import VideoLLMMoDConfig

    text = AutoConfig.from_pretrained(base_folder)
    if text.model_type != "llama":
        raise ConversionError(
            f"{base_folder}/config.json: model_type={text.model_type!r}; the converter needs llama (the released "
            f"VideoLLM-online checkpoint is Llama-3); a model over another family starts from "
            f"videollm_mod.presets.from_text_model"
        )
    vision = AutoConfig.from_pretrained(vision_folder)
    vision = getattr(vision, "vision_config", None) or vision
    if vision.model_type != "siglip_vision_model":
        raise ConversionError(f"{vision_folder}/config.json: model_type={vision.model_type!r}; expected SigLIP")
    text_dict, vision_dict = text.to_dict(), vision.to_dict()
    for sub in (text_dict, vision_dict):
        sub.pop("architectures", None)
    config = VideoLLMMoDConfig(
        text_config=text_dict,
        vision_config=vision_dict,
        **token_ids,
        frame_token_pooled=frame_token_pooled,
        mod_layers=mod_layers,
        mod_keep_ratio=mod_keep_ratio,
        tie_word_embeddings=False,
    )
    config.dtype = dtype
    return config, getattr(text, "tie_word_embeddings", False)


def save_generation_config(base_folder: Path, config, folder: Path):
    """The base's generation config (eos ids), decoding greedily as the original streaming inference does."""
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(base_folder)
    except OSError:
        text = config.text_config
        generation = GenerationConfig(bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id)
    generation.do_sample, generation.temperature, generation.top_p = False, None, None
    generation.save_pretrained(folder)


def save_code_and_config(config, folder: Path):
    """config.json with `auto_map`, and the remote code files, exactly as `save_pretrained` writes them."""
    from transformers.dynamic_module_utils import custom_object_save

    from modeling_videollm_mod import VideoLLMMoDForCausalLM

    with torch.device("meta"):
        model = VideoLLMMoDForCausalLM(config)
    custom_object_save(model, folder, config=config)
    config.architectures = [type(model).__name__]
    config.save_pretrained(folder)


def target_shapes(config) -> dict[str, tuple[int, ...]]:
    from modeling_videollm_mod import VideoLLMMoDForCausalLM

    with torch.device("meta"):  # names and shapes only; no memory
        model = VideoLLMMoDForCausalLM(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def load_stream_tokenizer(folder: Path):
    """The base tokenizer as the original builds it: `<v>` added as a special token (its only addition, so its id is
    the vocabulary size, outside the embedding table), left padding, eos as pad. Returns it with the config's
    stream-token ids; `,` and `]\n` must each be one token."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    except (OSError, ValueError) as error:
        raise ConversionError(f"cannot load a tokenizer from {folder}: {error}") from error
    if VIDEO_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(VIDEO_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids = {"video_token_id": tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)}
    for field_name, text in (
        ("frame_token_interval_id", FRAME_INTERVAL),
        ("stream_response_token_id", STREAM_RESPONSE),
    ):
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) != 1:
            raise ConversionError(f"tokenizer of {folder}: {text!r} encodes to {encoded}; the stream needs one token")
        ids[field_name] = encoded[0]
    return tokenizer, ids


def build_processor(tokenizer, vision_folder: Path, config):
    """The live1+ processor: the stream tokenizer, and frames resized for the vision tower and normalised as the
    SigLIP checkpoint says. Raises a `ConversionError` if its stream-token ids disagree with `config`."""
    from modeling_videollm_mod.processing_videollm_mod import VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor

    preprocessor = vision_folder / "preprocessor_config.json"
    norm = json.loads(preprocessor.read_text()) if preprocessor.is_file() else {}
    frames = VideoLLMMoDFrameProcessor(
        size=config.vision_config.image_size,
        image_mean=norm.get("image_mean", (0.5, 0.5, 0.5)),
        image_std=norm.get("image_std", (0.5, 0.5, 0.5)),
    )
    processor = VideoLLMMoDProcessor(frames, tokenizer, frame_num_tokens=config.frame_num_tokens)
    try:
        processor.check_model_config(config)
    except ValueError as error:
        raise ConversionError(f"the processor does not fit the converted config: {error}") from error
    return processor


def convert(
    adapter: str,
    base: str,
    vision: str,
    output: str | Path,
    mod: bool = False,
    mod_layers: list[int] | None = None,
    mod_keep_ratio: float = 0.2,
    dtype: str = "auto",
    max_shard_size: str | int = "5GB",
    frame_token_pooled: list[int] | None = None,
    tokenizer: str | None = None,
    allow_pickle: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    card: bool = True,
) -> Path:
    """Convert; returns the output folder. See the module docstring and `main --help` for the arguments."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    adapter_folder = resolve_folder(
        adapter, ["adapter_config.json", "adapter_model.safetensors", "README.md"], "--adapter"
    )
    base_folder = resolve_folder(base, ["*.json", "*.safetensors", "tokenizer*", "README.md"], "--base")
    vision_folder = resolve_folder(vision, ["*.json", "*.safetensors"], "--vision")

    lora_config = read_adapter_config(adapter_folder)
    sources = {
        "base": TensorSource.from_folder(base_folder, allow_pickle=allow_pickle, name="base"),
        "adapter": TensorSource.from_folder(adapter_folder, "adapter_model", allow_pickle, name="adapter"),
        "vision": TensorSource.from_folder(vision_folder, allow_pickle=allow_pickle, name="vision"),
    }
    embed = sources["base"].infos.get("model.embed_tokens.weight")
    out_dtype = getattr(
        torch, embed.dtype if dtype == "auto" and embed is not None else dtype.replace("auto", "float32")
    )
    layers = (mod_layers if mod_layers else None) if mod else []
    stream_tokenizer, token_ids = load_stream_tokenizer(
        resolve_folder(tokenizer, argument="--tokenizer") if tokenizer else base_folder
    )
    config, tied = build_config(
        base_folder,
        vision_folder,
        layers,
        mod_keep_ratio,
        token_ids,
        frame_token_pooled or LIVE1_PLUS_FRAME_TOKEN_POOLED,
        out_dtype,
    )
    plan = build_plan(sources, target_shapes(config), lora_config, tie_word_embeddings=tied)
    processor = build_processor(stream_tokenizer, vision_folder, config)

    generator = torch.Generator().manual_seed(seed)
    std = config.text_config.initializer_range
    with atomic_output_folder(output, overwrite) as tmp:
        writer = ShardWriter(tmp, parse_size(max_shard_size))
        for key in ordered_targets(plan, sources):
            target = plan.targets[key]
            if target.weight is None:
                value = fresh_router(target.shape, key, std, generator, out_dtype)
            else:
                value = merged_weight(target, sources, plan.lora_scaling.get(key, 0.0), out_dtype)
            writer.add(key, value)
            del value
        writer.close()
        save_code_and_config(config, tmp)
        copy_remote_code(tmp)  # the processing/streaming modules too, even where nothing imports them relatively
        save_generation_config(base_folder, config, tmp)
        processor.save_pretrained(tmp)
        report = conversion_report(plan, adapter, base, vision)
        (tmp / "conversion_report.json").write_text(json.dumps(report, indent=2) + "\n")
        if card:
            from .model_card import render_model_card

            card_data = converted_card_data(adapter, base, base_folder, adapter_folder, mod=bool(config.mod_layers))
            render_model_card(card_data, model_id=output.name, config=config, source=report).save(tmp / "README.md")
    return output


def converted_card_data(adapter: str, base: str, base_folder: Path, adapter_folder: Path, mod: bool):
    """The converted model's card metadata from its sources: licence from the base's card, data from the adapter's
    card (or what is known of the released adapter)."""
    from .model_card import converted_card_data, folder_card_data

    data = converted_card_data(
        {"adapter": adapter, "base": base}, folder_card_data(base_folder), folder_card_data(adapter_folder), mod
    )
    for name, value in KNOWN_ADAPTERS.get(adapter, {}).items():
        if not getattr(data, name, None):
            setattr(data, name, value)
    return data


def ordered_targets(plan: ConversionPlan, sources: dict[str, TensorSource]) -> list[str]:
    """Targets in the order of their weight's source file, so that each source file is read once, in turn."""
    files = {(name, f): i for i, (name, f) in enumerate((n, f) for n, s in sources.items() for f in s.files())}

    def position(key):
        weight = plan.targets[key].weight
        if weight is None:
            return (len(files), key)
        return (files[(weight[0], sources[weight[0]].infos[weight[1]].file)], key)

    return sorted(plan.targets, key=position)


def conversion_report(plan: ConversionPlan, adapter: str, base: str, vision: str) -> dict:
    """What came from where: written next to the weights as `conversion_report.json` (sources as Hub repo ids or
    local folder names, never a path of the converting machine)."""
    from .model_card import published_name

    merged = sorted(k for k, p in plan.targets.items() if p.lora_A is not None)
    return {
        "sources": {
            "adapter": published_name(adapter),
            "base": published_name(base),
            "vision": published_name(vision),
        },
        "lora_merged": merged,
        "lora_scaling": sorted(set(plan.lora_scaling.values())),
        "fresh": sorted(k for k, p in plan.targets.items() if p.weight is None),
        "superseded": sorted(f"{n}: {k}" for p in plan.targets.values() for n, k in p.superseded),
        "dropped": plan.dropped,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="videollm-mod convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--adapter", help="VideoLLM-online PEFT adapter folder or Hub id")
    parser.add_argument("--base", help="base LLM folder or Hub id (Meta-Llama-3-8B-Instruct)")
    parser.add_argument("--vision", help="SigLIP folder or Hub id (google/siglip-large-patch16-384)")
    parser.add_argument("--output", help="output folder (written atomically)")
    parser.add_argument("--mod", action="store_true", help="route vision tokens in the odd layers (fresh routers)")
    parser.add_argument("--mod-layers", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 1,3,5 (with --mod)")
    parser.add_argument(
        "--mod-keep-ratio",
        type=float,
        default=0.2,
        help="with --mod: r, the share of vision tokens kept (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="of the written weights (default: auto, the base's)",
    )
    parser.add_argument("--max-shard-size", default="5GB", help="largest weight file (default: %(default)s)")
    parser.add_argument(
        "--frame-token-pooled",
        type=int,
        nargs=2,
        default=LIVE1_PLUS_FRAME_TOKEN_POOLED,
        metavar=("HP", "WP"),
        help="patch grid pooled to HP x WP tokens per frame (default: %(default)s, as live1+)",
    )
    parser.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: the base's)")
    parser.add_argument("--allow-pickle", action="store_true", help="load .bin files with torch.load(weights_only)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh routers (default: %(default)s)")
    parser.add_argument(
        "--write-example",
        metavar="DIR",
        help="instead of converting, write a tiny random checkpoint in the original format to DIR/{base,adapter,vision}",
    )
    args = parser.parse_args(argv)
    if args.write_example is None:
        missing = [f"--{name}" for name in ("adapter", "base", "vision", "output") if getattr(args, name) is None]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)} (or --write-example DIR)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_example is not None:
        from .example import write_example

        paths = write_example(args.write_example)
        print(f"wrote a tiny original-format checkpoint; convert it with:\n  videollm-mod convert --adapter "
              f"{paths['adapter']} --base {paths['base']} --vision {paths['vision']} --output OUTPUT")  # fmt: skip
        return 0
    options = vars(args)
    del options["write_example"]
    output = convert(**options)  # the options are named as convert's parameters
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod convert", main, sys.argv[1:]))
