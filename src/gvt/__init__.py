"""gvt: visual tokenizers for large language models (LaVIT, GVT, ETT), native to transformers and diffusers."""

from transformers import AutoConfig, AutoModel

from .configuration_gvt import VISION_PRESETS, GVTVisionConfig
from .modeling_gvt import (
    GVTDecoderOutput,
    GVTFeaturesOutput,
    GVTPreTrainedModel,
    GVTTokenizerOutput,
    GVTVisionTokenizer,
    GVTVisionTokenizerOutput,
)

__version__ = "0.1.0"

AutoConfig.register(GVTVisionConfig.model_type, GVTVisionConfig, exist_ok=True)
AutoModel.register(GVTVisionConfig, GVTVisionTokenizer, exist_ok=True)

__all__ = [
    "GVTVisionConfig",
    "VISION_PRESETS",
    "GVTVisionTokenizer",
    "GVTPreTrainedModel",
    "GVTTokenizerOutput",
    "GVTFeaturesOutput",
    "GVTVisionTokenizerOutput",
    "GVTDecoderOutput",
]
