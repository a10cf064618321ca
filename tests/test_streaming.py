"""Streaming sessions: their decisions and replies equal a teacher-forced forward over the transcript; queries land
after the current frame; the chunked path (fixed or automatic chunk size) equals frame-by-frame; bad inputs and the
context limit say so."""

import json

import numpy as np
import pytest
import torch
from conftest import FAMILIES
from stream_helpers import (
    EARLY_EXIT,
    VARIANTS,
    assert_same_stream,
    features,
    half_seconds,
    make_model,
    random_video,
    silent_model,
    teacher_forced,
    write_video,
)

from modeling_videollm_mod import CacheBudget, StreamContextLimitError

# Every layout on Llama, and interleaved MoD on each other family (sliding windows included).
LAYOUTS = [(name, "llama") for name in [*VARIANTS, "earlyexit"]] + [("mod", f) for f in FAMILIES if f != "llama"]


def layout_model(processor, name, family):
    return make_model(processor, **{**VARIANTS, "earlyexit": EARLY_EXIT}[name], **FAMILIES[family])


@pytest.mark.parametrize("name, family", LAYOUTS)
def test_session_decisions_equal_teacher_forced_forward(processor, name, family):
    model = layout_model(processor, name, family)
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


@pytest.mark.parametrize("name, family", LAYOUTS)
def test_session_replies_equal_teacher_forced_forward(processor, name, family):
    model = layout_model(processor, name, family)
    frames = features(10)
    session = model.stream_session(processor, threshold=0.5, max_new_tokens=3, record_logits=True)
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


@pytest.mark.parametrize("chunk_size", [5, "auto"])
@pytest.mark.parametrize("name, family", LAYOUTS)
def test_chunked_frames_equal_frame_by_frame(processor, name, family, chunk_size):
    model = layout_model(processor, name, family)
    frames, times = features(24), half_seconds(24)
    sessions = []
    for size in (1, chunk_size):
        # at 0.3 every layout has silent stretches (at 0.5 Mistral's speaks at 22 of 24 frames)
        session = model.stream_session(processor, threshold=0.3, max_new_tokens=2, chunk_size=size)
        session.push_query("what is on the table?", time=3.2)
        session.push_frames(features=frames, times=times)
        sessions.append(session)
    assert 0 < sum(e.role == "assistant" for e in sessions[0].events) < 23  # replies cut chunks
    assert_same_stream(sessions[1], sessions[0])


def test_automatic_chunks_grow_while_silent_and_end_at_the_expected_reply():
    from modeling_videollm_mod.stream_state_videollm_mod import ChunkSchedule

    schedule, sizes = ChunkSchedule("auto", largest=16), []
    for fired_at in (None, None, None, 5, None, 1, None):  # the frame of the chunk that speaks, if one does
        size = schedule.next_size()
        sizes.append(size)
        schedule.record(size, fired_at or size, fired_at is not None)
    # silent: 2, 4, 8, 16; a reply 5 frames into the 16 (gap 14 + 5 = 19): the next is expected 19 frames later,
    # so chunks of 16 then 3; a reply 1 frame into the 3 (gap 17): expected after (19 + 17) / 2 = 18 frames
    assert sizes == [2, 4, 8, 16, 16, 3, 16]
    assert schedule.gap == 18


def test_stream_generate_over_file_equals_session_over_decoded_frames(processor, tmp_path):
    from modeling_videollm_mod import load_video

    path = tmp_path / "clip.mp4"
    write_video(path, random_video(16), fps=8)
    model = make_model(processor, None)
    events = list(model.stream_generate(str(path), processor, threshold=0.5, max_new_tokens=2))
    decoded, times = load_video(path, fps=2)
    session = model.stream_session(processor, threshold=0.5, max_new_tokens=2)
    expected = session.push_frames(decoded, times=times.tolist())
    assert [e.role for e in events].count("assistant") > 1
    assert events == expected
    assert json.loads(json.dumps([e._asdict() for e in events])) == [e._asdict() for e in expected]


def test_stream_generate_into_a_given_session_keeps_its_decisions(processor):
    model = make_model(processor, None)
    session = model.stream_session(processor, threshold=0.5, max_new_tokens=2)
    events = list(model.stream_generate(processor=processor, frame_features=features(6), session=session))
    assert events == session.events and len(session.decisions) == 6


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


def test_stream_past_the_context_with_original_positions_raises(processor):
    model = silent_model(processor)
    limit = len(processor.encode_text("<s>sys\n\n[")) + 10 + 11  # two frames fit (`,` + 10 placeholders), not three
    model.config.text_config.max_position_embeddings = limit
    session = model.stream_session(processor, threshold=0.0, budget=CacheBudget(max_tokens=100, positions="original"))
    with pytest.raises(StreamContextLimitError, match=f"max_position_embeddings={limit}"):
        session.push_frames(features=features(3), times=[0.0, 0.5, 1.0])
    assert len(session.decisions) == 2


def test_stream_past_the_context_goes_on_with_reindexed_positions(processor):
    model = silent_model(processor)
    model.config.text_config.max_position_embeddings = 64
    session = model.stream_session(processor, threshold=0.0)  # the default budget: the model's context
    session.push_frames(features=features(40), times=half_seconds(40))
    assert len(session.decisions) == 40
    assert session.cache.get_seq_length() <= 64
    assert max(int(layer.token_position.max()) for layer in session.cache.layers) < 64


def test_reindexed_budget_beyond_the_context_is_rejected(processor):
    model = silent_model(processor)
    limit = model.config.text_config.max_position_embeddings
    with pytest.raises(ValueError, match=f"max_tokens={limit + 1} exceeds the model's context"):
        model.stream_session(processor, budget=CacheBudget(max_tokens=limit + 1))


def test_narrate_writes_the_streamed_conversation_as_json(processor, tmp_path, capsys):
    from videollm_mod.narrate import main

    model = make_model(processor, None)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    video = tmp_path / "clip.mp4"
    write_video(video, random_video(6), fps=2)
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


def test_narrate_several_videos_writes_each_conversation(processor, tmp_path, capsys):
    from videollm_mod.narrate import main

    model = make_model(processor, None)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    videos = [str(tmp_path / f"clip{i}.mp4") for i in range(2)]
    for i, video in enumerate(videos):
        write_video(video, random_video(6 + 2 * i, seed=i), fps=2)
    argv = [*videos, "--model", str(tmp_path / "model"), "--threshold", "0.5", "--max-new-tokens", "2"]
    assert main([*argv, "--json", str(tmp_path / "out.json"), "--no-progress"]) == 0
    written = json.loads((tmp_path / "out.json").read_text())
    for video in videos:
        expected = model.stream_generate(video, processor, threshold=0.5, max_new_tokens=2)
        assert written[video] == [e._asdict() for e in expected]
    summary = capsys.readouterr().out.splitlines()[-2:]
    assert summary[0].startswith("clip0.mp4: 6 frames at 2 fps (2.5 s)")
    assert summary[1].startswith("clip1.mp4: 8 frames at 2 fps (3.5 s)")


@pytest.mark.parametrize(
    "text, tokens, size",
    [("4096", 4096, None), ("512MB", None, 512 * 10**6), ("1.5GiB", None, 3 * 2**29), ("64 kib", None, 2**16)],
)
def test_narrate_cache_budget_is_tokens_or_a_size(text, tokens, size):
    from videollm_mod.narrate import cache_budget

    assert cache_budget(text) == CacheBudget(max_tokens=tokens, max_bytes=size)


@pytest.mark.parametrize("text", ["1.5", "12 parsecs", "-3", "0"])
def test_narrate_rejects_a_cache_budget_that_is_neither(text, capsys):
    from videollm_mod import cli

    assert cli.main(["narrate", "clip.mp4", "--cache-budget", text]) == 2
    assert "--cache-budget" in capsys.readouterr().err
