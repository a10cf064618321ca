"""Video sampling of VideoLLM-MoD: any video PyAV opens, resampled to a fixed frame rate (what `ffmpeg -r fps` does).

Frame i of the stream is the last source frame shown at time `i / fps` (times relative to the start of the video
stream), for every `i / fps` before the end of the video stream (at least one frame). The end is the video stream's
own duration from the header, or, where the header has none (Matroska, raw elementary streams), the end of its last
packet; the container's duration is never used, since an audio track may outlast the video. Every count of frames
in this project (`video_num_frames`, the data scripts, the collator, `narrate`) comes from here, so they agree.

    frames, times = load_video("clip.mp4", fps=2.0)          # uint8 (T, H, W, 3), float64 (T,) = i / fps
    for time, frame in iter_video_frames(data_bytes, fps=2.0, start_frame=10, stop_frame=20): ...
    video_num_frames("clip.mkv", fps=2.0)                     # == len(load_video("clip.mkv", 2.0)[0])
"""

import io
import math
import os
from collections.abc import Iterator

import numpy as np

VideoSource = str | os.PathLike | bytes
# A time already on the grid (0.3 s at 10 fps = 3.0000000000000004 frames) stays on it.
_TIME_EPS = 1e-6


class VideoDecodingError(ValueError):
    """A video that is missing, empty, truncated or not a video; the message names the file."""


def _name(source: VideoSource) -> str:
    return "<video bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)


def _reason(error: Exception) -> str:
    """FFmpeg's words for a decoding error, without the errno and file name that `str()` of PyAV's errors adds."""
    return getattr(error, "strerror", None) or str(error)


def _open(source: VideoSource, input_format: str | None = None):
    """The PyAV container of a path, the bytes of a file or a live source (see `live_videollm_mod`), with its first
    video stream checked."""
    import av

    from .live_videollm_mod import is_live_source

    if is_live_source(source):
        source, input_format = ("pipe:0" if source == "-" else source), input_format or _device_format(source)
    elif isinstance(source, (bytes, bytearray)):
        if not source:
            raise VideoDecodingError("<video bytes>: empty (0 bytes)")
        source = io.BytesIO(source)
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise VideoDecodingError(f"{path}: video file not found")
        if os.path.getsize(path) == 0:
            raise VideoDecodingError(f"{path}: video file is empty (0 bytes)")
        source = path
    try:
        container = av.open(source, format=input_format)
    except (av.error.FFmpegError, OSError) as e:
        raise VideoDecodingError(
            f"{_name(source)}: not a readable video (truncated or not a video file: {_reason(e)})"
        ) from None
    if not container.streams.video:
        container.close()
        raise VideoDecodingError(f"{_name(source)}: the file has no video stream")
    return container


def _device_format(source: str) -> str | None:
    """FFmpeg's input format for a Linux camera (`/dev/video*`); other sources are probed."""
    return "v4l2" if source.startswith("/dev/video") else None


class _StreamClock:
    """Times of a video stream's packets and frames in seconds from the stream's start. Streams without timestamps
    (raw elementary streams) are counted at the stream's frame rate."""

    def __init__(self, stream):
        self.time_base = stream.time_base
        self.start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        rate = stream.average_rate or stream.guessed_rate
        self.step = 1 / float(rate) if rate else 1 / 25  # FFmpeg's own guess for a stream with no rate at all
        self.header_end = float(stream.duration * stream.time_base) if stream.duration is not None else None
        self.packet_end = 0.0
        self.packets = 0

    def add_packet(self, packet) -> None:
        """Extend the end of the stream with a demuxed packet (flush packets, of size 0, are ignored)."""
        if not packet.size:
            return
        if packet.pts is not None and self.time_base is not None:
            time = float(packet.pts * self.time_base) - self.start
            length = float(packet.duration * self.time_base) if packet.duration else self.step
        else:  # no timestamps: the packets follow each other, each lasting its duration or one frame period
            if packet.duration and self.time_base is not None:
                self.step = float(packet.duration * self.time_base)
            time, length = self.packets * self.step, self.step
        self.packets += 1
        self.packet_end = max(self.packet_end, time + length)

    def frame_time(self, frame, index: int) -> float:
        return frame.time - self.start if frame.pts is not None else index * self.step

    @property
    def end(self) -> float:
        return self.header_end if self.header_end is not None else self.packet_end


def grid_size(end: float, fps: float) -> int:
    """Frames at `fps` of a video stream lasting `end` seconds: the grid times `i / fps` before `end`, at least 1."""
    return max(1, math.ceil(end * fps - _TIME_EPS))


def video_num_frames(source: VideoSource, fps: float = 2.0) -> int:
    """Frames `iter_video_frames(source, fps)` yields, from the header (or, without a duration there, from the
    packets, read without decoding)."""
    _check_fps(fps)
    container = _open(source)
    try:
        stream = container.streams.video[0]
        clock = _StreamClock(stream)
        if clock.header_end is None:
            for packet in container.demux(stream):
                clock.add_packet(packet)
    except VideoDecodingError:
        raise
    except Exception as e:  # PyAV raises FFmpegError subclasses on corrupt data
        raise VideoDecodingError(f"{_name(source)}: cannot read the video ({_reason(e)})") from None
    finally:
        container.close()
    return grid_size(clock.end, fps)


def iter_video_frames(
    source: VideoSource,
    fps: float = 2.0,
    start_frame: int = 0,
    stop_frame: int | None = None,
    input_format: str | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Decode a video resampled to `fps`, frame by frame (see the module docstring).

    Args:
        source: a video file path, or the bytes of one; or a live source (`live_videollm_mod.is_live_source`: a
            camera device, a URL, `-` for standard input), whose times start at its first frame.
        fps: the target frame rate.
        start_frame, stop_frame: yield only grid frames `[start_frame, stop_frame)` (default: all). Source frames
            that no yielded grid frame shows are decoded but never converted to RGB.
        input_format: FFmpeg's input format (`v4l2`, `avfoundation`, `dshow`, `nut`, ...) where it cannot be probed.
    Yields:
        `(i / fps, uint8 (H, W, 3) RGB)`.
    """
    from .live_videollm_mod import is_live_source

    _check_fps(fps)
    container = _open(source, input_format)
    stop = math.inf if stop_frame is None else stop_frame
    try:
        stream = container.streams.video[0]
        clock = _StreamClock(stream)
        index, decoded, previous, previous_rgb = 0, 0, None, None
        try:
            for packet in container.demux(stream):
                clock.add_packet(packet)
                for frame in packet.decode():
                    if not decoded and is_live_source(source) and frame.pts is not None:
                        clock.start = frame.time  # a live stream's clock (a camera's: the system's) starts with it
                    time = clock.frame_time(frame, decoded)
                    decoded += 1
                    # every grid time before this frame's time shows the previous source frame
                    while previous is not None and index < stop and index / fps < time - _TIME_EPS:
                        if index >= start_frame:
                            if previous_rgb is None:
                                previous_rgb = previous.to_ndarray(format="rgb24")
                            yield index / fps, previous_rgb
                        index += 1
                    if index >= stop:
                        return
                    previous, previous_rgb = frame, None
        except Exception as e:  # PyAV raises FFmpegError subclasses on corrupt data
            raise VideoDecodingError(
                f"{_name(source)}: cannot decode the video (truncated or corrupt: {_reason(e)})"
            ) from None
        if previous is None:
            raise VideoDecodingError(f"{_name(source)}: no decodable video frame (empty or truncated video)")
        # the last source frame stays on screen until the end of the video stream
        for last in range(index, min(stop, grid_size(clock.end, fps))):
            if last >= start_frame:
                if previous_rgb is None:
                    previous_rgb = previous.to_ndarray(format="rgb24")
                yield last / fps, previous_rgb
    finally:
        container.close()


def load_video(
    source: VideoSource, fps: float = 2.0, start_frame: int = 0, stop_frame: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a video (or grid frames `[start_frame, stop_frame)` of it) at `fps`.

    Returns:
        frames: uint8 (T, H, W, 3) RGB; times: float64 (T,) seconds, `i / fps`.
    """
    pairs = list(iter_video_frames(source, fps, start_frame, stop_frame))
    if not pairs:
        raise VideoDecodingError(
            f"{_name(source)}: no frame in [{start_frame}, {stop_frame}) at {fps} fps "
            f"(the video has {video_num_frames(source, fps)})"
        )
    times, frames = zip(*pairs, strict=True)
    return np.stack(frames), np.asarray(times, dtype=np.float64)


def _check_fps(fps: float) -> None:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps={fps!r} must be a positive number")


__all__ = ["VideoDecodingError", "grid_size", "iter_video_frames", "load_video", "video_num_frames"]
