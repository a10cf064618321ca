"""Feature pre-computation: the model's own raw-frame path, resumable atomic writes, skips, several workers."""

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modeling_videollm_mod import VideoLLMMoDForCausalLM, VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor
from modeling_videollm_mod import video_num_frames as probe_num_frames
from videollm_mod import DEMO_MODEL
from videollm_mod.data_scripts._video import write_video
from videollm_mod.data_scripts.precompute_features import (
    RandomSiglipFactory,
    load_encoder,
    output_path,
    precompute_features,
)
from videollm_mod.errors import UserError
from videollm_mod.presets import tiny_config
from videollm_mod.tokenizer_tools import build_stream_tokenizer, stream_token_ids

FPS = 2


def video_stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate((2.0, 3.0)):
        frames = rng.integers(0, 255, size=(int(seconds * 4), 24, 32, 3), dtype=np.uint8)
        path = str(folder / f"clip{i}.mp4")
        write_video(path, frames, fps=4)
        paths.append(path)
    return paths


@pytest.mark.parametrize("height,width", [(561, 1000), (37, 24), (24, 24)])
def test_precomputed_features_equal_the_models_raw_frame_path(tmp_path, height, width):
    """Pre-computation runs the saved model's own preprocessing, tower and pooling: its features through the
    connector equal the model's embeddings of the same raw frames, odd frame sizes included."""
    tokenizer = build_stream_tokenizer(["a red circle"], vocab_size=120)
    model = VideoLLMMoDForCausalLM(tiny_config(vocab_size=len(tokenizer), **stream_token_ids(tokenizer))).eval()
    processor = VideoLLMMoDProcessor(VideoLLMMoDFrameProcessor(size=24), tokenizer)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    frames = torch.randint(0, 256, (3, height, width, 3), dtype=torch.uint8)
    features = load_encoder(str(tmp_path / "model"))(frames)  # (3, 10, D) before the connector
    pixels = processor([{"role": "stream", "num_frames": 3}], videos=frames.numpy(), return_labels=False)[
        "pixel_values_videos"
    ]
    with torch.no_grad():
        expected = model.model.get_video_features(pixels).pooler_output
        got = model.model.connector(features)
    assert features.shape == (3, 10, 32)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_features_have_one_row_per_frame_at_the_target_fps(tmp_path, videos):
    stats = precompute_features(videos, str(tmp_path), RandomSiglipFactory(), fps=FPS, dtype="float32", progress=False)
    shapes = [tuple(load_file(output_path(str(tmp_path), video_stem(p)))["features"].shape) for p in videos]
    assert shapes == [(probe_num_frames(p, FPS), 10, 32) for p in videos] == [(4, 10, 32), (6, 10, 32)]
    assert (stats.encoded, stats.frames) == (2, 10)


def test_rerun_skips_finished_videos_and_removes_stale_temporaries(tmp_path, videos):
    precompute_features(videos[:1], str(tmp_path), RandomSiglipFactory(), fps=FPS, progress=False)
    done = output_path(str(tmp_path), video_stem(videos[0]))
    mtime = os.stat(done).st_mtime_ns
    stale = tmp_path / "clip1.safetensors.tmp-12345"  # what an interrupted run leaves
    stale.write_bytes(b"half")
    stats = precompute_features(videos, str(tmp_path), RandomSiglipFactory(), fps=FPS, progress=False)
    assert (stats.skipped_done, stats.encoded) == (1, 1)
    assert os.stat(done).st_mtime_ns == mtime
    assert sorted(os.listdir(tmp_path)) == ["clip0.safetensors", "clip1.safetensors"]


def test_undecodable_video_is_skipped_and_counted(tmp_path, videos):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    out = tmp_path / "features"
    stats = precompute_features([str(broken), videos[0]], str(out), RandomSiglipFactory(), fps=FPS, progress=False)
    assert (stats.encoded, list(stats.failed)) == (1, [str(broken)])
    assert os.listdir(out) == ["clip0.safetensors"]


def test_strict_raises_on_an_undecodable_video(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(UserError, match="broken.mp4"):
        precompute_features([str(broken)], str(tmp_path / "f"), RandomSiglipFactory(), fps=FPS, strict=True,
                            progress=False)  # fmt: skip


@pytest.mark.slow
def test_two_workers_write_the_same_features_as_one(tmp_path, videos):
    one, two = tmp_path / "one", tmp_path / "two"
    precompute_features(videos, str(one), RandomSiglipFactory(), fps=FPS, dtype="float32", progress=False)
    stats = precompute_features(videos, str(two), RandomSiglipFactory(), fps=FPS, dtype="float32", num_workers=2,
                                progress=False)  # fmt: skip
    assert stats.encoded == 2
    for p in videos:
        torch.testing.assert_close(
            load_file(output_path(str(two), video_stem(p))), load_file(output_path(str(one), video_stem(p)))
        )


def test_videos_of_a_prepared_dataset_are_named_by_their_video_uid(tmp_path):
    """Ego-Exo4D's ego videos share one file name (one per take folder): `--dataset` names features by `video_uid`."""
    from datasets import Dataset, DatasetDict

    from videollm_mod import cli
    from videollm_mod.data_scripts._hub import write_dataset

    rng = np.random.default_rng(0)
    for take, seconds in (("take-a", 2.0), ("take-b", 3.0)):
        (tmp_path / "videos" / take).mkdir(parents=True)
        frames = rng.integers(0, 255, size=(int(seconds * 4), 24, 32, 3), dtype=np.uint8)
        write_video(str(tmp_path / "videos" / take / "aria01_214-1.mp4"), frames, fps=4)
    takes = ["take-a", "take-b", "take-a"]  # a take may have several rows
    rows = {"video_uid": takes, "video": [f"{take}/aria01_214-1.mp4" for take in takes]}
    write_dataset(str(tmp_path / "data"), {"default": DatasetDict({"train": Dataset.from_dict(rows)})}, "---\n---\n")
    argv = ["data", "precompute_features", "--model", str(DEMO_MODEL), "--video-root", str(tmp_path / "videos"),
            "--dataset", str(tmp_path / "data"), "--output-dir", str(tmp_path / "features"), "--dtype", "float32"]  # fmt: skip
    assert cli.main(argv) == 0
    shapes = {p.name: load_file(p)["features"].shape[0] for p in sorted((tmp_path / "features").iterdir())}
    assert shapes == {"take-a.safetensors": 4, "take-b.safetensors": 6}
