"""gvt: visual tokenizers for large language models (LaVIT, GVT, ETT), native to transformers and diffusers."""

import importlib

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .configuration_gvt import PRESETS, VISION_PRESETS, GVTConfig, GVTVisionConfig
from .image_processing_gvt import GVTImageProcessor, load_image
from .modeling_gvt import (
    GVTDecoderOutput,
    GVTFeaturesOutput,
    GVTPreTrainedModel,
    GVTTokenizerOutput,
    GVTVisionTokenizer,
    GVTVisionTokenizerOutput,
)
from .modeling_lavit import LaVITCausalLMOutputWithPast, LaVITForCausalLM, LaVITImageGenerationOutput
from .processing_gvt import GVTProcessor
from .vocabulary import GVTVocabulary

__version__ = "0.1.0"

# What the Auto classes need is imported (and registered) above. The diffusers decoder, the pipelines and the training
# helpers import diffusers, transformers' pipelines and datasets: they load on first use (PEP 562).
_LAZY_EXPORTS = {
    "LaVITConditioningModel": "modeling_lavit_conditioning",
    "LaVITDecoderPipeline": "pipeline_lavit_decoder",
    "assemble_release_pipeline": "pipeline_lavit_decoder",
    "build_tiny_decoder_pipeline": "pipeline_lavit_decoder",
    "GVTImageToTextPipeline": "pipeline_image_to_text",
    "GVTDataCollator": "training.collator",
    "ETTCallback": "training.ett",
}


def __getattr__(name: str):
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module 'gvt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))


AutoConfig.register(GVTVisionConfig.model_type, GVTVisionConfig, exist_ok=True)
AutoModel.register(GVTVisionConfig, GVTVisionTokenizer, exist_ok=True)
AutoConfig.register(GVTConfig.model_type, GVTConfig, exist_ok=True)
for _auto in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
    _auto.register(GVTConfig, LaVITForCausalLM, exist_ok=True)
AutoImageProcessor.register(GVTConfig, image_processor_classes={"pil": GVTImageProcessor}, exist_ok=True)
AutoProcessor.register(GVTConfig, GVTProcessor, exist_ok=True)
GVTImageProcessor.register_for_auto_class("AutoImageProcessor")
GVTProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "GVTConfig",
    "PRESETS",
    "LaVITForCausalLM",
    "LaVITCausalLMOutputWithPast",
    "LaVITImageGenerationOutput",
    "GVTProcessor",
    "GVTImageProcessor",
    "load_image",
    "GVTDataCollator",
    "ETTCallback",
    "GVTVocabulary",
    "GVTImageToTextPipeline",
    "LaVITConditioningModel",
    "LaVITDecoderPipeline",
    "build_tiny_decoder_pipeline",
    "assemble_release_pipeline",
    "GVTVisionConfig",
    "VISION_PRESETS",
    "GVTVisionTokenizer",
    "GVTPreTrainedModel",
    "GVTTokenizerOutput",
    "GVTFeaturesOutput",
    "GVTVisionTokenizerOutput",
    "GVTDecoderOutput",
]
