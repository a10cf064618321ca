"""Processor of VideoLLM-MoD: the VideoLLM-online "live1+" stream text format, placeholder expansion, labels, frames.

Text format (kept character for character; converted checkpoints depend on it):

    <bos>{system}\\n                         system (prepended with `system_prompt` when the conversation has none)
    \\n[<v>*F,<v>*F,...,<v>*F]                a stream of frames, F = frame_num_tokens placeholders each
    \\nUser: {text}                           user turn
    \\nAssistant: {text}<eos>                 assistant turn
    suffixes: `\\n[` (stream prompt), `]\\nAssistant:` (stream generation prompt), `\\nAssistant:` (generation)

Labels are aligned with `input_ids` (the model shifts them): a stream learns its first `learn` frames, the label of
frame i sitting on the token that follows its last placeholder (`,` = stay silent, or `]\\n` = speak for the stream's
last frame); a learned assistant turn labels `Assistant: {text}<eos>`. Everything else is -100.

Messages are dicts `{"role": "system" | "user" | "assistant" | "stream", "content": str, "learn": int | bool,
"num_frames": int, "time": float}` (the prepared datasets' schema; `time` is not used for the text).

Training entry points:

    processor(conversation, videos=None, frame_features=None, *, add_generation_prompt=False,
              add_stream_prompt=False, add_stream_generation_prompt=False, return_labels=None,
              return_tensors="pt") -> BatchFeature
        One conversation (list of messages) or a batch (list of lists), left-padded. Keys: `input_ids`,
        `attention_mask`, `labels` (when a message learns or `return_labels=True`), `pixel_values_videos`
        (ΣT, 3, S, S) for `videos` or `frame_features` (ΣT, F, D) passed through.

    Dataset rows (their columns, the video files they name) become model inputs in the training recipes
    (`videollm_mod.recipes.collator.prepare_row`), which only they need.

Videos are sampled by `video_videollm_mod` (PyAV): `load_video(source, fps=2.0)` -> (uint8 (T, H, W, 3), times).
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor

# VideoLLM-online's live1+ system prompt (`LiveTrainingArguments.system_prompt`).
SYSTEM_PROMPT = (
    "A multimodal AI assistant is helping users with some activities. Below is their conversation, interleaved with "
    "the list of video frames received by the assistant."
)
# The stream tokens: each frame's placeholder, the interval between frames (its probability after a frame is the
# "stay silent" probability) and the reply opener (`]\n` is one token in Llama-3's vocabulary: 933).
VIDEO_TOKEN = "<v>"
FRAME_INTERVAL = ","
STREAM_RESPONSE = "]\n"
# The pieces of the live1+ text. Everything that writes stream text (the renderer and the Jinja template below, the
# streaming session, the tokenizer builder) is made of these.
STREAM_OPEN, STREAM_CLOSE = "\n[", "]"
USER_PREFIX = "\nUser: "
ASSISTANT_PREFIX = "\nAssistant: "
GENERATION_PROMPT = "\nAssistant:"
STREAM_GENERATION_PROMPT = STREAM_CLOSE + GENERATION_PROMPT  # "]\nAssistant:"


def _jinja(text: str) -> str:
    """`text` as a Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


# The live1+ template in Jinja, for `processor.apply_chat_template(messages, tokenize=False)`: one `<v>` per frame,
# which the processor expands to `frame_num_tokens` placeholders. The Python renderer (`render`) is the one that
# tokenises and labels; both are built from the pieces above and a test pins that they give the same text.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ bos_token + message['content'] + '\\n' }}"
    f"{{%- elif message['role'] == 'user' -%}}{{{{ {_jinja(USER_PREFIX)} + message['content'] }}}}"
    f"{{%- elif message['role'] == 'assistant' -%}}{{{{ {_jinja(ASSISTANT_PREFIX)} + message['content'] + eos_token }}}}"
    "{%- elif message['role'] == 'stream' and message['num_frames'] > 0 -%}"
    f"{{{{ {_jinja(STREAM_OPEN)} + ([{_jinja(VIDEO_TOKEN)}] * message['num_frames']) | join({_jinja(FRAME_INTERVAL)}) "
    f"+ {_jinja(STREAM_CLOSE)} }}}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    f"{{%- if add_stream_prompt -%}}{{{{ {_jinja(STREAM_OPEN)} }}}}"
    f"{{%- elif add_stream_generation_prompt -%}}{{{{ {_jinja(STREAM_GENERATION_PROMPT)} }}}}"
    f"{{%- elif add_generation_prompt -%}}{{{{ {_jinja(GENERATION_PROMPT)} }}}}"
    "{%- endif -%}"
)


def stream_frame_ids(
    count: int, video_token_id: int, frame_num_tokens: int, interval_id: int, continued: bool = False
) -> list[int]:
    """The ids of `count` consecutive frames of a stream (live1+: `frame_num_tokens` placeholders each, the interval
    token `,` between them), the one owner of this pattern; `continued`: after an earlier frame, so the first frame is
    preceded by `,` too."""
    frame = [video_token_id] * frame_num_tokens
    ids = ([interval_id] + frame) * count
    return ids if continued else ids[1:]


class VideoLLMMoDFrameProcessor(BaseImageProcessor):
    r"""
    Frames -> vision tower input, as VideoLLM-online prepares them: shrink the longer side to `size` (bicubic, the
    other side even, aspect kept), pad to `size x size` with black centred, scale to [0, 1] and normalise (SigLIP:
    mean = std = 0.5). Torch ops only (no torchvision, no Pillow at run time).

    Args:
        size (`int`, defaults to 384): side of the square frame (the vision tower's `image_size`).
        image_mean, image_std (`list[float]`, default `[0.5] * 3`): normalisation.
        fps (`float`, defaults to 2.0): frame rate at which videos are decoded (the training grid).
    """

    model_input_names = ["pixel_values_videos"]

    def __init__(
        self,
        size: int = 384,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        fps: float = 2.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size = int(size)
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.fps = float(fps)

    def __call__(self, videos, **kwargs) -> BatchFeature:
        return self.preprocess(videos, **kwargs)

    def to_frames(self, video) -> torch.Tensor:
        """One video (or one frame) as uint8/float (T, 3, H, W); accepts THWC/TCHW/HWC/CHW arrays or tensors, or a
        list of frames."""
        if isinstance(video, (list, tuple)):
            frames = [self.to_frames(frame) for frame in video]
            shapes = {tuple(f.shape[1:]) for f in frames}
            if len(shapes) > 1:
                raise ValueError(f"frames of one video must share a shape; got {sorted(shapes)}")
            return torch.cat(frames) if frames else torch.empty(0, 3, self.size, self.size)
        frames = torch.as_tensor(np.asarray(video)) if not isinstance(video, torch.Tensor) else video
        if frames.dim() == 3:
            frames = frames[None]
        if frames.dim() != 4 or (frames.shape[-1] != 3 and frames.shape[1] != 3):
            raise ValueError(
                f"a frame must be RGB with shape (H, W, 3) or (3, H, W) (a video: (T, H, W, 3) or (T, 3, H, W)); "
                f"got shape {tuple(frames.shape)}"
            )
        if frames.shape[-1] == 3 and frames.shape[1] != 3:
            frames = frames.permute(0, 3, 1, 2)  # (T, H, W, 3) -> (T, 3, H, W)
        return frames

    def preprocess(self, videos, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """
        Args:
            videos: one video or a list of videos (each (T, H, W, 3) / (T, 3, H, W) uint8, or a list of frames).
        Returns:
            `BatchFeature` with `pixel_values_videos`: float32 (ΣT, 3, size, size), videos concatenated in order.
        """
        if isinstance(videos, (list, tuple)) and videos and self._is_video(videos[0]):
            frames = torch.cat([self.to_frames(v) for v in videos])
        else:
            frames = self.to_frames(videos)
        return BatchFeature({"pixel_values_videos": self.transform(frames)}, tensor_type=return_tensors)

    @staticmethod
    def _is_video(item) -> bool:
        return isinstance(item, (list, tuple)) or np.ndim(item) == 4

    def transform(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) uint8 (0..255) -> (T, 3, size, size) normalised float32."""
        frames = frames.float()
        height, width = frames.shape[-2:]
        scale = self.size / max(height, width)
        # the longer side becomes `size`; the other keeps the aspect, rounded to an even size (ffmpeg's scale=-2)
        new_h = self.size if height >= width else max(2, round(height * scale / 2) * 2)
        new_w = self.size if width > height else max(2, round(width * scale / 2) * 2)
        if (new_h, new_w) != (height, width) and frames.shape[0]:
            frames = F.interpolate(frames, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
            frames = frames.clamp(0, 255)
        top, left = (self.size - new_h) // 2, (self.size - new_w) // 2
        frames = F.pad(frames, (left, self.size - new_w - left, top, self.size - new_h - top), value=0.0)
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return (frames / 255.0 - mean) / std  # (T, 3, size, size)


def as_messages(conversation: list[dict] | dict[str, list]) -> list[dict]:
    """A row's conversation as a list of messages, also when `datasets` hands it over column-wise (a struct list read
    as `{role: [...], content: [...], ...}`)."""
    if isinstance(conversation, dict):
        keys = list(conversation)
        return [dict(zip(keys, values, strict=True)) for values in zip(*conversation.values(), strict=True)]
    return list(conversation)


def learned_frames(message: dict) -> int:
    """How many first frames of a stream message learn their decision: `learn` True is all of them, an int that many."""
    learn = message.get("learn", False)
    return int(message.get("num_frames") or 0) if learn is True else int(learn or 0)


class VideoLLMMoDProcessor(ProcessorMixin):
    r"""
    Tokenizer + frame processor + the live1+ stream template of VideoLLM-MoD (see the module docstring).

    Args:
        image_processor ([`VideoLLMMoDFrameProcessor`]): frames -> `pixel_values_videos` (the `image_processor` slot
            works without torchvision; transformers' video slot needs it).
        tokenizer: a fast tokenizer with `<v>` as a special token and `,` / `]\n` as single tokens.
        chat_template (`str`, *optional*): the saved Jinja template; it must be the live1+ one (`CHAT_TEMPLATE`),
            which is not configurable: the Python renderer that tokenises and labels follows the same format.
        frame_num_tokens (`int`, defaults to 10): placeholders per frame (`config.frame_num_tokens`).
        system_prompt (`str`, *optional*): prepended as the system message when a conversation has none
            (VideoLLM-online's live1+ default); `""` keeps `<bos>\n`.
    """

    video_token, frame_token_interval, stream_response_token = VIDEO_TOKEN, FRAME_INTERVAL, STREAM_RESPONSE

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        frame_num_tokens: int = 10,
        system_prompt: str = SYSTEM_PROMPT,
        **kwargs,
    ):
        if chat_template is not None and chat_template != CHAT_TEMPLATE:
            raise ValueError(
                "chat_template: this processor's text format is fixed (live1+, `CHAT_TEMPLATE`); the saved template "
                "differs from it (a folder saved by another version of the code?)"
            )
        self.frame_num_tokens = int(frame_num_tokens)
        self.system_prompt = system_prompt
        super().__init__(image_processor, tokenizer, chat_template=CHAT_TEMPLATE, **kwargs)

    # ---------------------------------------------------------------- ids of the stream tokens
    @property
    def video_token_id(self) -> int:
        return self.single_token_id(self.video_token)

    @property
    def frame_token_interval_id(self) -> int:
        return self.single_token_id(self.frame_token_interval)

    @property
    def stream_response_token_id(self) -> int:
        return self.single_token_id(self.stream_response_token)

    def single_token_id(self, text: str) -> int:
        """The id of `text`, which must encode to exactly one token. Encoding, not `convert_tokens_to_ids`: a
        byte-level vocabulary stores `]\n` as `]Ċ` (Llama-3's 933), so a lookup by the plain string would miss."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"the stream token {text!r} must be a single token; the tokenizer gives {ids}")
        return ids[0]

    def check_model_config(self, config) -> None:
        """Raise a ValueError naming the field if the processor and a model config disagree on the stream tokens."""
        pairs = {
            "frame_num_tokens": (self.frame_num_tokens, config.frame_num_tokens),
            "video_token_id": (self.video_token_id, config.video_token_id),
            "frame_token_interval_id": (self.frame_token_interval_id, config.frame_token_interval_id),
            "stream_response_token_id": (self.stream_response_token_id, config.stream_response_token_id),
        }
        bad = {name: values for name, values in pairs.items() if values[0] != values[1]}
        if bad:
            details = ", ".join(f"{name}: processor {p} vs config {c}" for name, (p, c) in bad.items())
            raise ValueError(f"processor and model config disagree on the stream tokens ({details})")

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a piece of the stream format (no special tokens added)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ---------------------------------------------------------------- rendering
    def render(
        self,
        conversation: Sequence[dict],
        add_generation_prompt: bool = False,
        add_stream_prompt: bool = False,
        add_stream_generation_prompt: bool = False,
        continuation: bool = False,
    ) -> tuple[str, list[tuple[int, int]], int]:
        """The conversation as live1+ text with placeholders expanded.

        Args:
            continuation: the messages continue a text already fed (a live stream): no system message is added.
        Returns:
            text; learn ranges as character spans `[start, stop)`; the number of frames.
        """
        messages = list(conversation)
        if not continuation and self.system_prompt is not None and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        bos, eos = self.tokenizer.bos_token or "", self.tokenizer.eos_token
        frame = VIDEO_TOKEN * self.frame_num_tokens
        parts: list[str] = []
        ranges: list[tuple[int, int]] = []
        length, num_frames = 0, 0

        def emit(piece: str) -> int:
            nonlocal length
            parts.append(piece)
            length += len(piece)
            return length

        for index, message in enumerate(messages):
            role, content = message["role"], message.get("content") or ""
            learn = message.get("learn", False)
            if role == "system":
                if index or continuation:
                    raise ValueError(f"message {index}: a system message must come first")
                emit(bos + content + "\n")
            elif role == "user":
                emit(USER_PREFIX + content)
            elif role == "assistant":
                # the learned range starts after the newline: `Assistant: {content}{eos}`
                start = emit(ASSISTANT_PREFIX) - len(ASSISTANT_PREFIX) + 1
                stop = emit(content + eos)
                if learn:
                    ranges.append((start, stop))
            elif role == "stream":
                count = int(message.get("num_frames") or 0)
                if count < 0:
                    raise ValueError(f"message {index}: num_frames={count} must be >= 0")
                if count == 0:
                    continue
                learned = learned_frames(message)
                emit(STREAM_OPEN)
                for f in range(count):
                    after = emit(frame)  # the `,` or `]` that follows the frame's last placeholder
                    if f < learned:
                        # the last frame's range covers `]\n` (one token), as VideoLLM-online extends it by one
                        ranges.append((after, after + (len(STREAM_RESPONSE) if f == count - 1 else 1)))
                    emit(FRAME_INTERVAL if f < count - 1 else STREAM_CLOSE)
                num_frames += count
            else:
                raise ValueError(f"message {index}: unknown role {role!r} (system, user, assistant or stream)")
        if add_stream_prompt:
            emit(STREAM_OPEN)
        elif add_stream_generation_prompt:
            emit(STREAM_GENERATION_PROMPT)
        elif add_generation_prompt:
            emit(GENERATION_PROMPT)
        return "".join(parts), ranges, num_frames

    def tokenize_with_labels(self, text: str, ranges: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        """Tokenise `text`; label (= the token id) every token that starts inside a learn range, -100 elsewhere.

        Each range must begin and end on token boundaries, else a ValueError names it: a token that straddles a
        boundary would be learned with text outside the range (VideoLLM-online's issue #69, the last frame's range
        spilling into `]\nAs`) or not at all; the original's collator crashes on it instead (its issue #51)."""
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        starts = np.asarray([start for start, _ in offsets], dtype=np.int64)
        boundaries = set(starts.tolist()) | {len(text)}
        learned = np.zeros(len(ids), dtype=bool)
        for start, stop in ranges:
            stop = min(stop, len(text))  # a stream that ends the text ends with `]`, its `\n` not yet written
            if start not in boundaries or stop not in boundaries:
                raise ValueError(
                    f"the learned text {text[start:stop]!r} (characters {start}-{stop}) does not begin and end on "
                    "token boundaries of this tokenizer: a token spans its edge (the stream format needs `,`, `]\\n` "
                    "and `Assistant` as tokens of their own)"
                )
            learned |= (starts >= start) & (starts < stop)
        labels = np.where(learned, np.asarray(ids, dtype=np.int64), -100).tolist()
        return ids, labels

    # ---------------------------------------------------------------- main call
    def __call__(
        self,
        conversation: Sequence[dict] | Sequence[Sequence[dict]] | None = None,
        videos=None,
        frame_features: torch.Tensor | Sequence[torch.Tensor] | None = None,
        *,
        text: str | Sequence[str] | None = None,
        add_generation_prompt: bool = False,
        add_stream_prompt: bool = False,
        add_stream_generation_prompt: bool = False,
        return_labels: bool | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Encode one conversation or a batch of them (left-padded), with their frames.

        Args:
            conversation: a list of messages, or a list of such lists (a batch).
            videos: the frames of the streams, in order: per conversation a (T, H, W, 3) / (T, 3, H, W) uint8
                array or tensor, or a list of frames; a list of those for a batch.
            frame_features: pre-computed frame features instead of `videos`: (T, F, D) per conversation.
            text: instead of `conversation`, ready text(s) with one `<v>` per frame (expanded here); no labels.
            add_generation_prompt, add_stream_prompt, add_stream_generation_prompt: the template's suffixes.
            return_labels: add `labels` (default: when any message learns).
        Returns:
            `BatchFeature` with `input_ids`, `attention_mask` (B, L), `labels` (B, L), and `pixel_values_videos`
            (ΣT, 3, S, S) or `frame_features` (ΣT, F, D).
        """
        if (conversation is None) == (text is None):
            raise ValueError("give exactly one of conversation or text")
        batched = text is not None and not isinstance(text, str)
        if conversation is not None:
            batched = bool(conversation) and not isinstance(conversation[0], dict)
        samples = (conversation if batched else [conversation]) if text is None else (text if batched else [text])

        rows, num_frames = [], []
        for sample in samples:
            if text is None:
                rendered, ranges, count = self.render(
                    sample, add_generation_prompt, add_stream_prompt, add_stream_generation_prompt
                )
            else:
                count = sample.count(VIDEO_TOKEN)
                rendered, ranges = sample.replace(VIDEO_TOKEN, VIDEO_TOKEN * self.frame_num_tokens), []
            rows.append(self.tokenize_with_labels(rendered, ranges))
            num_frames.append(count)
        if return_labels is None:
            return_labels = any(label != -100 for _, labels in rows for label in labels)

        length = max(len(ids) for ids, _ in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        data = {
            "input_ids": [[pad_id] * (length - len(ids)) + ids for ids, _ in rows],
            "attention_mask": [[0] * (length - len(ids)) + [1] * len(ids) for ids, _ in rows],
        }
        if return_labels:
            data["labels"] = [[-100] * (length - len(labels)) + labels for _, labels in rows]
        data = {key: torch.tensor(value, dtype=torch.long) for key, value in data.items()}

        if videos is not None and frame_features is not None:
            raise ValueError("give at most one of videos or frame_features")
        if videos is not None:
            per_sample = list(videos) if batched else [videos]
            frames = [self.image_processor.to_frames(v) for v in per_sample]
            self._check_frame_counts([f.shape[0] for f in frames], num_frames, "videos")
            data["pixel_values_videos"] = self.image_processor.transform(torch.cat(frames))
        elif frame_features is not None:
            per_sample = list(frame_features) if batched else [frame_features]
            self._check_frame_counts([f.shape[0] for f in per_sample], num_frames, "frame_features")
            data["frame_features"] = torch.cat([torch.as_tensor(f) for f in per_sample])
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _check_frame_counts(given: list[int], expected: list[int], name: str) -> None:
        if len(given) != len(expected) or given != expected:
            raise ValueError(f"{name} hold {given} frames per conversation but the streams have {expected}")

    # ---------------------------------------------------------------- datasets
    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos"]


VideoLLMMoDFrameProcessor.register_for_auto_class("AutoImageProcessor")
VideoLLMMoDProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "stream_frame_ids",
    "CHAT_TEMPLATE",
    "FRAME_INTERVAL",
    "STREAM_RESPONSE",
    "SYSTEM_PROMPT",
    "VIDEO_TOKEN",
    "VideoLLMMoDFrameProcessor",
    "VideoLLMMoDProcessor",
]
