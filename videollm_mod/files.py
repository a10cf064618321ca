"""Writing outputs so that an interrupted run never leaves something that looks finished: a temporary name next to
the target, renamed into place when complete. Outputs are world-readable (files 0644, folders 0755), as published
files must be, whatever the process umask or `tempfile`'s private 0700 folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output_folder(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `output`; when the block completes, it replaces `output` (an existing one is
    moved aside first and removed only once the new one is in place). On an error the temporary folder is removed."""
    output = Path(output).absolute()
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        yield tmp
        make_world_readable(tmp)
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, old / "previous")
            os.replace(tmp, output)
            shutil.rmtree(old)
        else:
            os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_world_readable(folder: str | os.PathLike) -> None:
    """Folders 0755 and files 0644 (executable files 0755), the folder itself included."""
    folder = Path(folder)
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        executable = path.is_file() and os.access(path, os.X_OK)
        path.chmod(0o755 if path.is_dir() or executable else 0o644)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to a temporary name next to `path`, then rename it to `path` (mode 0644)."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary name next to `path`, then rename it to `path` (mode 0644)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike, what: str):
    """The JSON in `path`; a missing or unparsable file is one `UserError` naming it as `what` ("annotation file")."""
    import json

    from .errors import UserError

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not JSON ({error})") from None


def read_json_lines(path: str | os.PathLike, what: str, fields: tuple[str, ...] = ()) -> list[dict]:
    """The records of a JSON-lines file (blank lines skipped); a missing file, an unparsable line or a record without
    one of `fields` is one `UserError` naming the file, the line and the field."""
    import json

    from .errors import UserError

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path} line {number}: not JSON ({error})") from None
        missing = [name for name in fields if not isinstance(record, dict) or name not in record]
        if missing:
            raise UserError(f"{path} line {number}: no field {missing[0]!r} (a {what} record has {list(fields)})")
        records.append(record)
    return records
