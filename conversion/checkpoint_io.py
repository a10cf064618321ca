"""Reading checkpoints tensor by tensor and writing sharded safetensors folders that appear only when complete.

Nothing here holds a whole checkpoint: sources open one file per read (the memory map is dropped when the read ends),
and the writer keeps at most one output shard in memory.
"""

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16", "I64": "int64"}


class ConversionError(ValueError):
    """A source checkpoint that cannot be converted; the message names the file or the keys."""


def resolve_folder(path_or_repo: str, allow_patterns: list[str] | None = None, argument: str = "path") -> Path:
    """A local folder as is, or a Hub repo id downloaded with `snapshot_download` (only the files asked for); one
    message for a name that is neither, whether it has the form of a repo id or not."""
    from ..loading import looks_like_repo_id

    path = Path(path_or_repo)
    if path.is_dir():
        return path
    if path.exists():
        raise ConversionError(f"{argument} {path}: a file; expected a folder or a Hub repo id")
    missing = ConversionError(f"{argument} {path_or_repo}: neither a local folder nor reachable on the Hub")
    if not looks_like_repo_id(path_or_repo):
        raise missing
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(path_or_repo, allow_patterns=allow_patterns))
    except (LocalEntryNotFoundError, RepositoryNotFoundError):  # offline / unreachable (not cached), or no such repo
        raise missing from None


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    shape: tuple[int, ...]
    dtype: str  # torch's name: "float32", "bfloat16", ...


class TensorSource:
    """The tensors of one checkpoint (a folder's weight files, or one file), read lazily one at a time.

    Safetensors headers are read up front (shapes and dtypes, no data). Pickled files (`.bin`) are refused unless
    `allow_pickle`, and then loaded only with `torch.load(weights_only=True)`, which cannot run code.
    """

    def __init__(self, files: list[Path], allow_pickle: bool = False, name: str = "checkpoint"):
        self.name = name
        self.infos: dict[str, TensorInfo] = {}
        self._pickled: dict[Path, dict[str, torch.Tensor]] = {}
        for file in files:
            for key, info in self._read_header(file, allow_pickle).items():
                if key in self.infos:
                    raise ConversionError(f"{name}: key {key!r} appears in both {self.infos[key].file} and {file}")
                self.infos[key] = info

    @classmethod
    def from_folder(cls, folder: Path, stem: str = "model", allow_pickle: bool = False, name: str = "checkpoint"):
        """Weight files of a `save_pretrained` folder: `{stem}.safetensors.index.json` shards, `{stem}.safetensors`,
        or any `*.safetensors`; pickles only when nothing else is there."""
        index = folder / f"{stem}.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [folder / f for f in dict.fromkeys(weight_map.values())]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise ConversionError(f"{name}: {index} lists shards that do not exist: {missing}")
            return cls(files, allow_pickle, name)
        files = sorted(folder.glob(f"{stem}*.safetensors")) or sorted(folder.glob("*.safetensors"))
        if not files:
            files = sorted(f for f in folder.iterdir() if f.suffix in PICKLE_SUFFIXES)
        if not files:
            raise ConversionError(f"{name}: no weight files (*.safetensors or *.bin) in {folder}")
        return cls(files, allow_pickle, name)

    def _read_header(self, file: Path, allow_pickle: bool) -> dict[str, TensorInfo]:
        if file.suffix in PICKLE_SUFFIXES:
            if not allow_pickle:
                raise ConversionError(
                    f"{self.name}: {file} is a pickle; refusing to load it. Convert it to safetensors, or pass "
                    "--allow-pickle to load it with torch.load(weights_only=True)"
                )
            try:
                # mmap: the zip format maps the storages instead of reading them; weights_only: no code runs.
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as error:  # the legacy (non-zip) format cannot be mapped
                raise ConversionError(f"{self.name}: cannot load {file} with weights_only=True: {error}") from error
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ConversionError(f"{self.name}: {file} does not hold a flat dict of tensors")
            self._pickled[file] = state
            return {k: TensorInfo(file, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}
        try:
            with safe_open(file, framework="pt") as f:
                slices = {k: f.get_slice(k) for k in f.keys()}
                return {
                    k: TensorInfo(file, tuple(s.get_shape()), SAFETENSORS_DTYPES.get(s.get_dtype(), s.get_dtype()))
                    for k, s in slices.items()
                }
        except Exception as error:
            raise ConversionError(f"{self.name}: cannot read the safetensors header of {file}: {error}") from error

    def files(self) -> list[Path]:
        return list(dict.fromkeys(info.file for info in self.infos.values()))

    def get(self, key: str) -> torch.Tensor:
        info = self.infos[key]
        if info.file in self._pickled:
            return self._pickled[info.file][key]
        with safe_open(info.file, framework="pt") as f:  # closing unmaps the file: its pages leave our RSS
            return f.get_tensor(key)


def parse_size(size: str | int) -> int:
    """'5GB' -> 5_000_000_000, '500MiB' -> 524_288_000, 1000 -> 1000 (the units of transformers' max_shard_size)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*", size.upper())
    if not match:
        raise ValueError(f"cannot parse the size {size!r} (examples: 5GB, 500MB, 2GiB)")
    number, unit = float(match.group(1)), (match.group(2) or "B")
    base = 1024 if "I" in unit else 1000
    return int(number * base ** "BKMGT".index(unit[0]))


class ShardWriter:
    """Sharded safetensors in the layout `from_pretrained` reads: `model-0000i-of-0000n.safetensors` + index json
    (a single `model.safetensors` when everything fits in one shard, as `save_pretrained` does)."""

    def __init__(self, folder: Path, max_shard_bytes: int):
        self.folder = folder
        self.max_shard_bytes = max_shard_bytes
        self.shard: dict[str, torch.Tensor] = {}
        self.shard_bytes = 0
        self.shard_files: list[list[str]] = []  # keys of each written shard
        self.total_bytes = 0

    def add(self, key: str, tensor: torch.Tensor):
        size = tensor.numel() * tensor.element_size()
        if self.shard and self.shard_bytes + size > self.max_shard_bytes:
            self.flush()
        self.shard[key] = tensor.contiguous()
        self.shard_bytes += size
        self.total_bytes += size

    def flush(self):
        if not self.shard:
            return
        save_file(self.shard, self.folder / f"shard-{len(self.shard_files):05d}.tmp", metadata={"format": "pt"})
        self.shard_files.append(list(self.shard))
        self.shard, self.shard_bytes = {}, 0

    def close(self) -> list[str]:
        """Write the last shard, give the shards their final names and write the index; returns the file names."""
        self.flush()
        count = len(self.shard_files)
        names = (
            ["model.safetensors"]
            if count == 1
            else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        )
        for i, name in enumerate(names):
            os.replace(self.folder / f"shard-{i:05d}.tmp", self.folder / name)
        if count > 1:
            weight_map = {key: name for name, keys in zip(names, self.shard_files, strict=True) for key in keys}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
            names.append(SAFETENSORS_INDEX)
        return names


def remote_code_files() -> list[Path]:
    """The package's files that go next to the weights: those `save_pretrained` copies (configuration, modeling and
    what they import relatively) plus the processing/streaming modules when they exist."""
    from transformers.dynamic_module_utils import get_relative_import_files

    import modeling_videollm_mod

    package = Path(modeling_videollm_mod.__file__).parent
    roots = [package / "modeling_videollm_mod.py", package / "configuration_videollm_mod.py"]
    roots += [package / name for name in ("processing_videollm_mod.py", "streaming_videollm_mod.py")]
    files = {Path(f) for root in roots if root.is_file() for f in [root, *get_relative_import_files(str(root))]}
    return sorted(files)


def copy_remote_code(folder: Path) -> list[str]:
    names = []
    for file in remote_code_files():
        shutil.copy(file, folder / file.name)
        names.append(file.name)
    return names
