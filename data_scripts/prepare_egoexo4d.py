"""Ego-Exo4D ego-view streams (atomic-description narration, keystep recognition) -> parquet DatasetDict + card.

Follows the Ego-Exo4D **v2** release as its documentation describes it (docs.ego-exo4d-data.org, source
EGO4D/Ego-Exo4D-docs at aa763b1: v2 of 2024-03-25, keystep benchmark files of 2024-09-01):

- `takes.json` (`--parts metadata`): a list of takes `{take_uid, take_name, root_dir: "takes/<take_name>", capture:
  {cameras: [{cam_id, is_ego}]}, frame_aligned_videos: {cam_id: {stream_name: {relative_path}}}}`. The ego view of a
  take is the `rgb` stream (or the only stream) of its ego camera: the camera with `is_ego`; when several have it,
  those with frame-aligned videos, then the Aria one (the rule of EGO4D's own ego-pose code). Its video is
  `{root_dir}/{relative_path}` (`frame_aligned_videos/aria01_214-1.mp4`), or with `--downscaled` the 448 px copy
  `{root_dir}/frame_aligned_videos/downscaled/448/aria01_214-1.mp4` (`--parts downscaled_takes/448`).
- `annotations/atomic_descriptions_{train,val}.json`: `{"annotations": {take_uid: [{annotation_uid, rejected,
  descriptions: [{timestamp, text, subject, ego_visible, unsure, best_exo}]}]}}`, one annotation per annotator.
- `annotations/keystep_{train,val}.json`: `{"annotations": {take_uid: {take_uid, take_name, scenario, segments:
  [{start_time, end_time, step_id, step_unique_id, step_name, step_description, is_essential}]}}, "taxonomy":
  {scenario: {node_id: {id, name, is_leafnode, parent_id, parent_name, unique_id}}}, "vocabulary": {id: name}}`.
- `annotations/keystep_benchmark/label_mapping.csv` (optional, `--label-mapping`): `label_id, step_unique_id,
  step_name, scenario_name` of the 278 keysteps of the fine-grained keystep recognition benchmark.

Configs, each with the splits `train` and `val` as released (test annotations are not public):

- `narration`: one stream per accepted annotation of a take, built as the Ego4D raw narration streams
  (`prepare_ego4d_narration`): texts cleaned the same way (tags removed, trimmed, `.` added, first word capitalised,
  at least two words), sorted by time, snapped to `ceil(t * fps) / fps` (a later description on the same frame
  replaces the earlier one, consecutive duplicates are dropped), the same instruction, and a stream cut before the
  turn that would take it past `--max-num-frames` frames. Where Ego-Exo4D differs: rejected annotations are left
  out, and so are descriptions marked not visible from the ego view (`ego_visible` false), since the stream shows
  only that view (`--keep-invisible` keeps them); `unsure` descriptions stay, as Ego4D keeps `#unsure` narrations.
- `keystep`: one row per keystep segment, as COIN's `step` task (`prepare_coin`): the COIN step question, the
  segment's frames `[ceil(start * fps), ceil(end * fps)]` (the benchmark's input is this trimmed ego clip), the
  keystep name as documented as the answer; `label` holds it lower-cased. `--label-mapping` keeps the benchmark's
  keysteps only.

Where the documentation is silent, assumed: description timestamps and keystep times are seconds from the start of
the take's frame-aligned videos; boolean fields are JSON booleans or the strings "0"/"1"/"true"/"false" (the
documented sample has both); a keystep name's trailing period is not part of it. Takes that takes.json does not list,
takes without an ego video and missing or undecodable videos are skipped and counted (`--strict`: an error).

Usage:

    videollm-mod data prepare_egoexo4d --egoexo-root datasets/egoexo4d --downscaled --output-dir data/egoexo4d \
        --fps 2 [--push-to-hub user/egoexo4d-streams]

Frame counts come from the videos under `--video-root` (default: the download folder `--egoexo-root`) or, with
`--features-dir`, from pre-computed `{features_dir}/{take_uid}.safetensors`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import posixpath
import sys

from ._hub import SkipCounter, add_output_arguments, build_card, columns_doc, finish
from ._sources import VideoSource, video_source_from_args
from ._stream import MAX_NUM_FRAMES, AnnotationError, load_json, require, stream_row
from .prepare_coin import benchmark_samples
from .prepare_ego4d_narration import MIN_NARRATION_WORDS, RAW_INSTRUCTION, clean_narration, narration_conversation

logger = logging.getLogger(__name__)

CONFIGS = ("narration", "keystep")
SPLITS = ("train", "val")
DOWNSCALED_DIR = "downscaled/448"  # next to the frame-aligned videos (`--parts downscaled_takes/448`)
_TRUE, _FALSE = (True, "1", "true", "True"), (False, "0", "false", "False")


def read_flag(record: dict, field: str, file: str, take_uid: str | None, prefix: str = "") -> bool:
    """A boolean field: a JSON boolean, or one of the strings "1"/"0"/"true"/"false" (both occur in the release)."""
    if not isinstance(record, dict) or field not in record:
        require(record, field, str, file, take_uid, prefix)  # raises: not an object, or the field is missing
    value = record[field]
    if isinstance(value, (bool, str)) and (value in _TRUE or value in _FALSE):
        return value in _TRUE
    raise AnnotationError(file, f'expected a boolean (true/false or "1"/"0"), got {value!r}', take_uid, prefix + field)


# ----------------------------------------------------------------------------------------------------------------
# takes.json: the ego video of each take


def ego_video(take: dict, file: str, index: int, downscaled: bool = False) -> str | None:
    """The take's ego RGB video relative to the download folder, or ``None`` if it has no single one."""
    take_uid = require(take, "take_uid", str, file, prefix=f"[{index}].")
    root_dir = require(take, "root_dir", str, file, take_uid)
    videos = require(take, "frame_aligned_videos", dict, file, take_uid)
    cameras = require(require(take, "capture", dict, file, take_uid), "cameras", list, file, take_uid, "capture.")
    ego = [
        require(camera, "cam_id", str, file, take_uid, f"capture.cameras[{i}].")
        for i, camera in enumerate(cameras)
        if read_flag(camera, "is_ego", file, take_uid, f"capture.cameras[{i}].")
    ]
    if len(ego) > 1:
        ego = [cam_id for cam_id in ego if cam_id in videos]
    if len(ego) > 1 and sum("aria" in cam_id.lower() for cam_id in ego) == 1:
        ego = [cam_id for cam_id in ego if "aria" in cam_id.lower()]
    if len(ego) != 1 or not isinstance(videos.get(ego[0]), dict):
        return None
    streams = videos[ego[0]]
    if "rgb" not in streams and len(streams) != 1:
        return None
    name = "rgb" if "rgb" in streams else next(iter(streams))  # a GoPro worn as ego camera has a single stream
    if not isinstance(streams[name], dict) or streams[name].get("relative_path") is None:
        return None
    path = require(streams[name], "relative_path", str, file, take_uid, f"frame_aligned_videos.{ego[0]}.{name}.")
    if downscaled:
        path = posixpath.join(posixpath.dirname(path), DOWNSCALED_DIR, posixpath.basename(path))
    return posixpath.join(root_dir, path)


def read_takes(path: str, downscaled: bool = False) -> dict[str, dict]:
    """``{take_uid: {"take_name", "video"}}`` from takes.json; ``video`` is ``None`` for a take without an ego video."""
    data = load_json(path)
    if not isinstance(data, list):
        raise AnnotationError(path, f"expected a list of takes, got {type(data).__name__}")
    takes = {}
    for i, take in enumerate(data):
        video = ego_video(take, path, i, downscaled)  # checks the record and its take_uid
        take_uid = take["take_uid"]
        takes[take_uid] = {"take_name": require(take, "take_name", str, path, take_uid), "video": video}
    return takes


class TakeVideoSource(VideoSource):
    """A `VideoSource` whose video of take ``take_uid`` is the take's ego video (`read_takes`); takes that takes.json
    does not list, or that have no ego video, are skipped and counted like missing videos."""

    def __init__(self, source: VideoSource, takes: dict[str, dict]):
        super().__init__(source.video_root, source.fps, source.skips, features_dir=source.features_dir)
        self.takes = takes

    def relative_path(self, take_uid: str) -> str:
        return self.takes[take_uid]["video"]

    def _count(self, take_uid: str) -> int | None:
        if take_uid not in self.takes:
            self.skips.skip("take not in takes.json", f"take {take_uid!r}")
            return None
        if self.takes[take_uid]["video"] is None:
            self.skips.skip("no ego video", f"take {take_uid!r} ({self.takes[take_uid]['take_name']})")
            return None
        return super()._count(take_uid)


# ----------------------------------------------------------------------------------------------------------------
# narration: atomic descriptions


def read_atomic_descriptions(path: str, keep_invisible: bool = False) -> dict[str, dict[str, list[dict]]]:
    """``{take_uid: {annotation_uid: [{time, text}]}}``: accepted annotations, cleaned descriptions sorted by time."""
    annotations = require(load_json(path), "annotations", dict, path)
    streams = {}
    for take_uid in sorted(annotations):
        passes = {}
        for i, annotation in enumerate(require(annotations, take_uid, list, path)):
            prefix = f"[{i}]."
            annotation_uid = require(annotation, "annotation_uid", str, path, take_uid, prefix)
            descriptions = require(annotation, "descriptions", list, path, take_uid, prefix)
            if "rejected" in annotation and read_flag(annotation, "rejected", path, take_uid, prefix):
                continue
            kept = []
            for j, description in enumerate(descriptions):
                where = f"{prefix}descriptions[{j}]."
                time = require(description, "timestamp", float, path, take_uid, where)
                text = clean_narration(require(description, "text", str, path, take_uid, where))
                visible = keep_invisible or read_flag(description, "ego_visible", path, take_uid, where)
                if visible and len(text.split(" ")) >= MIN_NARRATION_WORDS:
                    kept.append({"time": time, "text": text})
            kept.sort(key=lambda d: d["time"])  # stable: equal times keep file order
            passes[annotation_uid] = kept
        streams[take_uid] = passes
    return streams


def narration_rows(
    streams: dict, source: TakeVideoSource, fps: float, max_num_frames: int = MAX_NUM_FRAMES
) -> list[dict]:
    """One row per annotation with at least one narration on the take's frames."""
    rows = []
    for take_uid, passes in streams.items():
        total = source.num_frames(take_uid)
        if total is None:
            continue
        for annotation_uid, narrations in passes.items():
            built = narration_conversation(narrations, fps, total, RAW_INSTRUCTION)
            if built is None:
                continue
            conversation, start, _ = built
            row = stream_row(take_uid, source.relative_path(take_uid), fps, total, conversation, start, max_num_frames,
                             take_name=source.takes[take_uid]["take_name"], annotation_uid=annotation_uid)  # fmt: skip
            if row is not None:
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------
# keystep recognition


def keystep_name(name: str) -> str:
    """The keystep name without surrounding spaces and trailing period (the answer adds its own period)."""
    return name.strip().rstrip(".").strip()


def read_keysteps(path: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """``({take_uid: {scenario, segments: [{start, end, text, step_unique_id}]}}, taxonomy)`` from keystep_{split}.json;
    the taxonomy is ``{scenario: [{name, parent_name, unique_id}]}`` of its leaf keysteps."""
    data = load_json(path)
    annotations = require(data, "annotations", dict, path)
    takes = {}
    for take_uid in sorted(annotations):
        record = require(annotations, take_uid, dict, path)
        segments = []
        for i, segment in enumerate(require(record, "segments", list, path, take_uid)):
            where = f"segments[{i}]."
            start = require(segment, "start_time", float, path, take_uid, where)
            end = require(segment, "end_time", float, path, take_uid, where)
            if start > end:
                raise AnnotationError(path, f"segment starts after it ends ({start} > {end})", take_uid,
                                      f"{where}start_time")  # fmt: skip
            segments.append({
                "start": start,
                "end": end,
                "text": keystep_name(require(segment, "step_name", str, path, take_uid, where)),
                "step_unique_id": require(segment, "step_unique_id", int, path, take_uid, where),
            })  # fmt: skip
        takes[take_uid] = {"scenario": require(record, "scenario", str, path, take_uid), "segments": segments}
    taxonomy = {}
    for scenario, nodes in require(data, "taxonomy", dict, path).items():
        if not isinstance(nodes, dict):
            raise AnnotationError(path, "expected {node_id: node}", field=f"taxonomy.{scenario}")
        leaves = []
        for node_id, node in nodes.items():
            where = f"taxonomy.{scenario}.{node_id}."
            if read_flag(node, "is_leafnode", path, None, where):
                leaves.append({
                    "name": keystep_name(require(node, "name", str, path, None, where)),
                    "parent_name": node.get("parent_name") or scenario,
                    "unique_id": require(node, "unique_id", int, path, None, where),
                })  # fmt: skip
        taxonomy[scenario] = leaves
    return takes, taxonomy


def read_label_mapping(path: str) -> set[int]:
    """The `step_unique_id`s of the keystep benchmark's label_mapping.csv."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            records = list(csv.DictReader(f))
    except FileNotFoundError:
        raise AnnotationError(path, "label mapping file not found") from None
    ids = set()
    for i, record in enumerate(records):
        try:
            ids.add(int(record["step_unique_id"]))
        except (KeyError, TypeError, ValueError):
            raise AnnotationError(path, f"expected an integer, got {record.get('step_unique_id')!r}",
                                  field=f"row {i + 2}.step_unique_id") from None  # fmt: skip
    return ids


def keystep_rows(
    takes: dict,
    source: TakeVideoSource,
    fps: float,
    max_num_frames: int = MAX_NUM_FRAMES,
    keep: set[int] | None = None,
) -> list[dict]:
    """One row per keystep segment (of the keysteps in ``keep`` if given) of the takes that have frames."""
    rows = []
    for take_uid, take in takes.items():
        segments = [s for s in take["segments"] if keep is None or s["step_unique_id"] in keep]
        if not segments:
            continue
        total = source.num_frames(take_uid)
        if total is None:
            continue
        video = {"steps": segments, "task": take["scenario"]}
        for segment, sample in zip(
            segments, benchmark_samples("step", video, fps, total, keep_case=True), strict=True
        ):
            row = stream_row(take_uid, source.relative_path(take_uid), fps, total, sample["conversation"],
                             sample["start_frame"], max_num_frames, take_name=source.takes[take_uid]["take_name"],
                             scenario=take["scenario"], step_unique_id=segment["step_unique_id"],
                             label=sample["label"])  # fmt: skip
            if row is not None:
                rows.append(row)
    return rows


def taxonomy_doc(taxonomy: dict[str, list[dict]]) -> str:
    """Markdown of the leaf keysteps by scenario and parent step: ``name (unique_id)``."""
    lines = []
    for scenario in sorted(taxonomy):
        lines.append(f"- **{scenario}**")
        parents: dict[str, list[str]] = {}
        for leaf in taxonomy[scenario]:
            parents.setdefault(leaf["parent_name"], []).append(f"{leaf['name']} ({leaf['unique_id']})")
        lines += [f"  - {parent}: {'; '.join(leaves)}" for parent, leaves in parents.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# the command


CARD_BODY = """\
# Ego-Exo4D ego-view streams (VideoLLM-online format)

Streams of the ego view (the ego camera's RGB stream) of Ego-Exo4D v2 takes at {fps} fps, built by
`videollm-mod data prepare_egoexo4d` from `takes.json` and the atomic-description and keystep annotations, with the
splits `train` and `val` as released.

- `narration`: one row per accepted atomic-description annotation of a take, cleaned and snapped
  (`ceil(t * fps) / fps`) as VideoLLM-online's Ego4D narrations.
  {visibility}.
  Conversation: `stream` (1 frame, unlearned), the `user` instruction, then alternating `assistant` description and
  `stream` messages, cut before the turn that would take it past {max_num_frames} frames. The instruction:

  > {instruction}

- `keystep`: fine-grained keystep recognition as COIN's step task: the `user` question, a `stream` of the segment's
  frames, the keystep name as the `assistant` answer; `label` is the lower-cased name.{mapping} The question:

  > {query}

## Columns

`video_uid` is the take's `take_uid` and `video` its ego video relative to the Ego-Exo4D download folder
(`takes/<take_name>/frame_aligned_videos/...`); pre-computed features are `{{take_uid}}.safetensors`.

{columns}
## Rows

{counts}. {skips}.

## Keystep taxonomy

Leaf keysteps (the possible labels) by scenario and parent step, `name (step_unique_id)`:

{taxonomy}
Videos are not included (Ego-Exo4D licence); point the processor at your download folder or pre-computed features.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="videollm-mod data prepare_egoexo4d",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--egoexo-root", required=True, help="Ego-Exo4D download folder (takes.json, annotations/)")
    # not `add_source_arguments`: the videos are not `{id}.mp4` files but the takes' ego videos of the download folder
    parser.add_argument("--video-root", default=None,
                        help="folder of takes/<take_name>/frame_aligned_videos/ (default: --egoexo-root)")  # fmt: skip
    parser.add_argument("--features-dir", default=None, help="folder of {take_uid}.safetensors (instead of videos)")
    parser.add_argument("--downscaled", action="store_true", help="read the 448 px videos (downscaled_takes/448)")
    parser.add_argument(
        "--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS, help="configs to write (default: all)"
    )
    parser.add_argument("--keep-invisible", action="store_true",
                        help="keep descriptions marked not visible from the ego view (narration)")  # fmt: skip
    parser.add_argument("--label-mapping", default=None,
                        help="keystep_benchmark/label_mapping.csv: keep the benchmark's keysteps only")  # fmt: skip
    parser.add_argument("--fps", type=float, default=2.0, help="frame rate of the streams (default: %(default)s)")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.video_root is None and args.features_dir is None:
        args.video_root = args.egoexo_root
    args.source = video_source_from_args(parser, args)
    return args


def prepare(args: argparse.Namespace) -> tuple[str, SkipCounter]:
    """Build, write (and push) the dataset; returns its folder and the skipped takes."""
    from datasets import DatasetDict, List, Value

    from ._hub import conversation_features, rows_to_dataset
    from .prepare_coin import STEP_QUERY

    annotations = os.path.join(args.egoexo_root, "annotations")
    takes = read_takes(os.path.join(args.egoexo_root, "takes.json"), args.downscaled)
    source = TakeVideoSource(args.source, takes)
    keep = read_label_mapping(args.label_mapping) if args.label_mapping else None
    features = {
        "narration": conversation_features({"take_name": Value("string"), "annotation_uid": Value("string")}),
        "keystep": conversation_features(
            {"take_name": Value("string"), "scenario": Value("string"), "step_unique_id": Value("int64")}
        ),
    }
    features["keystep"]["label"] = List(Value("string"))
    configs, counts, taxonomy = {}, [], {}
    for config in args.configs:
        splits = {}
        for split in SPLITS:
            if config == "narration":
                path = os.path.join(annotations, f"atomic_descriptions_{split}.json")
                streams = read_atomic_descriptions(path, args.keep_invisible)
                splits[split] = narration_rows(streams, source, args.fps, args.max_num_frames)
            else:
                keysteps, split_taxonomy = read_keysteps(os.path.join(annotations, f"keystep_{split}.json"))
                taxonomy.update(split_taxonomy)
                splits[split] = keystep_rows(keysteps, source, args.fps, args.max_num_frames, keep)
        # an empty split cannot be loaded back from parquet: leave it out (the card lists what is there)
        configs[config] = DatasetDict({s: rows_to_dataset(r, features[config]) for s, r in splits.items() if r})
        counts += [f"{config}/{s} {len(r)}" for s, r in splits.items()]
    extra = (
        "| `take_name` | string | Ego-Exo4D take name |\n"
        "| `annotation_uid` | string | (narration) the atomic-description annotation |\n"
        "| `scenario`, `step_unique_id` | string, int | (keystep) the take's scenario, the keystep's unique id |\n"
        "| `label` | list of string | (keystep) the lower-cased keystep name |\n"
    )
    visibility = "Descriptions not visible from the ego view are " + ("kept" if args.keep_invisible else "left out")
    mapping = f" Only the keysteps of `{os.path.basename(args.label_mapping)}`." if args.label_mapping else ""
    body = CARD_BODY.format(fps=args.fps, visibility=visibility, instruction=RAW_INSTRUCTION,
                            max_num_frames=args.max_num_frames, query=STEP_QUERY, mapping=mapping,
                            columns=columns_doc(extra), counts=", ".join(counts), skips=source.skips.summary(),
                            taxonomy=taxonomy_doc(taxonomy) if taxonomy else "(keystep config not built)\n")  # fmt: skip
    card = build_card("Ego-Exo4D ego-view streams", {c: list(d) for c, d in configs.items()}, body)
    return finish(args, configs, card, counts, source.skips), source.skips


def main(argv: list[str] | None = None) -> int:
    prepare(parse_args(argv))
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run("videollm-mod data prepare_egoexo4d", main, sys.argv[1:]))
