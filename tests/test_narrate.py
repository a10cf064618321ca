"""`videollm-mod narrate` as a user meets it: what it checks before the model runs, and what it prints."""

import numpy as np
import pytest

from videollm_mod import cli
from videollm_mod.data_scripts._video import write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 3 s video at 2 fps (6 frames at the default 2 fps)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(str(path), np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), fps=2)
    return path


def test_json_into_a_missing_folder_is_refused_before_the_video_runs(clip, tmp_path, capsys):
    assert cli.main(["narrate", str(clip), "--json", str(tmp_path / "nope" / "out.json")]) == 2
    assert f"the folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(("time", "status", "message"), [("-1", 2, "times must be >= 0"), ("4", 1, "after the last")])
def test_query_times_outside_the_video_are_refused(clip, capsys, time, status, message):
    assert cli.main(["narrate", str(clip), "--query", "hi?", "--query-time", time, "--no-progress"]) == status
    assert message in capsys.readouterr().err


def test_a_one_frame_video_reports_its_frame(tmp_path, capsys):
    path = tmp_path / "one.mp4"
    write_video(str(path), np.zeros((1, 32, 32, 3), dtype=np.uint8), fps=2)
    assert cli.main(["narrate", str(path), "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("1 frames at 2 fps (0.0 s), ")


def test_a_query_is_answered_after_it_is_asked(clip, tmp_path, capsys):
    import json

    out = tmp_path / "out.json"
    argv = ["narrate", str(clip), "--query", "What do you see?", "--query-time", "1.2", "--json", str(out)]
    assert cli.main([*argv, "--no-progress", "--max-new-tokens", "4"]) == 0
    events = json.loads(out.read_text())
    question = next(i for i, e in enumerate(events) if e["role"] == "user")
    assert events[question]["time"] == 1.2 and events[question + 1]["role"] == "assistant"
    assert events[question + 1]["time"] >= 1.2
