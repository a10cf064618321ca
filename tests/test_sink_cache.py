"""The sink + window cache on stock transformers decoders (`SinkWindowCache`): the sink's keys turned forward are the
keys of those tokens at the new positions, and a query after a long stream attends to the sink and the window as if
the kept tokens sat at consecutive positions, in `generate` as in the forward."""

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, Qwen2Config

from modeling_videollm_mod import SinkWindowCache
from modeling_videollm_mod.sink_cache_videollm_mod import rotate_keys

SINK, WINDOW, PROMPT = 4, 16, 40
CONFIGS = {
    "llama": LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
    "qwen2": Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
}  # fmt: skip


def stock_model(family):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(CONFIGS[family]).eval()


def layer0_keys(model, ids, positions):
    """Keys of the first layer (context-free: they depend on each token and its position only)."""
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([positions]), past_key_values=cache)
    return cache.layers[0].keys


@pytest.mark.parametrize("family", CONFIGS)
def test_turned_keys_are_the_keys_at_the_new_positions(family):
    model = stock_model(family)
    ids = [5, 9, 17, 33]
    keys = layer0_keys(model, ids, [0, 1, 2, 3])
    turned = rotate_keys(model.model.rotary_emb, keys, torch.full((1, 4), 20))
    assert (turned - layer0_keys(model, ids, [20, 21, 22, 23])).abs().max() <= 1e-5


@pytest.mark.parametrize("family", CONFIGS)
def test_a_long_prompt_keeps_the_sink_and_window_at_consecutive_positions(family):
    model = stock_model(family)
    ids = torch.randint(3, 64, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    cache = SinkWindowCache(model, sink=SINK, window=WINDOW)
    with torch.no_grad():
        model(input_ids=ids, past_key_values=cache)
        got = model(input_ids=torch.tensor([[7]]), past_key_values=cache).logits[0, -1]
    assert cache.get_seq_length() == PROMPT + 1 and cache.layers[0].keys.shape[-2] == SINK + WINDOW

    # the reference: the same cached states, the window's keys moved down behind the sink, the query right after
    full = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids, past_key_values=full)
    kept = torch.cat([torch.arange(SINK), torch.arange(PROMPT - WINDOW, PROMPT)])
    reference = DynamicCache(config=model.config)
    for index, layer in enumerate(full.layers):
        keys, values = layer.keys[:, :, kept], layer.values[:, :, kept]
        shift = torch.cat([torch.zeros(SINK), torch.full((WINDOW,), SINK + WINDOW - PROMPT)]).long()[None]
        reference.update(rotate_keys(model.model.rotary_emb, keys, shift), values, index)
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([[7]]), position_ids=torch.tensor([[SINK + WINDOW]]),
                         past_key_values=reference).logits[0, -1]  # fmt: skip
    assert (got - expected).abs().max() <= 1e-4
    with torch.no_grad():  # and not what the model computes over the whole prompt
        whole = model(input_ids=torch.cat([ids, torch.tensor([[7]])], 1)).logits[0, -1]
    assert (got - whole).abs().max() > 1e-3


@pytest.mark.parametrize("family", CONFIGS)
def test_generate_streams_past_the_window_with_flat_memory(family):
    model = stock_model(family)
    ids = torch.randint(3, 64, (1, PROMPT), generator=torch.Generator().manual_seed(2))
    cache = SinkWindowCache(model, sink=SINK, window=WINDOW)
    out = model.generate(ids, past_key_values=cache, max_new_tokens=30, min_new_tokens=30, do_sample=False)
    assert out.shape[1] == PROMPT + 30 and cache.get_seq_length() == PROMPT + 29  # generate feeds all but the last
    assert all(layer.keys.shape[-2] == SINK + WINDOW for layer in cache.layers)
    # greedy: each token is the argmax of the forward over the sink and window (checked against the re-indexed
    # reference above), token by token
    loop, tokens = SinkWindowCache(model, sink=SINK, window=WINDOW), ids
    with torch.no_grad():
        for _ in range(30):
            logits = model(input_ids=tokens, past_key_values=loop).logits[0, -1]
            tokens = logits.argmax()[None, None]
            ids = torch.cat([ids, tokens], 1)
    assert torch.equal(out, ids)


def test_a_model_without_rotary_positions_is_refused():
    class NoRotary(torch.nn.Module):
        config = CONFIGS["llama"]

        def get_decoder(self):
            return torch.nn.Module()

    with pytest.raises(ValueError, match="no rotary embedding"):
        SinkWindowCache(NoRotary())
