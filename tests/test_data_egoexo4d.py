"""Ego-Exo4D: prepare_egoexo4d on hand-written v2 fixtures (exact rows), bad input, and the synthetic takes."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from videollm_mod.data_scripts import prepare_egoexo4d
from videollm_mod.data_scripts._stream import AnnotationError, message
from videollm_mod.data_scripts.prepare_coin import STEP_QUERY
from videollm_mod.data_scripts.prepare_ego4d_narration import RAW_INSTRUCTION
from videollm_mod.data_scripts.synthetic_egoexo4d import generate_egoexo4d, keystep_vocabulary
from videollm_mod.errors import UserError
from videollm_mod.recipes.sft import load_prepared_dataset  # re-reads the folder (no stale datasets cache)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "data", "egoexo4d")
FRAMES = {"take-a": 21, "take-b": 11, "take-c": 5}  # frames at 2 fps
VIDEO_A = "takes/cmu_bike01_2/frame_aligned_videos/aria01_214-1.mp4"
VIDEO_B = "takes/georgiatech_covid_07_6/frame_aligned_videos/aria02_214-1.mp4"


@pytest.fixture
def features_dir(tmp_path):
    """Fake pre-computed features named by take_uid: only their frame count matters to the prepare script."""
    folder = tmp_path / "features"
    folder.mkdir()
    for take_uid, t in FRAMES.items():
        save_file({"features": torch.zeros(t, 1, 1)}, str(folder / f"{take_uid}.safetensors"))
    return str(folder)


def prepare(tmp_path, features_dir, *extra, root=FIXTURE):
    out = str(tmp_path / "egoexo4d")
    args = prepare_egoexo4d.parse_args(["--egoexo-root", root, "--features-dir", features_dir, "--output-dir", out,
                                        *extra])  # fmt: skip
    _, skips = prepare_egoexo4d.prepare(args)
    return out, skips


def stream(n, t, learn=None):
    return message("stream", "", t, n if learn is None else learn, n)


def row(take_uid, take_name, video, total, start, conversation, **extra):
    num_frames = sum(m["num_frames"] for m in conversation)
    return {"video_uid": take_uid, "take_name": take_name, **extra, "video": video, "fps": 2.0,
            "duration": (total - 1) / 2, "start_frame": start, "stop_frame": start + num_frames,
            "num_frames": num_frames, "conversation": conversation}  # fmt: skip


def test_narration_rows_equal_the_hand_computed_streams(tmp_path, features_dir):
    out, _ = prepare(tmp_path, features_dir, "--configs", "narration")
    dataset = load_prepared_dataset(out, "narration")
    # ann-1: sorted by time; the invisible "The man X ..." and the one-word "C" dropped; "C turns the wheel." (5.4 ->
    # frame 6) replaces "C tightens the screw." (5.2 -> frame 6); ann-2 is rejected; take-c / take-x are skipped
    assert list(dataset["train"]) == [
        row("take-a", "cmu_bike01_2", VIDEO_A, 21, 1, [
            stream(1, 0.5, learn=0),
            message("user", RAW_INSTRUCTION, 0.5),
            message("assistant", "C picks up the wrench.", 0.5, 1),
            stream(2, 1.5),
            message("assistant", "C looks at the wheel.", 1.5, 1),
            stream(3, 3.0),
            message("assistant", "C turns the wheel.", 3.0, 1),
            stream(3, 4.5),
            message("assistant", "C puts down the wrench.", 4.5, 1),
        ], annotation_uid="ann-1"),
    ]  # fmt: skip
    assert list(dataset["val"]) == [
        row("take-b", "georgiatech_covid_07_6", VIDEO_B, 11, 0, [
            stream(1, 0.0, learn=0),
            message("user", RAW_INSTRUCTION, 0.0),
            message("assistant", "C opens the box.", 0.0, 1),
            stream(3, 1.5),
            message("assistant", "C reads the leaflet.", 1.5, 1),
        ], annotation_uid="ann-3"),
    ]  # fmt: skip


def keystep_row(take_uid, take_name, video, total, scenario, first, last, answer, step_unique_id):
    conversation = [
        message("user", STEP_QUERY, first / 2),
        stream(last - first + 1, last / 2),
        message("assistant", answer, last / 2, 1),
    ]
    return row(take_uid, take_name, video, total, first, conversation, scenario=scenario,
               step_unique_id=step_unique_id, label=[answer.rstrip(".").lower()])  # fmt: skip


def test_keystep_rows_equal_the_hand_computed_segments(tmp_path, features_dir):
    out, _ = prepare(tmp_path, features_dir, "--configs", "keystep")
    dataset = load_prepared_dataset(out, "keystep")
    # segments [ceil(2 s), ceil(2 e)] clipped to the video: 0.85598-3.2 s -> 2-7, 3.2-5.0 -> 7-10, 9-12 -> 18-20
    assert list(dataset["train"]) == [
        keystep_row("take-a", "cmu_bike01_2", VIDEO_A, 21, "Remove a Wheel", 2, 7, "Loosen the nuts.", 843),
        keystep_row("take-a", "cmu_bike01_2", VIDEO_A, 21, "Remove a Wheel", 7, 10, "Remove the wheel.", 824),
        keystep_row("take-a", "cmu_bike01_2", VIDEO_A, 21, "Remove a Wheel", 18, 20, "Check the tire.", 900),
    ]
    assert list(dataset["val"]) == [
        keystep_row("take-b", "georgiatech_covid_07_6", VIDEO_B, 11, "Covid-19 Rapid Antigen Test", 1, 4,
                    "Wrap or Unwrap Covid- 19 Rapid Antigen Test Pack.", 818),
    ]  # fmt: skip


def test_takes_without_ego_video_or_metadata_are_skipped_and_counted(tmp_path, features_dir):
    _, skips = prepare(tmp_path, features_dir)
    assert skips.reasons == {"no ego video": 1, "take not in takes.json": 1}


def test_strict_refuses_a_take_without_ego_video_and_writes_nothing(tmp_path, features_dir):
    with pytest.raises(UserError, match="no ego video: take 'take-c'"):
        prepare(tmp_path, features_dir, "--strict")
    assert not os.path.exists(tmp_path / "egoexo4d")


def test_missing_features_are_skipped_and_counted(tmp_path, features_dir):
    os.remove(os.path.join(features_dir, "take-b.safetensors"))
    out, skips = prepare(tmp_path, features_dir, "--configs", "keystep")
    assert skips.reasons == {"missing features": 1, "take not in takes.json": 1}
    assert list(load_prepared_dataset(out, "keystep")) == ["train"]


def test_ego_view_is_the_aria_rgb_stream_among_several_ego_cameras():
    takes = prepare_egoexo4d.read_takes(os.path.join(FIXTURE, "takes.json"))
    assert takes == {
        "take-a": {"take_name": "cmu_bike01_2", "video": VIDEO_A},
        "take-b": {"take_name": "georgiatech_covid_07_6", "video": VIDEO_B},  # gp01 is ego too, aria02 wins
        "take-c": {"take_name": "sfu_cooking_003_1", "video": None},  # its ego camera has no frame-aligned video
    }


def test_downscaled_videos_are_the_448_copies():
    takes = prepare_egoexo4d.read_takes(os.path.join(FIXTURE, "takes.json"), downscaled=True)
    assert takes["take-a"]["video"] == "takes/cmu_bike01_2/frame_aligned_videos/downscaled/448/aria01_214-1.mp4"


def test_keep_invisible_keeps_descriptions_not_visible_from_the_ego_view():
    path = os.path.join(FIXTURE, "annotations", "atomic_descriptions_train.json")
    kept = prepare_egoexo4d.read_atomic_descriptions(path, keep_invisible=True)["take-a"]["ann-1"]
    assert [d["text"] for d in kept] == ["C picks up the wrench.", "C looks at the wheel.", "The man X walks towards C.",
                                         "C tightens the screw.", "C turns the wheel.", "C puts down the wrench."]  # fmt: skip


def test_label_mapping_keeps_the_benchmark_keysteps_only(tmp_path, features_dir):
    mapping = os.path.join(FIXTURE, "annotations", "keystep_benchmark", "label_mapping.csv")
    out, _ = prepare(tmp_path, features_dir, "--configs", "keystep", "--label-mapping", mapping)
    dataset = load_prepared_dataset(out, "keystep")
    assert [[r["step_unique_id"] for r in dataset[split]] for split in ("train", "val")] == [[843], [818]]


def test_card_lists_the_keystep_taxonomy_by_scenario_and_parent(tmp_path, features_dir):
    out, _ = prepare(tmp_path, features_dir, "--configs", "keystep")
    card = open(os.path.join(out, "README.md")).read()
    assert (
        "- **Remove a Wheel**\n"
        "  - Preparation: Loosen the nuts (843); Remove the wheel (824)\n"
        "  - Remove a Wheel: Check the tire (900)\n"
    ) in card
    assert (
        "- **Covid-19 Rapid Antigen Test**\n"
        "  - Covid-19 Rapid Antigen Test: Wrap or Unwrap Covid- 19 Rapid Antigen Test Pack (818)\n" in card
    )


def broken_fixture(tmp_path, name, edit):
    root = tmp_path / "egoexo4d-root"
    shutil.copytree(FIXTURE, root)
    path = root / "annotations" / name if name != "takes.json" else root / name
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return str(root)


def test_malformed_keystep_time_names_file_take_and_field(tmp_path, features_dir):
    root = broken_fixture(tmp_path, "keystep_train.json",
                          lambda d: d["annotations"]["take-a"]["segments"][1].update(end_time="later"))  # fmt: skip
    with pytest.raises(
        AnnotationError, match=r"keystep_train\.json, video 'take-a', field 'segments\[1\]\.end_time': expected int or"
    ):
        prepare(tmp_path, features_dir, root=root)


def test_malformed_ego_visible_flag_names_file_take_and_field(tmp_path, features_dir):
    root = broken_fixture(tmp_path, "atomic_descriptions_val.json",
                          lambda d: d["annotations"]["take-b"][0]["descriptions"][1].update(ego_visible="maybe"))  # fmt: skip
    with pytest.raises(
        AnnotationError,
        match=r"atomic_descriptions_val\.json, video 'take-b', field '\[0\]\.descriptions\[1\]\.ego_vis",
    ):
        prepare(tmp_path, features_dir, root=root)


def test_take_without_capture_cameras_names_takes_json_and_the_field(tmp_path, features_dir):
    root = broken_fixture(tmp_path, "takes.json", lambda d: d[1]["capture"].pop("cameras"))
    with pytest.raises(AnnotationError, match=r"takes\.json, video 'take-b', field 'capture\.cameras': missing field"):
        prepare(tmp_path, features_dir, root=root)


# ----------------------------------------------------------------------------------------------------------------
# synthetic takes


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate_egoexo4d(
        str(tmp_path_factory.mktemp("egoexo") / "data"), num_takes=3, fps=4, resolution=32, seed=1
    )


def test_synthetic_takes_prepare_from_their_videos_without_skips(tmp_path, synthetic):
    args = prepare_egoexo4d.parse_args(["--egoexo-root", synthetic["root"], "--video-root", synthetic["root"],
                                        "--output-dir", str(tmp_path / "out")])  # fmt: skip
    out, skips = prepare_egoexo4d.prepare(args)
    assert skips.total == 0
    narration = load_prepared_dataset(out, "narration")
    assert narration["train"].num_rows + narration["val"].num_rows == 3  # one annotation per take


def test_synthetic_keysteps_are_the_steps_of_each_takes_task(synthetic):
    takes, _ = prepare_egoexo4d.read_keysteps(os.path.join(synthetic["annotations"], "keystep_train.json"))
    vocabulary = keystep_vocabulary()
    assert [[s["text"] for s in t["segments"]] for t in takes.values()] == [
        vocabulary[t["scenario"]] for t in takes.values()
    ]
    assert len(takes) == 2


def test_synthetic_invisible_description_is_left_out_of_the_stream(synthetic):
    path = os.path.join(synthetic["annotations"], "atomic_descriptions_train.json")
    raw = json.load(open(path))["annotations"]
    kept = prepare_egoexo4d.read_atomic_descriptions(path)
    for take_uid, annotations in raw.items():
        texts = [d["text"] for d in annotations[0]["descriptions"] if d["ego_visible"]]
        assert [d["text"] for d in kept[take_uid][annotations[0]["annotation_uid"]]] == texts
        assert len(texts) == len(annotations[0]["descriptions"]) - 1
