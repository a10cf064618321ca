"""Feature pre-computation: encoder numerics, resumable atomic writes, skips, several workers."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from videollm_mod.data_scripts._video import probe_num_frames, write_video
from videollm_mod.data_scripts.precompute_features import (
    RandomSiglipFactory,
    output_path,
    precompute_features,
    resize_and_pad,
)

FPS = 2


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


def test_resize_and_pad_centres_the_frame_on_black():
    frames = torch.full((1, 16, 32, 3), 255, dtype=torch.uint8)  # wide white frame
    out = resize_and_pad(frames, 32)
    assert out.shape == (1, 3, 32, 32)
    assert out[:, :, :8].abs().max() == 0 and out[:, :, 24:].abs().max() == 0
    assert torch.allclose(out[:, :, 8:24], torch.tensor(255.0))


def test_encoder_gives_pooled_output_then_pooled_patch_grid():
    encoder = RandomSiglipFactory()()
    frames = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    features = encoder(frames)
    pixels = frames.permute(0, 3, 1, 2).float() / 255 * 2 - 1
    with torch.no_grad():
        out = encoder.vision_tower(pixel_values=pixels)
    grid = out.last_hidden_state.transpose(1, 2).reshape(3, 32, 4, 4)  # 32 px / patch 8 = 4 x 4
    expected = torch.cat(
        [out.pooler_output[:, None], F.adaptive_avg_pool2d(grid, (3, 3)).flatten(2).transpose(1, 2)], 1
    )
    assert features.shape == (3, 10, 32)
    torch.testing.assert_close(features, expected)


def test_features_have_one_row_per_frame_at_the_target_fps(tmp_path, videos):
    stats = precompute_features(videos, str(tmp_path), RandomSiglipFactory(), fps=FPS, dtype="float32", progress=False)
    shapes = [tuple(load_file(output_path(str(tmp_path), p))["features"].shape) for p in videos]
    assert shapes == [(probe_num_frames(p, FPS), 10, 32) for p in videos] == [(4, 10, 32), (6, 10, 32)]
    assert (stats.encoded, stats.frames) == (2, 10)


def test_rerun_skips_finished_videos_and_removes_stale_temporaries(tmp_path, videos):
    precompute_features(videos[:1], str(tmp_path), RandomSiglipFactory(), fps=FPS, progress=False)
    done = output_path(str(tmp_path), videos[0])
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
    with pytest.raises(RuntimeError, match="broken.mp4"):
        precompute_features([str(broken)], str(tmp_path / "f"), RandomSiglipFactory(), fps=FPS, strict=True,
                            progress=False)  # fmt: skip


def test_two_workers_write_the_same_features_as_one(tmp_path, videos):
    one, two = tmp_path / "one", tmp_path / "two"
    precompute_features(videos, str(one), RandomSiglipFactory(), fps=FPS, dtype="float32", progress=False)
    stats = precompute_features(videos, str(two), RandomSiglipFactory(), fps=FPS, dtype="float32", num_workers=2,
                                progress=False)  # fmt: skip
    assert stats.encoded == 2
    for p in videos:
        torch.testing.assert_close(load_file(output_path(str(two), p)), load_file(output_path(str(one), p)))
