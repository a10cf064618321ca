"""Pre-compute frame features: each video at the target fps through a frozen vision tower -> safetensors per video.

Features are `[T, frame_num_tokens, D]` (key "features"): per frame the SigLIP pooled output followed by the patch grid
average-pooled to `hp x wp` (row-major), as VideoLLM-online live1+ (`1 + 3*3 = 10` tokens). The frames go through
the model's own steps (its processor's frame preprocessing, its vision tower, its frame pooling), so the features
equal what the model computes from raw frames. Each file is written to a temporary name and renamed, so a rerun skips
finished videos and never sees a half-written one. Videos that are missing or cannot be decoded are skipped and
counted (`--strict` stops at the first).

Usage:

    videollm-mod data precompute_features --model path/to/videollm-mod-checkpoint \
        --video-root datasets/coin/videos --output-dir datasets/coin/features_2fps --fps 2 --num-workers 2

`--model` is a VideoLLM-MoD checkpoint (folder or Hub repo: its processor, `model.vision_tower` and
`config.frame_token_pooled` are used) or a `SiglipVisionModel` folder (then give `--frame-token-pooled`; frames are
normalised with its `preprocessor_config.json`).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from modeling_videollm_mod import VideoDecodingError, VideoLLMMoDFrameProcessor, load_video
from modeling_videollm_mod.modeling_videollm_mod import pool_frame_tokens

from ..loading import add_model_arguments
from ._hub import SkipCounter

Encoder = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------------------------------
# the encoder: the model's own preprocessing and pooling around a vision tower


class FrameEncoder:
    """``encode(frames uint8 [T, H, W, 3]) -> [T, 1 + hp * wp, D]``: the frame processor's `transform`, the vision
    tower, then `pool_frame_tokens` (the pooled output, then the pooled patch grid), in batches of frames."""

    def __init__(
        self,
        vision_tower: torch.nn.Module,
        frame_processor: VideoLLMMoDFrameProcessor,
        pooled: tuple[int, int],
        batch_size: int = 64,
    ):
        self.vision_tower = vision_tower.eval().requires_grad_(False)
        self.frame_processor, self.pooled, self.batch_size = frame_processor, tuple(pooled), batch_size

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._encode(chunk) for chunk in frames.split(self.batch_size)])

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        pixels = self.frame_processor.transform(self.frame_processor.to_frames(frames))  # [T, 3, S, S]
        param = next(self.vision_tower.parameters())
        out = self.vision_tower(pixel_values=pixels.to(param.device, param.dtype))
        return pool_frame_tokens(out, self.pooled).float().cpu()  # [T, 1 + hp*wp, D]


SIGLIP_TYPES = ("siglip_vision_model", "siglip")


def check_encoder_model(model_path: str, trust_remote_code: bool = False, allow_pickle: bool = False):
    """`(path, use_safetensors)` of a bare SigLIP folder, else `None` after the loading policy's checks
    of a VideoLLM-MoD checkpoint (`videollm_mod.loading`): a refusal comes before anything of it is imported."""
    from ..loading import check_model, check_pickles, read_config, resolve_model

    path = resolve_model(model_path)
    config = read_config(path)
    if config.get("model_type") in SIGLIP_TYPES:  # a transformers class: no code of the folder runs
        check_pickles(model_path, path, allow_pickle)
        return path, None if allow_pickle else True
    check_model(model_path, trust_remote_code, allow_pickle)
    return None


def load_encoder(
    model_path: str,
    frame_token_pooled: tuple[int, int] | None = None,
    batch_size: int = 64,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
):
    """Frozen encoder from a VideoLLM-MoD checkpoint (folder or Hub repo) or a ``SiglipVisionModel`` folder, loaded
    under the package's loading policy (`videollm_mod.loading`)."""
    siglip = check_encoder_model(model_path, trust_remote_code, allow_pickle)
    if siglip is not None:
        from transformers import SiglipVisionModel

        path, use_safetensors = siglip
        if frame_token_pooled is None:
            raise ValueError(f"--model {model_path} is a bare vision model: give --frame-token-pooled HP WP")
        tower = SiglipVisionModel.from_pretrained(path, use_safetensors=use_safetensors)
        norm_file = os.path.join(path, "preprocessor_config.json")
        norm = json.load(open(norm_file)) if os.path.isfile(norm_file) else {}
        frame_processor = VideoLLMMoDFrameProcessor(
            size=tower.config.image_size,
            image_mean=norm.get("image_mean", (0.5, 0.5, 0.5)),
            image_std=norm.get("image_std", (0.5, 0.5, 0.5)),
        )
        return FrameEncoder(tower, frame_processor, frame_token_pooled, batch_size)
    from ..loading import load_model_and_processor

    model, processor = load_model_and_processor(model_path, "cpu", trust_remote_code, allow_pickle)
    pooled = frame_token_pooled or tuple(model.config.frame_token_pooled)
    return FrameEncoder(model.model.vision_tower, processor.image_processor, pooled, batch_size)


# ----------------------------------------------------------------------------------------------------------------
# the run: resumable, atomic writes, several workers


@dataclass
class RunStats:
    encoded: int = 0  # videos encoded in this run
    skipped_done: int = 0  # already finished before the run
    frames: int = 0  # frames encoded in this run
    seconds: float = 0.0  # wall time of the encoding phase (workers ready -> last video written)
    failed: dict | None = None  # video path -> reason (missing / undecodable)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def output_path(output_dir: str, name: str) -> str:
    """Where the features of the video called `name` (its `video_uid`) go."""
    return os.path.join(output_dir, f"{name}.safetensors")


def read_features(features_dir: str, video_uid: str) -> torch.Tensor:
    """The pre-computed features of a whole video, (T, F, D) float32, as `precompute_features` wrote them (training,
    the evaluations and the study all read them here)."""
    from safetensors.torch import load_file

    path = output_path(features_dir, video_uid)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"row {video_uid!r}: no pre-computed features at {path}")
    return load_file(path)["features"].float()


def video_names(video_paths: list[str]) -> dict[str, str]:
    """`{name: path}`, each video named by its file name without extension (`{video_uid}.mp4`)."""
    return {os.path.splitext(os.path.basename(path))[0]: path for path in video_paths}


def dataset_videos(dataset_dir: str, config: str | None, video_root: str) -> dict[str, str]:
    """`{video_uid: path}` of the videos of a prepared dataset (every split): for datasets whose video files are not
    named `{video_uid}.mp4` (Ego-Exo4D's ego videos are all `aria01_214-1.mp4`, one per take folder)."""
    from ._hub import load_prepared_dataset

    videos = {}
    for split in load_prepared_dataset(dataset_dir, config, "--dataset").values():
        for video_uid, video in zip(split["video_uid"], split["video"], strict=True):
            videos[video_uid] = os.path.join(video_root, video)
    return videos


def encode_video(encoder: Encoder, name: str, video_path: str, output_dir: str, fps: float, dtype: torch.dtype) -> int:
    """Decode at ``fps``, encode, write ``{name}.safetensors`` via a temporary name; returns the frame count."""
    from safetensors.torch import save_file

    frames = torch.from_numpy(load_video(video_path, fps)[0])  # [T, H, W, 3] uint8
    features = encoder(frames).to(dtype).contiguous()  # [T, frame_num_tokens, D]
    final = output_path(output_dir, name)
    tmp = f"{final}.tmp-{os.getpid()}"
    save_file({"features": features}, tmp, metadata={"fps": str(fps), "source": os.path.basename(video_path)})
    os.replace(tmp, final)
    return features.shape[0]


_WORKER: dict = {}


def _init_worker(encoder_factory, threads: int, barrier) -> None:
    torch.set_num_threads(threads)
    _WORKER["encoder"] = encoder_factory()
    if barrier is not None:
        barrier.wait()


def _work(args: tuple[str, str, str, float, str]) -> tuple[str, int, str | None]:
    name, video_path, output_dir, fps, dtype = args
    try:
        frames = encode_video(_WORKER["encoder"], name, video_path, output_dir, fps, getattr(torch, dtype))
        return video_path, frames, None
    except VideoDecodingError as e:
        return video_path, 0, str(e)


def precompute_features(
    videos: list[str] | dict[str, str],
    output_dir: str,
    encoder_factory: Callable[[], Encoder],
    fps: float = 2.0,
    num_workers: int = 1,
    threads_per_worker: int = 1,
    dtype: str = "bfloat16",
    strict: bool = False,
    progress: bool = True,
) -> RunStats:
    """Encode every video not yet done into ``output_dir``; ``encoder_factory`` (picklable) builds the encoder.

    ``videos`` are paths (the features of ``{video_uid}.mp4`` go to ``{video_uid}.safetensors``) or ``{name: path}``.

    With ``num_workers > 1`` the videos are spread over a pool of spawned processes, each with its own encoder and
    ``threads_per_worker`` torch threads. Stale temporary files from an interrupted run are removed first.
    """
    from tqdm.auto import tqdm

    os.makedirs(output_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(output_dir, "*.safetensors.tmp-*")):
        os.remove(stale)
    videos = videos if isinstance(videos, dict) else video_names(videos)
    todo = {name: path for name, path in videos.items() if not os.path.exists(output_path(output_dir, name))}
    stats = RunStats(skipped_done=len(videos) - len(todo), failed={})
    skips = SkipCounter(strict)
    bar = tqdm(total=len(todo), desc="features", unit="video", disable=not progress)
    jobs = [(name, path, output_dir, fps, dtype) for name, path in todo.items()]

    def record(result) -> None:
        path, n, error = result
        if error is not None:
            stats.failed[path] = error
            skips.skip("missing or undecodable video", error)
        else:
            stats.encoded += 1
            stats.frames += n
        bar.update(1)

    if num_workers <= 1:
        torch_threads = torch.get_num_threads()
        _init_worker(encoder_factory, threads_per_worker, None)
        start = time.perf_counter()
        try:
            for job in jobs:
                record(_work(job))
        finally:
            torch.set_num_threads(torch_threads)
            _WORKER.clear()
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
        barrier = ctx.Barrier(num_workers + 1)
        with ctx.Pool(
            num_workers, initializer=_init_worker, initargs=(encoder_factory, threads_per_worker, barrier)
        ) as pool:
            barrier.wait(timeout=600)  # time the encoding, not the workers' start-up
            start = time.perf_counter()
            for result in pool.imap_unordered(_work, jobs, chunksize=1):
                record(result)
    stats.seconds = time.perf_counter() - start
    bar.close()
    return stats


@dataclass
class RandomSiglipFactory:
    """Picklable factory of a randomly initialised ``SiglipVisionModel`` encoder (tests and benchmarks; no download)."""

    hidden_size: int = 32
    num_hidden_layers: int = 1
    image_size: int = 32
    patch_size: int = 8
    pooled: tuple[int, int] = (3, 3)
    seed: int = 0

    def __call__(self) -> FrameEncoder:
        from transformers import SiglipVisionConfig, SiglipVisionModel

        torch.manual_seed(self.seed)
        config = SiglipVisionConfig(
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers, num_attention_heads=2,
            intermediate_size=2 * self.hidden_size, image_size=self.image_size, patch_size=self.patch_size,
        )  # fmt: skip
        return FrameEncoder(SiglipVisionModel(config), VideoLLMMoDFrameProcessor(size=self.image_size), self.pooled)


@dataclass
class _ModelFactory:
    """Picklable encoder factory for spawned workers."""

    model_path: str
    frame_token_pooled: tuple[int, int] | None
    batch_size: int
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def __call__(self) -> Encoder:
        return load_encoder(
            self.model_path, self.frame_token_pooled, self.batch_size, self.trust_remote_code, self.allow_pickle
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="videollm-mod data precompute_features",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    add_model_arguments(parser, required=True, help="VideoLLM-MoD checkpoint or SiglipVisionModel folder")
    parser.add_argument("--video-root", required=True, help="folder searched (recursively) for *.mp4")
    parser.add_argument(
        "--dataset",
        default=None,
        help="instead of every *.mp4: the videos of this prepared dataset (its `video` paths under --video-root), "
        "features named by its `video_uid`s",
    )
    parser.add_argument("--dataset-config", default=None, help="with --dataset: its config")
    parser.add_argument("--output-dir", required=True, help="where {video_uid}.safetensors go")
    parser.add_argument("--fps", type=float, default=2.0, help="frames per second sampled (default: %(default)s)")
    parser.add_argument(
        "--frame-token-pooled",
        type=int,
        nargs=2,
        default=None,
        metavar=("HP", "WP"),
        help="patch grid pooled to HP x WP tokens (default: the model's config)",
    )
    parser.add_argument("--num-workers", type=int, default=1, help="decoding processes (default: %(default)s)")
    parser.add_argument(
        "--threads-per-worker", type=int, default=1, help="torch threads of each (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="frames per vision-tower forward (default: %(default)s)"
    )
    parser.add_argument(
        "--dtype",
        default="bfloat16",
        choices=["bfloat16", "float16", "float32"],
        help="of the features (default: %(default)s)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at a missing or undecodable video")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.video_root):
        parser.error(f"--video-root {args.video_root}: no such folder")
    if args.dataset is not None:
        videos = dataset_videos(args.dataset, args.dataset_config, args.video_root)
    else:
        videos = sorted(glob.glob(os.path.join(args.video_root, "**", "*.mp4"), recursive=True))
    pooled = tuple(args.frame_token_pooled) if args.frame_token_pooled else None
    # a missing or refused --model fails here, before any worker starts
    check_encoder_model(args.model, args.trust_remote_code, args.allow_pickle)
    factory = _ModelFactory(args.model, pooled, args.batch_size, args.trust_remote_code, args.allow_pickle)
    stats = precompute_features(
        videos, args.output_dir, factory, fps=args.fps,
        num_workers=args.num_workers, threads_per_worker=args.threads_per_worker, dtype=args.dtype, strict=args.strict,
    )  # fmt: skip
    print(
        f"encoded {stats.encoded} videos ({stats.frames} frames, {stats.frames_per_second:.1f} frames/s), "
        f"{stats.skipped_done} already done, {len(stats.failed)} skipped (missing or undecodable)"
    )
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod data precompute_features", main, sys.argv[1:]))
