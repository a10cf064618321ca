"""Teacher forcing through the streaming engine (`StreamEngine.force` / `probe`), which the teacher-forced metrics use:
a ground-truth stream fed in stretches gives the logits of one forward over it, and a probe of future frames gives
those of a forward with the frames appended, leaving the stream as it was."""

import copy

import pytest
import torch
from conftest import FAMILIES
from stream_helpers import EARLY_EXIT, VARIANTS, features, make_model
from transformers import GenerationConfig

from modeling_videollm_mod.processing_videollm_mod import stream_frame_ids
from videollm_mod.recipes.metrics import forced_stream_metrics, forcing_session, model_fire_policy, stream_evaluate

LAYOUTS = [("dense", "llama"), ("mod", "llama"), ("earlyexit", "llama"), ("mod", "qwen2")]
KEY = "frame_features"


def ground_truth(processor, name, family, num_frames=10):
    """A model and a real stream of it (frames, its replies): `(model, ids, frames)`."""
    model = make_model(processor, **{**VARIANTS, "earlyexit": EARLY_EXIT}[name], **FAMILIES[family])
    frames = features(num_frames)
    session = model.stream_session(processor, threshold=0.5, max_new_tokens=3)
    session.push_frames(features=frames, times=[i / 2 for i in range(num_frames)])
    assert session.events  # the stream holds replies, not only frames
    return model, session.transcript_ids + session.pending, frames


def one_forward(model, ids, frames):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), frame_features=frames).logits[0]


def frames_before(ids, processor, stop):
    return sum(t == processor.video_token_id for t in ids[:stop]) // processor.frame_num_tokens


def frame_ends(ids, processor):
    """Positions just after each frame's last placeholder."""
    video = processor.video_token_id
    return [i + 1 for i in range(len(ids)) if ids[i] == video and (i + 1 == len(ids) or ids[i + 1] != video)]


@pytest.mark.parametrize("name, family", LAYOUTS)
def test_forced_stretches_equal_one_forward(processor, name, family):
    model, ids, frames = ground_truth(processor, name, family)
    expected = one_forward(model, ids, frames)
    ends = frame_ends(ids, processor)
    cuts = [0, ends[2], ends[2] + 1, ends[6], len(ids)]  # after frames, between a frame and what follows it
    session, got = forcing_session(model, processor), []
    for start, stop in zip(cuts, cuts[1:], strict=False):
        first, last = frames_before(ids, processor, start), frames_before(ids, processor, stop)
        got.append(session.force(0, ids[start:stop], frames[first:last] if last > first else None, KEY))
    assert (torch.cat(got) - expected).abs().max() <= 1e-5
    assert session.transcript_ids == ids and session.streams[0].position == len(ids)


@pytest.mark.parametrize("name, family", LAYOUTS)
def test_probe_equals_a_forward_with_the_frames_appended_and_leaves_the_stream_as_it_was(processor, name, family):
    model, ids, frames = ground_truth(processor, name, family)
    cut = frame_ends(ids, processor)[4]
    probed = features(3, seed=7)
    session = forcing_session(model, processor)
    session.force(0, ids[:cut], frames[:5], KEY)
    got = session.probe(0, probed, KEY)

    appended = ids[:cut] + stream_frame_ids(3, processor.video_token_id, 10, processor.frame_token_interval_id, True)
    logits = one_forward(model, appended, torch.cat([frames[:5], probed]))
    assert (got - logits[cut + 10 :: 11]).abs().max() <= 1e-5

    # the stream goes on as if the probe never happened
    rest = session.force(0, ids[cut:], frames[5:], KEY)
    expected = one_forward(model, ids, frames)
    assert (rest - expected[cut:]).abs().max() <= 1e-5
    assert session.transcript_ids == ids


def test_forcing_raw_frames_after_features_is_refused(processor):
    model, ids, frames = ground_truth(processor, "dense", "llama")
    session = forcing_session(model, processor)
    cut = frame_ends(ids, processor)[0]
    session.force(0, ids[:cut], frames[:1], KEY)
    with pytest.raises(ValueError, match="raw frames or features, not both"):
        session.probe(0, torch.zeros(1, 3, 24, 24), "pixel_values_videos")


class OneForwardStream:
    """The reference `ForcedStream`: the logits of one forward over the sample, and the probe on a copy of its cache
    cropped at the cut (the evaluation's path before it ran through the engine)."""

    def __init__(self, model, input_ids, frames):
        self.model, self.ids, self.frames, self.probes = model, input_ids[0], frames, 0
        config = model.config
        self.video_id, self.frame_tokens, self.eos_ids = config.video_token_id, 10, {config.text_config.eos_token_id}
        with torch.no_grad():
            out = model(input_ids=input_ids, frame_features=frames, use_cache=True)
        self.all_logits, self.cache = out.logits[0], out.cache

    def logits(self, stop):
        return self.all_logits[:stop]

    def probe(self, cut, first, num):
        self.probes += 1
        cache = copy.deepcopy(self.cache)
        cache.crop(cut)
        config = self.model.config
        ids = stream_frame_ids(num, self.video_id, 10, config.frame_token_interval_id, True)
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True,
                                frame_features=self.frames[first : first + num]).logits[0]  # fmt: skip
        return logits[9::11]


CONVERSATION = [
    {"role": "system", "content": "sys"},
    {"role": "stream", "num_frames": 4, "learn": True},
    {"role": "assistant", "content": "C picks up a blue square", "learn": True},
    {"role": "stream", "num_frames": 3, "learn": True},
    {"role": "user", "content": "what is on the table?"},
    {"role": "assistant", "content": "a red circle", "learn": True},
    {"role": "stream", "num_frames": 3, "learn": True},
    {"role": "assistant", "content": "C sees a red circle appear", "learn": True},
]


@pytest.mark.parametrize("name, family", LAYOUTS)
def test_stream_evaluate_through_the_engine_equals_one_forward(processor, name, family):
    model = make_model(processor, **{**VARIANTS, "earlyexit": EARLY_EXIT}[name], **FAMILIES[family])
    batch = processor(CONVERSATION, return_labels=True)
    frames = features(10)
    policies = {"model": model_fire_policy(processor.frame_token_interval_id, 0.5),
                "never": lambda probs, f: torch.zeros(len(probs), dtype=torch.bool)}  # fmt: skip
    for policy in policies.values():
        reference = OneForwardStream(model, batch["input_ids"], frames)
        expected = forced_stream_metrics(reference, batch["labels"], policy)
        got = stream_evaluate(model, processor, batch["input_ids"], batch["labels"], frame_features=frames,
                              fire_policy=policy)  # fmt: skip
        assert got.num_turns == expected.num_turns == 3
        for field in ("lm_ppl", "frame_diff", "fluency", "lm_correctness"):
            assert getattr(got, field) == pytest.approx(getattr(expected, field), rel=1e-5)
    assert reference.probes == 2  # never speaking probes the frames after each turn but the last


@pytest.mark.parametrize("name, family", LAYOUTS)
def test_complete_equals_greedy_generate_over_the_whole_prompt(processor, name, family):
    model = make_model(processor, **{**VARIANTS, "earlyexit": EARLY_EXIT}[name], **FAMILIES[family])
    question = [*CONVERSATION[:5], {"role": "stream", "num_frames": 2}]
    ids = processor(question, add_generation_prompt=True)["input_ids"]
    frames = features(9)
    with torch.no_grad():
        out = model.generate(input_ids=ids, frame_features=frames, attention_mask=torch.ones_like(ids),
                             max_new_tokens=6, do_sample=False)  # fmt: skip
    expected = processor.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert expected  # the test needs a reply
    session = forcing_session(model, processor, max_new_tokens=6, generation_config=GenerationConfig(do_sample=False))
    assert session.complete(0, ids[0].tolist(), frames, KEY).text == expected
