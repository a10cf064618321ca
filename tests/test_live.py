"""Live sources: pacing by timestamps with the stated drop policy, on a simulated clock (a source faster and slower
than the model), what counts as live, a stream read from a pipe, and `narrate -` on frames piped to standard input."""

import io
import json
import os
import re
import subprocess
import sys
import threading

import pytest
from stream_helpers import encode_video, make_model, random_video

from modeling_videollm_mod import PacedFrames, is_live_source, iter_video_frames


class SimulatedClock:
    """Wall time that moves only when someone waits or works."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def camera(clock: SimulatedClock, fps: float, count: int):
    """A live source: frame i exists from time i / fps on, and reading it waits until then."""
    for i in range(count):
        clock.now = max(clock.now, i / fps)
        yield i / fps, i


def play(paced: PacedFrames, clock: SimulatedClock, seconds_per_frame: float) -> list[float]:
    """The model's loop: take a frame, work on it for `seconds_per_frame`; the times of the frames it got."""
    taken = []
    for time, _ in paced:
        taken.append(time)
        clock.now += seconds_per_frame
    return taken


def test_source_faster_than_the_model_drops_stale_frames_and_keeps_the_lag_below_a_period():
    clock = SimulatedClock()
    paced = PacedFrames(camera(clock, fps=2, count=12), fps=2, clock=clock, sleep=clock.sleep)
    # 1.25 s per frame: at 1.25 s the frame of 0.5 s is stale (the one of 1.0 s is due), so 1.0 s is next, and so on
    assert play(paced, clock, seconds_per_frame=1.25) == [0.0, 1.0, 2.5, 3.5, 5.0]
    assert (paced.delivered, paced.dropped) == (5, 7)
    assert (paced.max_lag, paced.mean_lag) == (0.25, 0.1)
    assert clock.sleeps == []


def test_source_slower_than_the_model_gives_every_frame_on_time():
    clock = SimulatedClock()
    paced = PacedFrames(camera(clock, fps=2, count=8), fps=2, clock=clock, sleep=clock.sleep)
    assert play(paced, clock, seconds_per_frame=0.2) == [i / 2 for i in range(8)]
    assert (paced.dropped, paced.max_lag) == (0, 0.0)


def test_recording_piped_faster_than_real_time_plays_in_real_time():
    clock = SimulatedClock()
    instant = ((i / 2, i) for i in range(6))  # a file piped in: every frame is there at once
    paced = PacedFrames(instant, fps=2, clock=clock, sleep=clock.sleep)
    assert play(paced, clock, seconds_per_frame=0.2) == [i / 2 for i in range(6)]
    assert clock.sleeps == pytest.approx([0.3] * 5)  # each frame waits for its time
    assert paced.dropped == 0


@pytest.mark.parametrize(
    "source, live",
    [("-", True), ("pipe:3", True), ("rtsp://camera.local/stream", True), ("http://host/live.m3u8", True),
     ("/dev/video0", True), ("clip.mp4", False), ("file:///data/clip.mp4", False), (b"\x00", False)],
)  # fmt: skip
def test_live_sources_are_stdin_urls_and_devices(source, live):
    assert is_live_source(source) is live


def mpegts_bytes(frames, fps: int) -> bytes:
    buffer = io.BytesIO()
    encode_video(frames, fps, buffer, container_format="mpegts")
    return buffer.getvalue()


def test_stream_read_from_a_pipe_starts_at_its_first_frame():
    data = mpegts_bytes(random_video(8), fps=4)  # MPEG-TS timestamps start at 1.4 s, not 0
    read, write = os.pipe()

    def feed():
        with os.fdopen(write, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        times = [time for time, _ in iter_video_frames(f"pipe:{read}", fps=2, input_format="mpegts")]
    finally:
        writer.join()
        os.close(read)
    assert times == [0.0, 0.5, 1.0, 1.5]


@pytest.mark.slow
def test_narrate_reads_frames_piped_on_standard_input(processor, tmp_path):
    model = make_model(processor, None)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "out.json"
    argv = ["-", "--format", "mpegts", "--model", str(tmp_path / "model"), "--threshold", "0.5"]
    argv += ["--max-new-tokens", "2", "--json", str(out), "--no-progress"]
    result = subprocess.run(
        [sys.executable, "-m", "videollm_mod.cli", "narrate", *argv],
        input=mpegts_bytes(random_video(8), fps=4),  # 2 s, played in real time
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    fed, dropped = re.match(r"(\d+) frames fed, (\d+) dropped; lag", result.stdout.decode().splitlines()[-1]).groups()
    assert int(fed) + int(dropped) == 4  # the grid of a 2 s stream at 2 fps, each frame fed or dropped
    events = json.loads(out.read_text())
    assert all(e["role"] == "assistant" and (2 * e["time"]).is_integer() for e in events)
