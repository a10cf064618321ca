"""How a streaming session picks reply tokens (`decoding_videollm_mod.TokenChooser`): greedy or sampled as `generate`
would from the same `GenerationConfig`, and settings it does not apply refused in one line."""

import pytest
import torch
from stream_helpers import features, make_model
from transformers import GenerationConfig

from modeling_videollm_mod.decoding_videollm_mod import TokenChooser
from videollm_mod.recipes.metrics import forcing_session

PROMPT = [
    {"role": "system", "content": "sys"},
    {"role": "stream", "num_frames": 3},
    {"role": "user", "content": "what is on the table?"},
]


def test_greedy_takes_the_argmax_and_top_k_one_sampling_too():
    logits = torch.tensor([[0.1, 2.0, 0.3], [1.5, -1.0, 1.4]])
    assert TokenChooser(GenerationConfig(do_sample=False))(logits, [[0], [0]]) == [1, 0]
    assert TokenChooser(GenerationConfig(do_sample=True, top_k=1))(logits, [[0], [0]]) == [1, 0]


def test_repetition_penalty_goes_by_each_replys_own_tokens():
    logits = torch.tensor([[0.1, 2.0, 1.5], [0.1, 2.0, 1.5]])
    choose = TokenChooser(GenerationConfig(do_sample=False, repetition_penalty=2.0))
    assert choose(logits, [[1, 1], [0]]) == [2, 1]  # token 1 already said in the first reply: 2.0 / 2 < 1.5


@pytest.mark.parametrize(
    "settings",
    [
        {"do_sample": False},
        {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.3},
    ],
    ids=["greedy", "sampled"],
)
def test_a_sessions_reply_equals_generate_with_the_same_settings_and_seed(processor, settings):
    model = make_model(processor)
    ids = processor(PROMPT, add_generation_prompt=True)["input_ids"]
    frames = features(3)
    config = GenerationConfig(**settings, max_new_tokens=8)
    torch.manual_seed(3)
    with torch.no_grad():
        out = model.generate(input_ids=ids, frame_features=frames, attention_mask=torch.ones_like(ids),
                             generation_config=config)  # fmt: skip
    expected = processor.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert expected  # the model says something
    torch.manual_seed(3)
    session = forcing_session(model, processor, max_new_tokens=8, generation_config=config)
    assert session.complete(0, ids[0].tolist(), frames, "frame_features").text == expected


@pytest.mark.parametrize("setting", [{"num_beams": 2}, {"no_repeat_ngram_size": 3}, {"min_new_tokens": 2}])
def test_settings_a_session_does_not_apply_are_refused_by_name(processor, setting):
    name = next(iter(setting))
    with pytest.raises(ValueError, match=f"does not apply {name}="):
        make_model(processor).stream_session(processor, generation_config=GenerationConfig(**setting))
