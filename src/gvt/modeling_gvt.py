"""GVTVisionTokenizer: LaVIT's dynamic discrete visual tokenizer and GVT's resampled tokenizer, in one model.

Data flow (LaVIT): pixels -> EVA encoder -> token selector (keep / drop per patch) -> token merger (kept tokens absorb
the dropped ones) -> quantizer (codebook ids) ; kept merged tokens -> projection (continuous LLM inputs) ;
codebook ids -> feature decoders (diffusion UNet conditioning).
Data flow (GVT): pixels -> EVA-02 encoder -> LayerNorm -> perceiver resampler -> projection.
"""

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_gvt import GVTVisionConfig
from .layers import (
    GVTMLP,
    GVTAttention,
    GVTSelfCrossLayer,
    GVTSwiGLU,
    eager_attention_forward,
    eva_rotary_cos_sin,
    key_padding_attention_mask,
)
from .weight_files import weight_read_errors

logger = logging.get_logger(__name__)

Selection = Literal["deterministic", "sample"]
SELECTIONS = ("deterministic", "sample")
DecoderType = Literal["highres", "lowres"]


@dataclass
class GVTTokenizerOutput(ModelOutput):
    """Discrete visual tokens of a batch of images.

    Args:
        token_ids (`torch.LongTensor` `[B, L]`): codebook indices, right-padded with 0 (see `attention_mask`).
        attention_mask (`torch.LongTensor` `[B, L]`): 1 on real tokens; an image with no kept patch has a zero row.
        keep_mask (`torch.LongTensor` `[B, N]`): 1 on the N patches that were kept, in raster order (a mask in
            transformers' convention, like `attention_mask`; `.bool()` indexes with it).
        selector_log_probs (`torch.FloatTensor` `[B, N, 2]`): token selector log-probabilities; column 0 is "keep".
    """

    token_ids: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    keep_mask: torch.LongTensor | None = None
    selector_log_probs: torch.FloatTensor | None = None


@dataclass
class GVTFeaturesOutput(ModelOutput):
    """Continuous visual inputs for a language model.

    Args:
        features (`torch.FloatTensor` `[B, L, projection_dim]`): right-padded (zeros where `attention_mask` is 0).
        attention_mask (`torch.LongTensor` `[B, L]`): 1 on real positions.
    """

    features: torch.FloatTensor | None = None
    attention_mask: torch.LongTensor | None = None


@dataclass
class GVTVisionTokenizerOutput(ModelOutput):
    """Everything [`GVTVisionTokenizer`] computes in one forward pass (the tuple form, `return_dict=False`, keeps this
    order and leaves out the fields that are `None`; it starts, as a vision model's does, with the encoder output,
    whose shape does not depend on how many tokens an image keeps).

    Args:
        encoder_hidden_states (`[B, 1 + N, hidden_size]`): encoder output, CLS first, no final norm.
        features (`[B, L, projection_dim]`): continuous LLM inputs (LaVIT: kept merged tokens; GVT: latents).
        attention_mask (`torch.LongTensor` `[B, L]`): 1 on real positions (LaVIT: kept tokens; GVT: all ones).
        token_ids, keep_mask, selector_log_probs: as in [`GVTTokenizerOutput`] (LaVIT only).
        merged_hidden_states (`[B, N, hidden_size]`): token merger output at every patch position (LaVIT).
        token_hidden_states (`[B, L, hidden_size]`): merged features of the kept tokens, right-padded (LaVIT).
        quantizer_inputs (`[B, L, codebook_dim]`): l2-normalised quantizer inputs (LaVIT).
        quantized (`[B, L, codebook_dim]`): codebook rows of `token_ids` (LaVIT).
        resampler_hidden_states (`[B, num_latents, hidden_size]`): perceiver resampler output (GVT).
        hidden_states (`tuple` of `[B, 1 + N, hidden_size]`, with `output_hidden_states=True`): the encoder's input
            to its first block, then the output of every block (`num_hidden_layers + 1` tensors).
        attentions (`tuple` of `[B, heads, 1 + N, 1 + N]`, with `output_attentions=True`): the encoder's attention
            weights per block (kernels that do not materialise weights, such as SDPA, return none: use `"eager"`).
        merger_hidden_states (`tuple` of `[B, N, hidden_size]`, with `output_hidden_states=True`, LaVIT): the output
            of every token merger block (before the merger's final norm).
        merger_attentions, merger_cross_attentions (`tuple` of `[B, merger_heads, N, N]`, with
            `output_attentions=True`, LaVIT): the merger's policy-softmax weights per block, over the kept patches
            (self-attention) and over the dropped patches of the encoder output (cross-attention). Always available:
            the policy softmax is an eager function whatever the attention implementation.
        resampler_attentions (`tuple` of `[B, resampler_heads, num_latents, 1 + N + num_latents]`, with
            `output_attentions=True`, GVT): the perceiver's attention weights per layer (eager only).
    """

    encoder_hidden_states: torch.FloatTensor | None = None
    features: torch.FloatTensor | None = None
    attention_mask: torch.LongTensor | None = None
    token_ids: torch.LongTensor | None = None
    keep_mask: torch.LongTensor | None = None
    selector_log_probs: torch.FloatTensor | None = None
    merged_hidden_states: torch.FloatTensor | None = None
    token_hidden_states: torch.FloatTensor | None = None
    quantizer_inputs: torch.FloatTensor | None = None
    quantized: torch.FloatTensor | None = None
    resampler_hidden_states: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    merger_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    merger_attentions: tuple[torch.FloatTensor, ...] | None = None
    merger_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    resampler_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class GVTDecoderOutput(ModelOutput):
    """Diffusion conditioning decoded from visual tokens.

    Args:
        prompt_embeds (`[B, num_queries, cross_attention_dim]`): UNet `encoder_hidden_states`.
        pooled_prompt_embeds (`[B, highres_pooled_dim]`): SDXL `text_embeds` (highres decoder only).
        decoded_features (`[B, num_queries, decoder_output_dim]`): reconstructed encoder features.
    """

    prompt_embeds: torch.FloatTensor | None = None
    pooled_prompt_embeds: torch.FloatTensor | None = None
    decoded_features: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------------


class GVTEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm EVA block: EVA-CLIP (GELU MLP, q/v biases) or EVA-02 (SwiGLU, sub-LN, rotary) by config."""

    def __init__(self, config: GVTVisionConfig):
        super().__init__()
        sub_eps = config.layer_norm_eps if config.encoder_sub_layer_norm else None
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = GVTAttention(
            config, config.hidden_size, config.num_attention_heads, key_bias=False, sub_layer_norm_eps=sub_eps
        )
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.encoder_mlp_type == "swiglu":
            self.mlp = GVTSwiGLU(config.hidden_size, config.intermediate_size, sub_eps)
        else:
            self.mlp = GVTMLP(config.hidden_size, config.intermediate_size)

    def forward(
        self, hidden_states: torch.Tensor, rotary_cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        attended, _ = self.attn(self.norm1(hidden_states), rotary_cos_sin=rotary_cos_sin)
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.norm2(hidden_states))


class GVTVisionEncoder(nn.Module):
    """EVA ViT: patch embedding, CLS token, absolute positions, blocks. Returns every token of the last block."""

    def __init__(self, config: GVTVisionConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.layers = nn.ModuleList([GVTEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(weight.dtype)).flatten(2).transpose(1, 2)
        cls_tokens = self.cls_token.expand(patches.shape[0], -1, -1)
        hidden_states = torch.cat((cls_tokens, patches), dim=1) + self.position_embedding
        rotary = None
        if self.config.encoder_rope:
            cos, sin = eva_rotary_cos_sin(
                self.config.grid_size,
                self.config.rope_pretrain_grid_size,
                self.config.hidden_size // self.config.num_attention_heads,
                self.config.rope_theta,
                device=hidden_states.device,
            )
            rotary = (cos, sin)
        for layer in self.layers:
            hidden_states = layer(hidden_states, rotary)
        return hidden_states


# ----------------------------------------------------------------------------------------------------------------
# LaVIT: token selector, token merger, quantizer
# ----------------------------------------------------------------------------------------------------------------


class GVTTokenSelector(nn.Module):
    """Scores each patch keep / drop from its own features and the mean over the image (LaVIT's token predictor).

    Its weights are created in float32 and stay there when the model is loaded in half precision
    (`_keep_in_fp32_modules_strict`): the keep decision is a hard threshold, so the selector's own arithmetic should
    not add rounding to it. It runs in its weights' dtype and always returns float32 log-probabilities.
    """

    def __init__(self, config: GVTVisionConfig):
        super().__init__()
        width = config.hidden_size
        fp32 = {"dtype": torch.float32}
        self.in_norm = nn.LayerNorm(width, eps=config.tokenizer_layer_norm_eps, **fp32)
        self.in_proj = nn.Linear(width, width, **fp32)
        self.act = nn.GELU()
        self.score_head = nn.Sequential(
            nn.Linear(width, width // 2, **fp32),
            nn.GELU(),
            nn.Linear(width // 2, width // 4, **fp32),
            nn.GELU(),
            nn.Linear(width // 4, 2, **fp32),
        )

    def forward(self, patch_features: torch.Tensor) -> torch.Tensor:
        """`[B, N, D]` -> float32 log-probabilities `[B, N, 2]` (column 0: keep)."""
        hidden = self.act(self.in_proj(self.in_norm(patch_features.to(self.in_proj.weight.dtype))))
        local_half, global_half = hidden.chunk(2, dim=-1)
        global_half = global_half.mean(dim=1, keepdim=True).expand_as(global_half)
        logits = self.score_head(torch.cat((local_half, global_half), dim=-1))
        return F.log_softmax(logits.float(), dim=-1)


class GVTTokenMerger(nn.Module):
    """LaVIT's token merger: every patch attends causally to the kept patches (and itself), then to the dropped
    patches of the LayerNorm-ed encoder features, through the reference's policy softmax (float32)."""

    def __init__(self, config: GVTVisionConfig):
        super().__init__()
        eps = config.tokenizer_layer_norm_eps
        self.ln_vision = nn.LayerNorm(config.hidden_size, eps=eps)
        self.layers = nn.ModuleList(
            [
                GVTSelfCrossLayer(
                    config, config.hidden_size, config.merger_num_attention_heads, config.merger_intermediate_size, eps
                )
                for _ in range(config.merger_num_layers)
            ]
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=eps)

    @staticmethod
    def policies(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Self- and cross-attention policies `[B, 1, N, N]` from a (possibly soft) keep decision `[B, N]`."""
        num_patches = keep.shape[1]
        eye = torch.eye(num_patches, dtype=keep.dtype, device=keep.device)
        causal = torch.ones(num_patches, num_patches, dtype=keep.dtype, device=keep.device).tril()
        kept_keys = keep[:, None, None, :]
        self_policy = (kept_keys + (1.0 - kept_keys) * eye) * causal
        cross_policy = (1.0 - kept_keys).expand(-1, 1, num_patches, -1)
        return self_policy, cross_policy

    def forward(
        self, patch_features: torch.Tensor, keep: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`[B, N, D]` features and keep decision `[B, N]` -> merged features `[B, N, D]` at every position, or with
        `rows` (`[B, L]` positions) at those positions only, `[B, L, D]`: the last block then computes just those
        rows (each row of a block depends on its own query alone), the same values."""
        self_policy, cross_policy = self.policies(keep.to(torch.float32))  # the policy softmax runs in float32
        origin = self.ln_vision(patch_features)
        hidden_states = patch_features
        for layer in self.layers[:-1] if rows is not None else self.layers:
            hidden_states = layer(hidden_states, origin, self_policy=self_policy, cross_policy=cross_policy)
        if rows is None:
            return self.norm(hidden_states)
        num_patches = keep.shape[1]
        policy_rows = rows[:, None, :, None].expand(-1, 1, -1, num_patches)
        selected = hidden_states.gather(1, rows[..., None].expand(-1, -1, hidden_states.shape[-1]))
        selected = self.layers[-1](
            selected,
            origin,
            self_policy=self_policy.gather(2, policy_rows),
            cross_policy=cross_policy.gather(2, policy_rows),
            sequence=hidden_states,
        )
        return self.norm(selected)


class GVTQuantizer(nn.Module):
    """Projects merged tokens to the code space, l2-normalises them and picks the nearest codebook row.

    Created in float32 and kept there in half precision (`_keep_in_fp32_modules_strict`): the nearest-row search is
    an argmin over distances between unit vectors, which bfloat16 rounding would reorder. It returns float32.
    """

    def __init__(self, config: GVTVisionConfig):
        super().__init__()
        fp32 = {"dtype": torch.float32}
        self.project_in = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size, **fp32),
            nn.Tanh(),
            nn.Linear(config.hidden_size, config.codebook_dim, **fp32),
        )
        self.codebook = nn.Embedding(config.codebook_size, config.codebook_dim, **fp32)

    def forward(self, token_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`[..., D]` -> (l2-normalised quantizer inputs `[..., code_dim]` in float32, codebook ids `[...]`)."""
        projected = self.project_in(token_features.to(self.project_in[0].weight.dtype))
        z = F.normalize(projected.float(), p=2, dim=-1)
        with torch.no_grad():  # argmin has no gradient; one fused [tokens, codes] buffer instead of four
            flat = z.reshape(-1, z.shape[-1])
            codebook = self.codebook.weight.float()
            # Squared Euclidean distance |z|^2 + |e|^2 - 2 z.e in float32, the reference's quantity.
            distances = torch.addmm(codebook.pow(2).sum(dim=1), flat, codebook.t(), alpha=-2.0)
            distances += flat.pow(2).sum(dim=1, keepdim=True)
            ids = distances.argmin(dim=1).reshape(z.shape[:-1])
        return z, ids


# ----------------------------------------------------------------------------------------------------------------
# LaVIT: feature decoders (codes -> diffusion conditioning)
# ----------------------------------------------------------------------------------------------------------------


class GVTAttentionPool(nn.Module):
    """CLIP-style attention pooling: the mean token, prepended, attends over all tokens (SDXL pooled embeds)."""

    def __init__(self, config: GVTVisionConfig):
        super().__init__()
        width = config.decoder_output_dim
        self.config = config
        self.num_heads = config.decoder_num_attention_heads
        self.head_dim = width // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.position_embedding = nn.Parameter(torch.zeros(config.decoder_num_queries + 1, width))
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, config.highres_pooled_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat((hidden_states.mean(dim=1, keepdim=True), hidden_states), dim=1)
        tokens = tokens + self.position_embedding.to(tokens.dtype)
        batch, length, width = tokens.shape
        query = self.q_proj(tokens[:, :1]).view(batch, 1, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.k_proj(tokens).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(tokens).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        pooled, _ = attention_interface(self, query, key, value, None, scaling=self.scaling, dropout=0.0)
        return self.c_proj(pooled.reshape(batch, width))


class GVTFeatureDecoder(nn.Module):
    """Learned queries attend to the (padded, masked) code embeddings and reconstruct encoder features, which a head
    turns into UNet conditioning: `"lowres"` (SD-1.5 cross-attention) or `"highres"` (SDXL, plus pooled embeds)."""

    def __init__(self, config: GVTVisionConfig, decoder_type: DecoderType):
        super().__init__()
        width = config.decoder_hidden_size
        self.config = config
        self.decoder_type = decoder_type
        self.mask_value = config.decoder_mask_value
        self.in_proj = nn.Linear(config.codebook_dim, width)
        self.position_embedding = nn.Parameter(torch.zeros(1, config.decoder_max_positions, width))
        self.query_embedding = nn.Parameter(torch.zeros(1, config.decoder_num_queries, width))
        self.layers = nn.ModuleList(
            [
                GVTSelfCrossLayer(
                    config,
                    width,
                    config.decoder_num_attention_heads,
                    config.decoder_intermediate_size,
                    config.tokenizer_layer_norm_eps,
                )
                for _ in range(config.decoder_num_layers)
            ]
        )
        self.norm = nn.LayerNorm(width, eps=config.tokenizer_layer_norm_eps)
        self.output_mlp = nn.Sequential(
            nn.Linear(width, width), nn.Tanh(), nn.Linear(width, config.decoder_output_dim)
        )
        if decoder_type == "lowres":
            self.prompt_proj = nn.Linear(config.decoder_output_dim, config.lowres_cross_attention_dim)
        else:
            first, second = config.highres_cross_attention_dims
            self.prompt_proj = nn.Linear(config.decoder_output_dim, first)
            self.prompt_proj_2 = nn.Linear(config.decoder_output_dim, second)
            self.attention_pool = GVTAttentionPool(config)

    def forward(self, code_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> GVTDecoderOutput:
        """`code_embeddings` `[B, L, codebook_dim]` (right-padded), `attention_mask` `[B, L]`."""
        batch, length = attention_mask.shape
        if length > self.position_embedding.shape[1]:
            raise ValueError(
                f"{length} visual tokens exceed the decoder's {self.position_embedding.shape[1]} positions."
            )
        if length == 0:  # every image kept no patch: one fully masked position keeps the softmax defined
            code_embeddings = code_embeddings.new_zeros(batch, 1, code_embeddings.shape[-1])
            attention_mask = attention_mask.new_zeros(batch, 1)
            length = 1
        dtype = self.in_proj.weight.dtype
        codes = self.in_proj(code_embeddings.to(dtype)) * attention_mask.to(dtype)[..., None]
        codes = codes + self.position_embedding[:, :length]
        queries = self.query_embedding.expand(batch, -1, -1)
        cross_attention_mask = key_padding_attention_mask(
            self.config, attention_mask, queries.shape[1], dtype, self.mask_value
        )
        for layer in self.layers:
            queries = layer(queries, codes, cross_attention_mask=cross_attention_mask)
        decoded = self.output_mlp(self.norm(queries))
        if self.decoder_type == "lowres":
            return GVTDecoderOutput(prompt_embeds=self.prompt_proj(decoded), decoded_features=decoded)
        prompt_embeds = torch.cat((self.prompt_proj(decoded), self.prompt_proj_2(decoded)), dim=-1)
        return GVTDecoderOutput(
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=self.attention_pool(decoded),
            decoded_features=decoded,
        )


# ----------------------------------------------------------------------------------------------------------------
# GVT: perceiver resampler
# ----------------------------------------------------------------------------------------------------------------


class GVTPerceiverAttention(nn.Module):
    """Latents attend to `[media; latents]` (Flamingo's perceiver attention, bias-free)."""

    def __init__(self, config: GVTVisionConfig):
        super().__init__()
        width = config.hidden_size
        inner = config.resampler_num_attention_heads * config.resampler_head_dim
        eps = config.resampler_layer_norm_eps
        self.config = config
        self.num_heads = config.resampler_num_attention_heads
        self.head_dim = config.resampler_head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.norm_media = nn.LayerNorm(width, eps=eps)
        self.norm_latents = nn.LayerNorm(width, eps=eps)
        self.q_proj = nn.Linear(width, inner, bias=False)
        self.k_proj = nn.Linear(width, inner, bias=False)
        self.v_proj = nn.Linear(width, inner, bias=False)
        self.o_proj = nn.Linear(inner, width, bias=False)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        media = self.norm_media(media)
        latents = self.norm_latents(latents)
        context = torch.cat((media, latents), dim=1)
        query = self._split_heads(self.q_proj(latents))
        key = self._split_heads(self.k_proj(context))
        value = self._split_heads(self.v_proj(context))
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(self, query, key, value, None, scaling=self.scaling, dropout=0.0)
        return self.o_proj(output.flatten(-2)), weights


class GVTPerceiverLayer(GradientCheckpointingLayer):
    def __init__(self, config: GVTVisionConfig):
        super().__init__()
        width = config.hidden_size
        self.attention = GVTPerceiverAttention(config)
        self.feed_forward = nn.Sequential(
            nn.LayerNorm(width, eps=config.resampler_layer_norm_eps),
            nn.Linear(width, width * config.resampler_ff_mult, bias=False),
            nn.GELU(),
            nn.Linear(width * config.resampler_ff_mult, width, bias=False),
        )

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(media, latents)
        latents = latents + attended
        return latents + self.feed_forward(latents)


class GVTPerceiverResampler(nn.Module):
    """Resamples all encoder tokens into `resampler_num_latents` latents (GVT, from Flamingo)."""

    def __init__(self, config: GVTVisionConfig):
        super().__init__()
        width = config.hidden_size
        self.latents = nn.Parameter(torch.zeros(config.resampler_num_latents, width))
        self.media_position_embedding = nn.Parameter(torch.zeros(config.resampler_num_media_embeds, 1, width))
        self.layers = nn.ModuleList([GVTPerceiverLayer(config) for _ in range(config.resampler_num_layers)])
        self.norm = nn.LayerNorm(width, eps=config.resampler_layer_norm_eps)

    def forward(self, media: torch.Tensor) -> torch.Tensor:
        """`[B, T, D]` tokens of one image each -> `[B, num_latents, D]`."""
        media = media + self.media_position_embedding[0]
        latents = self.latents.expand(media.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer(media, latents)
        return self.norm(latents)


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


def _output_flags_reach_merger_and_resampler(forward: Callable) -> Callable:
    """`output_attentions` / `output_hidden_states` (arguments, else the config) also ask for the merger's (LaVIT) or
    the resampler's (GVT) attentions and hidden states, which [`capture_outputs`] records under their own keys."""

    @wraps(forward)
    def wrapper(self, *args, **kwargs):
        attentions = kwargs.get("output_attentions")
        attentions = self.config.output_attentions if attentions is None else attentions
        hidden_states = kwargs.get("output_hidden_states")
        hidden_states = self.config.output_hidden_states if hidden_states is None else hidden_states
        if self.config.is_discrete:
            kwargs.setdefault("output_merger_attentions", bool(attentions))
            kwargs.setdefault("output_merger_cross_attentions", bool(attentions))
            # `output_hidden_states` may also be a list of encoder block indices (then every merger block is returned)
            kwargs.setdefault("output_merger_hidden_states", hidden_states is not None and hidden_states is not False)
        else:
            kwargs.setdefault("output_resampler_attentions", bool(attentions))
        return forward(self, *args, **kwargs)

    return wrapper


class GVTPreTrainedModel(PreTrainedModel):
    """Weights initialisation and the transformers plumbing of [`GVTVisionTokenizer`].

    `base_model_prefix = "vision_tokenizer"`: the tokenizer is itself a base model, and the prefix names the attribute
    under which composite models ([`LaVITForCausalLM`]) hold it, so `GVTVisionTokenizer.from_pretrained` on a saved
    composite model loads the tokenizer's weights out of it (as `ViTModel` loads from a `ViTForImageClassification`;
    the language model's weights are reported as unexpected keys).
    """

    config_class = GVTVisionConfig
    base_model_prefix = "vision_tokenizer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["GVTEncoderLayer", "GVTSelfCrossLayer", "GVTPerceiverLayer"]
    # Every softmax attention goes through `ALL_ATTENTION_FUNCTIONS` (eager, SDPA and flex_attention agree to float
    # rounding, see `key_padding_attention_mask`); the merger's policy softmax is not a softmax and stays an eager
    # function. Flash attention would drop the decoders' additive padding mask, and an external serving backend
    # cannot run the policy softmax.
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = False
    _supports_attention_backend = False
    _can_compile_fullgraph = False  # the number of kept tokens depends on the image
    _can_record_outputs = {
        "hidden_states": OutputRecorder(GVTEncoderLayer),
        "attentions": OutputRecorder(GVTAttention, index=1, layer_name="encoder"),
        "merger_hidden_states": OutputRecorder(GVTSelfCrossLayer, layer_name="token_merger"),
        "merger_attentions": OutputRecorder(None, index=1, layer_name="token_merger", class_name="self_attn"),
        "merger_cross_attentions": OutputRecorder(None, index=1, layer_name="token_merger", class_name="cross_attn"),
        "resampler_attentions": OutputRecorder(GVTPerceiverAttention, index=1),
    }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """[`PreTrainedModel.from_pretrained`]; an unreadable weight file raises a `ValueError` naming it."""
        with weight_read_errors(pretrained_model_name_or_path, kwargs.get("subfolder", "")):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, GVTVisionEncoder):
            init.trunc_normal_(module.cls_token, std=std)
            init.trunc_normal_(module.position_embedding, std=std)
        elif isinstance(module, GVTQuantizer):
            init.copy_(module.codebook.weight, F.normalize(torch.randn_like(module.codebook.weight), dim=-1))
        elif isinstance(module, GVTFeatureDecoder):
            init.trunc_normal_(module.position_embedding, std=std)
            init.trunc_normal_(module.query_embedding, std=std)
        elif isinstance(module, GVTAttentionPool):
            init.normal_(module.position_embedding, std=module.position_embedding.shape[-1] ** -0.5)
        elif isinstance(module, GVTPerceiverResampler):
            init.normal_(module.latents, std=1.0)
            init.normal_(module.media_position_embedding, std=1.0)


class GVTVisionTokenizer(GVTPreTrainedModel):
    """A visual tokenizer for LLMs.

    `tokenizer_type="lavit"`: images become a *variable* number of discrete tokens (`tokenize`), continuous features
    of the same kept tokens (`encode_features`), and tokens become diffusion conditioning (`decode`).
    `tokenizer_type="gvt"`: images become a fixed number of resampled latents (`encode_features`).

    Half precision: load with `from_pretrained(..., dtype=torch.bfloat16)` (or `torch.float16`). The encoder, merger,
    projection, decoders and resampler then run in that dtype; what decides a token stays in float32: the token
    selector and the quantizer (codebook and its projection) keep float32 weights (`_keep_in_fp32_modules_strict`),
    and the merger's policy softmax and the codebook distances are computed in float32 (as is the eager softmax).
    Outputs come back in the model's dtype, except `selector_log_probs` (float32). Token ids in bfloat16 are not
    exactly those of float32 (`benchmarks/bf16_agreement.py` measures how close).

    Attention: `attn_implementation="sdpa"` (default), `"eager"` or `"flex_attention"` (also via
    `set_attn_implementation`) switches every softmax attention of the encoder, decoders, attention pool and
    resampler; the merger's policy softmax is always the eager float32 function.
    """

    def __init__(self, config: GVTVisionConfig):
        super().__init__(config)
        # The keep decision and the nearest-codebook search are hard decisions: in half precision their modules keep
        # float32 weights (LaVIT only; the GVT tokenizer has neither).
        self._keep_in_fp32_modules_strict = ["token_selector", "quantizer"] if config.is_discrete else []
        self.encoder = GVTVisionEncoder(config)
        if config.tokenizer_type == "lavit":
            self.token_selector = GVTTokenSelector(config)
            self.token_merger = GVTTokenMerger(config)
            self.quantizer = GVTQuantizer(config)
            self.decoders = nn.ModuleDict(
                {decoder_type: GVTFeatureDecoder(config, decoder_type) for decoder_type in config.decoder_types}
            )
        else:
            self.ln_vision = nn.LayerNorm(config.hidden_size, eps=config.resampler_layer_norm_eps)
            self.resampler = GVTPerceiverResampler(config)
        self.projection = nn.Linear(config.hidden_size, config.projection_dim)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The patch embedding (as vision models in transformers return)."""
        return self.encoder.patch_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder.patch_embedding = value

    # -- checks ---------------------------------------------------------------------------------------------------

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        """Raise a clear error for anything but finite float pixels of shape `[B, C, image_size, image_size]`."""
        config = self.config
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"pixel_values must be a floating-point tensor (normalised pixels), got {pixel_values.dtype}; "
                "run the images through GVTImageProcessor first."
            )
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must have shape [batch, channels, height, width], got {tuple(pixel_values.shape)}."
            )
        _, channels, height, width = pixel_values.shape
        if channels != config.num_channels:
            raise ValueError(f"pixel_values have {channels} channels but the tokenizer expects {config.num_channels}.")
        if (height, width) != (config.image_size, config.image_size):
            raise ValueError(
                f"pixel_values are {height}x{width} but the tokenizer expects {config.image_size}x{config.image_size}; "
                "resize them with GVTImageProcessor."
            )
        if not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values contain NaN or infinite values.")

    def check_selection_arguments(
        self,
        selection: Selection,
        generator: torch.Generator | None,
        max_tokens: int | None,
        keep_mask: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> None:
        """Raise a clear error, before any work, for a token-selection argument of the wrong type or value."""
        if not isinstance(selection, str) or selection not in SELECTIONS:
            raise ValueError(f"selection must be 'deterministic' or 'sample', got {selection!r}.")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        if max_tokens is not None:
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, numbers.Integral):
                raise TypeError(
                    f"max_tokens must be a non-negative int or None, got {max_tokens!r} ({type(max_tokens).__name__})."
                )
            if max_tokens < 0:
                raise ValueError(f"max_tokens must be a non-negative int or None, got {max_tokens}.")
        if keep_mask is not None:
            if not isinstance(keep_mask, torch.Tensor):
                raise TypeError(
                    f"keep_mask must be a torch.Tensor [batch, num_patches], got {type(keep_mask).__name__}."
                )
            expected = (batch_size if batch_size is not None else keep_mask.shape[0], self.config.num_patches)
            if tuple(keep_mask.shape) != expected:
                raise ValueError(f"keep_mask must have shape {expected}, got {tuple(keep_mask.shape)}.")
        if not self.config.is_discrete:
            chosen = {"selection='sample'": selection == "sample", "max_tokens": max_tokens is not None}
            chosen["keep_mask"] = keep_mask is not None
            asked = [name for name, given in chosen.items() if given]
            if asked:
                raise ValueError(
                    f"{', '.join(asked)} select LaVIT tokens; this tokenizer (tokenizer_type='gvt') always returns "
                    f"{self.config.resampler_num_latents} latents."
                )

    def _require_discrete(self, what: str) -> None:
        if self.config.tokenizer_type != "lavit":
            raise ValueError(f"{what} needs a discrete (tokenizer_type='lavit') tokenizer; this one is 'gvt'.")

    # -- LaVIT token selection ------------------------------------------------------------------------------------

    def select_tokens(
        self,
        log_probs: torch.Tensor,
        selection: Selection = "deterministic",
        generator: torch.Generator | None = None,
        max_tokens: int | None = None,
        gumbel_tau: float = 1.0,
    ) -> torch.Tensor:
        """Keep decision `[B, N]` (float, 1 = keep) from selector log-probabilities `[B, N, 2]`.

        `"deterministic"` keeps a patch where log p_keep >= log p_drop. `"sample"` draws it by Gumbel-max (with
        `generator` for reproducibility); in training mode the sample is a straight-through hard Gumbel-softmax, so
        gradients reach the selector. `max_tokens=K` keeps at most the K kept patches with the highest keep score
        (`config.max_tokens` when None).
        """
        self.check_selection_arguments(selection, generator, max_tokens)
        if not gumbel_tau > 0:
            raise ValueError(f"gumbel_tau must be > 0, got {gumbel_tau!r}.")
        if selection == "deterministic":
            keep = (log_probs[..., 0] >= log_probs[..., 1]).to(log_probs.dtype)
        else:
            uniform = torch.rand(log_probs.shape, generator=generator, device=log_probs.device, dtype=torch.float32)
            gumbels = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float32).tiny)))
            perturbed = (log_probs.float() + gumbels) / gumbel_tau
            keep = (perturbed[..., 0] >= perturbed[..., 1]).to(log_probs.dtype)
            if self.training and torch.is_grad_enabled():
                soft = perturbed.softmax(dim=-1)[..., 0].to(log_probs.dtype)
                keep = keep - soft.detach() + soft
        if max_tokens is None:
            max_tokens = self.config.max_tokens
        if max_tokens is not None:
            scores = log_probs[..., 0].detach().masked_fill(keep.detach() < 0.5, float("-inf"))
            top = scores.topk(min(int(max_tokens), scores.shape[1]), dim=1).indices
            budget = torch.zeros_like(keep).scatter(1, top, 1.0)
            keep = keep * budget
        return keep

    @staticmethod
    def kept_positions(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions `[B, L]` of the kept patches in raster order, right-padded (with dropped positions) to the
        largest count of the batch, and the `[B, L]` bool mask of the real ones."""
        kept = keep.detach() > 0.5
        counts = kept.sum(dim=1)
        length = int(counts.max()) if counts.numel() else 0
        order = torch.argsort((~kept).to(torch.int8), dim=1, stable=True)[:, :length]
        return order, torch.arange(length, device=keep.device)[None, :] < counts[:, None]

    @staticmethod
    def gather_kept(keep: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Move the kept positions of each `[B, N, ...]` tensor to the front, in raster order, right-padded to the
        largest count of the batch. Returns the `[B, L]` mask and the gathered tensors (zeros at padding)."""
        order, mask = GVTVisionTokenizer.kept_positions(keep)
        gathered = []
        for tensor in tensors:
            index = order.reshape(*order.shape, *([1] * (tensor.ndim - 2))).expand(-1, -1, *tensor.shape[2:])
            values = tensor.gather(1, index)
            gathered.append(values * mask.reshape(*mask.shape, *([1] * (tensor.ndim - 2))).to(values.dtype))
        return mask.long(), gathered

    def _kept_tokens(
        self,
        encoder_hidden_states: torch.Tensor,
        selection: Selection,
        generator: torch.Generator | None,
        max_tokens: int | None,
        keep_mask: torch.Tensor | None = None,
        every_position: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Selector, keep decision, merger and gather (LaVIT): `(log_probs, keep, merged, attention_mask,
        token_hidden_states)`, what `forward`, `tokenize` and `encode_features` share. Without `every_position`
        the merger's last block computes the kept rows only and `merged` is None."""
        patch_features = encoder_hidden_states[:, 1:]
        log_probs = self.token_selector(patch_features)
        if keep_mask is None:
            keep = self.select_tokens(log_probs, selection, generator, max_tokens)
        else:
            keep = keep_mask.to(log_probs.device, log_probs.dtype)
        if every_position:
            merged = self.token_merger(patch_features, keep)
            attention_mask, (token_hidden_states,) = self.gather_kept(keep, merged)
            return log_probs, keep, merged, attention_mask, token_hidden_states
        positions, mask = self.kept_positions(keep)
        token_hidden_states = self.token_merger(patch_features, keep, rows=positions)
        token_hidden_states = token_hidden_states * mask[..., None].to(token_hidden_states.dtype)
        return log_probs, keep, None, mask.long(), token_hidden_states

    # -- forward ----------------------------------------------------------------------------------------------------

    @_output_flags_reach_merger_and_resampler
    @capture_outputs
    def forward(
        self,
        pixel_values: torch.Tensor,
        selection: Selection = "deterministic",
        generator: torch.Generator | None = None,
        max_tokens: int | None = None,
        keep_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> GVTVisionTokenizerOutput:
        """Run the whole tokenizer. `keep_mask` `[B, N]` overrides the selector's decision (analysis, tests).

        `output_hidden_states` / `output_attentions` add the encoder's per-block hidden states / attention weights
        and the merger's (or the resampler's) to the output; `return_dict=False` returns a tuple.
        """
        self.check_pixel_values(pixel_values)
        self.check_selection_arguments(selection, generator, max_tokens, keep_mask, pixel_values.shape[0])
        encoder_hidden_states = self.encoder(pixel_values)
        if self.config.tokenizer_type == "gvt":
            latents = self.resampler(self.ln_vision(encoder_hidden_states))
            features = self.projection(latents)
            mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
            return GVTVisionTokenizerOutput(
                features=features,
                attention_mask=mask,
                encoder_hidden_states=encoder_hidden_states,
                resampler_hidden_states=latents,
            )

        log_probs, keep, merged, attention_mask, token_hidden_states = self._kept_tokens(
            encoder_hidden_states, selection, generator, max_tokens, keep_mask
        )
        quantizer_inputs, token_ids = self.quantizer(token_hidden_states)
        token_ids = token_ids * attention_mask
        dtype = token_hidden_states.dtype  # the model's dtype; the quantizer's float32 results come back in it
        real = attention_mask[..., None].to(dtype)
        quantized = self.quantizer.codebook(token_ids).to(dtype) * real
        features = self.projection(token_hidden_states) * real
        return GVTVisionTokenizerOutput(
            features=features,
            attention_mask=attention_mask,
            token_ids=token_ids,
            keep_mask=(keep.detach() > 0.5).long(),
            selector_log_probs=log_probs,
            encoder_hidden_states=encoder_hidden_states,
            merged_hidden_states=merged,
            token_hidden_states=token_hidden_states,
            quantizer_inputs=quantizer_inputs.to(dtype),
            quantized=quantized,
        )

    # -- public entry points ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def tokenize(
        self,
        pixel_values: torch.Tensor,
        selection: Selection = "deterministic",
        generator: torch.Generator | None = None,
        max_tokens: int | None = None,
    ) -> GVTTokenizerOutput:
        """Images `[B, C, H, W]` -> dynamic-length codebook ids `[B, L]` + mask (LaVIT)."""
        self._require_discrete("tokenize")
        self.check_pixel_values(pixel_values)
        self.check_selection_arguments(selection, generator, max_tokens)
        # What `forward` computes, less the LLM projection and the merger rows the ids do not need.
        log_probs, keep, _, attention_mask, token_hidden_states = self._kept_tokens(
            self.encoder(pixel_values), selection, generator, max_tokens, every_position=False
        )
        _, token_ids = self.quantizer(token_hidden_states)
        return GVTTokenizerOutput(
            token_ids=token_ids * attention_mask,
            attention_mask=attention_mask,
            keep_mask=(keep > 0.5).long(),
            selector_log_probs=log_probs,
        )

    @torch.no_grad()
    def encode_features(
        self,
        pixel_values: torch.Tensor,
        selection: Selection = "deterministic",
        generator: torch.Generator | None = None,
        max_tokens: int | None = None,
    ) -> GVTFeaturesOutput:
        """Images -> continuous LLM inputs `[B, L, projection_dim]` + mask (LaVIT: kept tokens; GVT: latents).

        Inference, like `tokenize` (no gradients; call the model, `model(pixel_values).features`, to train through
        it); LaVIT skips the quantizer's codebook search, which the features do not need."""
        if self.config.tokenizer_type == "gvt":
            output = self(
                pixel_values, selection=selection, generator=generator, max_tokens=max_tokens, return_dict=True
            )
            return GVTFeaturesOutput(features=output.features, attention_mask=output.attention_mask)
        self.check_pixel_values(pixel_values)
        self.check_selection_arguments(selection, generator, max_tokens)
        _, _, _, attention_mask, token_hidden_states = self._kept_tokens(
            self.encoder(pixel_values), selection, generator, max_tokens, every_position=False
        )
        features = self.projection(token_hidden_states) * attention_mask[..., None].to(token_hidden_states.dtype)
        return GVTFeaturesOutput(features=features, attention_mask=attention_mask)

    def check_token_ids(self, token_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Validate codebook ids `[B, L]` (and mask); return the mask (all ones when None)."""
        self._require_discrete("Decoding visual tokens")
        if not isinstance(token_ids, torch.Tensor) or token_ids.dtype not in (torch.int32, torch.int64):
            raise TypeError("token_ids must be an integer torch.Tensor of codebook indices.")
        if token_ids.ndim != 2:
            raise ValueError(f"token_ids must have shape [batch, length], got {tuple(token_ids.shape)}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(token_ids)
        if attention_mask.shape != token_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} does not match token_ids {tuple(token_ids.shape)}."
            )
        real = token_ids[attention_mask.bool()]
        if real.numel() and (real.min() < 0 or real.max() >= self.config.codebook_size):
            raise ValueError(
                f"token_ids must be codebook indices in [0, {self.config.codebook_size}); "
                f"got values in [{int(real.min())}, {int(real.max())}]."
            )
        return attention_mask

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Codebook rows of `token_ids` (`[..., codebook_dim]`), in the model's dtype (the codebook is float32)."""
        return self.quantizer.codebook(token_ids).to(self.projection.weight.dtype)

    def decode(
        self,
        token_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_type: DecoderType = "highres",
    ) -> GVTDecoderOutput:
        """Visual token ids `[B, L]` (+ mask) -> diffusion conditioning from the `"highres"` or `"lowres"` decoder."""
        attention_mask = self.check_token_ids(token_ids, attention_mask)
        if decoder_type not in self.decoders:
            raise ValueError(f"This tokenizer has no {decoder_type!r} decoder; it has {sorted(self.decoders)}.")
        safe_ids = token_ids.long() * attention_mask.long()
        return self.decoders[decoder_type](self.embed_tokens(safe_ids), attention_mask)


__all__ = [
    "GVTVisionTokenizer",
    "GVTPreTrainedModel",
    "GVTTokenizerOutput",
    "GVTFeaturesOutput",
    "GVTVisionTokenizerOutput",
    "GVTDecoderOutput",
]
