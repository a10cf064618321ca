"""Streaming metrics of a VideoLLM-MoD on a prepared dataset split (`videollm-mod evaluate`).

    videollm-mod evaluate --dataset runs/demo/val/narration --config raw --split val \
        --video-root runs/demo/val/synthetic/ego4d/v2/full_scale --free-running --baselines   # the demo model

Prints as JSON the teacher-forced metrics LM-PPL, TimeDiff (seconds), Fluency and LM-Correctness (`recipes.metrics`,
VideoLLM-online's definitions, one sample at a time); with `--free-running` also the free-running ones (the model
streams each row conditioned on its own replies: event precision, recall, F1, lag and content accuracy against the
row's replies, `recipes.free_running`; under `free_running_results`; `--plot FOLDER` draws each row's timeline).
With `--baselines` each comes with baselines on the same rows: never speak, speak at random and periodically at the
model's own rate (keeping its text), and the same model fed black frames (`blind`: the gap to it is what the model
sees).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from modeling_videollm_mod import DEFAULT_THRESHOLD

from ..errors import UserError
from ..files import write_text_atomically
from ..loading import add_model_arguments, check_model, load_model_and_processor, resolve_model
from .blind import black_like
from .collator import VideoLLMMoDCollator
from .free_running import score_predictions, stream_predictions
from .metrics import aggregate_stream_metrics, model_fire_policy, periodic_fires, stream_evaluate


def speak_rate(dataset) -> float:
    """Fraction of learned frames at which the ground truth speaks."""
    replies = frames = 0
    for row in dataset:
        for message in row["conversation"]:
            frames += message["learn"] if message["role"] == "stream" else 0
            replies += bool(message["role"] == "assistant" and message["learn"])
    return replies / max(frames, 1)


class CountingPolicy:
    """A decision policy that counts its decisions and fires (the model's rate, for the baselines at that rate)."""

    def __init__(self, policy):
        self.policy, self.fires, self.decisions = policy, 0, 0

    def __call__(self, probs: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        fires = self.policy(probs, frames)
        self.fires, self.decisions = self.fires + int(fires.sum()), self.decisions + len(fires)
        return fires

    @property
    def rate(self) -> float:
        return self.fires / max(self.decisions, 1)


@torch.no_grad()
def evaluate_streams(
    model,
    processor,
    dataset,
    video_root: str | None = None,
    features_dir: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    baselines: bool = False,
    seed: int = 0,
) -> dict:
    """Teacher-forced metrics (`recipes.metrics`) over the rows of `dataset`: `{"model": metrics}`, with `baselines`
    also `never_speak`, `random_same_rate` and `periodic_same_rate` (at the model's own rate of speaking, keeping its
    text predictions), and `blind` (the same model fed black frames); `speak_rate` is the model's rate."""
    model.eval()
    collator = VideoLLMMoDCollator(processor, video_root=video_root, features_dir=features_dir)
    interval = model.config.frame_token_interval_id

    def run(policies: dict) -> dict[str, list]:
        """Every policy on every row; `policies[name]` is `(fire_policy, blind)`."""
        samples = {name: [] for name in policies}
        for row in dataset:
            batch = collator([row])
            frames = {k: batch[k] for k in ("frame_features", "pixel_values_videos") if k in batch}
            for name, (policy, blind) in policies.items():
                inputs = {k: black_like(model, processor, k, v) for k, v in frames.items()} if blind else frames
                ids, labels = batch["input_ids"], batch["labels"]
                samples[name].append(stream_evaluate(model, processor, ids, labels, fire_policy=policy, **inputs))
        return samples

    model_policy = CountingPolicy(model_fire_policy(interval, threshold))
    results = run({"model": (model_policy, False)})
    rate = model_policy.rate
    if baselines:
        generator = torch.Generator().manual_seed(seed)
        phase = float(torch.rand(1, generator=generator))
        results |= run({
            "never_speak": (lambda probs, f: torch.zeros(len(probs), dtype=torch.bool), False),
            "random_same_rate": (lambda probs, f: torch.rand(len(probs), generator=generator) < rate, False),
            "periodic_same_rate": (lambda probs, f: periodic_fires(f, rate, phase), False),
            "blind": (model_fire_policy(interval, threshold), True),
        })  # fmt: skip
    fps = dataset[0]["fps"]
    return {"speak_rate": rate, **{name: aggregate_stream_metrics(samples, fps) for name, samples in results.items()}}


# Beside the figures of the shipped demo: what it was trained on explains them.
DEMO_ANSWER_NOTE = (
    "the shipped demo model was trained on narration streams of its synthetic world only, never on questions about a "
    "stream (COIN steps, Ego-Exo4D keysteps): expect it no better than the majority label; fine-tune it on the dataset "
    "first"
)


BENCHMARK_TASKS = ("ovo_bench", "streamingbench_real", "streamingbench_omni", "streamingbench_sqa",
                   "streamingbench_proactive")  # fmt: skip


def score_benchmark(task: str, path: str, answer_key: str) -> dict:
    """Re-score an official result file of a streaming benchmark as its own script does; prints its lines."""
    from . import ovo_bench, streaming_bench

    if task == "ovo_bench":
        numbers = ovo_bench.score(ovo_bench.read_results(path))
        print(ovo_bench.report(numbers))
        return numbers
    subset = task.removeprefix("streamingbench_")
    stats = streaming_bench.score(streaming_bench.read_questions(path, subset), subset, answer_key)
    if not stats:
        raise UserError(f"{path}: no question holds an answer under {answer_key!r} (see --answer-key)")
    for kind, counts in stats.items():
        print(
            f"{kind}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in counts.items())
        )
    return stats


def score_narration(path: str, baselines: bool, output: str | None) -> int:
    """Re-score the prediction records of a free-running run (`--predictions`) without a model; `baselines` needs
    records written with them (the blind streams)."""
    from ..files import read_json_lines

    fields = ("times", "references", "questions", "events") + (("blind_events",) if baselines else ())
    records = read_json_lines(path, "prediction", fields)
    text = json.dumps({"predictions": path, "rows": len(records),
                       "free_running_results": score_predictions(records, baselines)}, indent=1)  # fmt: skip
    print(text)
    if output:
        write_text_atomically(output, text + "\n")
    return 0


def load_model(args):
    """The model (on `--device`, in `--dtype`; `auto`: spread over the GPUs) and its processor."""
    placement = {"device_map": "auto"} if args.device == "auto" else {}
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    return load_model_and_processor(
        args.model, args.device, args.trust_remote_code, args.allow_pickle, dtype=dtype, **placement
    )


STREAMING_PROTOCOL_TASKS = ("ovo_bench", "streamingbench_proactive")


def answer_benchmark(parser, args) -> str:
    """Run the model on a benchmark by its offline protocol into the results file `--output` (resumed if it exists);
    returns its path."""
    for name in ("annotations", "video_root", "output"):
        if getattr(args, name) is None:
            parser.error(f"--task {args.task} needs --{name.replace('_', '-')}")
    if not os.path.isdir(args.video_root):
        parser.error(f"--video-root {args.video_root}: no such folder")
    if args.protocol == "streaming" and args.task not in STREAMING_PROTOCOL_TASKS:
        parser.error(f"--protocol streaming is built for --task {' and '.join(STREAMING_PROTOCOL_TASKS)}")
    from . import benchmark_inference as run
    from . import ovo_bench, streaming_bench

    subset = args.task.removeprefix("streamingbench_")
    if args.task == "ovo_bench":  # read and checked before the model loads
        annotations = ovo_bench.read_annotations(args.annotations)
    else:
        annotations = streaming_bench.read_questions(args.annotations, subset)
    check_model(args.model, args.trust_remote_code, args.allow_pickle)
    ask, streaming = run.ClipAsker(*load_model(args)), args.protocol == "streaming"
    where = (ask, annotations, args.video_root, args.output)
    if args.task == "ovo_bench":
        (run.run_ovo_bench_streaming if streaming else run.run_ovo_bench)(*where)
    elif subset == "proactive":
        run.run_streamingbench_proactive(*where, args.answer_key, streaming)
    else:
        runner = run.run_streamingbench_sqa if subset == "sqa" else run.run_streamingbench
        runner(*where, args.answer_key, args.context_time)
    for video, why in ask.unreadable.items():
        print(f"unreadable, its items unanswered: {video} ({why})", file=sys.stderr)
    print(f"wrote {args.output}")
    return args.output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="videollm-mod evaluate", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--dataset", help="prepared dataset folder or Hub id (videollm-mod data ...)")
    parser.add_argument("--task", default="narration", choices=["narration", *BENCHMARK_TASKS],
                        help="narration: the streaming metrics of a prepared dataset (default); a streaming "
                        "benchmark: the model's answers (--annotations, --video-root, --output) by the official "
                        "protocol, or, with --score-only, the scores of a result file")  # fmt: skip
    parser.add_argument("--score-only", metavar="RESULTS", default=None,
                        help="score saved predictions without a model: narration, the --predictions JSON lines of a "
                        "free-running run; a benchmark, its official result file (OVO-Bench's, or a StreamingBench "
                        "question file with the answers filled in) as the official scripts do")  # fmt: skip
    parser.add_argument("--annotations", default=None, metavar="FILE",
                        help="the benchmark's annotation file (OVO-Bench's ovo_bench_new.json, StreamingBench's "
                        "questions_{real,omni,sqa,proactive}.json); the videos are under --video-root")  # fmt: skip
    parser.add_argument("--protocol", default="offline", choices=["offline", "streaming"],
                        help="offline, the official protocol: the clip cut at each question's time and the model "
                        "asked again (StreamingBench proactive: polled every second); streaming: OVO-Bench, one "
                        "session per video with every question at its time; StreamingBench proactive, the model's "
                        "own decisions to speak (default: %(default)s)")  # fmt: skip
    parser.add_argument("--context-time", type=float, default=60.0,
                        help="StreamingBench real, omni, sqa: seconds of video before each question's time, 0 or "
                        "less for all of it (default: %(default)s, the official --context_time; proactive clips "
                        "start at the question's time, as the official script has them)")  # fmt: skip
    parser.add_argument("--answer-key", default="videollm_mod",
                        help="StreamingBench: the field of each question holding the model's answer (the official "
                        "scripts' model name) (default: %(default)s)")  # fmt: skip
    parser.add_argument("--config", default=None, help="dataset config (e.g. raw, refined)")
    parser.add_argument("--split", default="val", help="dataset split (default: %(default)s)")
    parser.add_argument("--video-root", default=None, help="folder of the rows' videos (raw frames)")
    parser.add_argument("--features-dir", default=None, help="folder of pre-computed {video_uid}.safetensors")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="decision threshold, as in narrate: a frame fires when P(interval) < THRESHOLD or the interval is not "
        "the most probable token (0 = argmax, the original evaluation) (default: %(default)s)",
    )
    parser.add_argument("--free-running", action="store_true", help="also stream each row, free-running, and score "
                        "its events (slower: one reply generated at a time)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=1,
                        help="with --free-running: rows streamed at a time in one batched session (the same events "
                        "as one at a time; faster on a GPU) (default: %(default)s)")  # fmt: skip
    parser.add_argument("--predictions", default=None, metavar="FILE",
                        help="with --free-running: write each row's prediction record (what was said, when, and the "
                        "references) as JSON lines, for --score-only")  # fmt: skip
    parser.add_argument("--baselines", action="store_true", help="also never speak, random and periodic at the model's "
                        "rate, and blind (black frames)")  # fmt: skip
    parser.add_argument(
        "--answer-accuracy",
        action="store_true",
        help="instead: answer each row's question after its stream, scored against its `label` (COIN step / next / "
        "task, Ego-Exo4D keystep: exact and fuzzy accuracy, recipes/answer_accuracy.py; --baselines: blind, "
        "majority, random label)",
    )
    parser.add_argument(
        "--plot",
        default=None,
        metavar="FOLDER",
        help="with --free-running: draw each row's timeline there (P(stay silent) per frame, threshold, replies, the "
        "reference replies)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device of the model (cuda, cuda:1, cpu), or auto to spread it over the GPUs with accelerate's "
        "device_map (default: cuda if available, else cpu)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16", "auto"],
        help="of the model's weights (auto: the checkpoint's) (default: %(default)s, the figures of the READMEs)",
    )
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate the first N rows (default: all)")
    parser.add_argument("--output", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.task != "narration":
        if args.score_only is None:
            args.score_only = answer_benchmark(parser, args)
        numbers = score_benchmark(args.task, args.score_only, args.answer_key)
        if args.output and args.output != args.score_only:
            write_text_atomically(args.output, json.dumps(numbers, indent=2) + "\n")
        return 0
    if args.score_only is not None:
        return score_narration(args.score_only, args.baselines, args.output)
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size} must be at least 1")
    if args.predictions is not None and not args.free_running:
        parser.error("--predictions writes the free-running streams' records: give --free-running too")
    if args.dataset is None:
        parser.error("the following arguments are required: --dataset")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold {args.threshold} must lie in [0, 1]")
    if args.video_root is None and args.features_dir is None:
        parser.error("give --video-root (raw frames) or --features-dir (pre-computed features)")
    for name in ("video_root", "features_dir"):
        folder = getattr(args, name)
        if folder is not None and not os.path.isdir(folder):
            parser.error(f"--{name.replace('_', '-')} {folder}: no such folder")

    if args.plot is not None:
        if not args.free_running:
            parser.error("--plot draws the free-running streams: give --free-running too")
        from ..timeline import check_plot_path

        if os.path.exists(args.plot) and not os.path.isdir(args.plot):
            raise UserError(f"--plot {args.plot}: not a folder (the timelines are written into it, one per row)")
        os.makedirs(args.plot, exist_ok=True)
        check_plot_path(os.path.join(args.plot, "timeline.png"))

    check_model(args.model, args.trust_remote_code, args.allow_pickle)  # a refusal before the data is read
    from ..data_scripts._hub import load_prepared_dataset

    dataset = load_prepared_dataset(args.dataset, args.config, "--dataset")
    if args.split not in dataset:
        raise UserError(f"--split {args.split!r}: {args.dataset} has the splits {sorted(dataset)}")
    dataset = dataset[args.split]
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    model, processor = load_model(args)
    free_running = None
    if args.answer_accuracy:
        from .answer_accuracy import evaluate_answers

        metrics = evaluate_answers(model, processor, dataset, args.video_root, args.features_dir, args.baselines)
    else:
        metrics = evaluate_streams(
            model, processor, dataset, args.video_root, args.features_dir, args.threshold, args.baselines
        )
        if args.free_running:
            records = stream_predictions(model, processor, dataset, args.video_root, args.features_dir,
                                         args.threshold, args.baselines, plot_dir=args.plot,
                                         batch_size=args.batch_size)  # fmt: skip
            if args.predictions:
                write_text_atomically(args.predictions, "".join(json.dumps(r) + "\n" for r in records))
            free_running = score_predictions(records, args.baselines)
    report = {
        "model_path": resolve_model(args.model),
        "dataset": args.dataset,
        "config": args.config,
        "split": args.split,
        "rows": len(dataset),
        "threshold": args.threshold,
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "results": metrics,
    }
    if free_running is not None:
        report["free_running_results"] = free_running
    if args.answer_accuracy and args.model is None:
        report["note"] = DEMO_ANSWER_NOTE
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        write_text_atomically(args.output, text + "\n")
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod evaluate", main, sys.argv[1:]))
