"""Configurations of the gvt visual tokenizers (LaVIT and GVT).

Both configs are strict dataclasses (`huggingface_hub.dataclasses.strict`, as every transformers 5 config): each field
is type-checked when set (`bool` is `bool`, `int` is `int`: `"112"`, `512.0`, `[]` or `"false"` are refused), sizes
must be positive (field validators), and the `validate_*` methods check how fields fit together. A bad value raises a
`TypeError` or `ValueError` naming the config, the field and the value. Loading a saved config (`from_pretrained`,
`from_dict`) also requires the fields that decide how the saved weights are read (`WEIGHT_LAYOUT_FIELDS`): a
default must never silently stand in for a lost layer count or input mode.
"""

import functools
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from huggingface_hub.dataclasses import as_validated_field, strict
from huggingface_hub.errors import StrictDataclassError
from transformers.configuration_utils import PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING, AutoConfig

# Released sizes. Everything else in the package reads sizes from a config, never from here.
_LAVIT_7B_V2: dict[str, Any] = {
    "tokenizer_type": "lavit",
    "image_size": 224,
    "patch_size": 14,
    "hidden_size": 1408,
    "num_hidden_layers": 40,
    "num_attention_heads": 16,
    "intermediate_size": 6144,
    "encoder_mlp_type": "gelu",
    "encoder_sub_layer_norm": False,
    "encoder_rope": False,
    "layer_norm_eps": 1e-6,
    "merger_num_layers": 12,
    "merger_num_attention_heads": 16,
    "merger_intermediate_size": 6144,
    "codebook_size": 16384,
    "codebook_dim": 32,
    "projection_dim": 4096,
    "decoder_types": ["highres", "lowres"],
    "decoder_hidden_size": 1408,
    "decoder_num_layers": 12,
    "decoder_num_attention_heads": 16,
    "decoder_intermediate_size": 6144,
    "decoder_output_dim": 1408,
    "decoder_num_queries": 256,
    "decoder_max_positions": 256,
    "lowres_cross_attention_dim": 768,
    "highres_cross_attention_dims": [768, 1280],
    "highres_pooled_dim": 1280,
}

_GVT_EVA02_L: dict[str, Any] = {
    "tokenizer_type": "gvt",
    "image_size": 224,
    "patch_size": 14,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 2730,
    "encoder_mlp_type": "swiglu",
    "encoder_sub_layer_norm": True,
    "encoder_rope": True,
    "rope_pretrain_grid_size": 16,
    "layer_norm_eps": 1e-6,
    "resampler_num_layers": 6,
    "resampler_num_attention_heads": 16,
    "resampler_head_dim": 96,
    "resampler_num_latents": 32,
    "resampler_ff_mult": 4,
    "projection_dim": 4096,
    "decoder_types": [],
}

# CPU-test size of the LaVIT tokenizer (the sizes of the reference fixture `tiny_a`).
_TINY: dict[str, Any] = {
    "tokenizer_type": "lavit",
    "image_size": 112,
    "patch_size": 14,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 279,
    "merger_num_layers": 2,
    "merger_num_attention_heads": 4,
    "merger_intermediate_size": 279,
    "codebook_size": 512,
    "codebook_dim": 32,
    "projection_dim": 48,
    "decoder_types": ["highres", "lowres"],
    "decoder_hidden_size": 64,
    "decoder_num_layers": 2,
    "decoder_num_attention_heads": 4,
    "decoder_intermediate_size": 279,
    "decoder_output_dim": 96,
    "decoder_num_queries": 64,
    "decoder_max_positions": 64,
    "lowres_cross_attention_dim": 40,
    "highres_cross_attention_dims": [40, 56],
    "highres_pooled_dim": 56,
}

_TINY_GVT: dict[str, Any] = {
    **_GVT_EVA02_L,
    "image_size": 112,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 170,
    "resampler_num_layers": 2,
    "resampler_num_attention_heads": 4,
    "resampler_head_dim": 16,
    "resampler_num_latents": 8,
    "projection_dim": 48,
}

VISION_PRESETS: dict[str, dict[str, Any]] = {
    "lavit-7b-v2": _LAVIT_7B_V2,
    "gvt-eva02-l": _GVT_EVA02_L,
    "tiny": _TINY,
    "tiny-gvt": _TINY_GVT,
}

# Fields a saved config must hold (they decide which weights exist and their shapes), by tokenizer type / decoder.
_ENCODER_FIELDS = [
    "tokenizer_type", "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers",
    "num_attention_heads", "intermediate_size", "encoder_mlp_type", "encoder_sub_layer_norm", "encoder_rope",
    "projection_dim",
]  # fmt: skip
_LAVIT_FIELDS = [
    "merger_num_layers", "merger_num_attention_heads", "merger_intermediate_size", "codebook_size", "codebook_dim",
    "decoder_types",
]  # fmt: skip
_DECODER_FIELDS = [
    "decoder_hidden_size", "decoder_num_layers", "decoder_num_attention_heads", "decoder_intermediate_size",
    "decoder_output_dim", "decoder_num_queries", "decoder_max_positions",
]  # fmt: skip
_GVT_FIELDS = [
    "resampler_num_layers", "resampler_num_attention_heads", "resampler_head_dim", "resampler_num_latents",
    "resampler_ff_mult", "resampler_num_media_embeds",
]  # fmt: skip
WEIGHT_LAYOUT_FIELDS: dict[str, list[str]] = {
    "gvt_vision": _ENCODER_FIELDS,
    "gvt_vision/lavit": _LAVIT_FIELDS,
    "gvt_vision/decoders": _DECODER_FIELDS,
    "gvt_vision/lowres": ["lowres_cross_attention_dim"],
    "gvt_vision/highres": ["highres_cross_attention_dims", "highres_pooled_dim"],
    "gvt_vision/gvt": _GVT_FIELDS,
    "gvt": [
        "vision_config", "text_config", "image_input_mode", "image_token_id", "image_start_token_id",
        "image_end_token_id", "visual_token_offset",
    ],
    "gvt/text_config": ["model_type", "vocab_size", "hidden_size", "num_hidden_layers"],
}  # fmt: skip
"""The fields `from_dict` / `from_pretrained` require in a saved config."""


# ----------------------------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------------------------


@as_validated_field
def positive(value: int):
    """A size or count: at least 1."""
    if not value >= 1:
        raise ValueError(f"must be >= 1, got {value!r}")


@as_validated_field
def positive_float(value: float):
    """An epsilon or scale: finite and > 0."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"must be a finite number > 0, got {value!r}")


@as_validated_field
def non_negative_float(value: float):
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"must be a finite number >= 0, got {value!r}")


def _plain_errors(cls):
    """Re-raise the strict dataclass errors of `cls(...)` as the `TypeError` / `ValueError` that caused them, named by
    the config class (callers and the CLI handle those)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except StrictDataclassError as error:
            cause = error.__cause__ if error.__cause__ is not None else error
            kind = TypeError if isinstance(cause, TypeError) else ValueError
            field = re.match(r"Validation error for field '(\w+)'", str(error))
            where = f"{cls.__name__}.{field.group(1)}" if field else cls.__name__
            raise kind(f"{where}: {cause}") from error

    cls.__init__ = __init__
    return cls


def _require_saved_fields(config_class: str, config_dict: Mapping, given: Mapping, required: list[str]) -> None:
    missing = [name for name in required if name not in config_dict and name not in given]
    if missing:
        raise ValueError(
            f"The saved {config_class} lacks {missing}: these fields decide how the saved weights are read, so no "
            "default may stand in for them. Restore them in config.json (or pass them to from_pretrained)."
        )


@_plain_errors
@strict(accept_kwargs=True)
class GVTVisionConfig(PreTrainedConfig):
    r"""
    Configuration of [`GVTVisionTokenizer`]: an EVA-style ViT encoder followed either by LaVIT's dynamic discrete
    tokenizer (`tokenizer_type="lavit"`: token selector, token merger, quantizer, continuous projection and feature
    decoders) or by GVT's perceiver resampler (`tokenizer_type="gvt"`).

    Args:
        tokenizer_type (`str`): `"lavit"` (discrete, dynamic-length tokens) or `"gvt"` (fixed latents).
        image_size, patch_size, num_channels: input geometry.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: encoder sizes.
        encoder_mlp_type (`str`): `"gelu"` (EVA-CLIP) or `"swiglu"` (EVA-02).
        encoder_sub_layer_norm (`bool`): EVA-02's LayerNorm before the attention output and MLP output projections.
        encoder_rope (`bool`): 2-D rotary embedding on the patch tokens (not CLS), frequencies interpolated from a
            `rope_pretrain_grid_size` grid.
        layer_norm_eps: encoder LayerNorm epsilon. `tokenizer_layer_norm_eps`: selector, merger and decoders.
        merger_*: the token merger (LaVIT's "causal encoder"). `policy_softmax_eps`: epsilon of its policy softmax.
        codebook_size, codebook_dim: the quantizer.
        projection_dim: width of the continuous features handed to a language model.
        decoder_types: which feature decoders to build (`"highres"` for SDXL, `"lowres"` for SD-1.5 conditioning).
        decoder_*: the feature decoders; `decoder_num_queries` learned queries, `decoder_max_positions` code
            positions.
        lowres_cross_attention_dim, highres_cross_attention_dims, highres_pooled_dim: UNet conditioning widths.
        resampler_*: GVT's perceiver resampler; `resampler_layer_norm_eps` also for `ln_vision` before it.
        max_tokens: default token budget (keep at most this many patches per image); `None` for no budget.

    Every size and count is an `int` >= 1, every epsilon a finite `float` > 0 (an `int` is accepted where a float is
    expected); a saved config must hold the fields of `WEIGHT_LAYOUT_FIELDS`.
    """

    model_type = "gvt_vision"
    base_config_key = "vision_config"

    tokenizer_type: Literal["lavit", "gvt"] = "lavit"
    image_size: int = positive(default=224)
    patch_size: int = positive(default=14)
    num_channels: int = positive(default=3)
    hidden_size: int = positive(default=1408)
    num_hidden_layers: int = positive(default=40)
    num_attention_heads: int = positive(default=16)
    intermediate_size: int = positive(default=6144)
    encoder_mlp_type: Literal["gelu", "swiglu"] = "gelu"
    encoder_sub_layer_norm: bool = False
    encoder_rope: bool = False
    rope_pretrain_grid_size: int = positive(default=16)
    rope_theta: int | float = positive_float(default=10000.0)
    layer_norm_eps: int | float = positive_float(default=1e-6)
    tokenizer_layer_norm_eps: int | float = positive_float(default=1e-5)
    merger_num_layers: int = positive(default=12)
    merger_num_attention_heads: int = positive(default=16)
    merger_intermediate_size: int = positive(default=6144)
    policy_softmax_eps: int | float = positive_float(default=1e-6)
    codebook_size: int = positive(default=16384)
    codebook_dim: int = positive(default=32)
    projection_dim: int = positive(default=4096)
    decoder_types: list[str] | tuple[str, ...] = ("highres", "lowres")
    decoder_hidden_size: int = positive(default=1408)
    decoder_num_layers: int = positive(default=12)
    decoder_num_attention_heads: int = positive(default=16)
    decoder_intermediate_size: int = positive(default=6144)
    decoder_output_dim: int = positive(default=1408)
    decoder_num_queries: int = positive(default=256)
    decoder_max_positions: int = positive(default=256)
    decoder_mask_value: int | float = -10000.0
    lowres_cross_attention_dim: int = positive(default=768)
    highres_cross_attention_dims: list[int] | tuple[int, ...] = (768, 1280)
    highres_pooled_dim: int = positive(default=1280)
    resampler_num_layers: int = positive(default=6)
    resampler_num_attention_heads: int = positive(default=16)
    resampler_head_dim: int = positive(default=96)
    resampler_num_latents: int = positive(default=32)
    resampler_ff_mult: int = positive(default=4)
    resampler_num_media_embeds: int = positive(default=1)
    resampler_layer_norm_eps: int | float = positive_float(default=1e-5)
    max_tokens: int | None = None
    initializer_range: int | float = non_negative_float(default=0.02)

    def __post_init__(self, **kwargs):
        self.decoder_types = list(self.decoder_types)
        self.highres_cross_attention_dims = list(self.highres_cross_attention_dims)
        super().__post_init__(**kwargs)

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def is_discrete(self) -> bool:
        """Whether this tokenizer produces discrete token ids (LaVIT) rather than only continuous latents (GVT)."""
        return self.tokenizer_type == "lavit"

    def validate_geometry(self):
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size}).")
        for name in ("hidden_size", "decoder_hidden_size"):
            heads_name = "num_attention_heads" if name == "hidden_size" else "decoder_num_attention_heads"
            if getattr(self, name) % getattr(self, heads_name) != 0:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be divisible by {heads_name} ({getattr(self, heads_name)})."
                )
        if self.tokenizer_type == "lavit" and self.hidden_size % self.merger_num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by merger_num_attention_heads "
                f"({self.merger_num_attention_heads})."
            )
        if self.tokenizer_type == "lavit" and self.hidden_size % 4 != 0:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by 4 for the token selector.")
        if self.encoder_rope and (self.hidden_size // self.num_attention_heads) % 4 != 0:
            raise ValueError("encoder_rope needs a head dimension divisible by 4 (2-D rotary embedding).")

    def validate_decoders(self):
        if not math.isfinite(self.decoder_mask_value):
            raise ValueError(f"decoder_mask_value must be finite, got {self.decoder_mask_value!r}.")
        unknown = set(self.decoder_types) - {"highres", "lowres"}
        if unknown:
            raise ValueError(f"Unknown decoder_types {sorted(unknown)}; expected a subset of ['highres', 'lowres'].")
        if self.decoder_types and self.tokenizer_type != "lavit":
            raise ValueError("Feature decoders exist only for tokenizer_type='lavit'.")
        if len(self.highres_cross_attention_dims) != 2 or not all(d >= 1 for d in self.highres_cross_attention_dims):
            raise ValueError(
                "highres_cross_attention_dims must hold two widths >= 1 (CLIP-L and CLIP-bigG halves), got "
                f"{self.highres_cross_attention_dims!r}."
            )
        if self.max_tokens is not None and self.max_tokens < 0:
            raise ValueError(f"max_tokens must be None or >= 0, got {self.max_tokens}.")

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> "GVTVisionConfig":
        """[`PreTrainedConfig.from_dict`], refusing a saved config that lacks a field of `WEIGHT_LAYOUT_FIELDS`."""
        cls.check_saved_fields(config_dict, kwargs)
        return super().from_dict(config_dict, **kwargs)

    @staticmethod
    def check_saved_fields(config_dict: Mapping, given: Mapping | None = None) -> None:
        """Raise a `ValueError` naming the fields of `WEIGHT_LAYOUT_FIELDS` that `config_dict` (and `given`) lack."""
        given = given or {}
        required = list(WEIGHT_LAYOUT_FIELDS["gvt_vision"])
        values = {**config_dict, **given}
        if values.get("tokenizer_type") == "gvt":
            required += WEIGHT_LAYOUT_FIELDS["gvt_vision/gvt"]
        elif "tokenizer_type" in values:
            required += WEIGHT_LAYOUT_FIELDS["gvt_vision/lavit"]
            decoder_types = values.get("decoder_types") or []
            if decoder_types:
                required += WEIGHT_LAYOUT_FIELDS["gvt_vision/decoders"]
            for decoder_type in ("lowres", "highres"):
                if isinstance(decoder_types, (list, tuple)) and decoder_type in decoder_types:
                    required += WEIGHT_LAYOUT_FIELDS[f"gvt_vision/{decoder_type}"]
        _require_saved_fields("GVTVisionConfig", config_dict, given, required)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GVTVisionConfig":
        """Build a config from a named preset (`"lavit-7b-v2"`, `"gvt-eva02-l"`, `"tiny"`, `"tiny-gvt"`)."""
        if name not in VISION_PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(VISION_PRESETS)}.")
        return cls(**{**VISION_PRESETS[name], **overrides})


# ----------------------------------------------------------------------------------------------------------------
# GVTConfig: vision tokenizer + causal language model
# ----------------------------------------------------------------------------------------------------------------

# Llama-2-7B as released with LaVIT-7B-v2: 32000 text ids, `[IMG]` = 32000, `[/IMG]` = 32001, visual code c -> 32002 + c
# (48386 ids). The `<image>` placeholder of the processor is one more id after the visual range; it is always replaced
# by an image's tokens before the embedding, so its row is never read.
_LAVIT_7B_V2_TEXT: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 48387,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

# A tiny Llama over a 256-token text vocabulary (the tokenizer of `gvt.tiny_random`) + 512 visual codes.
_TINY_TEXT: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 256 + 512,
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "lavit-7b-v2": {
        "vision_preset": "lavit-7b-v2",
        "text_config": _LAVIT_7B_V2_TEXT,
        "image_token_id": 48386,
        "image_start_token_id": 32000,
        "image_end_token_id": 32001,
        "visual_token_offset": 32002,
        "image_input_mode": "features",
    },
    "tiny": {
        "vision_preset": "tiny",
        "text_config": _TINY_TEXT,
        "image_token_id": 4,
        "image_start_token_id": 5,
        "image_end_token_id": 6,
        "visual_token_offset": 256,
        "image_input_mode": "ids",
    },
}


@_plain_errors
@strict(accept_kwargs=True)
class GVTConfig(PreTrainedConfig):
    r"""
    Configuration of [`LaVITForCausalLM`]: a visual tokenizer ([`GVTVisionConfig`]) and any causal language model
    (`text_config`, Llama by default) that share one vocabulary: the text ids, the image-start / image-end ids and,
    from `visual_token_offset` on, one id per codebook entry (`vision_config.codebook_size` of them).

    Args:
        vision_config (`GVTVisionConfig` or `dict`): the visual tokenizer.
        text_config (`PreTrainedConfig` or `dict`): the language model (any `AutoModelForCausalLM` config).
        image_token_id (`int`): the processor's image placeholder (`<image>`); the model replaces it with the image's
            own tokens, so it never reaches the embedding table.
        image_start_token_id, image_end_token_id (`int`): `[IMG]` and `[/IMG]`.
        visual_token_offset (`int`): LLM id of visual code 0; code `c` is id `visual_token_offset + c`.
        image_input_mode (`str`): how images enter the language model:
            `"ids"`: visual token ids through the LLM embedding table (LaVIT pretraining and generation);
            `"features"`: the continuous merged features of the kept tokens through the tokenizer's `projection`
            (LaVIT understanding; needs `vision_config.projection_dim == text_config.hidden_size`);
            `"codebook"`: codebook embeddings through an MLP projector with GELU (ETT).
        loss_on_visual_tokens (`bool`): also train on visual token ids (default: loss on text tokens only).
        projector_hidden_act (`str`): activation of the `"codebook"` projector.
        ett_reconstruction_weight (`float`): ETT's alpha in `L = L_caption + alpha * L_reconstruction`. In
            `"codebook"` mode, while training with trainable tokenizer parameters (ETT stage 2, see
            `gvt.ETTCallback`), `forward` adds the tokenizer's own objective (feature reconstruction, codebook /
            commitment, keep ratio) computed from the same tokenizer pass. 0 disables it.
        ett_target_keep_ratio (`float`): the keep-ratio target of that reconstruction term, in (0, 1].

    A saved config must hold the fields of `WEIGHT_LAYOUT_FIELDS["gvt"]` (and `["gvt/text_config"]` in its
    `text_config`), besides those of its `vision_config`.
    """

    model_type = "gvt"
    sub_configs = {"vision_config": GVTVisionConfig, "text_config": AutoConfig}

    vision_config: dict | GVTVisionConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 48386
    image_start_token_id: int = 32000
    image_end_token_id: int = 32001
    visual_token_offset: int = 32002
    image_input_mode: Literal["ids", "features", "codebook"] = "ids"
    loss_on_visual_tokens: bool = False
    projector_hidden_act: str = "gelu"
    tie_word_embeddings: bool = False
    initializer_range: int | float = non_negative_float(default=0.02)
    ett_reconstruction_weight: int | float = non_negative_float(default=0.25)
    ett_target_keep_ratio: int | float = positive_float(default=0.5)

    def __post_init__(self, **kwargs):
        if self.vision_config is None:
            self.vision_config = GVTVisionConfig()
        elif isinstance(self.vision_config, dict):
            self.vision_config = GVTVisionConfig(**self.vision_config)
        if self.text_config is None:
            self.text_config = CONFIG_MAPPING["llama"](
                **{k: v for k, v in _LAVIT_7B_V2_TEXT.items() if k != "model_type"}
            )
        elif isinstance(self.text_config, dict):
            text_config = dict(self.text_config)
            model_type = text_config.pop("model_type", "llama")
            if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
                raise ValueError(f"text_config.model_type {model_type!r} is not a model type transformers knows.")
            self.text_config = CONFIG_MAPPING[model_type](**text_config)
        super().__post_init__(**kwargs)

    def validate_vocabulary(self):
        codebook_size = self.vision_config.codebook_size
        vocab_size = self.text_config.vocab_size
        visual_end = self.visual_token_offset + codebook_size
        if self.image_input_mode not in ("ids", "features", "codebook"):
            raise ValueError(
                f"image_input_mode must be 'ids', 'features' or 'codebook', got {self.image_input_mode!r}."
            )
        if self.image_input_mode != "features" and not self.vision_config.is_discrete:
            raise ValueError(
                f"image_input_mode={self.image_input_mode!r} needs a discrete (tokenizer_type='lavit') tokenizer."
            )
        if self.vision_config.is_discrete and vocab_size < visual_end:
            raise ValueError(
                f"text_config.vocab_size ({vocab_size}) must cover the visual ids [{self.visual_token_offset}, "
                f"{visual_end}) (visual_token_offset + vision_config.codebook_size)."
            )
        specials = {
            "image_token_id": self.image_token_id,
            "image_start_token_id": self.image_start_token_id,
            "image_end_token_id": self.image_end_token_id,
        }
        for name, value in specials.items():
            if not 0 <= value < vocab_size:
                raise ValueError(f"{name} ({value}) is outside the vocabulary [0, {vocab_size}).")
            if self.visual_token_offset <= value < visual_end:
                raise ValueError(
                    f"{name} ({value}) falls inside the visual id range [{self.visual_token_offset}, {visual_end})."
                )
        if len(set(specials.values())) != len(specials):
            raise ValueError(
                f"image_token_id, image_start_token_id and image_end_token_id must differ, got {specials}."
            )
        if self.image_input_mode == "features" and self.vision_config.projection_dim != self.text_config.hidden_size:
            raise ValueError(
                f"image_input_mode='features' feeds the tokenizer's projection to the LLM: vision_config.projection_dim "
                f"({self.vision_config.projection_dim}) must equal text_config.hidden_size ({self.text_config.hidden_size})."
            )

    def validate_ett(self):
        if not self.ett_reconstruction_weight >= 0:
            raise ValueError(f"ett_reconstruction_weight must be >= 0, got {self.ett_reconstruction_weight}.")
        if not 0 < self.ett_target_keep_ratio <= 1:
            raise ValueError(f"ett_target_keep_ratio must lie in (0, 1], got {self.ett_target_keep_ratio}.")

    @property
    def codebook_size(self) -> int:
        return self.vision_config.codebook_size

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> "GVTConfig":
        """[`PreTrainedConfig.from_dict`], refusing a saved config that lacks a field of `WEIGHT_LAYOUT_FIELDS`
        (its own, its `text_config`'s, its `vision_config`'s)."""
        _require_saved_fields("GVTConfig", config_dict, kwargs, WEIGHT_LAYOUT_FIELDS["gvt"])
        for name in ("vision_config", "text_config"):
            if name in kwargs:  # passed as a config object: nothing was saved
                continue
            sub = config_dict[name]
            if not isinstance(sub, Mapping):
                raise TypeError(f"The saved GVTConfig's {name} must be a dict, got {type(sub).__name__}.")
            if name == "vision_config":
                GVTVisionConfig.check_saved_fields(sub)
            else:
                _require_saved_fields("GVTConfig.text_config", sub, {}, WEIGHT_LAYOUT_FIELDS["gvt/text_config"])
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GVTConfig":
        """Build a config from a named preset (`"lavit-7b-v2"`, `"tiny"`). `vision_config` / `text_config` overrides
        given as dicts update the preset's sub-config fields."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        preset = dict(PRESETS[name])
        vision = GVTVisionConfig.from_preset(preset.pop("vision_preset"), **overrides.pop("vision_config", {}))
        text = {**preset.pop("text_config"), **overrides.pop("text_config", {})}
        return cls(vision_config=vision, text_config=text, **{**preset, **overrides})


__all__ = ["GVTVisionConfig", "VISION_PRESETS", "GVTConfig", "PRESETS", "WEIGHT_LAYOUT_FIELDS"]
