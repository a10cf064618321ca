"""Streaming with the cache equals one full-sequence forward; padding, generate and cropping."""

import pytest
import torch
from conftest import FAMILIES, FRAME_TOKENS, frame_features, stream_ids

from modeling_videollm_mod import VideoLLMMoDCache, VideoLLMMoDForCausalLM
from videollm_mod.presets import TINY_IDS, tiny_config


def frame_chunks(ids: torch.Tensor):
    """Split (1, L) ids into the pieces a stream feeds: text up to a frame, each frame, the rest one token at a time."""
    video = (ids[0] == TINY_IDS["video"]).tolist()
    cuts, i = [], 0
    while i < len(video):
        if video[i]:
            cuts.append((i, i + FRAME_TOKENS))
            i += FRAME_TOKENS
        else:
            j = i
            while j < len(video) and not video[j] and j - i < 2:
                j += 1
            cuts.append((i, j))
            i = j
    return cuts


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mod_layers", [[], None, [0, 1, 2, 3]], ids=["dense", "interleaved", "all-routed"])
def test_frame_by_frame_with_cache_equals_full_forward(mod_layers, family):
    model = VideoLLMMoDForCausalLM(tiny_config(mod_layers=mod_layers, **FAMILIES[family])).eval()
    ids, features = stream_ids(4), frame_features(4)
    with torch.no_grad():
        full = model(input_ids=ids, frame_features=features).logits
        cache, pieces, frame = None, [], 0
        for start, stop in frame_chunks(ids):
            chunk = ids[:, start:stop]
            is_frame = bool((chunk == TINY_IDS["video"]).all())
            out = model(
                input_ids=chunk,
                frame_features=features[frame : frame + 1] if is_frame else None,
                cache=cache,
                use_cache=True,
            )
            frame += is_frame
            cache = out.cache
            pieces.append(out.logits)
    assert (torch.cat(pieces, 1) - full).abs().max() <= 1e-5
    assert cache.get_seq_length() == ids.shape[1]
    kept = int((ids != TINY_IDS["video"]).sum()) + 4 * 2
    expected = [kept if i in model.config.mod_layers else ids.shape[1] for i in range(4)]
    assert [layer.keys.shape[-2] for layer in cache.layers] == expected


@pytest.mark.parametrize("mod_layers", [[], None])
def test_left_padded_batch_equals_unpadded_rows(mod_layers):
    model = VideoLLMMoDForCausalLM(tiny_config(mod_layers=mod_layers)).eval()
    short, long = stream_ids(1, seed=1), stream_ids(2, seed=2)
    pad = long.shape[1] - short.shape[1]
    ids = torch.cat([torch.cat([torch.zeros(1, pad, dtype=torch.long), short], 1), long])
    mask = torch.cat([torch.cat([torch.zeros(1, pad), torch.ones_like(short)], 1), torch.ones_like(long)]).long()
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    f_short, f_long = frame_features(1, seed=1), frame_features(2, seed=2)
    with torch.no_grad():
        batch = model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids, frame_features=torch.cat([f_short, f_long])
        ).logits
        a = model(input_ids=short, frame_features=f_short).logits
        b = model(input_ids=long, frame_features=f_long).logits
    assert (batch[0, pad:] - a[0]).abs().max() <= 1e-5
    assert (batch[1] - b[0]).abs().max() <= 1e-5


def test_routed_layers_of_a_padded_batch_compute_no_padding():
    """A routed layer's subset is as long as the row with the most real kept tokens: the short row's padding is not
    computed (nor cached) there, and every row's logits stay those of the row alone."""
    model = VideoLLMMoDForCausalLM(tiny_config()).eval()
    short, long = stream_ids(1, seed=1), stream_ids(2, seed=2)
    pad = long.shape[1] - short.shape[1]
    ids = torch.cat([torch.cat([torch.zeros(1, pad, dtype=torch.long), short], 1), long])
    mask = torch.cat([torch.cat([torch.zeros(1, pad), torch.ones_like(short)], 1), torch.ones_like(long)]).long()
    features = torch.cat([frame_features(1, seed=1), frame_features(2, seed=2)])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    frame_features=features, use_cache=True)  # fmt: skip
        alone = model(input_ids=long, frame_features=features[1:]).logits
    kept = {
        row: int((x != TINY_IDS["video"]).sum()) + frames * 2
        for row, (x, frames) in enumerate([(short, 1), (long, 2)])
    }
    assert pad + kept[0] > kept[1], "the short row with its padding would be the longest subset"
    routed = [out.cache.layers[i].keys.shape[-2] for i in model.config.mod_layers]
    assert routed == [max(kept.values())] * len(routed)
    assert (out.logits[1] - alone[0]).abs().max() <= 1e-5


@pytest.mark.parametrize("mod_layers", [[], None])
def test_generate_matches_greedy_loop_without_cache(mod_layers):
    model = VideoLLMMoDForCausalLM(tiny_config(mod_layers=mod_layers)).eval()
    ids, features = stream_ids(2), frame_features(2)
    out = model.generate(
        input_ids=ids, frame_features=features, max_new_tokens=6, do_sample=False, return_dict_in_generate=True
    )
    greedy = ids
    with torch.no_grad():
        for _ in range(6):
            logits = model(input_ids=greedy, frame_features=features, use_cache=False).logits
            greedy = torch.cat([greedy, logits[:, -1:].argmax(-1)], 1)
            if greedy[0, -1] == TINY_IDS["eos"]:
                break
    assert torch.equal(out.sequences, greedy)
    assert getattr(out.cache, "is_videollm_mod_cache", False)


def test_generate_continues_a_stream_from_its_cache():
    model = VideoLLMMoDForCausalLM(tiny_config()).eval()
    ids, features = stream_ids(3), frame_features(3)
    first = ids[:, :25]  # text, two frames, the interval token after each
    with torch.no_grad():
        cache = model(input_ids=first, frame_features=features[:2], use_cache=True).cache
    out = model.generate(input_ids=ids, frame_features=features[2:], cache=cache, max_new_tokens=4, do_sample=False)
    reference = model.generate(input_ids=ids, frame_features=features, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, reference)


def test_crop_goes_by_token_index_in_every_layer():
    model = VideoLLMMoDForCausalLM(tiny_config()).eval()
    ids, features = stream_ids(3), frame_features(3)
    with torch.no_grad():
        cache = model(input_ids=ids[:, :14], frame_features=features[:1], use_cache=True).cache
        lengths = [layer.keys.shape[-2] for layer in cache.layers]
        cache = model(input_ids=ids[:, 14:25], frame_features=features[1:2], cache=cache, use_cache=True).cache
        cache.crop(14)
    assert cache.get_seq_length() == 14
    assert [layer.keys.shape[-2] for layer in cache.layers] == lengths == [14, 6, 14, 6]


def test_remap_drops_positions_per_row_and_right_aligns_the_rows():
    cache = VideoLLMMoDCache(1)
    layer = cache.layers[0]
    keys = torch.arange(10.0).view(2, 1, 5, 1)  # row 0: 0..4, row 1: 5..9
    layer.update(keys, keys)
    positions = torch.tensor([[0, 1, 2, 3, 4], [0, 2, 3, 5, 6]])  # row 1 is a routed layer's subset
    layer.tag(torch.arange(5).expand(2, -1), torch.ones(2, 5, dtype=torch.bool), positions)
    cache.seen_tokens = 5
    # row 0 keeps positions 0, 3, 4 of its timeline; row 1 keeps 0-3 and 6, of which its layer holds 0, 2, 3, 6
    position_map = torch.tensor([[0, -1, -1, 1, 2, -1, -1], [0, 1, 2, 3, -1, -1, 4]])
    cache.remap_positions(position_map)
    assert cache.get_seq_length() == 5  # columns of the longest timeline
    assert layer.token_valid.tolist() == [[False, True, True, True], [True, True, True, True]]
    assert layer.token_index.tolist() == [[-1, 2, 3, 4], [0, 2, 3, 4]]  # each row ends at the last column
    assert layer.token_position[layer.token_valid].tolist() == [0, 1, 2, 0, 2, 3, 4]
    assert layer.keys[0, 0, 1:, 0].tolist() == [0.0, 3.0, 4.0]
    assert layer.keys[1, 0, :, 0].tolist() == [5.0, 6.0, 7.0, 9.0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mod_layers", [[], None], ids=["dense", "interleaved"])
def test_moved_keys_equal_keys_computed_at_the_new_positions(mod_layers, family):
    """Layer 0 keys depend only on each token and its position, so after dropping a stretch of the stream and moving
    the rest back, they equal those of a fresh forward over the kept tokens at consecutive positions (each family's
    rotary settings; Qwen3 normalises keys before turning them)."""
    model = VideoLLMMoDForCausalLM(tiny_config(mod_layers=mod_layers, **FAMILIES[family])).eval()
    ids, features = stream_ids(4), frame_features(4)
    frame = FRAME_TOKENS + 1  # each frame and the interval token after it
    dropped = range(3, 3 + 2 * frame)  # the first two frames, after 3 text tokens
    kept = [i for i in range(ids.shape[1]) if i not in dropped]
    with torch.no_grad():
        cache = model(input_ids=ids, frame_features=features, use_cache=True).cache
        position_map = torch.full((1, ids.shape[1]), -1)
        position_map[0, kept] = torch.arange(len(kept))
        cache.remap_positions(position_map, model.model.rotate_cached_keys)
        fresh = model(input_ids=ids[:, kept], frame_features=features[2:], use_cache=True).cache
    assert cache.get_seq_length() == len(kept)
    assert (cache.layers[0].keys - fresh.layers[0].keys).abs().max() <= 1e-5
    assert torch.equal(cache.layers[0].token_position, fresh.layers[0].token_position)
    # a routed layer keeps its own subset, k per frame: moved by the same map
    assert [layer.keys.shape[-2] for layer in cache.layers] == [layer.keys.shape[-2] for layer in fresh.layers]


def test_foreign_nonempty_cache_is_rejected():
    from transformers import DynamicCache

    model = VideoLLMMoDForCausalLM(tiny_config()).eval()
    with torch.no_grad():
        cache = DynamicCache()
        cache.update(torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8), 0)
        with pytest.raises(ValueError, match="cache must be a VideoLLMMoDCache"):
            model(input_ids=stream_ids(1), frame_features=frame_features(1), cache=cache, use_cache=True)


def test_past_key_values_is_accepted_as_the_deprecated_name_of_cache():
    """As on transformers' own models: `past_key_values=` is `cache=` (a fresh cache would change the logits)."""
    model = VideoLLMMoDForCausalLM(tiny_config()).eval()
    ids, features = stream_ids(2), frame_features(2)
    split = 3 + FRAME_TOKENS + 1  # the prefix holds frame 0 and its interval; the rest holds frame 1
    with torch.no_grad():
        logits = {}
        for name in ("cache", "past_key_values"):
            prefix = model(input_ids=ids[:, :split], frame_features=features[:1], use_cache=True)
            rest = model(input_ids=ids[:, split:], frame_features=features[1:], use_cache=True, **{name: prefix.cache})
            logits[name] = rest.logits
        full = model(input_ids=ids, frame_features=features).logits[:, split:]
    assert torch.equal(logits["past_key_values"], logits["cache"])
    torch.testing.assert_close(logits["cache"], full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mod_layers", [[], None])
def test_a_right_padded_training_batch_needs_no_mask_and_computes_what_the_mask_does(mod_layers):
    """With SDPA, a batch whose padding is at the end of each row and no cache before it is computed under SDPA's
    own causal mask (no (B, 1, L, L) mask built, converted and kept by every layer): the loss and the real tokens'
    logits equal eager attention's under the tag mask. Padding elsewhere, a cache or eager keeps the mask."""
    from modeling_videollm_mod.routing_videollm_mod import attention_mask_from_tags

    index, prefix = torch.arange(6).expand(2, 6), torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6]).bool()
    assert attention_mask_from_tags(index, index, prefix, torch.float32, "sdpa") is None
    assert attention_mask_from_tags(index, index, prefix, torch.float32, "eager") is not None
    assert attention_mask_from_tags(index, index, prefix.flip(-1), torch.float32, "sdpa") is not None
    assert attention_mask_from_tags(index[:, 4:], index, prefix, torch.float32, "sdpa") is not None  # a cache

    torch.manual_seed(0)
    sdpa = VideoLLMMoDForCausalLM(tiny_config(mod_layers=mod_layers)).train()
    eager = VideoLLMMoDForCausalLM(tiny_config(mod_layers=mod_layers, attn_implementation="eager")).train()
    eager.load_state_dict(sdpa.state_dict())
    short, long = stream_ids(1, seed=1), stream_ids(2, seed=2)
    pad = long.shape[1] - short.shape[1]
    ids = torch.cat([torch.cat([short, torch.zeros(1, pad, dtype=torch.long)], 1), long])
    mask = torch.cat([torch.cat([torch.ones_like(short), torch.zeros(1, pad)], 1), torch.ones_like(long)]).long()
    labels = ids.masked_fill((mask == 0) | (ids == TINY_IDS["video"]), -100)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False,
                  frame_features=torch.cat([frame_features(1, seed=1), frame_features(2, seed=2)]))  # fmt: skip
    out, reference = sdpa(**inputs), eager(**inputs)
    assert (out.loss - reference.loss).abs() <= 1e-5
    assert (out.logits - reference.logits)[mask.bool()].abs().max() <= 1e-4
