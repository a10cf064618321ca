"""Data-parallel and FSDP2 training equal one process with the same global batch (`recipes/distributed_check.py`,
run as `recipes/README.md` writes it), an FSDP2 run resumed from its sharded checkpoint equals the uninterrupted one, its
weights consolidate into a folder that reloads from its own code, and the check refuses to compare runs whose global batches differ."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_user_error

from videollm_mod.cli import run
from videollm_mod.recipes import distributed_check

REPOSITORY = Path(__file__).resolve().parents[1]
CHECK = "videollm_mod.recipes.distributed_check"


def launch(*argv, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_two_processes_give_the_loss_curve_of_one(tmp_path):
    launch(sys.executable, "-m", CHECK, "--output", "one.json", "--per-device-batch-size", "4", cwd=tmp_path)
    accelerate = Path(sys.executable).with_name("accelerate")
    launch(accelerate, "launch", "--config_file", REPOSITORY / "recipes/accelerate/cpu_ddp.yaml", "-m", CHECK,
           "--output", "two.json", "--per-device-batch-size", "2", cwd=tmp_path)  # fmt: skip
    two = json.loads((tmp_path / "two.json").read_text())
    assert (two["world_size"], two["global_batch"], two["engine"]) == (2, 4, "MULTI_CPU")
    assert len(two["losses"]) == 10
    assert distributed_check.main(["--compare", str(tmp_path / "one.json"), str(tmp_path / "two.json")]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("lora", [[], ["--lora"]], ids=["full", "lora"])
def test_fsdp2_on_two_processes_gives_the_loss_curve_and_weights_of_one(tmp_path, lora):
    """Full fine-tuning, and LoRA (adapters merged into the consolidated weights)."""
    from safetensors.torch import load_file

    from videollm_mod.conversion.release import verify_release

    launch(sys.executable, "-m", CHECK, "--engine", "fsdp2", *lora, "--output", "one.json", "--per-device-batch-size",
           "4", "--save", "one", cwd=tmp_path)  # fmt: skip
    torchrun = Path(sys.executable).with_name("torchrun")
    launch(torchrun, "--nproc_per_node", "2", "-m", CHECK, "--engine", "fsdp2", *lora, "--output", "two.json",
           "--per-device-batch-size", "2", "--save", "two", cwd=tmp_path)  # fmt: skip
    two = json.loads((tmp_path / "two.json").read_text())
    assert (two["world_size"], two["global_batch"], two["engine"]) == (2, 4, "FSDP2")
    assert distributed_check.main(["--compare", str(tmp_path / "one.json"), str(tmp_path / "two.json")]) == 0
    one_weights, two_weights = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    assert one_weights.keys() == two_weights.keys()
    assert max((one_weights[k] - two_weights[k]).abs().max().item() for k in one_weights) < 1e-5
    assert verify_release(tmp_path / "two")["class"] == "VideoLLMMoDForCausalLM"  # its own code, a fresh process
    # stopped after 5 steps and resumed from the sharded checkpoint (one file per process) into a new model
    launch(torchrun, "--nproc_per_node", "2", "-m", CHECK, "--engine", "fsdp2", *lora, "--output", "resumed.json",
           "--per-device-batch-size", "2", "--resume-at", "5", cwd=tmp_path)  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "resumed.json.checkpoint").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    assert json.loads((tmp_path / "resumed.json").read_text())["losses"] == two["losses"]


def test_runs_with_different_global_batches_are_not_compared(tmp_path, capsys):
    for name, processes, rows in (("one.json", 1, 4), ("two.json", 1, 2)):  # `accelerate launch --cpu`: 1 process
        run_ = {"losses": [5.0], "world_size": processes, "per_device_batch_size": rows,
                "global_batch": processes * rows, "engine": "NO"}  # fmt: skip
        (tmp_path / name).write_text(json.dumps(run_))
    status = run("distributed_check", distributed_check.main, ["--compare", str(tmp_path / "one.json"),
                 str(tmp_path / "two.json")])  # fmt: skip
    assert_user_error(status, capsys.readouterr().err, "different global batches", "1 process(es) x 2 rows", "--cpu")


def test_different_losses_fail_the_comparison(tmp_path):
    for name, loss in (("one.json", 5.0), ("two.json", 5.001)):
        run_ = {"losses": [5.0, loss], "world_size": 1, "per_device_batch_size": 4, "global_batch": 4, "engine": "NO"}
        (tmp_path / name).write_text(json.dumps(run_))
    assert distributed_check.main(["--compare", str(tmp_path / "one.json"), str(tmp_path / "two.json")]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_on_two_processes_gives_the_loss_curve_and_weights_of_one(tmp_path, stage):
    """DeepSpeed's engine with `recipes/accelerate/zero{2,3}.json` on 2 CPU processes (gloo), against one process
    (needs `pip install deepspeed`, not a dependency of this package: skipped without it)."""
    pytest.importorskip("deepspeed")
    from safetensors.torch import load_file

    launch(sys.executable, "-m", CHECK, "--engine", "fsdp2", "--output", "one.json", "--per-device-batch-size", "4",
           "--save", "one", cwd=tmp_path)  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", CHECK]
    launch(*torchrun, "--engine", stage, "--output", "two.json", "--per-device-batch-size", "2", "--save", "two",
           cwd=tmp_path)  # fmt: skip
    launch(*torchrun, "--engine", stage, "--output", "resumed.json", "--per-device-batch-size", "2", "--resume-at",
           "5", cwd=tmp_path)  # fmt: skip
    two = json.loads((tmp_path / "two.json").read_text())
    assert (two["world_size"], two["engine"]) == (2, stage.upper())
    assert distributed_check.main(["--compare", str(tmp_path / "one.json"), str(tmp_path / "two.json")]) == 0
    assert json.loads((tmp_path / "resumed.json").read_text())["losses"] == two["losses"]
    one_weights, two_weights = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    assert max((one_weights[k] - two_weights[k]).abs().max().item() for k in one_weights) < 1e-5
