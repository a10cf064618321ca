"""The memory plan (`recipes/memory_plan.py`, `videollm-mod train --plan`): exact parameter counts (against the
model and PEFT), the recipe's loss, and the planned peak within 10 % of the peak measured on this machine."""

from pathlib import Path

import pytest
from cli_helpers import run
from peft import LoraConfig, get_peft_model

from modeling_videollm_mod import VideoLLMMoDForCausalLM
from videollm_mod.presets import tiny_config
from videollm_mod.recipes.memory_plan import (
    DEVICES,
    TrainingShape,
    activation_bytes,
    parameter_counts,
    plan,
    planned_and_measured,
)
from videollm_mod.recipes.sft import LLM_LINEARS

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "recipes/configs/paper_lora.yaml"


def test_parameter_counts_equal_the_models_and_peft_trainable_counts():
    config = tiny_config(hidden_size=64)
    model = VideoLLMMoDForCausalLM(config)
    tower = sum(p.numel() for p in model.model.vision_tower.parameters())
    counts = parameter_counts(config, TrainingShape())
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["trainable"] == counts["total"] - tower  # the vision tower stays frozen unless asked
    assert parameter_counts(config, TrainingShape(train_vision_tower=True))["trainable"] == counts["total"]
    lora = TrainingShape(lora_r=8, lora_target=LLM_LINEARS, modules_to_save=("connector", "router"))
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=LLM_LINEARS,
                                                  modules_to_save=["connector", "router"]))  # fmt: skip
    assert parameter_counts(config, lora)["trainable"] == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)  # fmt: skip


def test_sharding_divides_the_states_and_not_the_activations():
    result = plan(tiny_config(hidden_size=64), TrainingShape(batch=2, tokens=300))
    ddp, fsdp = result["engines"]["DDP"], result["engines"]["FSDP"]
    assert {ddp[n]["total"] for n in DEVICES} == {ddp[1]["total"]}  # DDP replicates everything
    assert [fsdp[n]["optimizer"] for n in DEVICES] == [fsdp[1]["optimizer"] // n for n in DEVICES]
    assert {row["activations"] for table in result["engines"].values() for row in table.values()} == {
        ddp[1]["activations"]
    }


def test_mod_keeps_fewer_activations_than_dense_without_checkpointing():
    shape = TrainingShape(batch=2, tokens=600, video_share=0.8)
    mod, dense = (plan(tiny_config(hidden_size=64, mod_layers=layers), shape) for layers in ([1, 3], []))
    assert mod["activations"]["kept"] < dense["activations"]["kept"]


@pytest.mark.slow
@pytest.mark.parametrize("mod_layers, checkpointing", [([], False), ([1, 3], False), ([1, 3], True)])
def test_the_planned_peak_is_within_10_percent_of_the_measured_one(mod_layers, checkpointing):
    """Measured as `recipes/costs.py` does: the bytes held by tensors, full fine-tuning in float32, one process."""
    config = tiny_config(num_hidden_layers=4, hidden_size=256, intermediate_size=688, vocab_size=1024,
                         mod_layers=mod_layers)  # fmt: skip
    planned, measured = planned_and_measured(config, rows=4, frames=40, text=100, checkpointing=checkpointing)
    assert 0.9 <= planned / measured <= 1.1, (planned, measured)


def test_only_the_models_own_loss_keeps_the_logits_of_every_position():
    """The recipe trains through TRL's fused LM head when `stream_loss_weight` is 1; otherwise the model's loss keeps
    float32 logits and their log-softmax, and their gradient passes through the backward pass."""
    shape = TrainingShape(batch=2, tokens=600, video_share=0.8)
    fused = activation_bytes(tiny_config(hidden_size=64), shape)
    own = activation_bytes(tiny_config(hidden_size=64, stream_loss_weight=0.5), shape)
    logits = 2 * 600 * tiny_config().text_config.vocab_size * 4
    assert fused["transient"] == 0 and own["transient"] == logits
    assert own["kept"] - fused["kept"] == 2 * logits


def test_train_plan_prints_the_table_without_data_or_weights(capsys):
    status, out, err = run(capsys, "train", "--config", PAPER_CONFIG, "--plan", "--plan_preset",
                           "full_size", "--plan_tokens", 12000, "--tf32", "false")  # fmt: skip
    assert status == 0, err
    assert "parameters 8,367.6 M, trainable 356.6 M (LoRA r = 128)" in out
    assert [line.split()[0] for line in out.splitlines()[3:]] == ["DDP", "FSDP", "ZeRO-3"] * 2


def test_the_peak_is_measured_whatever_package_the_working_directory_holds(tmp_path, monkeypatch):
    """A folder named like the package in the working directory (a source checkout beside a non-editable install)
    must not shadow the package that measures the peak in its fresh process."""
    from videollm_mod.recipes.costs import peak_training_memory
    from videollm_mod.recipes.memory_plan import synthetic_batch

    (tmp_path / "videollm_mod").mkdir()
    (tmp_path / "videollm_mod" / "__init__.py").write_text("raise ImportError('the wrong videollm_mod')\n")
    monkeypatch.chdir(tmp_path)
    config = tiny_config(num_hidden_layers=2)
    assert peak_training_memory(config, synthetic_batch(config, rows=1, frames=2, text=4)) > 0
