"""The processor: live1+ text, labels at the learn ranges, frame preprocessing, PyAV decoding, bad files, and the
save/load round trip through AutoProcessor with only the copied code."""

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

from modeling_videollm_mod import (
    VideoDecodingError,
    VideoLLMMoDFrameProcessor,
    VideoLLMMoDProcessor,
    iter_video_frames,
    load_video,
)
from modeling_videollm_mod.processing_videollm_mod import SYSTEM_PROMPT
from videollm_mod.tokenizer_tools import build_stream_tokenizer

TEXTS = ["#C C sees a red circle appear", "#C C picks up a blue square", "what is on the table?"]
CONVERSATION = [
    {"role": "stream", "num_frames": 3, "learn": 2},
    {"role": "user", "content": "What is there?", "learn": 0},
    {"role": "assistant", "content": "A red circle.", "learn": 1},
    {"role": "stream", "num_frames": 2, "learn": True},
    {"role": "assistant", "content": "It moves.", "learn": 0},
]


@pytest.fixture(scope="module")
def processor():
    tokenizer = build_stream_tokenizer(TEXTS, vocab_size=200)
    return VideoLLMMoDProcessor(VideoLLMMoDFrameProcessor(size=24), tokenizer, frame_num_tokens=2)


def write_mp4(path, num_frames=24, fps=8, size=64):
    """Frame k is a flat grey of level 10 * k (so decoded frames can be matched to their source)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        for k in range(num_frames):
            array = np.full((size, size, 3), 10 * k, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_text_of_known_conversation_is_live1plus_exactly(processor):
    text, _, num_frames = processor.render(CONVERSATION, add_stream_prompt=True)
    v2 = "<v><v>"
    expected = (
        f"<s>{SYSTEM_PROMPT}\n"
        f"\n[{v2},{v2},{v2}]"
        "\nUser: What is there?"
        "\nAssistant: A red circle.</s>"
        f"\n[{v2},{v2}]"
        "\nAssistant: It moves.</s>"
        "\n["
    )
    assert (text, num_frames) == (expected, 5)


def test_generation_suffix_is_bracket_newline_assistant_colon(processor):
    # the demo feeds this suffix on its own after an open stream (`...<v>` + `]\nAssistant:`)
    text, _, _ = processor.render([{"role": "system", "content": ""}], add_stream_generation_prompt=True)
    assert text == "<s>\n]\nAssistant:"


def test_labels_sit_exactly_on_the_learn_ranges(processor):
    out = processor(CONVERSATION)
    ids, labels = out["input_ids"][0].tolist(), out["labels"][0].tolist()
    tok = processor.tokenizer
    interval, response, eos = processor.frame_token_interval_id, processor.stream_response_token_id, tok.eos_token_id
    # walk the ids independently of the character ranges
    video = processor.video_token_id
    intervals = [i for i, t in enumerate(ids) if t == interval and ids[i - 1] == video]  # not the system's commas
    responses = [i for i, t in enumerate(ids) if t == response]
    eos_positions = [i for i, t in enumerate(ids) if t == eos]
    newline = tok.convert_tokens_to_ids("Ċ")  # byte-level `\n`, its own token before `Assistant`
    first_assistant = max(i for i in range(eos_positions[0]) if ids[i] == newline) + 1
    # stream 1 learns frames 1-2 (their `,`), not frame 3 (`]\n`); assistant 1 learns `Assistant: A red circle.</s>`;
    # stream 2 learns both frames: its `,` and the `]\n` after its last frame; assistant 2 learns nothing.
    expected = {intervals[0], intervals[1], intervals[2], responses[1]}
    expected |= set(range(first_assistant, eos_positions[0] + 1))
    labelled = {i for i, label in enumerate(labels) if label != -100}
    assert labelled == expected
    assert all(labels[i] == ids[i] for i in labelled)


def test_jinja_chat_template_equals_rendered_text(processor):
    messages = [{"role": "system", "content": "sys"}, *CONVERSATION]
    jinja = processor.apply_chat_template(messages, tokenize=False, add_stream_generation_prompt=True)
    text, _, _ = processor.render(messages, add_stream_generation_prompt=True)
    assert jinja.replace("<v>", "<v>" * processor.frame_num_tokens) == text


def test_placeholders_expand_to_frame_num_tokens_per_frame(processor):
    frames = np.zeros((5, 30, 40, 3), dtype=np.uint8)
    out = processor(CONVERSATION, videos=frames)
    assert int((out["input_ids"] == processor.video_token_id).sum()) == 5 * processor.frame_num_tokens
    assert out["pixel_values_videos"].shape == (5, 3, 24, 24)


def test_frame_count_mismatch_names_both_numbers(processor):
    with pytest.raises(ValueError, match=r"\[4\] frames .* \[5\]"):
        processor(CONVERSATION, frame_features=torch.zeros(4, 2, 8))


def test_batch_is_left_padded_with_masked_labels(processor):
    short = [{"role": "stream", "num_frames": 1, "learn": 1}]
    out = processor([short, CONVERSATION])
    single = processor(short)
    pad = out["input_ids"].shape[1] - single["input_ids"].shape[1]
    assert torch.equal(out["input_ids"][0, pad:], single["input_ids"][0])
    assert torch.equal(out["labels"][0, pad:], single["labels"][0])
    assert out["attention_mask"][0].tolist() == [0] * pad + [1] * single["input_ids"].shape[1]
    assert (out["labels"][0, :pad] == -100).all()


def test_frame_processor_resizes_longer_side_pads_black_and_normalises():
    frame = np.full((48, 64, 3), 255, dtype=np.uint8)  # white, landscape
    pixels = VideoLLMMoDFrameProcessor(size=24)(frame)["pixel_values_videos"]
    assert pixels.shape == (1, 3, 24, 24)
    # 64x48 -> 24x18, centred: 3 black rows above and below, normalised to -1; the picture to +1
    assert torch.equal(pixels[0, :, :3], torch.full((3, 3, 24), -1.0))
    assert torch.equal(pixels[0, :, 21:], torch.full((3, 3, 24), -1.0))
    assert torch.allclose(pixels[0, :, 3:21], torch.ones(3, 18, 24), atol=1e-6)


def test_frame_of_wrong_shape_is_rejected_with_its_shape():
    with pytest.raises(ValueError, match=r"\(5, 7\)"):
        VideoLLMMoDFrameProcessor(size=24)(np.zeros((5, 7), dtype=np.uint8))


def test_decoding_mp4_at_2fps_gives_frames_and_timestamps(tmp_path):
    path = tmp_path / "clip.mp4"
    write_mp4(path)  # 24 frames at 8 fps = 3 s
    frames, times = load_video(path, fps=2)
    assert frames.shape == (6, 64, 64, 3)
    assert times.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    # grid frame i shows source frame 4 i: the nearest source grey level (10 k), despite codec error
    source = np.rint(frames.reshape(6, -1).mean(-1) / 10).astype(int)
    assert source.tolist() == [0, 4, 8, 12, 16, 20]


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "not-a-video"])
def test_bad_video_file_error_names_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        write_mp4(tmp_path / "full.mp4")
        data = (tmp_path / "full.mp4").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not-a-video":
        path.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(VideoDecodingError, match=str(path)):
        list(iter_video_frames(path, fps=2))


def test_prepare_row_slices_whole_video_features_to_the_row(processor):
    from videollm_mod.recipes.collator import prepare_row

    row = {"conversation": CONVERSATION, "start_frame": 3, "stop_frame": 8, "num_frames": 5, "fps": 2.0}
    features = torch.arange(10, dtype=torch.float32)[:, None, None].expand(10, 2, 4)
    out = prepare_row(processor, row, frame_features=features)
    assert out["frame_features"][:, 0, 0].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert torch.equal(out["labels"], processor(CONVERSATION)["labels"][0])


LOAD_IN_FRESH_PROCESS = """
import sys
sys.modules["modeling_videollm_mod"] = None
try:
    import modeling_videollm_mod
    raise SystemExit("the package is importable")
except ImportError:
    pass
import numpy as np, torch
from transformers import AutoProcessor
folder = sys.argv[1]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
inputs = torch.load(folder + "/inputs.pt", weights_only=False)
out = processor(inputs["conversation"], videos=inputs["videos"])
torch.save({"out": dict(out), "class": type(processor).__module__ + "." + type(processor).__name__}, folder + "/out.pt")
"""


def test_save_load_round_trip_through_autoprocessor_in_fresh_process(processor, tmp_path):
    videos = np.random.default_rng(0).integers(0, 256, (5, 30, 40, 3), dtype=np.uint8)
    expected = processor(CONVERSATION, videos=videos)
    processor.save_pretrained(tmp_path)
    torch.save({"conversation": CONVERSATION, "videos": videos}, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", LOAD_IN_FRESH_PROCESS, str(tmp_path)], check=True, env=env, cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt", weights_only=False)
    assert result["class"].startswith("transformers_modules.") and result["class"].endswith(".VideoLLMMoDProcessor")
    assert result["out"].keys() == expected.keys()
    assert all(torch.equal(result["out"][key], expected[key]) for key in expected)


def test_stream_token_ids_found_in_a_byte_level_vocabulary():
    """Llama-3 stores `]\\n` as the merged entry `]Ċ` (933): the id must come from encoding, not a string lookup."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    from modeling_videollm_mod import VideoLLMMoDFrameProcessor, VideoLLMMoDProcessor

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=300, special_tokens=["<v>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["a]\nb ]\n, x"] * 50, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    processor = VideoLLMMoDProcessor(image_processor=VideoLLMMoDFrameProcessor(), tokenizer=tokenizer)
    merged = tokenizer.convert_tokens_to_ids("]Ċ")
    assert tokenizer.convert_tokens_to_ids("]\n") is None
    assert (processor.stream_response_token_id, processor.video_token_id) == (merged, 0)
    assert processor.frame_token_interval_id == tokenizer.convert_tokens_to_ids(",")


def test_a_learned_streams_labels_stop_at_its_last_frames_decision(processor):
    """VideoLLM-online's issue #69: the last frame's learn range spilled past the frame into `]\\nAs`. Here a learned
    stream labels one token per learned frame, the token after its last `<v>` (`,` or, last, `]\\n`), and the
    unlearned reply after it labels nothing; no label is ever a `<v>` (the original remapped those to eos)."""
    ids, labels = (processor(CONVERSATION)[key][0] for key in ("input_ids", "labels"))
    video = ids == processor.video_token_id
    after_frame = torch.nonzero(video[:-1] & ~video[1:])[:, 0] + 1  # the token after each frame's last <v>
    reply = processor.encode_text("Assistant: A red circle.") + [processor.tokenizer.eos_token_id]
    interval, respond = processor.frame_token_interval_id, processor.stream_response_token_id
    expected = torch.full_like(labels, -100)
    expected[after_frame[:2]] = interval  # stream 1: frames 0 and 1 learned, frame 2 not
    end = torch.nonzero(ids == processor.tokenizer.eos_token_id)[0, 0].item() + 1  # the learned reply's eos
    expected[end - len(reply) : end] = torch.tensor(reply)
    expected[after_frame[3]], expected[after_frame[4]] = interval, respond  # stream 2: both frames learned
    assert torch.equal(labels, expected)  # nothing after the `]\n` of the last stream: its reply is not learned
    assert not (labels == processor.video_token_id).any()


def test_a_tokenizer_whose_token_straddles_a_learned_edge_is_refused_by_name():
    """The original's collator crashed when a learn range ended inside a token (its issue #51, `stop =
    torch.nonzero(...).item()` on no match); a silent fix would learn text outside the range or miss the edge."""
    tokenizer = build_stream_tokenizer(TEXTS, vocab_size=200)
    tokenizer.add_tokens(["\nAssistant"])  # one token across the edge of the learned `Assistant: ...`
    processor = VideoLLMMoDProcessor(VideoLLMMoDFrameProcessor(size=24), tokenizer, frame_num_tokens=2)
    with pytest.raises(ValueError, match=r"learned text 'Assistant: A red circle.*token boundaries"):
        processor(CONVERSATION)


def test_the_stream_frame_pattern_is_the_rendered_one(processor):
    from modeling_videollm_mod.processing_videollm_mod import stream_frame_ids

    ids = processor([{"role": "stream", "num_frames": 3}])["input_ids"][0].tolist()
    pattern = stream_frame_ids(
        3, processor.video_token_id, processor.frame_num_tokens, processor.frame_token_interval_id
    )
    start = ids.index(processor.video_token_id)
    assert ids[start : start + len(pattern)] == pattern and len(pattern) == 3 * processor.frame_num_tokens + 2
    assert stream_frame_ids(2, 7, 2, 9, continued=True) == [9, 7, 7, 9, 7, 7]
