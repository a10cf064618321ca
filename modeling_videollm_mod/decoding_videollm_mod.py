"""How a streaming session picks each token of a reply from a `GenerationConfig`: greedy, or sampling with temperature,
top-k, top-p and a repetition penalty (transformers' own logits processors). The session decodes a token per forward
itself, beside the frames of the other streams, so it does not call `generate`; settings that `generate` would honour
and this does not are refused when the session is made."""

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

# Settings of `generate` that would change the tokens and that a session does not apply (beams, constraints, other
# processors): refused unless left at their defaults.
_UNSUPPORTED = (
    "num_beams", "num_beam_groups", "penalty_alpha", "min_length", "min_new_tokens", "no_repeat_ngram_size",
    "encoder_repetition_penalty", "encoder_no_repeat_ngram_size", "bad_words_ids", "force_words_ids", "sequence_bias",
    "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id", "typical_p", "min_p",
    "epsilon_cutoff", "eta_cutoff", "exponential_decay_length_penalty", "guidance_scale", "renormalize_logits",
    "top_h", "watermarking_config",
)  # fmt: skip


class TokenChooser:
    """Picks the next token of each reply from its logits, by `config` (greedy unless `do_sample`)."""

    def __init__(self, config: GenerationConfig):
        default = GenerationConfig()
        changed = [name for name in _UNSUPPORTED if getattr(config, name, None) != getattr(default, name, None)]
        if changed:
            raise ValueError(
                f"a streaming session decodes greedily or by sampling (temperature, top_k, top_p, repetition_penalty); "
                f"it does not apply {', '.join(f'{name}={getattr(config, name)!r}' for name in changed)}"
            )
        self.sample = bool(config.do_sample)
        self.processors = LogitsProcessorList()
        if config.repetition_penalty not in (None, 1.0):
            self.processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
        if self.sample:
            if config.temperature not in (None, 1.0):
                self.processors.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k:
                self.processors.append(TopKLogitsWarper(config.top_k))
            if config.top_p not in (None, 1.0):
                self.processors.append(TopPLogitsWarper(config.top_p))

    def __call__(self, logits: torch.Tensor, histories: list[list[int]]) -> list[int]:
        """The next token of each reply: `logits` (n, V), `histories` the tokens each reply's prompt and reply hold
        so far (what `generate` would see as its input ids: a session's earlier stream is not among them)."""
        scores = logits.float()
        if self.processors:
            width = max(len(h) for h in histories)
            ids = torch.tensor([[h[0]] * (width - len(h)) + h for h in histories], device=scores.device)
            scores = self.processors(ids, scores)
        if self.sample:
            return torch.multinomial(torch.softmax(scores, -1), 1)[:, 0].tolist()
        return scores.argmax(-1).tolist()
