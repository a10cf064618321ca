"""Real-time pacing of frames, the one owner of its two policies, and what counts as a live source.

- `PacedFrames` (live sources: a camera, a network stream, a stream piped on standard input): frames reach the model
  as their timestamps come due and the stale ones are dropped, so a slow model never builds a backlog and always gets
  the latest frame. `narrate` and `stream_generate` use it for live sources.
- `CatchUpBatches` (a recorded video played as if live, e.g. an upload in the web demo): nothing is dropped; frames
  are released as they come due, and a model that falls behind gets every frame already due at once, in one chunk.

    for time, frame in PacedFrames(iter_video_frames("/dev/video0", fps=2.0), fps=2.0): ...
    model.stream_generate("rtsp://camera.local/stream", processor)       # live sources are paced by themselves

What counts as live (`is_live_source`): `-` (standard input, e.g. `ffmpeg -i ... -f nut - | videollm-mod narrate -`),
a URL (`rtsp://`, `rtmp://`, `http(s)://`, `udp://`, `tcp://`, `srt://`, ...) and a device (`/dev/video0`, opened with
FFmpeg's `v4l2`; other platforms' cameras with an explicit input format, e.g. `avfoundation` or `dshow`). PyAV opens
them all (`video_videollm_mod.iter_video_frames`).
"""

import time as _time
from collections.abc import Callable, Iterable, Iterator


def is_live_source(source) -> bool:
    """True for standard input (`-`, `pipe:N`), a URL other than `file://`, or a device under `/dev/`."""
    if not isinstance(source, str):
        return False
    if "://" in source:
        return not source.startswith("file://")
    return source == "-" or source.startswith(("pipe:", "/dev/"))


class PacedFrames:
    """The `(time, frame)` pairs of a live source at the pace of their timestamps, never a backlog.

    The stream starts when its first frame is read: the frame of time `t` is due at wall time `start + t`.
    - A frame read before it is due is held until then (a source faster than real time, such as a recording piped
      in, plays in real time).
    - Drop policy: a frame is dropped when, as it is read, the next frame on the grid (`t + 1 / fps`) is already due.
      So when the model falls behind it always gets the most recent frame, and the lag (how late a frame reaches the
      model, wall time minus due time) stays below one frame period (plus the source's own delay), however slow the
      model: frames are dropped, never queued.

    Args:
        frames: `(time, frame)` pairs on the grid `i / fps` (what `iter_video_frames` yields).
        fps: the grid's frame rate.
        clock, sleep: the wall clock in seconds and how to wait (defaults `time.monotonic`, `time.sleep`; tests pass a
            simulated clock).

    Attributes:
        delivered, dropped (`int`): frames given to the model, frames dropped; max_lag, total_lag (`float`): seconds.
    """

    live = True

    def __init__(
        self,
        frames: Iterable[tuple[float, object]],
        fps: float,
        clock: Callable[[], float] = _time.monotonic,
        sleep: Callable[[float], None] = _time.sleep,
    ):
        self.frames, self.period, self.clock, self.sleep = frames, 1.0 / fps, clock, sleep
        self.delivered = self.dropped = 0
        self.max_lag = self.total_lag = 0.0

    @property
    def mean_lag(self) -> float:
        return self.total_lag / self.delivered if self.delivered else 0.0

    def __iter__(self) -> Iterator[tuple[float, object]]:
        start = None
        for time, frame in self.frames:
            now = self.clock()
            if start is None:
                start = now - time
            if time + self.period <= now - start:
                self.dropped += 1
                continue
            if time > now - start:
                self.sleep(time - (now - start))
                now = self.clock()
            lag = max(0.0, now - start - time)
            self.delivered += 1
            self.max_lag, self.total_lag = max(self.max_lag, lag), self.total_lag + lag
            yield time, frame

    def summary(self) -> str:
        """One line: frames delivered and dropped, lag."""
        return (
            f"{self.delivered} frames fed, {self.dropped} dropped; lag mean {self.mean_lag:.2f} s, "
            f"max {self.max_lag:.2f} s"
        )


class CatchUpBatches:
    """`(time, frame)` pairs released in batches as the video plays, never a frame early and none dropped.

    The clock starts at the first pair. Each batch holds the frames whose time has come (at most `max_batch`), so a
    model that falls behind catches up in chunks; while the next frame is not due, empty batches come every
    `poll_seconds` (the consumer's chance to do something else, e.g. answer a question). With `realtime=False`,
    batches of `max_batch` come at once.

    Args:
        frames: `(time, frame)` pairs in time order.
        clock, sleep: the wall clock in seconds and how to wait (as `PacedFrames`).
    """

    def __init__(
        self,
        frames: Iterable[tuple[float, object]],
        realtime: bool = True,
        max_batch: int = 8,
        poll_seconds: float = 0.05,
        clock: Callable[[], float] = _time.monotonic,
        sleep: Callable[[float], None] = _time.sleep,
    ):
        self.frames, self.realtime, self.max_batch, self.poll = frames, realtime, max_batch, poll_seconds
        self.clock, self.sleep = clock, sleep

    def __iter__(self) -> Iterator[list[tuple[float, object]]]:
        start, batch = self.clock(), []
        for pair in self.frames:
            due = pair[0]
            if batch and (len(batch) == self.max_batch or self.realtime and due > self.clock() - start):
                yield batch
                batch = []
            while self.realtime and (wait := due - (self.clock() - start)) > 0:
                self.sleep(min(wait, self.poll))
                yield []
            batch.append(pair)
        if batch:
            yield batch


__all__ = ["CatchUpBatches", "PacedFrames", "is_live_source"]
