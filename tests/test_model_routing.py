"""Mixture-of-Depths routing inside one decoder layer."""

import pytest
import torch
from conftest import FRAME_TOKENS, frame_features, stream_ids

from modeling_videollm_mod import VideoLLMMoDForCausalLM
from videollm_mod.presets import TINY_IDS, tiny_config


def capture_layer_io(model, layer_idx):
    """Record (input, output) hidden states of one decoder layer."""
    seen = {}

    def hook(module, args, kwargs, output):
        seen["input"], seen["output"] = args[0], output

    model.model.layers[layer_idx].register_forward_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.parametrize("selection", ["router", "random", "uniform"])
def test_routed_layer_keeps_k_per_frame_runs_text_and_passes_skipped_unchanged(selection):
    model = VideoLLMMoDForCausalLM(tiny_config(mod_selection=selection)).eval()
    ids, features = stream_ids(4), frame_features(4)
    seen = capture_layer_io(model, 1)
    with torch.no_grad():
        out = model(input_ids=ids, frame_features=features, use_cache=True)
    changed = (seen["output"] != seen["input"]).any(-1)[0]  # (L,)
    video = ids[0] == TINY_IDS["video"]
    assert changed[~video].all(), "every text and interval token runs through the layer"
    per_frame = changed[video].view(4, FRAME_TOKENS).sum(-1)
    assert per_frame.tolist() == [2, 2, 2, 2]
    # The skipped tokens come out bit-identical, and the layer's cache holds only the processed tokens.
    assert torch.equal(seen["output"][0][video & ~changed], seen["input"][0][video & ~changed])
    layer_cache = out.cache.layers[1]
    assert layer_cache.keys.shape[-2] == int((~video).sum()) + 4 * 2
    assert torch.equal(layer_cache.token_index[0], changed.nonzero().squeeze(-1))
    assert out.cache.layers[0].keys.shape[-2] == ids.shape[1]


def test_router_selects_highest_scoring_tokens_of_each_frame():
    model = VideoLLMMoDForCausalLM(tiny_config()).eval()
    ids, features = stream_ids(3), frame_features(3)
    seen = capture_layer_io(model, 1)
    with torch.no_grad():
        model(input_ids=ids, frame_features=features)
        scores = model.model.layers[1].router(seen["input"])[0, :, 0]
    video = ids[0] == TINY_IDS["video"]
    changed = (seen["output"] != seen["input"]).any(-1)[0]
    frame_scores = scores[video].view(3, FRAME_TOKENS)
    expected = torch.zeros_like(frame_scores, dtype=torch.bool).scatter(1, frame_scores.topk(2, -1).indices, True)
    assert torch.equal(changed[video].view(3, FRAME_TOKENS), expected)


def test_keep_ratio_zero_skips_every_vision_token():
    model = VideoLLMMoDForCausalLM(tiny_config(mod_keep_ratio=0.0)).eval()
    ids, features = stream_ids(2), frame_features(2)
    seen = capture_layer_io(model, 3)
    with torch.no_grad():
        out = model(input_ids=ids, frame_features=features, use_cache=True)
    video = ids[0] == TINY_IDS["video"]
    assert torch.equal(seen["output"][0][video], seen["input"][0][video])
    assert out.cache.layers[3].keys.shape[-2] == int((~video).sum())


def test_router_receives_gradients():
    model = VideoLLMMoDForCausalLM(tiny_config()).train()
    ids = stream_ids(3)
    model(input_ids=ids, frame_features=frame_features(3), labels=ids).loss.backward()
    for i in (1, 3):
        grad = model.model.layers[i].router.weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_a_routed_layer_keeps_for_its_backward_pass_only_what_it_computes_on_the_kept_tokens():
    """Its memory saving: no float tensor of the full sequence is saved inside a routed layer (the router scores every
    token without a gradient, the kept states are indexed out rather than `gather`ed, which would keep its input)."""
    model = VideoLLMMoDForCausalLM(tiny_config()).train()
    ids = stream_ids(6)
    kept = int((ids != TINY_IDS["video"]).sum()) + 6 * 2
    inside, saved = [], []
    layer = model.model.layers[1]
    layer.register_forward_pre_hook(lambda *_: inside.append(True))
    layer.register_forward_hook(lambda *_: inside.clear())

    def pack(tensor):
        if inside and tensor.is_floating_point():
            saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids, frame_features=frame_features(6), labels=ids).loss.backward()
    assert any(kept in shape for shape in saved) and not any(ids.shape[1] in shape for shape in saved), saved
    assert layer.router.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    config = tiny_config()
    plain = VideoLLMMoDForCausalLM(config).train()
    checkpointed = VideoLLMMoDForCausalLM(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    ids, pixels = stream_ids(3), torch.rand(3, 3, 24, 24)
    for model in (plain, checkpointed):
        model(input_ids=ids, pixel_values_videos=pixels, labels=ids).loss.backward()
    grads = dict(plain.named_parameters())
    for name, param in checkpointed.named_parameters():
        assert param.grad is not None, name
        assert torch.allclose(param.grad, grads[name].grad, atol=1e-6), name


def test_stream_loss_weights_decision_positions():
    ids = stream_ids(2)
    labels = torch.full_like(ids, -100)
    decision = (ids[0] == TINY_IDS["video"]).nonzero()[9] + 1  # the interval token after frame 1
    labels[0, decision] = TINY_IDS["interval"]
    labels[0, -1] = ids[0, -1]
    config = tiny_config()
    model = VideoLLMMoDForCausalLM(config).eval()
    weighted = VideoLLMMoDForCausalLM(tiny_config(stream_loss_weight=3.0)).eval()
    weighted.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = model(input_ids=ids, frame_features=frame_features(2), labels=labels)
        loss3 = weighted(input_ids=ids, frame_features=frame_features(2), labels=labels).loss
    logp = out.logits[0].float().log_softmax(-1)
    nll_decision = -logp[decision - 1, TINY_IDS["interval"]].squeeze()
    nll_text = -logp[-2, ids[0, -1]]
    assert torch.allclose(out.loss, (nll_decision + nll_text) / 2, atol=1e-6)
    assert torch.allclose(loss3, (3 * nll_decision + nll_text) / 2, atol=1e-6)


def test_placeholder_count_mismatch_names_both_numbers():
    model = VideoLLMMoDForCausalLM(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"20 placeholder tokens but 3 frames x 10 tokens per frame = 30"):
        model(input_ids=stream_ids(2), frame_features=frame_features(3))


def test_rows_must_hold_whole_frames():
    model = VideoLLMMoDForCausalLM(tiny_config()).eval()
    ids = torch.cat([stream_ids(1), stream_ids(1)])
    ids[0, 3] = TINY_IDS["video"] + 3  # row 0 loses a placeholder ...
    ids[1, 2] = TINY_IDS["video"]  # ... that row 1 gains: the total still matches 2 frames
    with pytest.raises(ValueError, match=r"whole frames of 10 placeholder tokens; got \[9, 11\]"):
        model(input_ids=ids, frame_features=frame_features(2))


def test_skipped_interval_tokens_pass_routed_layers_unchanged_and_stay_out_of_their_cache():
    # the official code's LayerSkip: odd layers drop every vision and interval token
    model = VideoLLMMoDForCausalLM(tiny_config(mod_keep_ratio=0.0, mod_skip_interval_tokens=True)).eval()
    assert not hasattr(model.model.layers[1], "router")  # nothing to choose: no router
    ids = stream_ids(3)
    seen = {i: capture_layer_io(model, i) for i in (0, 1)}
    with torch.no_grad():
        out = model(input_ids=ids, frame_features=frame_features(3), use_cache=True)
    dropped = (ids[0] == TINY_IDS["video"]) | (ids[0] == TINY_IDS["interval"])
    changed = {i: (seen[i]["output"] != seen[i]["input"]).any(-1)[0] for i in (0, 1)}
    assert changed[0].all()
    assert torch.equal(changed[1], ~dropped)
    assert torch.equal(out.cache.layers[1].token_index[0], (~dropped).nonzero().squeeze(-1))


def test_a_routed_layer_that_keeps_nothing_is_skipped_and_later_text_still_attends_to_its_cache():
    config = tiny_config(mod_layers=[2, 3], mod_keep_ratio=0.0, mod_skip_interval_tokens=True)  # EarlyExit
    model = VideoLLMMoDForCausalLM(config).eval()
    ids = stream_ids(2)
    first = ids[:, 3:24]  # frame, interval, frame: nothing for layers 2 and 3
    with torch.no_grad():
        whole = model(input_ids=ids, frame_features=frame_features(2)).logits
        head = model(input_ids=ids[:, :3], use_cache=True)
        middle = model(input_ids=first, frame_features=frame_features(2), cache=head.cache, use_cache=True)
        assert middle.cache.layers[2].keys.shape[-2] == 3  # only the 3 text tokens before the frames
        tail = model(input_ids=ids[:, 24:], cache=middle.cache, use_cache=True)
    streamed = torch.cat([head.logits, middle.logits, tail.logits], dim=1)
    assert (streamed - whole).abs().max() <= 1e-5
