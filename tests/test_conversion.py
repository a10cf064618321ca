"""VideoLLM-online -> VideoLLM-MoD conversion on a tiny original-format checkpoint built and saved by PEFT itself:
logits and streaming decisions match the reference computation, every tensor is accounted for, bad input aborts."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from modeling_videollm_mod import VideoLLMMoDForCausalLM
from videollm_mod import cli
from videollm_mod.conversion import ConversionError, convert
from videollm_mod.conversion.checkpoint_io import remote_code_files
from videollm_mod.conversion.example import (
    HIDDEN,
    INTERVAL,
    LORA_ALPHA,
    LORA_R,
    RESPONSE,
    VISION_HIDDEN,
    VOCAB,
    load_reference,
    write_example,
)

FRAME_TOKENS = 10
PLACEHOLDER = VOCAB  # `<v>` is out of vocabulary, as in the original
ADAPTER_FILE = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """Folders `base` (Llama), `adapter` (PEFT LoRA with the original regex + connector), `vision` (SigLIP), and the
    PEFT model and vision model that compute the reference."""
    root = tmp_path_factory.mktemp("original")
    write_example(root)
    peft_model, vision = load_reference(root)
    return {"root": root, "peft": peft_model, "vision": vision}


def convert_original(original, output, **kwargs):
    root = original["root"]
    return convert(str(root / "adapter"), str(root / "base"), str(root / "vision"), output, **kwargs)


@pytest.fixture(scope="module")
def converted(original, tmp_path_factory):
    output = tmp_path_factory.mktemp("converted") / "videollm-online-tiny"
    convert_original(original, output, dtype="float32")
    return output


def stream(num_frames: int) -> torch.LongTensor:
    """(1, L): bos, text, `\\n[` frames joined by `,` `]\\n`, text: the live1+ layout with the original ids."""
    ids = [1, 20, 21, 22]
    for f in range(num_frames):
        ids += [PLACEHOLDER] * FRAME_TOKENS + ([INTERVAL] if f < num_frames - 1 else [RESPONSE])
    return torch.tensor([ids + [30, 31, 2]])


def reference_logits(original, input_ids, features):
    """The original `joint_embed`: embed ids clamped into the vocabulary, overwrite `<v>` with connector outputs."""
    peft_model = original["peft"]
    live = peft_model.get_base_model()
    embeds = live.model.embed_tokens(input_ids.clamp(max=VOCAB - 1))
    embeds[input_ids == PLACEHOLDER] = live.connector(features).flatten(0, 1)
    return peft_model(inputs_embeds=embeds).logits


def original_vision_features(vision, pixel_values):
    """The original `_siglip_vision_encode`: pooler output, then the patch grid average-pooled to 3x3, row-major."""
    out = vision(pixel_values)
    grid = out.last_hidden_state.unflatten(1, (6, 6)).permute(0, 3, 1, 2)  # (T, D, 6, 6)
    pooled = F.adaptive_avg_pool2d(grid, (3, 3)).flatten(2).transpose(1, 2)  # (T, 9, D)
    return torch.cat([out.pooler_output[:, None], pooled], dim=1)  # (T, 10, D)


def decision_probabilities(logits, input_ids):
    """P(interval) after the last placeholder of each frame: the streaming decision's input."""
    is_video = input_ids[0] == PLACEHOLDER
    last = is_video & ~F.pad(is_video[1:], (0, 1))
    return logits[0, last].softmax(-1)[:, INTERVAL]


def load_converted(folder):
    return VideoLLMMoDForCausalLM.from_pretrained(folder).eval()


@torch.no_grad()
def test_converted_logits_match_peft_reference_with_frame_features(original, converted):
    input_ids, features = stream(3), torch.randn(3, FRAME_TOKENS, VISION_HIDDEN)
    expected = reference_logits(original, input_ids, features)
    logits = load_converted(converted)(input_ids=input_ids, frame_features=features).logits
    assert logits.shape == expected.shape == (1, input_ids.shape[1], VOCAB)
    assert (logits - expected).abs().max().item() < 1e-5


@torch.no_grad()
def test_converted_logits_match_reference_from_pixels_through_siglip(original, converted):
    input_ids, pixels = stream(2), torch.randn(2, 3, 24, 24)
    expected = reference_logits(original, input_ids, original_vision_features(original["vision"], pixels))
    logits = load_converted(converted)(input_ids=input_ids, pixel_values_videos=pixels).logits
    assert (logits - expected).abs().max().item() < 1e-5


@torch.no_grad()
def test_streaming_decision_probabilities_match(original, converted):
    input_ids, features = stream(4), torch.randn(4, FRAME_TOKENS, VISION_HIDDEN) * 3
    expected = decision_probabilities(reference_logits(original, input_ids, features), input_ids)
    got = decision_probabilities(
        load_converted(converted)(input_ids=input_ids, frame_features=features).logits, input_ids
    )
    assert got.shape == (4,)
    assert (got - expected).abs().max().item() < 1e-6
    assert torch.equal(got < 0.725, expected < 0.725)


def test_merged_weight_is_base_plus_scaled_lora_product(original, converted):
    adapter = load_file(original["root"] / "adapter" / ADAPTER_FILE)
    base = load_file(original["root"] / "base" / "model.safetensors")
    prefix = "base_model.model.model.layers.1.mlp.down_proj"
    delta = (LORA_ALPHA / LORA_R) * adapter[f"{prefix}.lora_B.weight"] @ adapter[f"{prefix}.lora_A.weight"]
    with safe_open(converted / "model.safetensors", "pt") as f:
        merged = f.get_tensor("model.layers.1.mlp.down_proj.weight")
    assert delta.abs().max() > 1e-3
    torch.testing.assert_close(merged, base["model.layers.1.mlp.down_proj.weight"] + delta, rtol=0, atol=1e-6)


def test_lm_head_comes_from_the_adapters_saved_base_layer(original, converted):
    report = json.loads((converted / "conversion_report.json").read_text())
    assert report["superseded"] == ["base: lm_head.weight"]
    assert "lm_head.weight" in report["lora_merged"]


def test_every_target_parameter_is_written_and_every_source_tensor_accounted_for(original, converted):
    with safe_open(converted / "model.safetensors", "pt") as f:
        written = set(f.keys())
    expected = set(VideoLLMMoDForCausalLM(load_converted(converted).config).state_dict())
    assert written == expected
    report = json.loads((converted / "conversion_report.json").read_text())
    assert len(report["lora_merged"]) == 2 * 7 + 1  # q k v o gate up down in 2 layers, and lm_head
    assert report["lora_scaling"] == [LORA_ALPHA / LORA_R]
    assert report["fresh"] == [] and report["dropped"] == {}


def test_placeholder_stays_outside_the_vocabulary(converted):
    config = json.loads((converted / "config.json").read_text())
    assert config["video_token_id"] == VOCAB == config["text_config"]["vocab_size"]
    assert (config["frame_token_interval_id"], config["stream_response_token_id"]) == (INTERVAL, RESPONSE)
    assert config["mod_layers"] == [] and config["frame_token_pooled"] == [3, 3]


def test_output_folder_holds_config_code_processor_generation_config_and_card(converted):
    data = {p.name for p in converted.iterdir() if p.suffix != ".py"}
    code = {p.name for p in converted.glob("*.py")}
    assert data == {
        "README.md",
        "chat_template.jinja",
        "config.json",
        "conversion_report.json",
        "generation_config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert code == {p.name for p in remote_code_files()}
    assert {"configuration_videollm_mod.py", "modeling_videollm_mod.py", "processing_videollm_mod.py"} <= code
    config = json.loads((converted / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_videollm_mod.VideoLLMMoDForCausalLM"
    assert json.loads((converted / "generation_config.json").read_text())["eos_token_id"] == 2


@torch.no_grad()
def test_small_shards_write_an_index_and_reload_identically(original, converted, tmp_path):
    sharded = convert_original(original, tmp_path / "sharded", dtype="float32", max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    input_ids, features = stream(2), torch.randn(2, FRAME_TOKENS, VISION_HIDDEN)
    a = load_converted(converted)(input_ids=input_ids, frame_features=features).logits
    b = load_converted(sharded)(input_ids=input_ids, frame_features=features).logits
    assert torch.equal(a, b)


def test_mod_conversion_adds_fresh_routers_to_the_odd_layers(original, converted, tmp_path):
    routed = convert_original(original, tmp_path / "mod", dtype="float32", mod=True)
    config = json.loads((routed / "config.json").read_text())
    assert config["mod_layers"] == [1]
    dense, mod = load_file(converted / "model.safetensors"), load_file(routed / "model.safetensors")
    assert sorted(set(mod) - set(dense)) == ["model.layers.1.router.bias", "model.layers.1.router.weight"]
    assert all(torch.equal(dense[k], mod[k]) for k in dense)


def test_bfloat16_output_keeps_parameters_in_bfloat16(original, tmp_path):
    output = convert_original(original, tmp_path / "bf16", dtype="bfloat16")
    weights = load_file(output / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert json.loads((output / "config.json").read_text())["dtype"] == "bfloat16"


# ------------------------------------------------------------------------------------------------ bad input
def edited_adapter(original, tmp_path, edit):
    """A copy of the adapter folder whose tensors went through `edit(dict)`."""
    folder = tmp_path / "adapter"
    shutil.copytree(original["root"] / "adapter", folder)
    tensors = load_file(folder / ADAPTER_FILE)
    edit(tensors)
    save_file(tensors, folder / ADAPTER_FILE)
    return folder


def convert_with_adapter(original, adapter, output, **kwargs):
    root = original["root"]
    return convert(str(adapter), str(root / "base"), str(root / "vision"), output, dtype="float32", **kwargs)


def test_missing_lora_factor_is_named_and_nothing_is_written(original, tmp_path):
    key = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
    adapter = edited_adapter(original, tmp_path, lambda t: t.pop(key))
    with pytest.raises(ConversionError, match=r"missing keys:\n.*v_proj\.lora_B\.weight") as error:
        convert_with_adapter(original, adapter, tmp_path / "out")
    assert key in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no output, no temporary folder left


def test_adapter_without_both_factors_of_a_target_module_is_named(original, tmp_path):
    prefix = "base_model.model.model.layers.1.mlp.up_proj"
    adapter = edited_adapter(
        original, tmp_path, lambda t: [t.pop(f"{prefix}.lora_A.weight"), t.pop(f"{prefix}.lora_B.weight")]
    )
    with pytest.raises(
        ConversionError, match=rf"missing keys:\n  adapter: {prefix}\.lora_A\.weight\n  adapter: {prefix}\.lora_B"
    ):
        convert_with_adapter(original, adapter, tmp_path / "out")


def test_wrong_connector_shape_is_named(original, tmp_path):
    key = "base_model.model.connector.0.weight"
    adapter = edited_adapter(original, tmp_path, lambda t: t.update({key: torch.zeros(HIDDEN, VISION_HIDDEN + 1)}))
    with pytest.raises(ConversionError, match=rf"wrong shapes:\n  adapter: {key} has shape \[32, 17\], "):
        convert_with_adapter(original, adapter, tmp_path / "out")


def test_wrong_lora_rank_shapes_are_named(original, tmp_path):
    key = "base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight"
    adapter = edited_adapter(original, tmp_path, lambda t: t.update({key: torch.zeros(LORA_R + 1, HIDDEN)}))
    with pytest.raises(
        ConversionError,
        match=r"wrong shapes:\n.*gate_proj\.lora_B\.weight \[69, 4\] @ .*gate_proj\.lora_A\.weight \[5, 32\]",
    ):
        convert_with_adapter(original, adapter, tmp_path / "out")


def test_lora_on_an_unknown_module_is_named(original, tmp_path):
    key = "base_model.model.model.layers.0.self_attn.rotary.lora_A.weight"
    adapter = edited_adapter(original, tmp_path, lambda t: t.update({key: torch.zeros(LORA_R, HIDDEN)}))
    with pytest.raises(
        ConversionError,
        match=r"unknown target modules\):\n  adapter: .*rotary\.lora_A\.weight -> model\.layers\.0\.self_attn\.rotary\.weight",
    ):
        convert_with_adapter(original, adapter, tmp_path / "out")


def test_unmapped_source_key_is_named(original, tmp_path):
    key = "base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector"
    adapter = edited_adapter(original, tmp_path, lambda t: t.update({key: torch.zeros(69)}))
    with pytest.raises(ConversionError, match=rf"source keys that no rule maps:\n  adapter: {key}"):
        convert_with_adapter(original, adapter, tmp_path / "out")


def test_missing_base_tensor_is_named(original, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(original["root"] / "base", base)
    tensors = load_file(base / "model.safetensors")
    del tensors["model.layers.1.post_attention_layernorm.weight"]
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})
    root = original["root"]
    with pytest.raises(ConversionError, match=r"missing keys:\n  model\.layers\.1\.post_attention_layernorm\.weight"):
        convert(str(root / "adapter"), str(base), str(root / "vision"), tmp_path / "out")


def pickled_adapter(original, tmp_path):
    folder = tmp_path / "adapter_bin"
    folder.mkdir()
    shutil.copy(original["root"] / "adapter" / "adapter_config.json", folder)
    torch.save(load_file(original["root"] / "adapter" / ADAPTER_FILE), folder / "adapter_model.bin")
    return folder


def test_pickled_adapter_is_refused_naming_the_file(original, tmp_path):
    adapter = pickled_adapter(original, tmp_path)
    with pytest.raises(ConversionError, match=r"adapter_bin/adapter_model\.bin is a pickle; refusing to load it"):
        convert_with_adapter(original, adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickled_adapter_converts_identically_when_allowed(original, converted, tmp_path):
    adapter = pickled_adapter(original, tmp_path)
    output = convert_with_adapter(original, adapter, tmp_path / "out", allow_pickle=True)
    a, b = load_file(converted / "model.safetensors"), load_file(output / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dora_adapter_is_refused_naming_the_setting(original, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(original["root"] / "adapter", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ConversionError, match=r"adapter_config\.json: unsupported LoRA settings \{'use_dora': True\}"):
        convert_with_adapter(original, adapter, tmp_path / "out")


def test_existing_output_is_not_replaced_without_overwrite(original, converted):
    before = (converted / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        convert_original(original, converted, dtype="float32")
    assert (converted / "model.safetensors").stat().st_mtime_ns == before


def test_command_reports_the_error_in_one_line_and_exits_1(original, tmp_path, capsys):
    root = original["root"]
    adapter = pickled_adapter(original, tmp_path)
    argv = ["--adapter", str(adapter), "--base", str(root / "base"), "--vision", str(root / "vision")]
    assert cli.main(["convert", *argv, "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("videollm-mod convert: ") and "adapter_model.bin is a pickle" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("adapter", ["{tmp}/nope/adapter", "./nope/adapter", "nope/adapter"])
def test_a_missing_adapter_is_one_line_whether_a_path_or_a_hub_id(adapter, tmp_path, monkeypatch, capsys):
    """`nope/adapter` has the form of a Hub id: offline (as the tests run) the Hub lookup fails, and the error is the
    one a local path gets, not the Hub's."""
    monkeypatch.chdir(tmp_path)
    adapter = adapter.format(tmp=tmp_path)
    assert cli.main(["convert", "--adapter", adapter, "--base", "b", "--vision", "v", "--output", "out"]) == 1
    expected = f"videollm-mod convert: --adapter {adapter}: neither a local folder nor reachable on the Hub\n"
    assert capsys.readouterr().err == expected


def test_report_and_card_publish_no_local_path(original, converted):
    published = (converted / "conversion_report.json").read_text() + (converted / "README.md").read_text()
    assert str(original["root"]) not in published and "/tmp" not in published
    report = json.loads((converted / "conversion_report.json").read_text())
    assert report["sources"] == {name: f"local folder '{name}'" for name in ("adapter", "base", "vision")}


def test_card_of_local_sources_claims_no_base_model_licence_or_data(converted):
    from huggingface_hub import ModelCard

    data = ModelCard.load(converted / "README.md").data
    assert (data.base_model, data.license, data.datasets) == (None, None, None)
    assert data.pipeline_tag == "video-text-to-text" and "dense" in data.tags


def test_card_takes_licence_from_the_base_and_names_hub_sources(original, tmp_path):
    from huggingface_hub import ModelCard, ModelCardData

    from videollm_mod.conversion.convert_videollm_online import converted_card_data

    root = original["root"]
    base = tmp_path / "base"
    shutil.copytree(root / "base", base)
    ModelCard.from_template(ModelCardData(license="llama3")).save(base / "README.md")
    data = converted_card_data("chenjoya/videollm-online-8b-v1plus", "meta-llama/Meta-Llama-3-8B-Instruct", base,
                               root / "adapter", mod=True)  # fmt: skip
    assert data.license == "llama3"
    assert data.base_model == ["meta-llama/Meta-Llama-3-8B-Instruct", "chenjoya/videollm-online-8b-v1plus"]
    assert data.datasets == ["chenjoya/videollm-online-chat-ego4d-134k"] and "dense" not in data.tags


def test_released_files_and_folders_are_world_readable(converted):
    assert converted.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in converted.iterdir()} == {0o644}


def test_a_base_of_another_family_is_refused_naming_the_file_and_the_way(original, tmp_path):  # noqa: F811
    import json
    import shutil

    sources = {name: tmp_path / name for name in ("adapter", "base", "vision")}
    for name, folder in sources.items():
        shutil.copytree(original["root"] / name, folder)
    config = json.loads((sources["base"] / "config.json").read_text())
    (sources["base"] / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    with pytest.raises(ConversionError, match=r"base/config\.json: model_type='qwen2'; the converter needs llama .*"
                       r"from_text_model"):  # fmt: skip
        convert(str(sources["adapter"]), str(sources["base"]), str(sources["vision"]), tmp_path / "out")
    assert not (tmp_path / "out").exists()
