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


def test_json_into_a_missing_folder_is_one_line_before_the_video_runs(clip, tmp_path, capsys):
    out = tmp_path / "nope" / "out.json"
    assert cli.main(["narrate", str(clip), "--json", str(out)]) == 1
    assert capsys.readouterr().err == f"videollm-mod narrate: --json {out}: the folder {out.parent} does not exist\n"


def test_a_negative_query_time_is_one_line(clip, capsys):
    assert cli.main(["narrate", str(clip), "--query", "hi?", "--query-time", "-3", "--no-progress"]) == 1
    assert capsys.readouterr().err == "videollm-mod narrate: --query-time -3: a time must be >= 0 seconds\n"


def test_a_query_time_after_the_video_is_refused(clip, capsys):
    assert cli.main(["narrate", str(clip), "--query", "hi?", "--query-time", "4", "--no-progress"]) == 1
    last_line = capsys.readouterr().err.splitlines()[-1]  # checked once the model (its frame rate) is loaded
    assert last_line == "videollm-mod narrate: --query-time [4.0]: after the last frame of a video (t=2.50s)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threshold", "2"], "--threshold 2.0 must lie in [0, 1]"),
        (["--fps", "0"], "--fps 0.0 must be a positive number"),
        (["--chunk-size", "x"], "--chunk-size x: give auto or a number >= 1"),
        (["--max-new-tokens", "0"], "--max-new-tokens 0 must be >= 1"),
        (["--query-time", "1"], "1 --query-time values for 0 --query"),
    ],
)
def test_a_bad_option_value_is_one_line_naming_it(clip, capsys, argv, message):
    assert cli.main(["narrate", str(clip), *argv]) == 1
    assert capsys.readouterr().err == f"videollm-mod narrate: {message}\n"


def test_help_shows_the_defaults(capsys):
    assert cli.main(["narrate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert "(default: 0.725, VideoLLM-online's demo)" in text  # --threshold
    assert "(default: the model's own, from its processor; 2 for the demo)" in text  # --fps
    assert "longest reply in tokens (default: 128)" in text


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


def test_a_plot_in_a_missing_folder_is_refused_before_the_demo_video_is_rendered(tmp_path, capsys):
    plot = tmp_path / "nope" / "timeline.png"
    assert cli.main(["narrate", "--demo", "--plot", str(plot)]) == 1
    assert capsys.readouterr() == ("", f"videollm-mod narrate: {plot}: the folder {plot.parent} does not exist\n")
