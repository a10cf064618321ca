"""The language part is the stock decoder of its family; r = 1 without scaling is the dense model; both attention
paths agree."""

import pytest
import torch
from conftest import FAMILIES, frame_features, stream_ids
from transformers import AutoModelForCausalLM

from modeling_videollm_mod import VideoLLMMoDForCausalLM
from modeling_videollm_mod.modeling_videollm_mod import pool_frame_tokens
from videollm_mod.presets import full_size_config, tiny_config


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_dense_language_part_equals_the_stock_decoder(family, implementation):
    """Text through a dense model: the family's own `...ForCausalLM` with the same weights, sliding windows (24
    tokens, crossed by these 40) included."""
    config = tiny_config(mod_layers=[], suppress_video_token_logit=False, **FAMILIES[family])
    model = VideoLLMMoDForCausalLM._from_config(config, attn_implementation=implementation).eval()
    stock = AutoModelForCausalLM.from_config(model.config.text_config, attn_implementation=implementation).eval()
    assert type(stock).__name__.lower().startswith(family)
    language_weights = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("model.vision", "model.conn"))
    }
    stock.load_state_dict(language_weights, strict=True)
    ids = torch.randint(13, 99, (2, 40))
    with torch.no_grad():
        ours, theirs = model(input_ids=ids).logits, stock(input_ids=ids).logits
    assert (ours - theirs).abs().max() <= 1e-5


def test_keep_all_without_scaling_equals_dense_model():
    dense = VideoLLMMoDForCausalLM(tiny_config(mod_layers=[])).eval()
    full_keep = VideoLLMMoDForCausalLM(tiny_config(mod_keep_ratio=1.0, mod_router_scaling=False)).eval()
    missing, unexpected = full_keep.load_state_dict(dense.state_dict(), strict=False)
    assert sorted(missing) == [
        "model.layers.1.router.bias",
        "model.layers.1.router.weight",
        "model.layers.3.router.bias",
        "model.layers.3.router.weight",
    ]
    assert unexpected == []
    ids, features = stream_ids(3), frame_features(3)
    with torch.no_grad():
        a = dense(input_ids=ids, frame_features=features).logits
        b = full_keep(input_ids=ids, frame_features=features).logits
    assert (a - b).abs().max() <= 1e-5


@pytest.mark.parametrize("mod_layers", [[], None])
def test_sdpa_equals_eager(mod_layers):
    config = tiny_config(mod_layers=mod_layers)
    sdpa = VideoLLMMoDForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    eager = VideoLLMMoDForCausalLM._from_config(config, attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    assert eager.model.layers[1].self_attn.config._attn_implementation == "eager"
    ids, features = stream_ids(3), frame_features(3)
    with torch.no_grad():
        a = sdpa(input_ids=ids, frame_features=features).logits
        b = eager(input_ids=ids, frame_features=features).logits
    assert (a - b).abs().max() <= 1e-5


def test_pixel_and_feature_paths_agree():
    model = VideoLLMMoDForCausalLM(tiny_config()).eval()
    pixels = torch.rand(2, 3, 24, 24) * 2 - 1
    ids = stream_ids(2)
    with torch.no_grad():
        vision = model.model.vision_tower(pixels)
        features = pool_frame_tokens(vision, model.config.frame_token_pooled)
        from_pixels = model(input_ids=ids, pixel_values_videos=pixels).logits
        from_features = model(input_ids=ids, frame_features=features).logits
    assert features.shape == (2, 10, 32)
    assert torch.equal(features[:, 0], vision.pooler_output)
    # Token 1 of the grid is the mean of the top-left 2x2 patches of the 6x6 patch grid (row-major).
    top_left = vision.last_hidden_state.view(2, 6, 6, 32)[:, :2, :2].mean((1, 2))
    assert torch.allclose(features[:, 1], top_left, atol=1e-6)
    assert (from_pixels - from_features).abs().max() <= 1e-6


def test_full_size_builds_on_meta_with_expected_parameter_count():
    with torch.device("meta"):
        model = VideoLLMMoDForCausalLM(full_size_config())
    llama3_8b = 8_030_261_248  # Meta-Llama-3-8B-Instruct, untied lm_head
    siglip_l16_384 = 316_283_904  # SigLIP-L/16-384 vision model, attention-pooling head included
    connector = (1024 * 4096 + 4096) + (4096 * 4096 + 4096)
    routers = 16 * (4096 + 1)  # interleaved: layers 1, 3, ..., 31
    assert model.num_parameters() == llama3_8b + siglip_l16_384 + connector + routers
    assert model.config.mod_layers == list(range(1, 32, 2)) and model.config.mod_keep_per_frame == 2
