"""Synthetic generator: determinism, events visible at the narrated frame, the pipeline end to end, offline push."""

import json
import os
import random
from unittest import mock

import numpy as np
import pytest

from modeling_videollm_mod import load_video, video_num_frames
from videollm_mod.data_scripts import prepare_coin, prepare_ego4d_goalstep_livechat, prepare_ego4d_narration
from videollm_mod.data_scripts._hub import load_prepared_dataset
from videollm_mod.data_scripts._stream import ceil_frame
from videollm_mod.data_scripts.synthetic import (
    COLORS,
    MIN_EVENT_GAP,
    SHAPES,
    Event,
    ego_video_events,
    frame_caption,
    generate_dataset,
)

FPS = 2
SMALL = dict(num_videos=3, seconds=8, fps=4, resolution=64, num_coin_videos=2, difficulty=1)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate_dataset(str(tmp_path_factory.mktemp("syn") / "data"), seed=3, **SMALL)


def test_generation_is_deterministic_for_a_seed(tmp_path, synthetic):
    again = generate_dataset(str(tmp_path / "again"), seed=3, **SMALL)
    for key in ("coin_json", "events"):
        assert open(again[key]).read() == open(synthetic[key]).read()
    names = sorted(os.listdir(synthetic["ego4d_videos"]))
    assert sorted(os.listdir(again["ego4d_videos"])) == names
    a = load_video(os.path.join(again["ego4d_videos"], names[0]), FPS)[0]
    b = load_video(os.path.join(synthetic["ego4d_videos"], names[0]), FPS)[0]
    assert np.array_equal(a, b)


def test_appearing_shape_is_visible_at_its_snapped_narration_frame(synthetic):
    events = json.load(open(synthetic["events"]))
    checked = 0
    for video_uid, video_events in events.items():
        path = os.path.join(synthetic["ego4d_videos"], f"{video_uid}.mp4")
        if not os.path.exists(path):
            continue
        frames = load_video(path, FPS)[0]
        for e in video_events:
            if e["kind"] != "appear":
                continue
            frame = ceil_frame(e["narration_time"], FPS, 0, len(frames) - 1)
            x, y = (int(c * 64) for c in e["position"])
            patch = frames[frame, y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(0)
            assert np.abs(patch - np.array(COLORS[e["color"]])).sum() < 90, (video_uid, e)
            checked += 1
    assert checked >= 3


def test_every_change_shows_in_the_caption_at_its_narrated_frame():
    for seed in range(20):
        events = ego_video_events(random.Random(seed), 20, 1, 2.5)
        for e in events:
            narrated = ceil_frame(e.narration_time, FPS, 0, 39) / FPS
            assert e.start <= e.narration_time <= narrated < e.start + 0.75, e
            assert frame_caption(events, e.start - 0.01) != frame_caption(events, narrated), e


def test_events_come_at_irregular_times_with_quiet_stretches():
    gaps, kinds = [], set()
    for seed in range(100):
        events = ego_video_events(random.Random(seed), 20, 1, 2.5)
        gaps += [b.start - a.start for a, b in zip(events, events[1:], strict=False)]
        kinds |= {(e.kind, e.shape, e.color) for e in events}
    mean = np.mean(gaps)
    assert min(gaps) >= MIN_EVENT_GAP and 2.2 < mean < 2.8
    assert np.std(gaps) / mean > 0.45  # a fixed rhythm has 0
    assert np.mean(np.array(gaps) > 5) > 0.04  # quiet stretches of more than 5 s
    assert len(kinds) == 4 * len(SHAPES) * len(COLORS)  # every action on every shape and colour


def test_frame_caption_lists_the_shapes_by_row_then_column():
    events = [
        Event("appear", 0, 1.0, 1.0, "circle", "red", position=(0.7, 0.3)),
        Event("appear", 1, 2.0, 2.0, "square", "blue", position=(0.25, 0.3)),
        Event("move", 1, 3.0, 3.25, "square", "blue", direction="down"),
    ]
    assert frame_caption(events, 0.5) == "nothing"
    assert frame_caption(events, 2.0) == "blue square x1 y1 and red circle x3 y1"
    assert frame_caption(events, 3.5) == "red circle x3 y1 and blue square x1 y2"


def test_narration_annotations_follow_the_ego4d_schema(synthetic):
    data = json.load(open(os.path.join(synthetic["ego4d_annotations"], "all_narrations_redacted.json")))
    narration = next(iter(data["videos"].values()))["narrations"][0]
    assert sorted(narration) == ["_annotation_uid", "text", "time"]
    assert narration["text"].startswith(("#C C sees", "#c C sees"))


def test_generated_streams_round_trip_through_load_dataset(tmp_path, synthetic):
    out = str(tmp_path / "narration")
    prepare_ego4d_narration.main(["--annotation-dir", synthetic["ego4d_annotations"], "--video-root",
                                  synthetic["ego4d_videos"], "--variants", "raw", "refined", "--output-dir", out])  # fmt: skip
    for variant in ("raw", "refined"):
        for row in load_prepared_dataset(out, variant)["train"]:
            total = video_num_frames(os.path.join(synthetic["ego4d_videos"], row["video"]), FPS)
            assert row["num_frames"] == sum(m["num_frames"] for m in row["conversation"])
            assert 0 <= row["start_frame"] < row["stop_frame"] <= total


def test_generated_livechat_and_coin_prepare_without_skips(tmp_path, synthetic):
    _, chat_skips = prepare_ego4d_goalstep_livechat.prepare(prepare_ego4d_goalstep_livechat.parse_args([
        "--annotation-file", synthetic["livechat_json"],
        "--video-root", synthetic["ego4d_videos"], "--output-dir", str(tmp_path / "chat"),
    ]))  # fmt: skip
    _, coin_skips = prepare_coin.prepare(prepare_coin.parse_args([
        "--coin-json", synthetic["coin_json"], "--video-root", synthetic["coin_videos"],
        "--output-dir", str(tmp_path / "coin"),
    ]))  # fmt: skip
    assert (chat_skips.total, coin_skips.total) == (0, 0)
    assert load_prepared_dataset(str(tmp_path / "coin"), "task")["train"].num_rows == 1


class RecordingCommits:
    """Records what ``HfApi.create_commit`` would upload instead of talking to the Hub."""

    def __init__(self):
        self.commits = []

    def __call__(self, api, repo_id, operations, **kwargs):
        self.commits.append((repo_id, kwargs.get("repo_type"), sorted(op.path_in_repo for op in operations)))
        return mock.MagicMock(oid="0" * 40)


def test_push_to_hub_commits_card_and_parquet_files(tmp_path, synthetic):
    import huggingface_hub

    recorder = RecordingCommits()
    with (
        mock.patch.object(
            huggingface_hub.HfApi, "create_repo", return_value="https://huggingface.co/datasets/me/coin"
        ),
        mock.patch.object(huggingface_hub.HfApi, "create_commit", autospec=True, side_effect=recorder),
        mock.patch.object(huggingface_hub.HfApi, "_validate_yaml"),
        mock.patch("huggingface_hub.hf_api.is_xet_available", return_value=False),
    ):
        prepare_coin.main(["--coin-json", synthetic["coin_json"], "--video-root", synthetic["coin_videos"],
                           "--benchmarks", "step", "next", "--output-dir", str(tmp_path / "coin"),
                           "--push-to-hub", "me/coin"])  # fmt: skip
    assert recorder.commits == [
        (
            "me/coin",
            "dataset",
            [
                "README.md",
                "next/test-00000-of-00001.parquet",
                "next/train-00000-of-00001.parquet",
                "step/test-00000-of-00001.parquet",
                "step/train-00000-of-00001.parquet",
            ],
        )
    ]
