"""The study's cached splits (`study_data.build_split`): a plan's question rate shapes the training live chats only,
and a split made with other settings is refused instead of silently reused."""

import json

import pytest

from videollm_mod.errors import UserError
from videollm_mod.recipes.study_data import DataPlan, build_split


def chats(paths: dict) -> list[dict]:
    with open(paths["livechat_json"]) as f:
        return json.load(f)


def questions(chat: dict) -> int:
    return sum(m["role"] == "user" for m in chat["conversation"]) - 1  # the request is not a question


def events(chat: dict) -> int:
    return len(chat["conversation"]) - 1 - 2 * questions(chat)  # the request, the events, questions and answers


def test_question_rate_shapes_the_training_chats_only_and_a_split_made_otherwise_is_refused(tmp_path):
    small = {"train_videos": 3, "val_videos": 3, "seconds": 12.0, "event_interval": 1.5}
    every = DataPlan(**small, question_rate=1.0)

    # training chats: a question after every event but the last
    train = chats(build_split(every, str(tmp_path / "train"), "train"))
    assert len(train) == 3
    assert [questions(c) for c in train] == [events(c) - 1 for c in train]
    assert sum(questions(c) for c in train) >= 6

    # held-out chats: the world's questions, whatever the plan's rate
    held_out = chats(build_split(every, str(tmp_path / "val-every"), "val"))
    assert held_out == chats(build_split(DataPlan(**small), str(tmp_path / "val-default"), "val"))
    assert sum(questions(c) for c in held_out) < sum(events(c) - 1 for c in held_out)

    # a cached split is reused only for the settings it was made with
    with pytest.raises(UserError, match=r"train: its data was made with data.question_rate=1.0, not 0.5"):
        build_split(DataPlan(**small, question_rate=0.5), str(tmp_path / "train"), "train")
    with pytest.raises(UserError, match=r"val-every: its data was made with data.seconds=12.0, not 10.0"):
        build_split(DataPlan(**(small | {"seconds": 10.0})), str(tmp_path / "val-every"), "val")
    build_split(DataPlan(**small, question_rate=0.5), str(tmp_path / "val-every"), "val")  # held out: no matter


def test_a_training_split_made_without_captions_for_a_tower_brought_along_is_refused_to_a_plan_that_warms_one_up(
    tmp_path,
):
    small = {"train_videos": 2, "val_videos": 2, "seconds": 6.0, "event_interval": 1.5, "frame_captions": 8}
    brought = build_split(DataPlan(**small, tower="runs/some/tower"), str(tmp_path / "train"), "train")
    assert not (tmp_path / "train" / "synthetic" / "frame_captions").exists()  # the tower is warmed up elsewhere

    with pytest.raises(UserError, match=r"train: its data was made with data.frame_captions=0, not 8"):
        build_split(DataPlan(**small), str(tmp_path / "train"), "train")
    assert build_split(DataPlan(**small, tower="runs/other/tower"), str(tmp_path / "train"), "train") == brought
