"""Prepare scripts on hand-written fixtures in the original schemas: cleaning, snapping, COIN tasks, bad input."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from videollm_mod.data_scripts import prepare_coin, prepare_ego4d_goalstep_livechat, prepare_ego4d_narration
from videollm_mod.data_scripts._hub import load_prepared_dataset
from videollm_mod.data_scripts._stream import AnnotationError, ceil_frame, floor_frame, message, stream_row
from videollm_mod.data_scripts.prepare_coin import NEXT_QUERY, STEP_QUERY, benchmark_samples, clean_task, read_coin
from videollm_mod.data_scripts.prepare_ego4d_goalstep_livechat import livechat_conversation
from videollm_mod.data_scripts.prepare_ego4d_narration import (
    RAW_INSTRUCTION,
    clean_narration,
    narration_conversation,
    refined_narration_streams,
)
from videollm_mod.errors import UserError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
FRAMES = {"video-a": 21, "video-b": 11, "vidTrain001": 21, "vidTest0002": 11}  # frames at 2 fps


@pytest.fixture
def features_dir(tmp_path):
    """Fake pre-computed features: only their frame count matters to the prepare scripts."""
    folder = tmp_path / "features"
    folder.mkdir()
    for uid, t in FRAMES.items():
        save_file({"features": torch.zeros(t, 1, 1)}, str(folder / f"{uid}.safetensors"))
    return str(folder)


def stream(n, t, learn=None):
    return message("stream", "", t, n if learn is None else learn, n)


def test_clean_narration_removes_tags_trims_and_capitalises():
    assert clean_narration("#C c picks a knife .") == "C picks a knife."
    assert clean_narration("#C C dries the knife #unsure") == "C dries the knife."
    assert clean_narration("#O X talks to   C,\n") == "X talks to C."


def test_snapping_keeps_times_already_on_the_grid():
    assert [ceil_frame(t, 10, 0, 99) for t in (0.3, 0.31, 0.0)] == [3, 4, 0]
    assert [floor_frame(t, 10, 0, 99) for t in (0.3, 0.29, 0.7)] == [3, 2, 7]


def test_snapping_clips_to_the_video():
    assert ceil_frame(12.0, 2, 0, 20) == 20
    assert floor_frame(-1.0, 2, 3, 20) == 3


def test_narration_conversation_matches_hand_computed_stream():
    narrations = [
        {"time": 0.3, "text": "A."},
        {"time": 0.9, "text": "B."},
        {"time": 1.1, "text": "C."},
        {"time": 1.2, "text": "D."},  # same frame as C (ceil(2.4) = 3): replaces it
        {"time": 1.2, "text": "D."},  # consecutive duplicate: skipped
        {"time": 2.6, "text": "E."},
    ]
    conversation, start, stop = narration_conversation(narrations, fps=2, total_frames=21, instruction="narrate")
    assert conversation == [
        stream(1, 0.5, learn=0),
        message("user", "narrate", 0.5),
        message("assistant", "A.", 0.5, 1),
        stream(1, 1.0),
        message("assistant", "B.", 1.0, 1),
        stream(1, 1.5),
        message("assistant", "D.", 1.5, 1),
        stream(3, 3.0),
        message("assistant", "E.", 3.0, 1),
    ]
    assert (start, stop) == (1, 7)


def test_narration_conversation_stops_at_the_end_of_the_video():
    narrations = [{"time": 0.0, "text": "A."}, {"time": 5.0, "text": "B."}, {"time": 6.0, "text": "C."}]
    conversation, start, stop = narration_conversation(narrations, fps=2, total_frames=4, instruction="go")
    assert [m["content"] for m in conversation if m["role"] == "assistant"] == ["A.", "B."]
    assert (start, stop) == (0, 4)


class FixedRandom:
    """Stands in for ``random.Random``: three waiting frames (or fewer if the user speaks earlier)."""

    def randint(self, a, b):
        return min(3, b)


def test_livechat_conversation_matches_hand_computed_stream():
    messages = json.load(open(os.path.join(FIXTURES, "goalstep_livechat.json")))[0]["conversation"]
    conversation, start, stop = livechat_conversation(messages, fps=2, total_frames=21, rng=FixedRandom())
    assert conversation == [
        stream(2, 1.0, learn=1),  # waiting frames 1, 2 before the user (floor(2.4) = 2); the last one unlearned
        message("user", "hi", 1.0),
        message("assistant", "a1", 1.0, 1),  # same time as the user: follows it directly
        stream(3, 2.5),
        message("assistant", "a2", 2.5, 1),  # ceil(4.4) = 5; a3 (ceil(4.6) = 5, same frame) is dropped
        stream(2, 3.5),
        message("user", "q", 3.5),  # floor(7.8) = 7
        stream(1, 4.0),
        message("assistant", "a4", 4.0, 1),  # "late" is after the video: the dialogue ends
    ]
    assert (start, stop) == (1, 9)


def test_livechat_conversation_rejects_a_first_assistant_message():
    messages = [{"role": "assistant", "content": "x", "time": 1.0}]
    assert livechat_conversation(messages, fps=2, total_frames=21, rng=FixedRandom()) is None


def test_clean_task_keeps_acronyms():
    assert clean_task("ChangeTVChannel") == "change TV channel"
    assert clean_task("PutOnHair") == "put on hair"
    assert clean_task("InstallSSD") == "install SSD"


def test_coin_step_samples_match_hand_computed_frames_and_answers():
    video = read_coin(os.path.join(FIXTURES, "coin.json"))["vidTrain001"]
    samples = benchmark_samples("step", video, fps=2, total_frames=21)
    assert [(s["start_frame"], s["stop_frame"]) for s in samples] == [(3, 8), (8, 14), (13, 17)]
    assert [s["conversation"][2]["content"] for s in samples] == [
        "Turn on the tv.",
        "Crop and fold paper.",  # rewritten step label
        "Press the button.",
    ]
    assert samples[0]["conversation"][:2] == [message("user", STEP_QUERY, 1.5), stream(5, 3.5)]


def test_coin_procedure_lists_the_next_steps_and_falls_back_to_next_for_one():
    video = read_coin(os.path.join(FIXTURES, "coin.json"))["vidTrain001"]
    first, second = benchmark_samples("procedure", video, fps=2, total_frames=21)
    assert first["conversation"][0]["content"] == (
        "What is the next 2 actions for the video? Format your answer concisely, listing each action on a new line "
        "with a number prefix. No extra text output."
    )
    assert first["conversation"][2]["content"] == "1. Crop and fold paper.\n2. Press the button."
    assert first["label"] == ["crop and fold paper", "press the button"]
    assert second["conversation"][0]["content"] == NEXT_QUERY
    assert second["conversation"][2]["content"] == "Press the button."


def test_coin_taskprocedure_prefixes_the_task():
    video = read_coin(os.path.join(FIXTURES, "coin.json"))["vidTrain001"]
    samples = benchmark_samples("taskprocedure", video, fps=2, total_frames=21)
    assert samples[1]["conversation"][0]["content"] == (
        "To change TV channel, what is the next action for the video? Format your answer concisely. No extra text output."
    )


def test_coin_task_sample_covers_the_annotated_span():
    video = read_coin(os.path.join(FIXTURES, "coin.json"))["vidTrain001"]
    (sample,) = benchmark_samples("task", video, fps=2, total_frames=21)
    assert (sample["start_frame"], sample["stop_frame"]) == (3, 17)
    assert sample["conversation"][2]["content"] == "Change tv channel."
    assert sample["label"] == ["change tv channel"]


def test_prepare_coin_gives_the_expected_counts_per_benchmark_and_split(tmp_path, features_dir):
    out = str(tmp_path / "coin")
    prepare_coin.main(["--coin-json", os.path.join(FIXTURES, "coin.json"), "--features-dir", features_dir,
                       "--output-dir", out])  # fmt: skip
    counts = {
        b: {s: load_prepared_dataset(out, b)[s].num_rows for s in ("train", "test")} for b in prepare_coin.BENCHMARKS
    }
    assert counts == {
        "step": {"train": 3, "test": 2},
        "next": {"train": 2, "test": 1},
        "task": {"train": 1, "test": 1},
        "procedure": {"train": 2, "test": 1},
        "taskprocedure": {"train": 2, "test": 1},
    }


def test_prepare_narration_round_trips_through_load_dataset(tmp_path, features_dir):
    annotations = tmp_path / "annotations"
    shutil.copytree(FIXTURES, annotations)
    out = str(tmp_path / "narration")
    prepare_ego4d_narration.main(["--annotation-dir", str(annotations), "--features-dir", features_dir,
                                  "--benchmarks", "goalstep", "--output-dir", out])  # fmt: skip
    dataset = load_prepared_dataset(out, "raw")
    rows = sorted(dataset["train"], key=lambda r: r["annotation_uid"])
    assert [(r["annotation_uid"], r["start_frame"], r["stop_frame"]) for r in rows] == [
        ("pass-1", 1, 7),
        ("pass-2", 1, 2),
    ]
    assert [m["content"] for m in rows[0]["conversation"] if m["role"] == "assistant"] == [
        "C picks a knife.",
        "C cuts the onion.",
        "C dries the knife.",
        "C opens the drawer.",
    ]
    assert rows[0]["conversation"][1] == message("user", RAW_INSTRUCTION, 0.5)
    assert [r["video_uid"] for r in dataset["val"]] == ["video-b"]


def test_missing_coin_field_names_file_video_and_field(tmp_path):
    data = json.load(open(os.path.join(FIXTURES, "coin.json")))
    del data["database"]["vidTrain001"]["annotation"][1]["label"]
    path = tmp_path / "coin.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"coin\.json, video 'vidTrain001', field 'annotation\[1\]\.label'"):
        read_coin(str(path))


def test_malformed_narration_time_names_file_video_and_field(tmp_path, features_dir):
    annotations = tmp_path / "annotations"
    shutil.copytree(FIXTURES, annotations)
    data = json.load(open(annotations / "all_narrations_redacted.json"))
    data["videos"]["video-a"]["narrations"][2]["time"] = "soon"
    (annotations / "all_narrations_redacted.json").write_text(json.dumps(data))
    with pytest.raises(
        AnnotationError, match=r"video 'video-a', field 'narrations\[2\]\.time'.*expected int or float"
    ):
        prepare_ego4d_narration.main(["--annotation-dir", str(annotations), "--features-dir", features_dir,
                                      "--benchmarks", "goalstep", "--output-dir", str(tmp_path / "out")])  # fmt: skip


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(AnnotationError, match="nope.json: annotation file not found"):
        prepare_ego4d_goalstep_livechat.read_livechat(str(tmp_path / "nope.json"))


def test_missing_video_is_skipped_and_counted(tmp_path, features_dir):
    os.remove(os.path.join(features_dir, "vidTest0002.safetensors"))
    out = str(tmp_path / "coin")
    _, skips = prepare_coin.prepare(prepare_coin.parse_args([
        "--coin-json", os.path.join(FIXTURES, "coin.json"), "--features-dir", features_dir,
        "--benchmarks", "step", "--output-dir", out,
    ]))  # fmt: skip
    assert skips.reasons == {"missing features": 1}
    assert list(load_prepared_dataset(out, "step")) == ["train"]


def test_strict_turns_a_missing_video_into_an_error(tmp_path, features_dir):
    os.remove(os.path.join(features_dir, "vidTest0002.safetensors"))
    with pytest.raises(UserError, match="vidTest0002"):
        prepare_coin.main(["--coin-json", os.path.join(FIXTURES, "coin.json"), "--features-dir", features_dir,
                           "--output-dir", str(tmp_path / "coin"), "--strict"])  # fmt: skip
    assert not os.path.exists(tmp_path / "coin")


def test_existing_output_is_not_replaced_without_overwrite(tmp_path, features_dir):
    out = tmp_path / "coin"
    out.mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_coin.main(["--coin-json", os.path.join(FIXTURES, "coin.json"), "--features-dir", features_dir,
                           "--output-dir", str(out)])  # fmt: skip


# ------------------------------------------------------------------------------------------------ max_num_frames
def test_stream_is_cut_before_the_turn_that_would_pass_max_num_frames():
    """VideoLLM-online's `max_frames_clip`: the conversation stops before the first stream that would take it past
    the cap, and the row loads only the frames kept."""
    narrations = [{"time": t, "text": f"N{t}."} for t in (0.5, 2.0, 3.5, 6.0)]  # frames 1, 4, 7, 12
    conversation, start, _ = narration_conversation(narrations, fps=2, total_frames=21, instruction="go")
    row = stream_row("v", "v.mp4", 2.0, 21, conversation, start, max_num_frames=7)
    assert [m["content"] for m in row["conversation"] if m["role"] == "assistant"] == ["N0.5.", "N2.0.", "N3.5."]
    assert (row["start_frame"], row["stop_frame"], row["num_frames"]) == (1, 8, 7)  # 1 + 3 + 3 frames; +5 > 7
    assert stream_row("v", "v.mp4", 2.0, 21, conversation, start, max_num_frames=100)["stop_frame"] == 13


def test_a_row_left_without_frames_by_the_cap_is_dropped():
    conversation = [message("user", "q", 0.0), stream(10, 4.5), message("assistant", "a", 4.5, 1)]  # a COIN sample
    assert stream_row("v", "v.mp4", 2.0, 21, conversation, 0, max_num_frames=5) is None


def test_prepare_scripts_apply_the_cap(tmp_path, features_dir):
    out = str(tmp_path / "coin")
    prepare_coin.main(["--coin-json", os.path.join(FIXTURES, "coin.json"), "--features-dir", features_dir,
                       "--benchmarks", "step", "--output-dir", out, "--max-num-frames", "5"])  # fmt: skip
    steps = load_prepared_dataset(out, "step")["train"]
    assert steps["num_frames"] == [5, 4]  # the training video's steps have 5, 6 and 4 frames at 2 fps


# ------------------------------------------------------------------------------------------------ refined order
def refined_file(tmp_path, narrations):
    annotations = tmp_path / "annotations"
    shutil.copytree(FIXTURES, annotations)
    for split in ("train", "val"):
        data = {"video-a": {"pass-r": narrations}} if split == "train" else {}
        (annotations / f"refined_narration_stream_{split}.json").write_text(json.dumps(data))
    return annotations


def test_refined_passes_keep_their_file_order(tmp_path):
    narrations = [{"time": 0.3, "text": "You pick a knife."}, {"time": 0.3, "text": "You cut."}]
    path = refined_file(tmp_path, narrations) / "refined_narration_stream_train.json"
    assert [n["text"] for n in refined_narration_streams(str(path))["video-a"]["pass-r"]] == ["You pick a knife.",
                                                                                                "You cut."]  # fmt: skip


def test_refined_pass_whose_times_go_backwards_is_named(tmp_path):
    narrations = [{"time": 1.0, "text": "You pick a knife."}, {"time": 0.5, "text": "You cut."}]
    path = refined_file(tmp_path, narrations) / "refined_narration_stream_train.json"
    with pytest.raises(AnnotationError, match=r"video 'video-a', field 'pass-r\[1\]\.time': time 0\.5 is before"):
        refined_narration_streams(str(path))
