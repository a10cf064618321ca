import os
import tempfile

# Tests never touch the user's caches and never download: set before datasets / transformers are imported. A shared
# datasets cache also served one local folder's rows for another folder of the same name and config.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="videollm-mod-test-datasets-")
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="videollm-mod-test-modules-")
os.environ["HF_HUB_OFFLINE"] = "1"
# One torch thread per process (set before torch is imported; subprocesses inherit it): the models are tiny, and
# where other jobs share the 2 cores, two OpenMP threads per process waiting on each other made the suite 3x slower
# (9 min against 3 at a load of 6; the demo's counterfactual tests 20-40 s against 2 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from videollm_mod.presets import TINY_IDS, tiny_config

FRAME_TOKENS = 10
# A tiny text config of each supported decoder family (`tiny_config(**FAMILIES[name])`), with sliding windows short
# enough that the test streams cross them: Mistral in every layer, Qwen in layers 2 and 3 (`max_window_layers`).
FAMILIES = {
    "llama": {"text_model_type": "llama"},
    "mistral": {"text_model_type": "mistral", "text_overrides": {"sliding_window": 24}},
    "qwen2": {
        "text_model_type": "qwen2",
        "text_overrides": {"use_sliding_window": True, "sliding_window": 24, "max_window_layers": 2},
    },
    "qwen3": {
        "text_model_type": "qwen3",
        "text_overrides": {"use_sliding_window": True, "sliding_window": 24, "max_window_layers": 2},
    },
}


def stream_ids(num_frames: int, prefix=(3, 4, 5), suffix=(6, 7), seed: int = 0) -> torch.LongTensor:
    """(1, L) ids laid out as the processor does: text, frames joined by the interval token, text."""
    g = torch.Generator().manual_seed(seed)
    ids = list(prefix)
    for f in range(num_frames):
        ids += [TINY_IDS["video"]] * FRAME_TOKENS
        ids += [TINY_IDS["interval"]] if f < num_frames - 1 else []
    ids += list(suffix)
    ids += torch.randint(13, 99, (3,), generator=g).tolist()
    return torch.tensor([ids])


def frame_features(num_frames: int, dim: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_frames, FRAME_TOKENS, dim, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(scope="module")
def processor():
    """The streaming tests' processor (`stream_helpers.stream_processor`)."""
    from stream_helpers import stream_processor

    return stream_processor()


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory):
    """The README's data steps at a small size: synthetic streams, then the narration dataset."""
    from videollm_mod import cli

    root = tmp_path_factory.mktemp("quickstart")
    synthetic = root / "synthetic"
    argv = ["data", "synthetic", "--output-dir", synthetic, "--num-videos", 6, "--num-coin-videos", 2, "--seconds", 6,
            "--resolution", 32, "--fps", 4]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    argv = ["data", "prepare_ego4d_narration", "--annotation-dir", synthetic / "ego4d/v2/annotations",
            "--video-root", synthetic / "ego4d/v2/full_scale", "--output-dir", root / "narration"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    return root


@pytest.fixture
def fused_head_rows(monkeypatch) -> list[int]:
    """The number of rows TRL's fused LM head projects at each call, recorded while the test runs."""
    import trl.trainer.utils as trl_utils

    rows = []
    function = trl_utils._ChunkedLogProbFunction
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", type("Spy", (), {"apply": staticmethod(
        lambda hidden, *rest: rows.append(len(hidden)) or function.apply(hidden, *rest))}))  # fmt: skip
    return rows
