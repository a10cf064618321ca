import pytest

from modeling_videollm_mod import VideoLLMMoDConfig
from videollm_mod.presets import tiny_config


def test_default_routes_interleaved_odd_layers():
    assert tiny_config(num_hidden_layers=6).mod_layers == [1, 3, 5]


def test_empty_mod_layers_is_dense():
    assert tiny_config(mod_layers=[]).mod_layers == []


@pytest.mark.parametrize(("ratio", "k"), [(0.0, 0), (0.1, 1), (0.2, 2), (0.3, 3), (0.5, 5), (1.0, 10)])
def test_keep_per_frame_is_ceil_of_ratio_times_frame_tokens(ratio, k):
    assert tiny_config(mod_keep_ratio=ratio).mod_keep_per_frame == k


def test_frame_num_tokens_is_pooled_token_plus_grid():
    assert tiny_config(frame_token_pooled=[2, 4]).frame_num_tokens == 9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mod_layers": [1, 4]}, r"mod_layers=\[1, 4\]: layer indices \[4\] are outside \[0, 3\]"),
        ({"mod_layers": [-1]}, r"layer indices \[-1\]"),
        ({"mod_keep_ratio": 1.5}, r"mod_keep_ratio=1.5 must lie in \[0, 1\]"),
        ({"mod_keep_ratio": -0.1}, r"mod_keep_ratio=-0.1"),
        ({"mod_selection": "topk"}, r"mod_selection='topk' must be one of"),
    ],
)
def test_invalid_settings_name_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_config_round_trips_through_dict(tmp_path):
    config = tiny_config(mod_layers=[0, 2], mod_keep_ratio=0.3, mod_selection="uniform")
    config.save_pretrained(tmp_path)
    loaded = VideoLLMMoDConfig.from_pretrained(tmp_path)
    assert (loaded.mod_layers, loaded.mod_keep_ratio, loaded.mod_selection) == ([0, 2], 0.3, "uniform")
    assert loaded.text_config.num_hidden_layers == 4 and loaded.vision_config.image_size == 24
