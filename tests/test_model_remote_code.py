"""save_pretrained writes the code next to the weights; a process without the package loads it with
trust_remote_code and computes the same logits."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import FAMILIES, frame_features, stream_ids

from modeling_videollm_mod import VideoLLMMoDForCausalLM
from videollm_mod.presets import tiny_config

# Run in a fresh interpreter where `import modeling_videollm_mod` fails, so only the copied code can serve.
LOAD_IN_FRESH_PROCESS = """
import sys
sys.modules["modeling_videollm_mod"] = None
try:
    import modeling_videollm_mod
    raise SystemExit("the package is importable")
except ImportError:
    pass
import torch
import transformers
folder, auto_class = sys.argv[1], sys.argv[2]
model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
inputs = torch.load(folder + "/inputs.pt")
with torch.no_grad():
    logits = model(**inputs).logits
torch.save({"logits": logits, "class": type(model).__module__ + "." + type(model).__name__}, folder + "/out.pt")
"""


@pytest.mark.parametrize(
    "auto_class, family",
    [("AutoModelForCausalLM", "llama"), ("AutoModelForImageTextToText", "llama"), ("AutoModelForCausalLM", "qwen3")],
)
def test_saved_folder_loads_with_trust_remote_code_in_fresh_process(tmp_path, auto_class, family):
    model = VideoLLMMoDForCausalLM(tiny_config(**FAMILIES[family])).eval()
    inputs = {"input_ids": stream_ids(2), "frame_features": frame_features(2)}
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path)
    torch.save(inputs, tmp_path / "inputs.pt")

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_videollm_mod.VideoLLMMoDConfig",
        "AutoModel": "modeling_videollm_mod.VideoLLMMoDModel",
        "AutoModelForCausalLM": "modeling_videollm_mod.VideoLLMMoDForCausalLM",
        "AutoModelForImageTextToText": "modeling_videollm_mod.VideoLLMMoDForCausalLM",
    }
    code = {p.name for p in tmp_path.glob("*.py")}
    assert {"cache_videollm_mod.py", "configuration_videollm_mod.py", "families_videollm_mod.py",
            "modeling_videollm_mod.py"} <= code  # fmt: skip
    assert all(name.endswith("_videollm_mod.py") for name in code), code  # remote code only, no tooling

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", LOAD_IN_FRESH_PROCESS, str(tmp_path), auto_class], check=True, env=env,
                   cwd=tmp_path)  # fmt: skip
    out = torch.load(tmp_path / "out.pt")
    assert out["class"].startswith("transformers_modules.") and out["class"].endswith(".VideoLLMMoDForCausalLM")
    assert torch.equal(out["logits"], expected)
