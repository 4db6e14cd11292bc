"""LaVITConditioningModel: visual token ids -> diffusion UNet conditioning (the first half of LaVIT's detokenizer).

It holds the codebook and one feature decoder ([`GVTFeatureDecoder`], reused from `gvt.modeling_gvt`, not copied) as
a diffusers `ModelMixin`, so it is a component of [`LaVITDecoderPipeline`] that saves and loads with it.

`decoder_type="highres"`: SDXL conditioning, `prompt_embeds` `[B, num_queries, sum(highres_cross_attention_dims)]` and
`pooled_prompt_embeds` `[B, highres_pooled_dim]`; the unconditional branch is all zeros.
`decoder_type="lowres"`: SD-1.5 cross-attention `prompt_embeds` `[B, num_queries, lowres_cross_attention_dim]`; the
unconditional branch is a learned `uncond_embeddings` `[1, uncond_length, dim]` (the release's
`pixel_decoding/uncond_embeddings.bin`), zero-padded to `num_queries` rows and masked beyond its length.

Half precision: `from_pretrained(..., dtype=torch.bfloat16)` (or the pipeline's `dtype`) runs the whole module in that
dtype (there is no hard decision here to keep in float32; the attention softmaxes run in float32 anyway). Its
attention is SDPA, exact for the decoder's softmax with an additive padding mask.
"""

from __future__ import annotations

from typing import Literal

import torch

# diffusers resolves a third-party component's base classes as attributes of the component's module: keep these
# imported by name.
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .configuration_gvt import GVTVisionConfig
from .modeling_gvt import GVTDecoderOutput, GVTFeatureDecoder

DecoderType = Literal["highres", "lowres"]


def check_visual_token_ids(
    token_ids: torch.Tensor, attention_mask: torch.Tensor | None, codebook_size: int
) -> torch.Tensor:
    """Validate codebook ids `[B, L]` (and their mask); return the mask (all ones when `None`)."""
    if not isinstance(token_ids, torch.Tensor) or token_ids.dtype not in (torch.int32, torch.int64):
        raise TypeError("visual_token_ids must be an integer torch.Tensor of codebook indices.")
    if token_ids.ndim != 2:
        raise ValueError(f"visual_token_ids must have shape [batch, length], got {tuple(token_ids.shape)}.")
    if attention_mask is None:
        attention_mask = torch.ones_like(token_ids)
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != token_ids.shape:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask)
        raise ValueError(
            f"attention_mask shape {shape} does not match visual_token_ids shape {tuple(token_ids.shape)}."
        )
    real = token_ids[attention_mask.bool()]
    if real.numel() and (real.min() < 0 or real.max() >= codebook_size):
        raise ValueError(
            f"visual_token_ids must be codebook indices in [0, {codebook_size}); "
            f"got values in [{int(real.min())}, {int(real.max())}]."
        )
    return attention_mask


# Fields this module's config shares, under the same names, with GVTVisionConfig (the feature decoder's sizes).
VISION_CONFIG_FIELDS = (
    "codebook_size",
    "codebook_dim",
    "decoder_hidden_size",
    "decoder_num_layers",
    "decoder_num_attention_heads",
    "decoder_intermediate_size",
    "decoder_output_dim",
    "decoder_num_queries",
    "decoder_max_positions",
    "decoder_mask_value",
    "lowres_cross_attention_dim",
    "highres_cross_attention_dims",
    "highres_pooled_dim",
)


class LaVITConditioningModel(ModelMixin, ConfigMixin):
    r"""
    Codebook + feature decoder + highres or lowres head: visual token ids -> UNet conditioning.

    Args:
        decoder_type (`str`): `"highres"` (SDXL: cross-attention + pooled embeds) or `"lowres"` (SD-1.5).
        codebook_size, codebook_dim: the visual codebook.
        decoder_hidden_size, decoder_num_layers, decoder_num_attention_heads, decoder_intermediate_size,
        decoder_output_dim, decoder_num_queries, decoder_max_positions, decoder_mask_value, layer_norm_eps:
            the feature decoder (as in [`GVTVisionConfig`]).
        lowres_cross_attention_dim, highres_cross_attention_dims, highres_pooled_dim: the heads' widths.
        uncond_length (`int`): rows of the learned unconditional embedding (`"lowres"` only; 77 in the release).
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        decoder_type: DecoderType = "highres",
        codebook_size: int = 16384,
        codebook_dim: int = 32,
        decoder_hidden_size: int = 1408,
        decoder_num_layers: int = 12,
        decoder_num_attention_heads: int = 16,
        decoder_intermediate_size: int = 6144,
        decoder_output_dim: int = 1408,
        decoder_num_queries: int = 256,
        decoder_max_positions: int = 256,
        decoder_mask_value: float = -10000.0,
        layer_norm_eps: float = 1e-5,
        lowres_cross_attention_dim: int = 768,
        highres_cross_attention_dims: tuple[int, int] | list[int] = (768, 1280),
        highres_pooled_dim: int = 1280,
        uncond_length: int = 77,
    ):
        super().__init__()
        if decoder_type not in ("highres", "lowres"):
            raise ValueError(f"decoder_type must be 'highres' or 'lowres', got {decoder_type!r}.")
        if decoder_type == "lowres" and not 0 < uncond_length <= decoder_num_queries:
            raise ValueError(
                f"uncond_length ({uncond_length}) must be in [1, decoder_num_queries={decoder_num_queries}]."
            )
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        self.decoder = GVTFeatureDecoder(self.vision_config, decoder_type)
        if decoder_type == "lowres":
            self.uncond_embeddings = nn.Parameter(torch.zeros(1, uncond_length, lowres_cross_attention_dim))
        else:
            self.uncond_embeddings = None

    # -- sizes ---------------------------------------------------------------------------------------------------------

    @property
    def vision_config(self) -> GVTVisionConfig:
        """The [`GVTVisionConfig`] of the decoder part (sizes of the feature decoder; the encoder sizes are unused)."""
        config = self.config
        shared = {name: getattr(config, name) for name in VISION_CONFIG_FIELDS}
        shared["highres_cross_attention_dims"] = list(shared["highres_cross_attention_dims"])
        vision_config = GVTVisionConfig(
            tokenizer_type="lavit",
            decoder_types=[config.decoder_type],
            tokenizer_layer_norm_eps=config.layer_norm_eps,
            **shared,
        )
        vision_config._attn_implementation = "sdpa"  # exact here: a plain softmax with an additive padding mask
        return vision_config

    @property
    def cross_attention_dim(self) -> int:
        """Width of `prompt_embeds` (the UNet's `cross_attention_dim`)."""
        if self.config.decoder_type == "lowres":
            return self.config.lowres_cross_attention_dim
        return sum(self.config.highres_cross_attention_dims)

    @property
    def pooled_dim(self) -> int | None:
        """Width of `pooled_prompt_embeds` (highres only)."""
        return self.config.highres_pooled_dim if self.config.decoder_type == "highres" else None

    # -- construction from a tokenizer -----------------------------------------------------------------------------------

    @classmethod
    def from_vision_tokenizer(
        cls,
        vision_tokenizer,
        decoder_type: DecoderType = "highres",
        uncond_embeddings: torch.Tensor | None = None,
    ) -> LaVITConditioningModel:
        """Copy the codebook and the `decoder_type` feature decoder of a [`GVTVisionTokenizer`].

        `uncond_embeddings` (`[1, T, dim]` or `[T, dim]`, lowres only): the learned unconditional embedding; zeros when
        omitted (then `uncond_length` is 77 as in the release, at most `decoder_num_queries`).
        """
        config = vision_tokenizer.config
        if config.tokenizer_type != "lavit":
            raise ValueError("Only a discrete (tokenizer_type='lavit') tokenizer has a codebook and feature decoders.")
        if decoder_type not in vision_tokenizer.decoders:
            raise ValueError(
                f"The tokenizer has no {decoder_type!r} decoder; it has {sorted(vision_tokenizer.decoders)}."
            )
        if uncond_embeddings is not None:
            if decoder_type != "lowres":
                raise ValueError("uncond_embeddings belong to the lowres decoder; the highres one uses zeros.")
            uncond_embeddings = uncond_embeddings.reshape(1, -1, uncond_embeddings.shape[-1])
            if uncond_embeddings.shape[-1] != config.lowres_cross_attention_dim:
                raise ValueError(
                    f"uncond_embeddings have width {uncond_embeddings.shape[-1]}, the lowres decoder "
                    f"{config.lowres_cross_attention_dim}."
                )
        shared = {name: getattr(config, name) for name in VISION_CONFIG_FIELDS}
        shared["highres_cross_attention_dims"] = tuple(shared["highres_cross_attention_dims"])
        model = cls(
            decoder_type=decoder_type,
            layer_norm_eps=config.tokenizer_layer_norm_eps,
            uncond_length=uncond_embeddings.shape[1]
            if uncond_embeddings is not None
            else min(77, config.decoder_num_queries),
            **shared,
        )
        source = vision_tokenizer.decoders[decoder_type]
        with torch.no_grad():
            model.codebook.weight.copy_(vision_tokenizer.quantizer.codebook.weight)
            model.decoder.load_state_dict(source.state_dict(), strict=True)
            if uncond_embeddings is not None:
                model.uncond_embeddings.copy_(uncond_embeddings)
        # The tokenizer's dtype (its float32 codebook, kept so for the nearest-code search, only embeds here).
        # nn.Module.to: diffusers' ModelMixin.to warns about float32 modules on every dtype cast, and there are none.
        dtype = source.in_proj.weight.dtype
        return model if dtype == model.dtype else nn.Module.to(model, dtype=dtype)

    # -- forward ---------------------------------------------------------------------------------------------------------

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Codebook rows of `token_ids` (`[..., codebook_dim]`)."""
        return self.codebook(token_ids)

    def forward(self, visual_token_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> GVTDecoderOutput:
        """Codebook ids `[B, L]` (right-padded, `attention_mask` 1 on real tokens) -> UNet conditioning."""
        attention_mask = check_visual_token_ids(visual_token_ids, attention_mask, self.config.codebook_size)
        safe_ids = visual_token_ids.long() * attention_mask.long()
        return self.decoder(self.embed_tokens(safe_ids), attention_mask)

    def unconditional(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The classifier-free-guidance branch: `(prompt_embeds, pooled_prompt_embeds, encoder_attention_mask)`.

        Highres: zeros and zero pooled embeds, no mask. Lowres: the learned embedding in the first `uncond_length` of
        `num_queries` rows (zeros after), with a mask that hides the padding (as the release's SD-1.5 decoding does).
        """
        config = self.config
        dtype, device = self.codebook.weight.dtype, self.codebook.weight.device
        shape = (batch_size, config.decoder_num_queries, self.cross_attention_dim)
        if config.decoder_type == "highres":
            pooled = torch.zeros(batch_size, config.highres_pooled_dim, dtype=dtype, device=device)
            return torch.zeros(shape, dtype=dtype, device=device), pooled, None
        length = config.uncond_length
        padding = torch.zeros(batch_size, config.decoder_num_queries - length, shape[-1], dtype=dtype, device=device)
        embeds = torch.cat((self.uncond_embeddings.to(dtype).expand(batch_size, -1, -1), padding), dim=1)
        mask = torch.zeros(batch_size, config.decoder_num_queries, dtype=torch.long, device=device)
        mask[:, :length] = 1
        return embeds, None, mask


__all__ = ["LaVITConditioningModel", "check_visual_token_ids"]
