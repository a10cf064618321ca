"""The timeline of a stream: what the model decided at every frame, as one picture.

The figure plots the per-frame probability of staying silent, P(interval) after the frame's last token (the session's
`decisions`), against video time, with the decision threshold, the replies and the user queries (the session's
`events`) and, when known, the ground-truth replies. `narrate --plot`, the web demo and `evaluate` draw it here:

    save_timeline("timeline.png", session.decisions, session.threshold, session.events, ground_truth=[1.5, 4.0])

matplotlib is imported only when a figure is drawn (`pip install "videollm-mod[plot]"`), and only its object API is
used (`matplotlib.figure.Figure`, no pyplot), so figures can be drawn from several threads and need no closing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .files import write_bytes_atomically

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Artist ids in the figure (`artist.get_gid()`), so that a figure's data can be read back (the tests do).
GIDS = ("p_silent", "threshold", "replies", "queries", "ground_truth")


@dataclass(frozen=True)
class Timeline:
    """What the figure shows; every time in seconds of video time.

    Attributes:
        times, p_silent: one entry per frame whose decision was taken: its time and P(interval) after it.
        threshold: the decision threshold in [0, 1] (the model speaks when P(interval) falls below it, or when the
            interval token is not the most probable one).
        replies, queries: times of the assistant's and the user's turns.
        ground_truth: times of the reference replies (empty when unknown).
        duration: the end of the time axis (default: the last time shown).
    """

    times: tuple[float, ...]
    p_silent: tuple[float, ...]
    threshold: float
    replies: tuple[float, ...] = ()
    queries: tuple[float, ...] = ()
    ground_truth: tuple[float, ...] = ()
    duration: float | None = None

    @classmethod
    def from_stream(
        cls,
        decisions: Iterable[tuple[float, float]],
        threshold: float,
        events: Iterable = (),
        ground_truth: Iterable[float] = (),
        duration: float | None = None,
    ) -> Timeline:
        """From a session's `decisions` ((time, P(interval)) pairs), its threshold and its `events` (`StreamEvent`s
        or `(time, role, text)` tuples), and the ground-truth reply times."""
        decisions, events = list(decisions), list(events)
        return cls(
            times=tuple(float(t) for t, _ in decisions),
            p_silent=tuple(float(p) for _, p in decisions),
            threshold=float(threshold),
            replies=tuple(float(t) for t, role, _ in events if role == "assistant"),
            queries=tuple(float(t) for t, role, _ in events if role == "user"),
            ground_truth=tuple(float(t) for t in ground_truth),
            duration=duration,
        )

    @property
    def end(self) -> float:
        """The end of the time axis."""
        if self.duration is not None:
            return self.duration
        return max((*self.times, *self.replies, *self.queries, *self.ground_truth), default=1.0)


def timeline_figure(timeline: Timeline, title: str | None = None, width: float = 10.0) -> Figure:
    """Draw a timeline: P(stay silent) per frame (line and dots), the threshold (dashed), replies (green lines),
    queries (purple triangles along the top) and ground-truth replies (black ticks along the bottom)."""
    Figure = _matplotlib_figure_class()
    figure = Figure(figsize=(width, 3.2), dpi=100, layout="constrained")
    ax = figure.add_subplot()
    ax.plot(timeline.times, timeline.p_silent, "-o", color="#1f5fa8", markersize=3, linewidth=1.2,
            label="P(stay silent)", gid="p_silent")  # fmt: skip
    ax.axhline(timeline.threshold, color="#d62728", linestyle="--", linewidth=1.2,
               label=f"threshold {timeline.threshold:g}", gid="threshold")  # fmt: skip
    if timeline.replies:
        ax.vlines(timeline.replies, 0, 1, colors="#2ca02c", linewidth=1.4, alpha=0.7, label="reply", gid="replies")
    if timeline.queries:  # markers above the curve: a reply to a query often shares its time
        ax.plot(timeline.queries, [1.0] * len(timeline.queries), linestyle="none", marker="v", markersize=9,
                color="#9467bd", label="query", gid="queries")  # fmt: skip
    if timeline.ground_truth:
        ax.vlines(timeline.ground_truth, -0.06, 0.06, colors="black", linewidth=2.0, label="ground truth",
                  gid="ground_truth")  # fmt: skip
    ax.set_xlim(0, max(timeline.end, 1e-3) * 1.01)
    ax.set_ylim(-0.08, 1.06)
    ax.set_xlabel("video time (s)")
    ax.set_ylabel("P(stay silent)")
    ax.grid(alpha=0.25)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=5, fontsize=8, frameon=False)
    if title:
        ax.set_title(title, loc="right", fontsize=9)
    return figure


def save_timeline(
    path: str | os.PathLike,
    decisions: Iterable[tuple[float, float]],
    threshold: float,
    events: Iterable = (),
    ground_truth: Iterable[float] = (),
    title: str | None = None,
) -> None:
    """Draw the timeline of a stream and write it to `path` (format from its suffix: png, svg, pdf, ...), to a
    temporary name renamed when complete."""
    check_plot_path(path)
    figure = timeline_figure(Timeline.from_stream(decisions, threshold, events, ground_truth), title=title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix[1:].lower())
    write_bytes_atomically(path, buffer.getvalue())


def check_plot_path(path: str | os.PathLike) -> None:
    """Refuse, before any work is done, a figure path whose folder is missing or whose format matplotlib cannot
    write, or any path when matplotlib is not installed."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"{path}: the folder {folder} does not exist")
    formats = _matplotlib_figure_class()().canvas.get_supported_filetypes()
    suffix = Path(path).suffix[1:].lower()
    if suffix not in formats:
        raise UserError(f"{path}: a figure name must end in one of {', '.join('.' + f for f in sorted(formats))}")


def _matplotlib_figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError('drawing a timeline needs matplotlib: pip install "videollm-mod[plot]"') from None
    return Figure
