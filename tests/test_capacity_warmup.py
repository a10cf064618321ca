"""Capacity warm-up (`recipes/capacity_warmup.py`): routed layers process every vision token at the first step and
anneal to the model's keep ratio; the model reads the ratio at each forward, and training ends at the target."""

import pytest
import torch
from trl import SFTConfig

from videollm_mod.errors import UserError
from videollm_mod.recipes.capacity_warmup import warmup_keep_ratio
from videollm_mod.recipes.distributed_check import tiny_setup
from videollm_mod.recipes.sft import VideoSFTScriptArguments, build_trainer, main


def test_the_ratio_anneals_linearly_from_one_to_the_target():
    assert [warmup_keep_ratio(step, 4, 0.2) for step in range(6)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.2])
    assert warmup_keep_ratio(0, 0, 0.2) == 0.2  # no warm-up


def test_a_routed_layer_at_ratio_one_computes_what_the_dense_model_computes(tiny):
    from conftest import frame_features, stream_ids

    from modeling_videollm_mod import VideoLLMMoDForCausalLM

    # uniform selection has no router gate, so with every token kept the routed layers are the stock layers
    routed = VideoLLMMoDForCausalLM(tiny(mod_layers=[1, 3], mod_selection="uniform")).eval()
    dense = VideoLLMMoDForCausalLM(tiny(mod_layers=[])).eval()
    dense.load_state_dict(routed.state_dict())
    ids, features = stream_ids(4), frame_features(4)
    with torch.no_grad():
        expected = dense(input_ids=ids, frame_features=features).logits
        assert not torch.allclose(routed(input_ids=ids, frame_features=features).logits, expected, atol=1e-4)
        routed.config.mod_keep_ratio = 1.0  # read at the next forward, as the warm-up sets it
        assert torch.allclose(routed(input_ids=ids, frame_features=features).logits, expected, atol=1e-5)


def test_training_keeps_every_token_first_then_anneals_and_ends_at_the_target(tmp_path):
    model, processor, dataset = tiny_setup(str(tmp_path), num_rows=8, mod_layers=[1, 3], mod_keep_ratio=0.2)
    seen = []  # vision tokens per frame that the routed layers processed, per training forward
    model.model.register_forward_pre_hook(lambda module, args: seen.append(module.config.mod_keep_per_frame))
    args = SFTConfig(
        output_dir=str(tmp_path / "out"), max_steps=5, per_device_train_batch_size=4, learning_rate=1e-3,
        save_strategy="no", report_to="none", use_cpu=True, bf16=False, activation_checkpointing=False, seed=0,
    )  # fmt: skip
    script_args = VideoSFTScriptArguments(features_dir=str(tmp_path), mod_capacity_warmup=0.8)
    trainer = build_trainer(model, processor, dataset, args, script_args)
    trainer.train()
    # 4 of the 5 steps anneal r from 1 by 0.2 a step; k = ceil(10 r)
    assert seen == [10, 8, 6, 4, 2]
    assert model.config.mod_keep_ratio == 0.2 and model.config.mod_keep_per_frame == 2


def test_a_warmup_outside_zero_to_one_is_refused_before_anything_is_read():
    with pytest.raises(UserError, match=r"^mod_capacity_warmup 1.5: must lie in \[0, 1\)$"):
        main(
            [
                "--dataset_name",
                "no/such/folder",
                "--model_name_or_path",
                "no/such/model",
                "--mod_capacity_warmup",
                "1.5",
            ]
        )
