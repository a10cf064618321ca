"""Where the frames of a video come from: the mp4 (probed with PyAV) or pre-computed features (safetensors)."""

from __future__ import annotations

import argparse
import os

from ._hub import SkipCounter, add_output_arguments


class VideoSource:
    """Frame counts of videos at ``fps``: from ``{features_dir}/{uid}.safetensors`` if given, else ``{video_root}/{uid}{ext}``.

    Missing or undecodable videos are skipped and counted in ``skips`` (``None`` is returned), as the original keeps
    only videos it has frames for.
    """

    def __init__(self, video_root: str | None, fps: float, skips: SkipCounter, features_dir: str | None = None,
                 ext: str = ".mp4"):  # fmt: skip
        if video_root is None and features_dir is None:
            raise ValueError("give a video root or a features folder")
        self.video_root, self.features_dir, self.fps, self.skips, self.ext = video_root, features_dir, fps, skips, ext
        self._cache: dict[str, int | None] = {}

    def relative_path(self, video_uid: str) -> str:
        return f"{video_uid}{self.ext}"

    def num_frames(self, video_uid: str) -> int | None:
        """Frames of the whole video at ``fps``, or ``None`` (skipped and counted) if it is missing or broken."""
        if video_uid not in self._cache:
            self._cache[video_uid] = self._count(video_uid)
        return self._cache[video_uid]

    def _count(self, video_uid: str) -> int | None:
        if self.features_dir is not None:
            path = os.path.join(self.features_dir, f"{video_uid}.safetensors")
            if not os.path.isfile(path):
                self.skips.skip("missing features", f"video {video_uid!r}: {path}")
                return None
            from safetensors import safe_open

            try:
                with safe_open(path, framework="np") as f:
                    return int(f.get_slice("features").get_shape()[0])
            except Exception as e:  # corrupt header or no "features" tensor
                self.skips.skip("unreadable features", f"video {video_uid!r}: {path} ({e})")
                return None
        from modeling_videollm_mod import VideoDecodingError, video_num_frames  # torch: not for --help

        path = os.path.join(self.video_root, self.relative_path(video_uid))
        if not os.path.isfile(path):
            self.skips.skip("missing video", f"video {video_uid!r}: {path}")
            return None
        try:
            return video_num_frames(path, self.fps)
        except VideoDecodingError as e:
            self.skips.skip("undecodable video", f"video {video_uid!r}: {e}")
            return None


def add_source_arguments(parser: argparse.ArgumentParser, id_name: str = "video_uid") -> None:
    """Where every prepare script reads frame counts from: videos, or pre-computed features."""
    parser.add_argument("--video-root", default=None, help=f"folder of {{{id_name}}}.mp4 (frame counts by PyAV)")
    parser.add_argument(
        "--features-dir", default=None, help=f"folder of {{{id_name}}}.safetensors (instead of videos)"
    )


def video_source_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> VideoSource:
    """The `VideoSource` of parsed `add_source_arguments` + `--fps` + `--strict`; a usage error if neither is given."""
    if args.video_root is None and args.features_dir is None:
        parser.error("give --video-root or --features-dir")
    return VideoSource(args.video_root, args.fps, SkipCounter(args.strict), features_dir=args.features_dir)


def prepare_parser(name: str, doc: str, id_name: str = "video_uid") -> argparse.ArgumentParser:
    """The parser of a prepare script with what they all share (frame source, `--fps`, output, Hub, frame cap); the
    script adds its own arguments, then calls `parse_prepare_args`."""
    parser = argparse.ArgumentParser(
        prog=f"videollm-mod data {name}",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    add_source_arguments(parser, id_name)
    parser.add_argument("--fps", type=float, default=2.0, help="frame rate of the streams (default: %(default)s)")
    add_output_arguments(parser)
    return parser


def parse_prepare_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parsed arguments, with `args.source` the `VideoSource` they describe."""
    args = parser.parse_args(argv)
    args.source = video_source_from_args(parser, args)
    return args
