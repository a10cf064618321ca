"""The loading policy (`videollm_mod/loading.py`, README "Security"): no command runs the code a model folder ships, or
unpickles its weights, without the user's flag; each refusal is one line, exit 1, before anything of the folder is
imported. The folders here are the demo in disguise: their own configuration module writes a marker file when it is
imported, so the marker says whether their code ran."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_user_error, run
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import videollm_mod
from videollm_mod import cli, web_demo
from videollm_mod.loading import load_model_and_processor
from videollm_mod.recipes import sft

CONFIG_MODULE = "configuration_videollm_mod.py"


def shipped_with_marker(folder: Path, marker: Path, model_type: str | None) -> Path:
    """A copy of the demo as a release holds it (weights + code) whose configuration module writes `marker` when
    imported; `model_type` renames it (a model of another type, which only its own code can load)."""
    shutil.copytree(videollm_mod.demo_path(), folder)
    code = folder / CONFIG_MODULE
    text = code.read_text()
    if model_type is not None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
        text = text.replace('MODEL_TYPE = "videollm_mod"', f"MODEL_TYPE = {model_type!r}")
    code.write_text(f"open({str(marker)!r}, 'w').write('imported')\n{text}")
    return folder


def pickled_only(folder: Path) -> Path:
    """A copy of the demo whose weights are a pickle (`pytorch_model.bin`) and no safetensors."""
    shutil.copytree(videollm_mod.demo_path(), folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def command(name: str, quickstart: Path, tmp_path: Path, model: Path) -> list:
    """`videollm-mod NAME ...` on `model` with inputs that let it run."""
    videos = quickstart / "synthetic/ego4d/v2/full_scale"
    return {
        "narrate": lambda: ["narrate", next(videos.glob("*.mp4")), "--no-progress", "--model", model],
        "demo": lambda: ["demo", "--no-example", "--model", model],
        "evaluate": lambda: [
            "evaluate",
            "--dataset",
            quickstart / "narration",
            "--config",
            "raw",
            "--split",
            "train",
            "--video-root",
            videos,
            "--max-samples",
            1,
            "--model",
            model,
        ],  # fmt: skip
        "train": lambda: [
            "train",
            "--dataset_name",
            quickstart / "narration",
            "--dataset_config",
            "raw",
            "--video_root",
            videos,
            "--output_dir",
            tmp_path / "out",
            "--max_steps",
            1,
            "--report_to",
            "none",
            "--model_name_or_path",
            model,
        ],  # fmt: skip
        "precompute_features": lambda: [
            "data",
            "precompute_features",
            "--video-root",
            videos,
            "--output-dir",
            tmp_path / "features",
            "--dtype",
            "float32",
            "--model",
            model,
        ],  # fmt: skip
    }[name]()


COMMANDS = ["narrate", "demo", "evaluate", "train", "precompute_features"]


class Stop(Exception):
    """Raised where a command would go on past loading into a long job (the web server, training)."""


def stop(*args, **kwargs):
    raise Stop


@pytest.mark.parametrize("name", COMMANDS)
def test_a_model_of_another_type_is_refused_before_its_code_is_imported(name, quickstart, tmp_path, capsys):
    marker = tmp_path / "marker"
    folder = shipped_with_marker(tmp_path / f"foreign_{name}", marker, model_type="someone_elses")
    status, _, err = run(capsys, *command(name, quickstart, tmp_path, folder))
    assert_user_error(status, err, folder, "'someone_elses'", "--trust-remote-code")
    assert not marker.exists()


@pytest.mark.parametrize("name", COMMANDS)
def test_trust_remote_code_runs_its_code(name, quickstart, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(web_demo, "build_app", stop)  # the model is loaded; the server would run until stopped
    monkeypatch.setattr(sft, "build_trainer", stop)  # the model is loaded; training is not the point here
    marker = tmp_path / "marker"
    folder = shipped_with_marker(tmp_path / f"trusted_{name}", marker, model_type="someone_elses")
    argv = command(name, quickstart, tmp_path, folder) + ["--trust-remote-code"]
    if name in ("demo", "train"):
        with pytest.raises(Stop):
            cli.main([str(a) for a in argv])
    else:
        status, _, err = run(capsys, *argv)
        assert status == 0, err
    assert marker.read_text() == "imported"


@pytest.mark.parametrize("name", COMMANDS)
def test_pickled_weights_are_refused_without_allow_pickle(name, quickstart, tmp_path, capsys):
    folder = pickled_only(tmp_path / "pickled")
    status, _, err = run(capsys, *command(name, quickstart, tmp_path, folder))
    assert_user_error(status, err, folder, "pytorch_model.bin", "safetensors", "--allow-pickle")


def test_pickled_weights_load_with_allow_pickle_as_the_safetensors_do(tmp_path):
    pickled, _ = load_model_and_processor(pickled_only(tmp_path / "pickled"), "cpu", allow_pickle=True)
    demo, _ = load_model_and_processor(None, "cpu")
    ids = torch.tensor([[1, 5, 9, 14, 20, 33]])
    assert torch.equal(pickled(input_ids=ids).logits, demo(input_ids=ids).logits)


def test_our_model_type_runs_the_installed_code_and_says_when_the_shipped_code_differs(quickstart, tmp_path, capsys):
    marker = tmp_path / "marker"
    folder = shipped_with_marker(tmp_path / "ours", marker, model_type=None)
    status, _, err = run(capsys, *command("narrate", quickstart, tmp_path, folder))
    assert status == 0, err
    assert not marker.exists()
    assert f"note: {folder}: its own code ({CONFIG_MODULE}) differs from this installation's" in err
    status, _, err = run(capsys, *command("narrate", quickstart, tmp_path, videollm_mod.demo_path()))
    assert status == 0 and "note:" not in err  # the same code: nothing to say
    assert "Loading weights" not in err  # transformers' loading bar is not printed above the command's own lines


def test_a_release_of_another_model_type_is_refused_before_its_code_is_imported(tmp_path, capsys):
    marker = tmp_path / "marker"
    folder = shipped_with_marker(tmp_path / "foreign", marker, model_type="someone_elses")
    status, _, err = run(capsys, "release", folder, "--repo-id", "me/x", "--no-push", "--license", "other")
    assert_user_error(status, err, folder, "'someone_elses'")
    assert not marker.exists()


@pytest.mark.parametrize("where", ["package", "release folder"])
def test_the_demo_loads_as_transformers_loads_it(where):
    """The policy's classes are the ones `AutoModelForCausalLM` (trust_remote_code=True) gives: the same logits."""
    folder = None if where == "package" else videollm_mod.demo_path()
    model, processor = load_model_and_processor(folder, "cpu")
    reference = AutoModelForCausalLM.from_pretrained(videollm_mod.demo_path(), trust_remote_code=True).eval()
    ids = torch.tensor([processor.tokenizer.encode("the red circle moves")])
    assert type(model) is type(reference)
    assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)
