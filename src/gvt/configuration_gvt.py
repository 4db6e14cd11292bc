"""Configurations of the gvt visual tokenizers (LaVIT and GVT)."""

from __future__ import annotations

from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

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
    """

    model_type = "gvt_vision"
    base_config_key = "vision_config"

    tokenizer_type: Literal["lavit", "gvt"] = "lavit"
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    hidden_size: int = 1408
    num_hidden_layers: int = 40
    num_attention_heads: int = 16
    intermediate_size: int = 6144
    encoder_mlp_type: Literal["gelu", "swiglu"] = "gelu"
    encoder_sub_layer_norm: bool = False
    encoder_rope: bool = False
    rope_pretrain_grid_size: int = 16
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6
    tokenizer_layer_norm_eps: float = 1e-5
    merger_num_layers: int = 12
    merger_num_attention_heads: int = 16
    merger_intermediate_size: int = 6144
    policy_softmax_eps: float = 1e-6
    codebook_size: int = 16384
    codebook_dim: int = 32
    projection_dim: int = 4096
    decoder_types: list[str] | tuple[str, ...] = ("highres", "lowres")
    decoder_hidden_size: int = 1408
    decoder_num_layers: int = 12
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 6144
    decoder_output_dim: int = 1408
    decoder_num_queries: int = 256
    decoder_max_positions: int = 256
    decoder_mask_value: float = -10000.0
    lowres_cross_attention_dim: int = 768
    highres_cross_attention_dims: list[int] | tuple[int, ...] = (768, 1280)
    highres_pooled_dim: int = 1280
    resampler_num_layers: int = 6
    resampler_num_attention_heads: int = 16
    resampler_head_dim: int = 96
    resampler_num_latents: int = 32
    resampler_ff_mult: int = 4
    resampler_num_media_embeds: int = 1
    resampler_layer_norm_eps: float = 1e-5
    max_tokens: int | None = None
    initializer_range: float = 0.02

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
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})."
            )
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
        unknown = set(self.decoder_types) - {"highres", "lowres"}
        if unknown:
            raise ValueError(f"Unknown decoder_types {sorted(unknown)}; expected a subset of ['highres', 'lowres'].")
        if self.decoder_types and self.tokenizer_type != "lavit":
            raise ValueError("Feature decoders exist only for tokenizer_type='lavit'.")
        if len(self.highres_cross_attention_dims) != 2:
            raise ValueError("highres_cross_attention_dims must hold two widths (CLIP-L and CLIP-bigG halves).")
        if self.max_tokens is not None and self.max_tokens < 0:
            raise ValueError(f"max_tokens must be None or >= 0, got {self.max_tokens}.")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GVTVisionConfig:
        """Build a config from a named preset (`"lavit-7b-v2"`, `"gvt-eva02-l"`, `"tiny"`, `"tiny-gvt"`)."""
        if name not in VISION_PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(VISION_PRESETS)}.")
        return cls(**{**VISION_PRESETS[name], **overrides})


__all__ = ["GVTVisionConfig", "VISION_PRESETS"]
