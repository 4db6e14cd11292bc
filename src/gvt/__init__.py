"""gvt: visual tokenizers for large language models (LaVIT, GVT, ETT), native to transformers and diffusers."""

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
from .modeling_lavit_conditioning import LaVITConditioningModel
from .pipeline_image_to_text import GVTImageToTextPipeline
from .pipeline_lavit_decoder import LaVITDecoderPipeline, assemble_release_pipeline, build_tiny_decoder_pipeline
from .processing_gvt import GVTProcessor
from .training.collator import GVTDataCollator
from .training.ett import ETTCallback
from .vocabulary import GVTVocabulary

__version__ = "0.1.0"

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
