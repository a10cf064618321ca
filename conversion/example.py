"""A tiny random checkpoint in the original VideoLLM-online format, saved by the libraries the original used (a PEFT
LoRA adapter with the connector, over a Llama base; a SigLIP vision model): to try `videollm-mod convert` offline,
and the reference the conversion tests compare against.

    videollm-mod convert --write-example runs/original     # writes runs/original/{base,adapter,vision}
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

VOCAB, HIDDEN, VISION_HIDDEN = 99, 32, 16
INTERVAL, RESPONSE = 11, 12  # `,` and `]\n`; `<v>` gets id VOCAB, outside the vocabulary, as in the original
LORA_R, LORA_ALPHA = 4, 8
# The original's LoRA targets (`LiveTrainingArguments.lora_modules`).
ORIGINAL_LORA_TARGETS = "model.*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)|lm_head$"


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=69,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def live_llama(config):
    """The original model class (`LiveLlamaForCausalLM`): a Llama with a `connector` (Linear -> GELU -> Linear)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(config)
    model.connector = nn.Sequential(
        nn.Linear(VISION_HIDDEN, config.hidden_size), nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)
    )
    return model


def base_tokenizer():
    """A word-level tokenizer with the tiny ids: <pad> 0, <s> 1, </s> 2, `,` 11, `]\\n` 12, 99 tokens in all."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    special = {0: "<pad>", 1: "<s>", 2: "</s>", INTERVAL: ",", RESPONSE: "]\n"}
    vocab = {special.get(i, f"w{i}"): i for i in range(VOCAB)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    tokenizer.add_tokens([AddedToken("]\n", normalized=False)])  # one token wherever it occurs, as in Llama-3
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def write_example(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write `base` (Llama + tokenizer), `adapter` (PEFT LoRA on the original targets, random A and B, + the trained
    connector) and `vision` (SigLIP) under `root`; returns their paths."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

    root = Path(root)
    paths = {name: root / name for name in ("base", "adapter", "vision")}
    torch.manual_seed(seed)
    base = LlamaForCausalLM(llama_config())
    for name, param in base.named_parameters():  # RMSNorm weights start at 1: make them matter
        if "norm" in name:
            param.data.uniform_(0.5, 1.5)
    base.save_pretrained(paths["base"])
    base_tokenizer().save_pretrained(paths["base"])

    live = live_llama(llama_config())
    live.load_state_dict(base.state_dict(), strict=False)
    lora = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.05,
        target_modules=ORIGINAL_LORA_TARGETS,
        modules_to_save=["connector"],
        task_type="CAUSAL_LM",
        init_lora_weights=False,  # random A and B: the merge must matter
    )
    with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing`: not ours
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        adapter = get_peft_model(live, lora)
    # The targets hold lm_head, whose full weight the original adapter carries too (peft's "auto" warns that it does).
    adapter.save_pretrained(paths["adapter"], save_embedding_layers=True)

    vision_config = SiglipVisionConfig(
        hidden_size=VISION_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=24,
        patch_size=4,
    )
    SiglipVisionModel(vision_config).save_pretrained(paths["vision"])
    return paths


def load_reference(root: str | Path):
    """The original's inference view of an example: `PeftModel.from_pretrained` over the base (whose connector starts
    random and is replaced by the adapter's trained copy), and the vision model; both in eval mode."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM, SiglipVisionModel

    root = Path(root)
    torch.manual_seed(1)
    live = live_llama(llama_config())
    live.load_state_dict(LlamaForCausalLM.from_pretrained(root / "base").state_dict(), strict=False)
    peft_model = PeftModel.from_pretrained(live, root / "adapter")
    return peft_model.eval(), SiglipVisionModel.from_pretrained(root / "vision").eval()
