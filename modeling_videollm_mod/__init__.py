"""VideoLLM-MoD: streaming video LLM with Mixture-of-Depths vision computation, native to Hugging Face transformers.

Importing the package also registers the model with the Auto classes, so a saved folder loads with
`AutoModelForCausalLM.from_pretrained(folder)` in-process; elsewhere `trust_remote_code=True` loads the copied code.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache_videollm_mod import VideoLLMMoDCache
from .configuration_videollm_mod import VideoLLMMoDConfig
from .modeling_videollm_mod import VideoLLMMoDForCausalLM, VideoLLMMoDModel, VideoLLMMoDPreTrainedModel

AutoConfig.register(VideoLLMMoDConfig.model_type, VideoLLMMoDConfig, exist_ok=True)
AutoModel.register(VideoLLMMoDConfig, VideoLLMMoDModel, exist_ok=True)
AutoModelForCausalLM.register(VideoLLMMoDConfig, VideoLLMMoDForCausalLM, exist_ok=True)

__all__ = [
    "VideoLLMMoDCache",
    "VideoLLMMoDConfig",
    "VideoLLMMoDForCausalLM",
    "VideoLLMMoDModel",
    "VideoLLMMoDPreTrainedModel",
]
