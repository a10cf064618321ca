"""Writing prepared datasets: parquet ``DatasetDict`` per config + dataset card, atomically; ``--push-to-hub``."""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import yaml

from ..errors import UserError
from ..files import atomic_output_folder

logger = logging.getLogger(__name__)


def conversation_features(extra: dict | None = None):
    """Columns shared by every prepared dataset (``_stream.py`` explains the conversation fields) + ``extra`` ones."""
    from datasets import Features, List, Value

    return Features(
        {
            "video_uid": Value("string"),
            **(extra or {}),
            "video": Value("string"),
            "fps": Value("float64"),
            "duration": Value("float64"),
            "start_frame": Value("int64"),
            "stop_frame": Value("int64"),
            "num_frames": Value("int64"),
            "conversation": List(
                {
                    "role": Value("string"),
                    "content": Value("string"),
                    "time": Value("float64"),
                    "learn": Value("int32"),
                    "num_frames": Value("int32"),
                }
            ),
        }
    )


@contextmanager
def without_progress_bars() -> Iterator[None]:
    """datasets' progress bars off inside the block: writing or re-reading a local parquet file takes no time worth a
    bar ("Creating parquet from Arrow format", "Generating train split"); the setting is restored after."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def load_prepared_dataset(name_or_path: str, config: str | None = None, field_name: str = "dataset"):
    """`load_dataset` of a prepared dataset (folder or Hub id); a local folder is always re-read (the datasets cache
    can hand back another folder's rows when file names and sizes match). A missing folder is a `UserError` naming
    `field_name`, not a Hub lookup."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise UserError('reading a prepared dataset needs datasets: pip install "videollm-mod[data]"') from None

    from ..loading import looks_like_repo_id

    if os.path.isdir(name_or_path):
        with without_progress_bars():
            return load_dataset(name_or_path, config, download_mode="force_redownload", verification_mode="no_checks")
    if not looks_like_repo_id(name_or_path):
        raise UserError(
            f"{field_name} {name_or_path}: no such dataset folder (build one with `videollm-mod data ...`, see README)"
        )
    return load_dataset(name_or_path, config)


def rows_to_dataset(rows: list[dict], features):
    """``Dataset`` of ``rows`` with ``features`` (column-wise, so an empty split keeps its schema)."""
    from datasets import Dataset

    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


def columns_doc(extra_rows: str = "") -> str:
    """Markdown table of the columns (shared + ``extra_rows``) and where the system prompt goes."""
    from modeling_videollm_mod.processing_videollm_mod import SYSTEM_PROMPT

    table, note = _COLUMNS_DOC.split("\n\n")
    return table + "\n" + extra_rows + "\n" + note.format(system_prompt=SYSTEM_PROMPT)


_COLUMNS_DOC = """\
| column | type | meaning |
|---|---|---|
| `video_uid` | string | video id in the source annotations |
| `video` | string | video file, relative to the video root given to the script (`{video_uid}.mp4`); features are `{video_uid}.safetensors` |
| `fps` | float | frame rate of the stream grid; frame `i` is at `i / fps` s |
| `duration` | float | `(T - 1) / fps`, `T` = frames of the whole video at `fps` |
| `start_frame`, `stop_frame` | int | frames `[start_frame, stop_frame)` of the video feed the stream messages, in order |
| `num_frames` | int | `stop_frame - start_frame` = sum of the stream messages' `num_frames` |
| `conversation` | list of {`role`, `content`, `time`, `learn`, `num_frames`} | `role` is `user`, `assistant` or `stream`; `time` is the snapped time (s) of the message, or of a stream's last frame; `learn` is 0/1 for text and, for a stream, how many of its first frames carry the stay-silent/speak decision label (VideoLLM-online's `learn=True` is all of them); `num_frames` is a stream's frame count (0 for text) |

The system prompt is not part of `conversation`; the processor prepends it (VideoLLM-online live1+ default:
"{system_prompt}").
"""


class SkipCounter:
    """Counts skipped videos by reason; ``strict`` turns the first skip into an error (nothing is written then)."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.reasons: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def skip(self, reason: str, detail: str) -> None:
        if self.strict:
            raise UserError(f"{reason}: {detail} (run without --strict to skip and count it)")
        self.reasons[reason] += 1
        self.examples.setdefault(reason, detail)
        logger.warning("skipped (%s): %s", reason, detail)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        if not self.reasons:
            return "skipped: none"
        return "skipped: " + ", ".join(f"{n} {r} (e.g. {self.examples[r]})" for r, n in sorted(self.reasons.items()))


def build_card(pretty_name: str, configs: dict[str, list[str]], body: str) -> str:
    """Dataset card text: YAML header with ``configs:`` (one parquet folder per config) + markdown ``body``."""
    header = {
        "pretty_name": pretty_name,
        "task_categories": ["video-text-to-text"],
        "tags": ["video", "streaming", "videollm-online", "videollm-mod"],
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": split, "path": f"{name}/{split}-*"} for split in splits],
                **({"default": True} if i == 0 else {}),
            }
            for i, (name, splits) in enumerate(configs.items())
        ],
    }
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + body


def write_dataset(out_dir: str, configs: dict, card: str, overwrite: bool = False) -> str:
    """Write ``{config: DatasetDict}`` as ``{config}/{split}-00000-of-00001.parquet`` + ``README.md`` under ``out_dir``,
    through a temporary folder renamed into place when complete (``files.atomic_output_folder``)."""
    with atomic_output_folder(out_dir, overwrite=overwrite) as tmp, without_progress_bars():
        for name, dataset_dict in configs.items():
            os.makedirs(os.path.join(tmp, name))
            for split, dataset in dataset_dict.items():
                dataset.to_parquet(os.path.join(tmp, name, f"{split}-00000-of-00001.parquet"))
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)
    return os.path.abspath(out_dir)


def push_to_hub(folder: str, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
    """Upload a written dataset folder to the Hub dataset repo ``repo_id`` (created if needed); returns its URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="dataset",
        commit_message=f"Upload {os.path.basename(folder.rstrip('/'))} with videollm-mod data_scripts",
    )
    return str(url)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments every prepare script shares: output folder, overwrite, strictness, Hub upload, frame cap."""
    from ._stream import MAX_NUM_FRAMES

    parser.add_argument("--output-dir", required=True, help="folder to write (parquet per config + README.md)")
    parser.add_argument(
        "--max-num-frames",
        type=int,
        default=MAX_NUM_FRAMES,
        help="cut a stream before the turn that would take it past this many frames (default: %(default)s, as "
        "VideoLLM-online live1+)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output-dir if it exists")
    parser.add_argument("--strict", action="store_true", help="turn skipped videos (missing/undecodable) into errors")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="also upload to this Hub dataset repo")
    parser.add_argument("--private", action="store_true", default=None, help="create the Hub repo as private")


def finish(args: argparse.Namespace, configs: dict, card: str, counts: list[str], skips: SkipCounter) -> str:
    """Write the dataset folder (``write_dataset``), push it when ``--push-to-hub`` is given, report; returns it."""
    out = write_dataset(args.output_dir, configs, card, overwrite=args.overwrite)
    print(f"wrote {out}: {', '.join(counts)}; {skips.summary()}")
    if args.push_to_hub:
        print(f"pushed to {push_to_hub(out, args.push_to_hub, private=args.private)}")
    return out
