"""Video I/O with PyAV: probe, decode at a target fps, encode mp4 (datasets.Video needs torchcodec, so we use PyAV)."""

from __future__ import annotations

import io
import math
import os
from fractions import Fraction

import numpy as np

_EPS = 1e-6


class VideoDecodeError(RuntimeError):
    """A video that is missing or cannot be decoded; data scripts skip and count these (``--strict`` raises)."""


def _open(source: str | bytes):
    import av

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif not os.path.isfile(source):
        raise VideoDecodeError(f"{source}: video file not found")
    try:
        container = av.open(source)
    except (av.error.FFmpegError, OSError) as e:
        raise VideoDecodeError(f"{_name(source)}: cannot open video ({e})") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{_name(source)}: no video stream")
    return container


def _name(source) -> str:
    return source if isinstance(source, str) else "<bytes>"


def _stream_duration(container) -> float | None:
    """Seconds covered by the video stream (last frame's end), from the header when it has it."""
    stream = container.streams.video[0]
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _grid_size(duration: float, fps: float) -> int:
    """Number of fps-grid times ``i / fps`` strictly before ``duration`` (what ``ffmpeg -r fps`` would output)."""
    return max(1, math.ceil(duration * fps - _EPS))


def probe_num_frames(source: str | bytes, fps: float) -> int:
    """Frames the video has when resampled to ``fps`` (reads the header; decodes only if the header lacks a duration)."""
    container = _open(source)
    try:
        duration = _stream_duration(container)
        if duration is None:
            duration = _decoded_duration(container)
    except Exception as e:  # a corrupt header or stream: PyAV raises FFmpegError subclasses
        raise VideoDecodeError(f"{_name(source)}: cannot read video ({e})") from None
    finally:
        container.close()
    return _grid_size(duration, fps)


def _decoded_duration(container) -> float:
    last, step = None, 0.0
    for frame in container.decode(video=0):
        last = frame.time
    stream = container.streams.video[0]
    if stream.average_rate:
        step = 1 / float(stream.average_rate)
    if last is None:
        raise VideoDecodeError("no decodable frames")
    return last + step


def decode_frames(source: str | bytes, fps: float, start_frame: int = 0, stop_frame: int | None = None) -> np.ndarray:
    """Decode ``source`` resampled to ``fps``: frame ``i`` is the last source frame shown at time ``i / fps``.

    Args:
        source: mp4 path or bytes.
        fps: target frame rate.
        start_frame, stop_frame: the grid frames to return, ``[start_frame, stop_frame)`` (default: all).
    Returns:
        ``uint8`` array ``[T, H, W, 3]`` (RGB).
    Raises:
        VideoDecodeError: missing file, unreadable container, or no decodable frame.
    """
    container = _open(source)
    out: list[np.ndarray] = []
    try:
        duration = _stream_duration(container)
        stop = stop_frame if stop_frame is not None else (None if duration is None else _grid_size(duration, fps))
        index, previous, previous_array = start_frame, None, None
        for frame in container.decode(video=0):
            # every grid time before this frame's timestamp shows the previous source frame
            while previous is not None and (stop is None or index < stop) and index / fps < frame.time - _EPS:
                if previous_array is None:  # convert lazily: skipped source frames are never converted
                    previous_array = previous.to_ndarray(format="rgb24")
                out.append(previous_array)
                index += 1
            if stop is not None and index >= stop:
                break
            previous, previous_array = frame, None
        if previous is None:
            raise VideoDecodeError(f"{_name(source)}: no decodable frames")
        # the last source frame stays on screen until the end of the video
        end = stop if stop is not None else index + 1
        if index < end and previous_array is None:
            previous_array = previous.to_ndarray(format="rgb24")
        out.extend([previous_array] * (end - index))
    except VideoDecodeError:
        raise
    except Exception as e:  # PyAV raises FFmpegError subclasses for corrupt streams
        raise VideoDecodeError(f"{_name(source)}: cannot decode video ({e})") from None
    finally:
        container.close()
    return np.stack(out)


def write_video(path: str, frames: np.ndarray, fps: float, codec: str = "mpeg4", bit_rate: int = 4_000_000) -> None:
    """Encode ``uint8 [T, H, W, 3]`` RGB frames as an mp4 at ``fps``; written to a temporary name, then renamed."""
    import av

    tmp = f"{path}.tmp-{os.getpid()}.mp4"
    with av.open(tmp, mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bit_rate
        stream.thread_count = 1  # deterministic output and modest CPU use
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
