"""Training step time and peak memory, MoD vs dense, through the real SFTTrainer path, with the same data, in one run.

    python benchmarks/sft_mod_vs_dense.py --steps 6 --frames 64 --batch-size 2

Both variants are `presets.benchmark_config()` (8 x 512 Llama, 10 tokens per frame, pre-computed frame features):
MoD routes the odd layers with r = 0.2 (the paper's setting), dense routes none (VideoLLM-online). Each variant runs
in its own child process (so that peak memory is its own): the recipe's `build_trainer` + `trainer.train()` for
`--steps` steps after `--warmup` steps; reported are the mean step time and the peak memory (CUDA: max allocated;
CPU: peak resident set growth during training). The paper reports ~0.58x time and ~0.7x memory on 8 A100s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import tempfile
import time

import torch


def run_variant(mod: bool, args: argparse.Namespace, queue) -> None:
    from safetensors.torch import save_file
    from transformers import TrainerCallback
    from trl import SFTConfig

    from modeling_videollm_mod import VideoLLMMoDForCausalLM
    from modeling_videollm_mod.processing_videollm_mod import VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor
    from videollm_mod.presets import benchmark_config
    from videollm_mod.recipes.distributed_check import TEXTS
    from videollm_mod.recipes.sft import VideoSFTScriptArguments, build_trainer
    from videollm_mod.tokenizer_tools import build_stream_tokenizer, stream_token_ids

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    tokenizer = build_stream_tokenizer([*TEXTS, "Narrate."], vocab_size=200)
    overrides = {} if mod else {"mod_layers": []}
    config = benchmark_config(**stream_token_ids(tokenizer), **overrides)  # vocabulary 1024 > the tokenizer's
    processor = VideoLLMMoDProcessor(
        image_processor=VideoLLMMoDFrameProcessor(size=config.vision_config.image_size),
        tokenizer=tokenizer,
        frame_num_tokens=config.frame_num_tokens,
        system_prompt="",
    )
    # Same rows for both variants: one long stream of `frames` frames, a narration every 8 frames.
    from datasets import Dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        generator = torch.Generator().manual_seed(0)
        for i in range(args.batch_size * (args.steps + args.warmup)):
            conversation = [{"role": "user", "content": "Narrate.", "time": 0.0, "learn": 0, "num_frames": 0}]
            for j in range(args.frames // 8):
                conversation.append({"role": "stream", "content": "", "time": 0.0, "learn": 8, "num_frames": 8})
                conversation.append({"role": "assistant", "content": TEXTS[j % 3], "time": 0.0, "learn": 1, "num_frames": 0})  # fmt: skip
            n = 8 * (args.frames // 8)
            rows.append({"video_uid": f"v{i}", "video": "", "fps": 2.0, "start_frame": 0, "stop_frame": n,
                         "num_frames": n, "conversation": conversation})  # fmt: skip
            features = torch.randn(n, config.frame_num_tokens, config.vision_config.hidden_size, generator=generator)
            save_file({"features": features}, os.path.join(tmp, f"v{i}.safetensors"))
        torch.manual_seed(0)
        model = VideoLLMMoDForCausalLM(config)
        training_args = SFTConfig(
            output_dir=os.path.join(tmp, "out"), max_steps=args.steps + args.warmup,
            per_device_train_batch_size=args.batch_size, learning_rate=1e-4, logging_steps=1000, save_strategy="no",
            report_to="none", use_cpu=not cuda, bf16=cuda, activation_checkpointing=False, seed=0,
            dataloader_num_workers=0,
        )  # fmt: skip

        class StepTimer(TrainerCallback):
            def __init__(self):
                self.times, self.start, self.rss0 = [], None, None

            def on_step_begin(self, a, state, control, **kw):
                if cuda:
                    torch.cuda.synchronize()
                if state.global_step == args.warmup:
                    self.rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                self.start = time.perf_counter()

            def on_step_end(self, a, state, control, **kw):
                if cuda:
                    torch.cuda.synchronize()
                if state.global_step > args.warmup:
                    self.times.append(time.perf_counter() - self.start)

        timer = StepTimer()
        trainer = build_trainer(
            model, processor, Dataset.from_list(rows), training_args, VideoSFTScriptArguments(features_dir=tmp),
            callbacks=[timer],
        )  # fmt: skip
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        trainer.train()
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:  # KiB on Linux; growth of the peak over the process before training (activations, grads, optimiser)
            peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
        tokens = sum(1 for _ in rows[0]["conversation"])
        queue.put({"mod": mod, "step_s": sum(timer.times) / len(timer.times), "peak_mib": peak, "messages": tokens})


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    context = mp.get_context("spawn")
    results = {}
    for mod in (False, True):
        queue = context.Queue()
        process = context.Process(target=run_variant, args=(mod, args, queue))
        process.start()
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"the {'MoD' if mod else 'dense'} run failed (exit code {process.exitcode})")
        results["mod" if mod else "dense"] = queue.get()
    out = {
        **results,
        "time_ratio_mod_over_dense": results["mod"]["step_s"] / results["dense"]["step_s"],
        "memory_ratio_mod_over_dense": results["mod"]["peak_mib"] / results["dense"]["peak_mib"],
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "args": vars(args),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
