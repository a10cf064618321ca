"""Decoder families: an unsupported one is refused by name; a stock checkpoint of each supported family, saved by
transformers, loads into the language part under its own names and computes the same logits on text; the LoRA recipe
targets the same linears in every family."""

import re

import pytest
import torch
from conftest import FAMILIES, frame_features, stream_ids
from transformers import AutoConfig, AutoModelForCausalLM

from modeling_videollm_mod.configuration_videollm_mod import TEXT_MODEL_TYPES
from modeling_videollm_mod.families_videollm_mod import TEXT_FAMILIES
from videollm_mod.presets import from_text_model, tiny_config


def test_the_family_table_covers_the_supported_model_types():
    assert tuple(TEXT_FAMILIES) == TEXT_MODEL_TYPES == tuple(FAMILIES)


@pytest.mark.parametrize("model_type", ["gemma", "gpt2"])
def test_an_unsupported_family_is_refused_by_name_with_the_supported_ones(model_type):
    with pytest.raises(ValueError) as error:
        tiny_config(text_model_type=model_type)
    assert str(error.value) == (
        f"text_config.model_type={model_type!r} is not supported: the decoder must be one of "
        "llama, mistral, qwen2, qwen3"
    )


def stock_checkpoint(folder, family: str, tie: bool):
    """A tiny random `...ForCausalLM` of `family`, saved by transformers (safetensors) as a stock checkpoint is."""
    text = tiny_config(**FAMILIES[family]).text_config.to_dict()
    torch.manual_seed(0)
    stock = AutoModelForCausalLM.from_config(AutoConfig.for_model(**{**text, "tie_word_embeddings": tie})).eval()
    stock.save_pretrained(folder)
    return stock


# Qwen2.5 and Qwen3 small checkpoints tie their embeddings; Llama-3 and Mistral do not.
@pytest.mark.parametrize("family, tie", [("llama", False), ("mistral", False), ("qwen2", True), ("qwen3", True)])
def test_a_stock_checkpoint_loads_into_the_language_part(tmp_path, family, tie):
    stock = stock_checkpoint(tmp_path, family, tie)
    vision = tiny_config().vision_config.to_dict()
    model, info = from_text_model(str(tmp_path), vision_config=vision)
    model.eval()

    assert type(model.model.layers[0]).__name__.lower() == f"videollmmod{family}decoderlayer"
    assert info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    new = {re.sub(r"\d+", "N", k.split(".")[1] if ".router." not in k else "router") for k in info["missing_keys"]}
    assert new == {"vision_tower", "connector", "router"}
    assert sorted(k for k in info["missing_keys"] if ".router." in k) == [
        f"model.layers.{i}.router.{p}" for i in (1, 3) for p in ("bias", "weight")
    ]
    assert model.config.video_token_id == stock.config.vocab_size  # the placeholder lies past the vocabulary
    assert (model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()) == tie

    ids = torch.randint(13, 99, (2, 40))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, stock(input_ids=ids).logits)
        # frames go through the new tower and connector, routed in layers 1 and 3
        frames = stream_ids(2).masked_fill(stream_ids(2) == 10, model.config.video_token_id)
        assert model(input_ids=frames, frame_features=frame_features(2)).logits.isfinite().all()


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_targets_the_same_linears_in_every_family(family):
    from videollm_mod.recipes.sft import LLM_LINEARS

    model = AutoModelForCausalLM.from_config(tiny_config(**FAMILIES[family]).text_config)
    targets = [name for name, _ in model.named_modules() if re.fullmatch(LLM_LINEARS, name)]
    per_layer = {name.split(".", 3)[3] for name in targets}
    assert per_layer == {f"self_attn.{p}_proj" for p in "qkvo"} | {f"mlp.{p}_proj" for p in ("gate", "up", "down")}
    assert len(targets) == 7 * model.config.num_hidden_layers


@pytest.mark.parametrize("family", FAMILIES)
def test_the_parallel_plans_are_the_familys(family):
    from modeling_videollm_mod import VideoLLMMoDForCausalLM

    model = VideoLLMMoDForCausalLM(tiny_config(**FAMILIES[family]))
    text = model.config.text_config
    assert {f"model.{k}": v for k, v in text.base_model_tp_plan.items()}.items() <= model.tp_plan.items()
    assert model.tp_plan["model.embed_tokens"] == "embedding_rowwise" and "lm_head" in model.tp_plan
    assert ("model.layers.*.self_attn.q_norm" in model.tp_plan) == (family == "qwen3")  # Qwen3's q/k norms
    assert set(model.pp_plan) == {"lm_head", *(f"model.{k}" for k in text.base_model_pp_plan)}


def test_mod_saves_the_same_flops_and_kv_bytes_in_every_family():
    from modeling_videollm_mod import VideoLLMMoDForCausalLM
    from videollm_mod.presets import TINY_IDS
    from videollm_mod.recipes.costs import count_flops, kv_bytes_by_frame

    ids = stream_ids(6)
    inputs = {"input_ids": ids, "labels": ids, "frame_features": frame_features(6), "use_cache": False}
    ratios = {}
    for family in FAMILIES:
        models = {name: VideoLLMMoDForCausalLM(tiny_config(mod_layers=layers, **FAMILIES[family]))
                  for name, layers in (("dense", []), ("mod", None))}  # fmt: skip
        flops = {name: count_flops(model, inputs) for name, model in models.items()}
        kv = {name: kv_bytes_by_frame(m.eval(), frame_features(6), TINY_IDS["video"], TINY_IDS["interval"])[-1]
              for name, m in models.items()}  # fmt: skip
        ratios[family] = (flops["mod"] / flops["dense"], kv["mod"] / kv["dense"])
    assert ratios["llama"][0] < 0.9 and ratios["llama"][1] == (2 * 11 + 2 * 3) / (4 * 11)  # odd layers keep 2 of 10
    for family, (flop_ratio, kv_ratio) in ratios.items():
        assert abs(flop_ratio - ratios["llama"][0]) < 0.01 and kv_ratio == ratios["llama"][1], (family, ratios)


@pytest.mark.parametrize("family, name", [("llama", "Llama"), ("qwen3", "Qwen3")])
def test_the_model_card_names_the_decoder_family(family, name):
    from videollm_mod.conversion.model_card import template_kwargs

    text = template_kwargs(tiny_config(**FAMILIES[family]))["language_model"]
    assert text == f"{name}, 4 layers, hidden size 32, vocabulary 99"
