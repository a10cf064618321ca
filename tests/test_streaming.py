"""Streaming sessions: their decisions and replies equal a teacher-forced forward over the transcript; queries land
after the current frame; the chunked path equals frame-by-frame; bad inputs and the context limit say so."""

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from modeling_videollm_mod import (
    StreamContextLimitError,
    VideoLLMMoDForCausalLM,
    VideoLLMMoDFrameProcessor,
    VideoLLMMoDProcessor,
)
from videollm_mod.presets import tiny_config
from videollm_mod.tokenizer_tools import build_stream_tokenizer, stream_token_ids

TEXTS = ["#C C sees a red circle appear", "#C C picks up a blue square", "what is on the table?"]
MOD_LAYERS = {"dense": [], "mod": None}


@pytest.fixture(scope="module")
def processor():
    tokenizer = build_stream_tokenizer(TEXTS, vocab_size=120)
    return VideoLLMMoDProcessor(
        VideoLLMMoDFrameProcessor(size=24), tokenizer, frame_num_tokens=10, system_prompt="sys"
    )


def make_model(processor, mod_layers, interval_scale: float = 6.0) -> VideoLLMMoDForCausalLM:
    """A tiny random model whose P(interval) varies around 0.5 from frame to frame, so that threshold 0.5 gives both
    silent and spoken frames (a random lm_head row would make the interval token ~1/V likely everywhere)."""
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=len(processor.tokenizer), mod_layers=mod_layers, **stream_token_ids(processor.tokenizer)
    )
    model = VideoLLMMoDForCausalLM(config).eval()
    with torch.no_grad():
        direction = torch.randn(config.text_config.hidden_size)
        model.lm_head.weight[config.frame_token_interval_id] = interval_scale * direction / direction.norm()
    return model


class InflatedToken(torch.nn.Module):
    """`lm_head` with one token's logit raised by `value` (to make a random model stay silent)."""

    def __init__(self, lm_head: torch.nn.Linear, token_id: int, value: float):
        super().__init__()
        self.lm_head, self.token_id, self.value = lm_head, token_id, value

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden_states)
        return logits.index_add(-1, torch.tensor([self.token_id]), torch.full((*logits.shape[:-1], 1), self.value))


def silent_model(processor) -> VideoLLMMoDForCausalLM:
    """A model that never speaks by itself at threshold 0: the interval token always wins the argmax."""
    model = make_model(processor, None)
    model.lm_head = InflatedToken(model.lm_head, model.config.frame_token_interval_id, 100.0)
    return model


def features(num_frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(num_frames, 10, 32, generator=torch.Generator().manual_seed(seed))


def teacher_forced(model, session, frame_features):
    """Logits of one full-sequence forward over the session's transcript (+ its pending tokens)."""
    ids = torch.tensor([session.transcript_ids + session.pending])
    with torch.no_grad():
        return model(input_ids=ids, frame_features=frame_features).logits[0], ids[0]


def write_video(path, frames: np.ndarray, fps: int) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("name", list(MOD_LAYERS))
def test_session_decisions_equal_teacher_forced_forward(processor, name):
    model = make_model(processor, MOD_LAYERS[name])
    frames = features(10)
    session = model.stream_session(processor, threshold=0.5, max_new_tokens=3)
    session.push_frames(features=frames, times=[i / 2 for i in range(10)])
    spoken = sum(p < 0.5 for _, p in session.decisions)
    assert 0 < spoken < 10  # the test needs both kinds of frames
    logits, ids = teacher_forced(model, session, frames)
    video = (ids == processor.video_token_id).nonzero()[:, 0]
    last_placeholders = video[9::10]  # last placeholder of each frame
    expected = torch.softmax(logits[last_placeholders], -1)[:, processor.frame_token_interval_id]
    got = torch.tensor([p for _, p in session.decisions])
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("name", list(MOD_LAYERS))
def test_session_replies_equal_teacher_forced_forward(processor, name):
    model = make_model(processor, MOD_LAYERS[name])
    frames = features(10)
    session = model.stream_session(processor, threshold=0.5, max_new_tokens=3)
    session.push_frames(features=frames, times=[i / 2 for i in range(10)])
    assert session.reply_logits  # the model spoke
    logits, ids = teacher_forced(model, session, frames)
    for start, reply in zip(session.reply_positions, session.reply_logits, strict=True):
        n = reply.shape[0]
        assert (logits[start - 1 : start - 1 + n] - reply).abs().max() <= 1e-5
        # greedy: each generated token is the argmax of the teacher-forced logits before it
        assert torch.equal(ids[start : start + n], logits[start - 1 : start - 1 + n].argmax(-1))


def test_query_mid_stream_is_answered_after_the_current_frame(processor):
    session = silent_model(processor).stream_session(processor, threshold=0.0, max_new_tokens=2)
    session.push_query("what is on the table?", time=1.2)
    events = session.push_frames(features=features(5), times=[0.0, 0.5, 1.0, 1.5, 2.0])
    frame = "<v>" * 10
    text = processor.tokenizer.decode(session.transcript_ids)
    # frames at 0, 0.5 and 1.0 precede the query; the frame at 1.5 follows the reply, re-opening the stream
    prompt = f"<s>sys\n\n[{frame},{frame},{frame}]\nUser: what is on the table?\nAssistant:"
    assert text.startswith(prompt)
    assert text.endswith(f"\n[{frame},{frame}")
    # the answer, computed after the frame at 1.0, is stamped at the query's time: never before its question
    assert [(e.time, e.role) for e in events] == [(1.2, "user"), (1.2, "assistant")]


@pytest.mark.parametrize("name", list(MOD_LAYERS))
def test_chunked_frames_equal_frame_by_frame(processor, name):
    model = make_model(processor, MOD_LAYERS[name])
    frames, times = features(12), [i / 2 for i in range(12)]
    runs = {}
    for chunk_size in (1, 5):
        session = model.stream_session(processor, threshold=0.5, max_new_tokens=2, chunk_size=chunk_size)
        session.push_query("what is on the table?", time=3.2)
        events = session.push_frames(features=frames, times=times)
        runs[chunk_size] = (session, events)
    (one, events_one), (chunked, events_chunked) = runs[1], runs[5]
    assert chunked.transcript_ids == one.transcript_ids
    assert events_chunked == events_one
    assert [t for t, _ in chunked.decisions] == [t for t, _ in one.decisions]
    assert np.abs(np.subtract([p for _, p in chunked.decisions], [p for _, p in one.decisions])).max() <= 1e-5


def test_stream_generate_over_file_equals_session_over_decoded_frames(processor, tmp_path):
    from modeling_videollm_mod import load_video

    path = tmp_path / "clip.mp4"
    write_video(path, np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), fps=8)
    model = make_model(processor, None)
    events = list(model.stream_generate(str(path), processor, threshold=0.5, max_new_tokens=2, chunk_size=2))
    decoded, times = load_video(path, fps=2)
    session = model.stream_session(processor, threshold=0.5, max_new_tokens=2)
    expected = session.push_frames(decoded, times=times.tolist())
    assert events == expected
    assert json.loads(json.dumps([e._asdict() for e in events])) == [e._asdict() for e in expected]


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_threshold_outside_unit_interval_is_rejected(processor, threshold):
    model = make_model(processor, None)
    with pytest.raises(ValueError, match=f"threshold={threshold}"):
        model.stream_session(processor, threshold=threshold)


def test_frame_of_wrong_shape_is_rejected_with_its_shape(processor):
    session = make_model(processor, None).stream_session(processor)
    with pytest.raises(ValueError, match=r"\(24, 24\)"):
        session.push_frame(np.zeros((24, 24), dtype=np.uint8), time=0.0)


def test_features_of_wrong_shape_are_rejected_with_their_shape(processor):
    session = make_model(processor, None).stream_session(processor)
    with pytest.raises(ValueError, match=r"\(1, 9, 32\)"):
        session.push_frame(features=torch.zeros(9, 32), time=0.0)


def test_stream_past_the_context_limit_raises(processor):
    model = silent_model(processor)
    limit = len(processor.encode_text("<s>sys\n\n[")) + 10 + 11  # two frames fit (`,` + 10 placeholders), not three
    model.config.text_config.max_position_embeddings = limit
    session = model.stream_session(processor, threshold=0.0)
    with pytest.raises(StreamContextLimitError, match=f"max_position_embeddings={limit}"):
        session.push_frames(features=features(3), times=[0.0, 0.5, 1.0])
    assert len(session.decisions) == 2


def test_narrate_writes_the_streamed_conversation_as_json(processor, tmp_path, capsys):
    from videollm_mod.narrate import main

    model = make_model(processor, None)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    video = tmp_path / "clip.mp4"
    write_video(video, frames, fps=2)
    argv = [str(video), "--model", str(tmp_path / "model"), "--threshold", "0.5", "--max-new-tokens", "2"]
    assert (
        main([*argv, "--json", str(tmp_path / "out.json"), "--no-progress", "--query", "hi", "--query-time", "1"]) == 0
    )
    expected = model.stream_generate(str(video), processor, threshold=0.5, max_new_tokens=2, queries=[(1.0, "hi")])
    assert json.loads((tmp_path / "out.json").read_text()) == [e._asdict() for e in expected]


def test_narrate_names_a_missing_video_in_one_line(processor, tmp_path, capsys):
    from videollm_mod import cli

    assert cli.main(["narrate", str(tmp_path / "nope.mp4"), "--model", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"videollm-mod narrate: {tmp_path / 'nope.mp4'}: video file not found\n"
