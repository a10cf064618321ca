"""One sampler everywhere: the frame count of a video is the same for `video_num_frames`, for the decoded frames (from
a path or from bytes) and for the data scripts, whatever the container says about its duration."""

from fractions import Fraction

import numpy as np
import pytest

from modeling_videollm_mod import VideoDecodingError, iter_video_frames, load_video, video_num_frames
from videollm_mod.data_scripts._hub import SkipCounter
from videollm_mod.data_scripts._sources import VideoSource

LEVELS = [20 * k for k in range(11)]  # frame k is a flat grey of level 20 * k


def write(path, fmt=None, codec="mpeg4", fps=2, times=None, audio_seconds=None):
    """11 flat grey frames at `fps` (or at `times`, seconds, for a variable frame rate), with an optional audio track
    of `audio_seconds` that outlasts the video."""
    import av

    with av.open(str(path), "w", format=fmt) as container:
        video = container.add_stream(codec, rate=fps)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        if times is not None:
            video.codec_context.time_base = Fraction(1, 1000)
        audio = container.add_stream("aac", rate=8000) if audio_seconds else None
        for k, level in enumerate(LEVELS):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), level, np.uint8), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[k] * 1000), Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        for k in range(int((audio_seconds or 0) * 8000 / 1024)):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            samples.rate, samples.pts = 8000, k * 1024
            container.mux(audio.encode(samples))
        if audio is not None:
            container.mux(audio.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    vfr = [0, 0.3, 0.4, 1.5, 1.6, 1.7, 3.0, 3.1, 3.2, 3.3, 4.9]  # last frame shown until 5.4 s
    return {
        "mp4": write(folder / "constant.mp4"),
        "mkv_long_audio": write(folder / "audio.mkv", audio_seconds=10),  # container says 10.1 s, video 5.5 s
        "raw_h264": write(folder / "raw.h264", fmt="h264", codec="libx264"),  # no duration, no timestamps
        "vfr": write(folder / "vfr.mp4", times=vfr),
    }


@pytest.mark.parametrize("kind", ["mp4", "mkv_long_audio", "raw_h264", "vfr"])
@pytest.mark.parametrize("fps", [2, 3, 10])
def test_every_count_of_frames_agrees(videos, kind, fps):
    path = videos[kind]
    frames, times = load_video(path, fps)
    from_bytes, _ = load_video(path.read_bytes(), fps)
    source = VideoSource(str(path.parent), fps, SkipCounter(), ext=path.suffix)
    assert len(frames) == len(from_bytes) == video_num_frames(path, fps) == source.num_frames(path.stem)
    assert times.tolist() == [i / fps for i in range(len(frames))]


@pytest.mark.parametrize("kind", ["mp4", "mkv_long_audio"])
def test_a_video_lasting_5_5_s_has_11_frames_at_2_fps_showing_each_source_frame(videos, kind):
    frames, _ = load_video(videos[kind], fps=2)
    assert np.abs(frames[:, 0, 0, 0].astype(int) - LEVELS).max() <= 3  # mpeg4 rounding


def test_variable_frame_rate_shows_the_last_frame_at_or_before_each_grid_time(videos):
    frames, _ = load_video(videos["vfr"], fps=2)  # grid 0, 0.5, ..., 5.0 over source frames at `vfr` times
    shown = [round(level / 20) for level in frames[:, 0, 0, 0]]
    assert shown == [0, 2, 2, 3, 5, 5, 6, 9, 9, 9, 10]


def test_a_range_of_frames_equals_the_same_slice_of_the_whole_video(videos):
    whole, _ = load_video(videos["vfr"], fps=10)
    part, times = load_video(videos["vfr"], fps=10, start_frame=13, stop_frame=31)
    assert np.array_equal(part, whole[13:31]) and times.tolist() == [i / 10 for i in range(13, 31)]


def test_frames_of_one_video_are_decoded_once_per_source_frame(videos):
    # consecutive grid frames that show the same source frame are the same array, not copies
    pairs = list(iter_video_frames(videos["vfr"], fps=10))
    assert pairs[5][1] is pairs[6][1]


def test_a_range_past_the_end_is_an_error_naming_the_video(videos):
    with pytest.raises(
        VideoDecodingError, match=r"constant\.mp4: no frame in \[20, 30\) at 2 fps \(the video has 11\)"
    ):
        load_video(videos["mp4"], fps=2, start_frame=20, stop_frame=30)


def test_a_file_that_is_not_a_video_is_named_once_with_ffmpegs_reason_and_no_errno(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video\n" * 200)
    with pytest.raises(VideoDecodingError) as error:
        video_num_frames(bad, fps=2)
    reason = "Invalid data found when processing input"
    assert str(error.value) == f"{bad}: not a readable video (truncated or not a video file: {reason})"
