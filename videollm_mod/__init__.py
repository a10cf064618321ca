"""Tooling of VideoLLM-MoD: the `videollm-mod` command, the shipped demo model, the data scripts
(`videollm_mod.data_scripts`), the training recipes (`videollm_mod.recipes`) and checkpoint conversion and releases
(`videollm_mod.conversion`).

The model itself, the code that travels with the weights, is the package `modeling_videollm_mod`; the tooling
imports it, never the other way round.
"""

from pathlib import Path

# The demo model that ships with the package: weights, config, tokenizer and processor files (data only; its code is
# this installation's `modeling_videollm_mod`, written next to the weights when the model is saved or released).
DEMO_MODEL = Path(__file__).parent / "demo"
