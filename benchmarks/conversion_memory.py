"""Peak memory of `videollm-mod convert` against the checkpoint size, on a synthetic original-format checkpoint.

    python benchmarks/conversion_memory.py [--layers 24] [--hidden 1024] [--shard-size 256MB] [--dtype float32]

Writes (under /tmp, deleted at the end) a VideoLLM-online-style checkpoint of at least 1 GB: a Llama base in
safetensors shards of `--shard-size` with its index and a tokenizer, a PEFT-format LoRA adapter (r=16 on every
projection and lm_head, the saved `lm_head.base_layer.weight`, the connector) and a small SigLIP. Tensors are random
and written one at a time, so building the checkpoint does not need its size in memory. The conversion then runs in a
fresh process with `--max-shard-size` = `--shard-size`; that process reports its peak RSS (`VmHWM`). A second
fresh process that imports the same modules and builds the same config, but converts nothing, gives the baseline.
Printed: checkpoint size, shard size, largest tensor, peak RSS, peak RSS above the baseline, and their ratios to the
checkpoint size. Expected above the baseline: the output shard being filled, plus, while the largest tensor is merged,
its source and its merged copy and one 64 MB float32 block, i.e. about shard + 2 x largest tensor, independent of the
checkpoint size.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import LlamaConfig, PreTrainedTokenizerFast, SiglipVisionConfig, SiglipVisionModel

from videollm_mod.conversion.checkpoint_io import parse_size
from videollm_mod.conversion.example import ORIGINAL_LORA_TARGETS

VISION_HIDDEN, LORA_R = 64, 16

CHILD = """
import json, sys
from videollm_mod.conversion import convert
from videollm_mod.conversion.convert_videollm_online import build_config, load_stream_tokenizer
from pathlib import Path
root, mode, shard = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "convert":
    convert(str(root / "adapter"), str(root / "base"), str(root / "vision"), root / "out", max_shard_size=shard)
else:  # baseline: the same imports, tokenizer and config, no tensors
    _, ids = load_stream_tokenizer(root / "base")
    build_config(root / "base", root / "vision", [], 0.2, ids, [3, 3], None)
# VmHWM, not ru_maxrss: ru_maxrss survives fork + exec, so a child would inherit the parent's peak.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss": int(hwm.split()[1]) * 1024}))
"""


def write_sharded(tensors, folder: Path, prefix: str, shard_bytes: int) -> int:
    """Write `(key, make_tensor)` pairs into safetensors shards + index; returns the bytes written."""
    shard, size, shards, weight_map, total = {}, 0, [], {}, 0

    def flush():
        nonlocal shard, size
        name = f"{prefix}-{len(shards) + 1:05d}.safetensors"
        save_file(shard, folder / name, metadata={"format": "pt"})
        shards.append(name)
        weight_map.update(dict.fromkeys(shard, name))
        shard, size = {}, 0

    for key, make in tensors:
        tensor = make()
        if shard and size + tensor.nbytes > shard_bytes:
            flush()
        shard[key], size, total = tensor, size + tensor.nbytes, total + tensor.nbytes
    flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{prefix}.safetensors.index.json").write_text(json.dumps(index))
    return total


def build_checkpoint(root: Path, layers: int, hidden: int, vocab: int, dtype: torch.dtype, shard_bytes: int) -> dict:
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 256,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    base = root / "base"
    base.mkdir(parents=True)
    config.save_pretrained(base)
    special = {0: "<pad>", 1: "<s>", 2: "</s>", 11: ",", 933: "]\n"}
    tokenizer = Tokenizer(WordLevel({special.get(i, f"w{i}"): i for i in range(vocab)}, unk_token="<pad>"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    tokenizer.add_tokens([AddedToken("]\n", normalized=False)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>").save_pretrained(base)

    inter, kv = config.intermediate_size, config.num_key_value_heads * 64
    shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (kv, hidden), "self_attn.v_proj": (kv, hidden)}
    shapes |= {"self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden)}
    shapes |= {"mlp.down_proj": (hidden, inter)}

    def rand(*shape):
        return lambda: (torch.randn(shape) * 0.02).to(dtype)

    base_tensors = [("model.embed_tokens.weight", rand(vocab, hidden))]
    for i in range(layers):
        base_tensors += [(f"model.layers.{i}.{m}.weight", rand(*s)) for m, s in shapes.items()]
        base_tensors += [
            (f"model.layers.{i}.{n}.weight", lambda: torch.ones(hidden, dtype=dtype))
            for n in ("input_layernorm", "post_attention_layernorm")
        ]
    base_tensors += [
        ("model.norm.weight", lambda: torch.ones(hidden, dtype=dtype)),
        ("lm_head.weight", rand(vocab, hidden)),
    ]
    base_bytes = write_sharded(base_tensors, base, "model", shard_bytes)

    adapter = root / "adapter"
    adapter.mkdir()
    LoraConfig(
        r=LORA_R,
        lora_alpha=2 * LORA_R,
        target_modules=ORIGINAL_LORA_TARGETS,
        modules_to_save=["connector"],
        task_type="CAUSAL_LM",
    ).save_pretrained(adapter)
    lora = {}
    modules = [(f"model.layers.{i}.{m}", s) for i in range(layers) for m, s in shapes.items()] + [
        ("lm_head", (vocab, hidden))
    ]
    for name, (out_features, in_features) in modules:
        lora[f"base_model.model.{name}.lora_A.weight"] = rand(LORA_R, in_features)()
        lora[f"base_model.model.{name}.lora_B.weight"] = rand(out_features, LORA_R)()
    lora["base_model.model.lm_head.base_layer.weight"] = rand(vocab, hidden)()
    lora |= {
        "base_model.model.connector.0.weight": rand(hidden, VISION_HIDDEN)(),
        "base_model.model.connector.0.bias": rand(hidden)(),
    }
    lora |= {
        "base_model.model.connector.2.weight": rand(hidden, hidden)(),
        "base_model.model.connector.2.bias": rand(hidden)(),
    }
    save_file(lora, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    adapter_bytes = sum(t.nbytes for t in lora.values())
    del lora

    vision = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=VISION_HIDDEN,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=48,
            patch_size=8,
        )
    )
    vision.save_pretrained(root / "vision")
    vision_bytes = sum(p.nbytes for p in vision.state_dict().values())
    largest = vocab * hidden * torch.finfo(dtype).bits // 8
    return {"checkpoint_bytes": base_bytes + adapter_bytes + vision_bytes, "largest_tensor_bytes": largest}


def child_peak(root: Path, mode: str, shard: str) -> int:
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), mode, shard], cwd=repo, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shard-size", default="256MB")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="videollm-mod-conversion-memory-", dir="/tmp"))
    try:
        shard_bytes = parse_size(args.shard_size)
        sizes = build_checkpoint(root, args.layers, args.hidden, args.vocab, getattr(torch, args.dtype), shard_bytes)
        if sizes["checkpoint_bytes"] < 1e9:
            raise SystemExit(f"checkpoint of {sizes['checkpoint_bytes'] / 1e9:.2f} GB < 1 GB: raise --layers")
        baseline = child_peak(root, "baseline", args.shard_size)
        peak = child_peak(root, "convert", args.shard_size)
        written = sum(f.stat().st_size for f in (root / "out").glob("*.safetensors"))
        gb = 1e9
        size = sizes["checkpoint_bytes"]
        print(
            f"checkpoint (base + adapter + vision): {size / gb:.2f} GB; converted weights written: {written / gb:.2f} GB"
        )
        print(
            f"shard size (input and output): {shard_bytes / gb:.3f} GB; largest tensor: {sizes['largest_tensor_bytes'] / gb:.3f} GB"
        )
        print(
            f"peak RSS of the conversion process: {peak / gb:.2f} GB; baseline (imports + config, no tensors): {baseline / gb:.2f} GB"
        )
        print(f"peak RSS above baseline: {(peak - baseline) / gb:.2f} GB")
        print(f"peak RSS / checkpoint size: {peak / size:.2f}")
        print(f"(peak RSS - baseline) / checkpoint size: {(peak - baseline) / size:.2f}")
        print(
            f"(peak RSS - baseline) / (shard + largest tensor): {(peak - baseline) / (shard_bytes + sizes['largest_tensor_bytes']):.2f}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
