"""The timeline figure of a stream: its data (P(stay silent) per frame, the threshold, replies, queries, ground truth)
read back from the figure's artists; `narrate --plot` draws the session of the stream it narrated."""

import pytest

from modeling_videollm_mod import StreamEvent
from videollm_mod.errors import UserError
from videollm_mod.timeline import Timeline, save_timeline, timeline_figure

pytest.importorskip("matplotlib", reason="the timeline figure needs matplotlib (pip install 'videollm-mod[plot]')")

DECISIONS = [(0.0, 0.99), (0.5, 0.91), (1.0, 0.42), (1.5, 0.97), (2.0, 0.70), (2.5, 0.88)]
EVENTS = [
    StreamEvent(1.0, "assistant", "C sees a red circle appear."),
    StreamEvent(1.5, "user", "What is it?"),
    StreamEvent(1.5, "assistant", "A red circle."),
    StreamEvent(2.0, "assistant", "C sees the red circle move left."),
]
GROUND_TRUTH = [0.9, 2.1]


def artists(figure) -> dict:
    """The figure's artists by gid (`videollm_mod.timeline.GIDS`)."""
    (ax,) = figure.axes
    return {a.get_gid(): a for a in ax.get_children() if a.get_gid()}


@pytest.fixture
def drawn():
    return artists(timeline_figure(Timeline.from_stream(DECISIONS, 0.725, EVENTS, GROUND_TRUTH)))


def vline_times(collection) -> list[float]:
    return [float(segment[0][0]) for segment in collection.get_segments()]


def test_curve_is_p_silent_of_every_frame(drawn):
    assert drawn["p_silent"].get_xydata().tolist() == [list(d) for d in DECISIONS]


def test_threshold_line_lies_at_the_threshold(drawn):
    assert list(drawn["threshold"].get_ydata()) == [0.725, 0.725]


def test_replies_are_marked_at_the_assistant_turns(drawn):
    assert vline_times(drawn["replies"]) == [1.0, 1.5, 2.0]


def test_queries_are_marked_at_the_user_turns(drawn):
    assert list(drawn["queries"].get_xdata()) == [1.5]


def test_ground_truth_is_marked_at_its_times(drawn):
    assert vline_times(drawn["ground_truth"]) == GROUND_TRUTH


def test_marks_without_events_are_left_out():
    assert set(artists(timeline_figure(Timeline.from_stream(DECISIONS, 0.5)))) == {"p_silent", "threshold"}


def test_time_axis_spans_the_given_duration():
    (ax,) = timeline_figure(Timeline.from_stream(DECISIONS, 0.5, duration=20.0)).axes
    assert ax.get_xlim()[1] == pytest.approx(20.0 * 1.01)


def test_save_writes_a_png_atomically(tmp_path):
    path = tmp_path / "timeline.png"
    save_timeline(path, DECISIONS, 0.725, EVENTS, GROUND_TRUTH)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["timeline.png"]


def test_save_refuses_an_unknown_format_naming_the_path(tmp_path):
    with pytest.raises(UserError, match=r"timeline\.txt: a figure name must end in one of"):
        save_timeline(tmp_path / "timeline.txt", DECISIONS, 0.725)


def test_narrate_plot_draws_the_narrated_session(tmp_path, monkeypatch):
    """`narrate --plot` draws the decisions and events of the session that narrated: one point per frame."""
    import glob
    import json

    from videollm_mod import cli, timeline
    from videollm_mod.data_scripts import synthetic

    paths = synthetic.generate_dataset(
        str(tmp_path / "syn"), num_videos=1, seconds=6, fps=4.0, resolution=32, seed=777, num_coin_videos=0
    )
    video = glob.glob(f"{paths['ego4d_videos']}/*.mp4")[0]
    drawn, draw = {}, timeline.save_timeline
    monkeypatch.setattr(
        timeline, "save_timeline", lambda path, *args, **kwargs: draw(path, *drawn.setdefault("args", args))
    )
    plot, out = tmp_path / "timeline.png", tmp_path / "conversation.json"
    assert cli.main(["narrate", video, "--plot", str(plot), "--json", str(out), "--no-progress"]) == 0
    decisions, threshold, events = drawn["args"]
    assert [t for t, _ in decisions] == [i / 2 for i in range(12)]
    assert threshold == 0.725
    assert [e._asdict() for e in events] == json.loads(out.read_text())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_narrate_plot_over_several_videos_draws_one_numbered_figure_each(tmp_path):
    import glob

    from videollm_mod import cli
    from videollm_mod.data_scripts import synthetic

    paths = synthetic.generate_dataset(
        str(tmp_path / "syn"), num_videos=2, seconds=3, fps=4.0, resolution=32, seed=778, num_coin_videos=0,
        val_fraction=0.0, test_fraction=0.0,
    )  # fmt: skip
    videos = sorted(glob.glob(f"{paths['ego4d_videos']}/*.mp4"))
    assert len(videos) == 2
    figures = tmp_path / "figures"
    figures.mkdir()
    assert cli.main(["narrate", *videos, "--plot", str(figures / "timeline.png"), "--no-progress"]) == 0
    assert sorted(p.name for p in figures.iterdir()) == ["timeline-1.png", "timeline-2.png"]
