"""Where a routed layer's time goes, against a dense layer of the same model: side by side in one run.

    python benchmarks/routed_layer_time.py                     # the vision-heavier study's layout (1+4x4, Qwen3)
    python benchmarks/routed_layer_time.py --frame-grid 3 --family llama --rows 8 --frames 46

On one synthetic narration batch (`costs.narration_stream`), forward + backward of three things, interleaved, medians:

- a dense layer of the model on every token;
- a routed layer on every token: ranking, taking out the kept tokens, the stock layer on them, putting them back;
- the same stock layer on as many tokens as the routed layer keeps, with nothing around it (the kept compute alone).

Each beside its FLOPs (eager attention). A routed layer's time over the dense layer's is then split into what the
kept compute costs (which a CPU does less efficiently per FLOP at the shorter length) and what the routing adds. This
is why a training step of MoD runs above its FLOPs ratio on the CPU (`benchmarks/README.md`).
"""

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers.utils import logging

from modeling_videollm_mod import VideoLLMMoDForCausalLM
from modeling_videollm_mod.routing_videollm_mod import VideoLLMMoDDecoderLayer
from videollm_mod.presets import tiny_config
from videollm_mod.recipes.costs import narration_stream


def build(args) -> VideoLLMMoDForCausalLM:
    config = tiny_config(num_hidden_layers=4, hidden_size=args.hidden, text_model_type=args.family,
                         frame_token_pooled=[args.frame_grid] * 2)  # fmt: skip  # odd layers routed, r = 0.2
    torch.manual_seed(0)
    return VideoLLMMoDForCausalLM(config).train()


def layer_inputs(model, batch: dict) -> dict[int, tuple]:
    """The (args, kwargs) each decoder layer is called with in one forward of `batch`."""
    seen = {}
    hooks = [
        layer.register_forward_pre_hook(
            lambda _, args, kwargs, i=i: seen.setdefault(i, (args, kwargs)) and None, with_kwargs=True
        )  # fmt: skip
        for i, layer in enumerate(model.model.layers)
    ]
    with torch.no_grad():
        model(**batch, use_cache=False)
    for hook in hooks:
        hook.remove()
    return seen


def forward_backward(layer, hidden: torch.Tensor, *args, **kwargs) -> None:
    hidden = hidden.detach().requires_grad_(True)
    layer(hidden, *args, **kwargs).sum().backward()


def kept_compute(layer, kept: int, args: tuple, kwargs: dict) -> None:
    """The routed layer's stock computation on `kept` tokens (the first ones: the same length, causal)."""
    hidden = args[0][:, :kept]
    cos_sin = tuple(e[..., :kept, :] for e in kwargs["position_embeddings"])
    stock = super(VideoLLMMoDDecoderLayer, layer).forward
    forward_backward(stock, hidden, attention_mask=None, position_ids=kwargs["position_ids"][..., :kept],
                     position_embeddings=cos_sin)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="qwen3")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--frame-grid", type=int, default=4, help="each frame 1 + G x G tokens")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--frames", type=int, default=77, help="frames per row")
    parser.add_argument("--narrate-every", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.set_verbosity_error()  # each attention switch warns that the text sub-config has no sub-model of its own

    model = build(args)
    batch = narration_stream(model.config, args.frames, args.narrate_every, rows=args.rows)
    inputs = layer_inputs(model, batch)
    dense_idx, routed_idx = 0, model.config.mod_layers[0]
    dense, routed = model.model.layers[dense_idx], model.model.layers[routed_idx]
    kept = inputs[routed_idx][1]["layout"].kept_length
    runs = {
        "dense layer": lambda: forward_backward(dense, *inputs[dense_idx][0], **inputs[dense_idx][1]),
        "routed layer": lambda: forward_backward(routed, *inputs[routed_idx][0], **inputs[routed_idx][1]),
        "kept compute alone": lambda: kept_compute(routed, kept, *inputs[routed_idx]),
    }

    model.set_attn_implementation("eager")  # FLOPs: the counter does not see the CPU SDPA kernel
    flops = {}
    for name, run in runs.items():
        with FlopCounterMode(display=False) as counter:
            run()
        flops[name] = counter.get_total_flops()
    model.set_attn_implementation("sdpa")
    inputs = layer_inputs(model, batch)  # the layout again, now without the eager masks

    times = {name: [] for name in runs}
    names = list(runs)
    for step in range(args.rounds + 1):
        for name in names if step % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            runs[name]()
            if step:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}

    length = batch["input_ids"].shape[1]
    print(f"{args.family}, hidden {args.hidden}, {args.rows} x {length} tokens, 1+{args.frame_grid}x{args.frame_grid} "
          f"tokens a frame; a routed layer keeps {kept} of {length}; {args.rounds} rounds, {args.threads} thread(s)")  # fmt: skip
    print("| | ms | time x | FLOPs x |\n|---|---|---|---|")
    for name in runs:
        print(f"| {name} | {1e3 * median[name]:.1f} | {median[name] / median['dense layer']:.3f} "
              f"| {flops[name] / flops['dense layer']:.3f} |")  # fmt: skip
    routing = (median["routed layer"] - median["kept compute alone"]) / median["dense layer"]
    print(f"routing's own work: {routing:.3f} of a dense layer")


if __name__ == "__main__":
    main()
