"""Quiet training streams (`study_data.render_quiet`): videos in which nothing happens, narrated with silence, so that
a model learns not to speak over them."""

import os

import numpy as np
import torch

from modeling_videollm_mod import load_video
from videollm_mod.recipes import mod_study
from videollm_mod.recipes.collator import prepare_row
from videollm_mod.recipes.study_data import FPS, DataPlan, quiet_dataset, render_quiet


def test_quiet_streams_are_empty_scenes_and_black_videos_whose_every_frame_learns_silence(tmp_path, processor):
    plan = DataPlan(quiet_videos=4, seconds=3.0)
    folder = render_quiet(plan, str(tmp_path / "quiet"))
    rows = list(quiet_dataset(folder))
    assert [r["video_uid"] for r in rows] == ["quiet-empty-0000", "quiet-black-0001", "quiet-empty-0002",
                                              "quiet-black-0003"]  # fmt: skip
    frames = {r["video_uid"]: load_video(os.path.join(folder, r["video"]), fps=FPS)[0] for r in rows}
    assert all(len(f) == r["num_frames"] == 6 for r, f in zip(rows, frames.values(), strict=True))
    assert frames["quiet-black-0001"].max() == 0
    empty, other_empty = frames["quiet-empty-0000"], frames["quiet-empty-0002"]
    assert empty.mean() > 20 and not np.array_equal(empty[0], empty[-1])  # the world's drifting background
    assert not np.array_equal(empty, other_empty)  # each its own background

    # the instruction, then the stream: every frame but the last labelled "stay silent", nothing else learned
    row = rows[0]
    inputs = prepare_row(processor, row, frame_features=torch.zeros(6, processor.frame_num_tokens, 8))
    learned = inputs["labels"][inputs["labels"] != -100]
    silent = processor.tokenizer.convert_tokens_to_ids(processor.frame_token_interval)
    assert learned.tolist() == [silent] * 5

    # cached: a second call finds the folder and renders nothing
    os.remove(os.path.join(folder, "quiet-black-0003.mp4"))
    assert render_quiet(plan, folder) == folder and not os.path.exists(os.path.join(folder, "quiet-black-0003.mp4"))


def test_training_rows_narrate_the_quiet_streams_beside_the_others_and_drop_their_instruction_by_the_same_share(
    tmp_path,
):
    from datasets import Dataset

    quiet = quiet_dataset(render_quiet(DataPlan(quiet_videos=40, seconds=1.0), str(tmp_path / "quiet")))
    narrated = quiet[0] | {"video_uid": "video-0"}  # a narration stream
    train = {"narration": Dataset.from_list([narrated], features=quiet.features),
             "livechat": Dataset.from_list([narrated], features=quiet.features).select([]), "coin": {},
             "quiet": quiet}  # fmt: skip
    rows = mod_study.training_rows(train, livechat_share=0.0, unprompted_share=0.5)
    quiet_rows = [r for r in rows if r["video_uid"].startswith("quiet-")]
    assert len(rows) == 41 and len(quiet_rows) == 40  # every quiet stream once, beside the narration stream
    unprompted = [[m["role"] for m in r["conversation"]] == ["stream"] for r in quiet_rows]
    assert unprompted == [mod_study.in_share(r["video_uid"], 0.5, "unprompted") for r in quiet_rows]
    assert 10 < sum(unprompted) < 30
