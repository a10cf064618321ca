"""Offline tokenizers for tests and the demo model: a small byte-level BPE trained on given texts with the stream tokens.

The result behaves like the Llama-3 tokenizer where the stream format needs it: `<v>` (frame placeholder) is one
special token, the interval `,` and the response opener `]\\n` are single ordinary tokens (so they decode inside
replies), and `<pad>`, `<s>`, `</s>` take ids 0, 1, 2 (the ids of `presets.tiny_config`).

    tokenizer = build_stream_tokenizer(["#C C sees a red circle appear", ...], vocab_size=300)
    tokenizer.save_pretrained(folder)

Tooling: a saved tokenizer is plain `tokenizer.json`, loaded by `AutoTokenizer`.
"""

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

from modeling_videollm_mod.processing_videollm_mod import (
    ASSISTANT_PREFIX,
    FRAME_INTERVAL,
    STREAM_GENERATION_PROMPT,
    STREAM_OPEN,
    STREAM_RESPONSE,
    SYSTEM_PROMPT,
    USER_PREFIX,
    VIDEO_TOKEN,
)

PAD, BOS, EOS = "<pad>", "<s>", "</s>"

# Strings of the stream format, added to the training texts so that the template's words get merged tokens.
_TEMPLATE_TEXTS = [USER_PREFIX, ASSISTANT_PREFIX, STREAM_GENERATION_PROMPT, STREAM_OPEN, SYSTEM_PROMPT]


def build_stream_tokenizer(
    texts: Iterable[str], vocab_size: int = 300, min_frequency: int = 1
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it as a transformers fast tokenizer for the live1+ stream format.

    Args:
        texts: training texts (e.g. the narrations and queries of a synthetic dataset).
        vocab_size: target vocabulary size (special, byte and `]\\n` tokens included; the trainer may stop earlier).
        min_frequency: minimum pair count for a merge.
    Returns:
        A `PreTrainedTokenizerFast` (left padding) with `<pad>`=0, `<s>`=1, `</s>`=2, `<v>`=3; `,` and `]\\n` are
        single tokens. Use `tokenizer.convert_tokens_to_ids` for the config's `video_token_id`,
        `frame_token_interval_id` and `stream_response_token_id`.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD, BOS, EOS, VIDEO_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*texts, *_TEMPLATE_TEXTS], trainer)
    # `]\n` is matched before pre-tokenisation, so it is one token wherever it occurs (Llama-3's 933).
    tokenizer.add_tokens([AddedToken(STREAM_RESPONSE, normalized=False, special=False)])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
    )
    for token in (VIDEO_TOKEN, FRAME_INTERVAL, STREAM_RESPONSE):
        ids = wrapped.encode(token, add_special_tokens=False)
        if len(ids) != 1:  # a guard on the tokenizers library's behaviour, not on the inputs
            raise RuntimeError(f"stream token {token!r} encodes to {len(ids)} tokens {ids}; expected one")
    return wrapped


def stream_token_ids(tokenizer) -> dict[str, int]:
    """The config fields that depend on the tokenizer: `video_token_id`, `frame_token_interval_id`,
    `stream_response_token_id` (+ `eos_token_id` for generation)."""
    return {
        name: tokenizer.encode(token, add_special_tokens=False)[0]
        for name, token in (
            ("video_token_id", VIDEO_TOKEN),
            ("frame_token_interval_id", FRAME_INTERVAL),
            ("stream_response_token_id", STREAM_RESPONSE),
        )
    }


__all__ = ["build_stream_tokenizer", "stream_token_ids"]
