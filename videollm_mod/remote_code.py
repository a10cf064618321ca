"""What the commands need of the remote code (`modeling_videollm_mod`) before a model is loaded, read without importing
the package: its `__init__` imports torch and transformers and registers the model (seconds), which `--help` and the
checks of the arguments must not wait for. Once the package is imported, its own objects are returned."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = "modeling_videollm_mod"


def _source(module: str) -> Path:
    # find_spec of a top-level package locates it without running its __init__.
    return Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0], f"{module}.py")


def remote_constant(module: str, name: str):
    """The literal value of `modeling_videollm_mod.<module>.<name>` (a module-level `NAME = literal`)."""
    loaded = sys.modules.get(f"{PACKAGE}.{module}")
    if loaded is not None:
        return getattr(loaded, name)
    for node in ast.parse(_source(module).read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{PACKAGE}.{module} assigns no literal {name}")


def remote_stdlib_module(module: str) -> ModuleType:
    """`modeling_videollm_mod.<module>`, a module that imports only the standard library (`live_videollm_mod`), run
    from its file under a private name (the package's own module once the package is imported)."""
    private = f"videollm_mod._remote_{module}"
    loaded = sys.modules.get(f"{PACKAGE}.{module}") or sys.modules.get(private)
    if loaded is None:
        spec = importlib.util.spec_from_file_location(private, _source(module))
        loaded = sys.modules[private] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    return loaded
