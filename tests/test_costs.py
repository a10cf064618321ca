"""The cost measurement's synthetic narration layout (`recipes.costs.narration_stream`), and what it shows: MoD saves
more the fewer tokens are not vision tokens."""

import pytest
import torch

from modeling_videollm_mod import VideoLLMMoDForCausalLM
from videollm_mod.presets import TINY_IDS, tiny_config
from videollm_mod.recipes.costs import count_flops, narration_stream, non_vision_share


def test_narration_stream_lays_out_frames_intervals_and_narrations_exactly():
    config = tiny_config()
    stream = narration_stream(config, num_frames=8, narrate_every=4, rows=2)
    ids, labels = stream["input_ids"], stream["labels"]
    # a 4-token prompt, 8 frames of 10 placeholders, 6 intervals (not after frames 3 and 7, which are narrated), and
    # 2 narrations of the response token, 6 words and EOS
    assert ids.shape == (2, 4 + 8 * 10 + 6 + 2 * 8)
    row = ids[0].tolist()
    assert row[0] == TINY_IDS["bos"] and row[4:14] == [TINY_IDS["video"]] * 10 and row[14] == TINY_IDS["interval"]
    narration = 4 + 4 * 10 + 3
    assert row[narration] == TINY_IDS["response"] and row[narration + 7] == TINY_IDS["eos"]
    assert row.count(TINY_IDS["response"]) == 2 and row.count(TINY_IDS["interval"]) == 6
    assert torch.equal(labels == -100, ids == TINY_IDS["video"])  # every token but the placeholders is labelled
    assert stream["frame_features"].shape == (16, 10, config.vision_config.hidden_size)
    assert non_vision_share(ids, TINY_IDS["video"]) == pytest.approx(26 / 106)
    padded = torch.tensor([[1, 1, 1, 1]] + [[1, 1, 0, 0]])
    assert non_vision_share(torch.tensor([[10, 10, 5, 10], [10, 5, 10, 10]]), 10, padded) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="narrate_every=0"):
        narration_stream(config, num_frames=8, narrate_every=0)


def test_mod_saves_more_flops_the_fewer_tokens_are_not_vision_tokens():
    torch.manual_seed(0)
    models = {name: VideoLLMMoDForCausalLM(tiny_config(mod_layers=layers)) for name, layers in (("dense", []),
                                                                                                  ("mod", None))}  # fmt: skip
    ratios = {}
    for every in (1, 4, 16):
        inputs = {**narration_stream(models["dense"].config, 32, every), "use_cache": False}
        flops = {name: count_flops(model, inputs) for name, model in models.items()}
        ratios[every] = flops["mod"] / flops["dense"]
    assert ratios[16] < ratios[4] < ratios[1] < 1, ratios


def test_peak_tensor_bytes_counts_what_tensors_hold_at_once():
    from videollm_mod.recipes.costs import peak_tensor_bytes

    def step():
        first = torch.ones(2**18)  # 1 MiB of float32
        second = torch.ones(2**19)  # 2 MiB, while the first is held
        del first, second
        return torch.ones(2**18).sum()  # 1 MiB more, after both are freed

    assert peak_tensor_bytes(step) == 3 * 2**20


def test_the_cost_measurement_trains_with_the_loss_the_sft_recipe_trains_with():
    """TRL's fused LM head (the log-probabilities of the labelled positions only) where `stream_loss_weight` is 1, as
    `SFTTrainer` computes it; the model's own weighted loss otherwise."""
    from videollm_mod.recipes.costs import with_trainers_loss

    torch.manual_seed(0)
    model = VideoLLMMoDForCausalLM(tiny_config(suppress_video_token_logit=False))
    inputs = {**narration_stream(model.config, 6, 2), "use_cache": False}
    fused = with_trainers_loss(model, inputs)
    patched = model.forward
    assert fused["fused_lm_head"] is True and with_trainers_loss(model, inputs)["fused_lm_head"]
    assert model.forward == patched  # patched once
    output = model(**fused)
    assert getattr(output, "logits", None) is None  # no (B, L, V) logits built
    assert torch.allclose(output.loss, model(**inputs).loss, rtol=1e-5)
    weighted = VideoLLMMoDForCausalLM(tiny_config(stream_loss_weight=3.0))
    assert with_trainers_loss(weighted, inputs) is inputs


def test_the_fused_head_projects_only_the_labelled_positions_on_the_cpu_too(fused_head_rows):
    """TRL projects every position off CUDA / XPU; the recipe's switch makes it project the labelled ones only (under
    a quarter of this stream's), for the same loss and gradients, and restores TRL's own choice on leaving."""
    import trl.trainer.utils as trl_utils

    from videollm_mod.recipes.costs import with_trainers_loss
    from videollm_mod.recipes.sft import fused_head_on_labelled_positions

    torch.manual_seed(0)
    model = VideoLLMMoDForCausalLM(tiny_config())
    stream = narration_stream(model.config, 8, 4)
    inputs = with_trainers_loss(model, {**stream, "use_cache": False})
    projected = fused_head_rows

    def loss_and_gradient():
        loss = model(**inputs).loss
        loss.backward()
        gradient = model.lm_head.weight.grad.clone()
        model.zero_grad(set_to_none=True)
        return loss.detach(), gradient

    every = loss_and_gradient()
    choice = trl_utils._use_triton
    with fused_head_on_labelled_positions():
        labelled = loss_and_gradient()
    assert trl_utils._use_triton is choice
    length = stream["input_ids"].shape[1]
    assert projected == [length - 1, int((stream["labels"][:, 1:] != -100).sum())]
    assert projected[1] < length / 4
    assert torch.allclose(labelled[0], every[0], rtol=1e-6)
    assert torch.allclose(labelled[1], every[1], rtol=1e-5, atol=1e-8)


def test_with_lora_the_peak_holds_the_adapters_state_not_the_weights():
    """Full fine-tuning keeps gradients and two AdamW states of every weight; LoRA only of its adapters (and of the
    connector and routers, trained fully)."""
    import re

    from videollm_mod.recipes.costs import peak_training_memory
    from videollm_mod.recipes.sft import LLM_LINEARS

    config = tiny_config()
    batch = narration_stream(config, num_frames=4, narrate_every=2)
    full = peak_training_memory(config, batch, trainers_loss=True)
    lora = peak_training_memory(config, batch, trainers_loss=True, lora_rank=2)
    model = VideoLLMMoDForCausalLM(config)
    frozen = 4 * sum(m.weight.numel() for name, m in model.named_modules() if re.fullmatch(LLM_LINEARS, name))
    assert full - lora >= 2 * frozen  # of the frozen float32 linears, at least the gradients and one AdamW state
