"""Building blocks shared by the encoders, the token merger, the feature decoders and the resampler."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention on `[B, H, N, d]` tensors (softmax in float32); `attention_mask` is additive.

    Returns the output `[B, N, H, d]` and the weights `[B, H, Nq, Nk]`, as transformers' attention functions do.
    """
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def policy_softmax_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    policy: torch.Tensor,
    scaling: float,
    eps: float,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LaVIT's "policy softmax" attention (token merger). Not a masked softmax, so no attention kernel runs it.

    Scores are shifted by their row maximum over *all* keys, `e = exp(s - max) * policy`, and the weights are
    `(e + eps / N) / (sum(e) + eps)` with N the number of keys, in float32 whatever the model's dtype. Where every
    allowed score sits far below the row maximum, the eps terms dominate and the weights approach uniform over all N
    keys; this is the released model's behaviour and SDPA cannot express it. `policy` is `[B, 1 or H, Nq, Nk]` in
    [0, 1] (differentiable). Returns the output `[B, Nq, H, d]` and the weights `[B, H, Nq, Nk]` (in `value`'s dtype).
    """
    num_keys = policy.shape[-1]
    scores = torch.matmul(query, key.transpose(-1, -2)).to(torch.float32)
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or policy.requires_grad):
        scores = scores * scaling
        weights = (scores - scores.amax(dim=-1, keepdim=True)).exp() * policy.to(torch.float32)
        weights = (weights + eps / num_keys) / (weights.sum(dim=-1, keepdim=True) + eps)
    else:  # inference: the same arithmetic in place, one [B, H, Nq, Nk] buffer instead of five
        weights = scores.mul_(scaling)
        weights.sub_(weights.amax(dim=-1, keepdim=True)).exp_().mul_(policy.to(torch.float32))
        denominator = weights.sum(dim=-1, keepdim=True).add_(eps)
        weights.add_(eps / num_keys).div_(denominator)
    weights = weights.to(value.dtype)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def key_padding_attention_mask(
    config, key_mask: torch.Tensor, num_queries: int, dtype: torch.dtype, mask_value: float
) -> torch.Tensor | BlockMask | None:
    """The mask that lets `num_queries` queries attend to right-padded keys (`key_mask` `[B, L]`, 1 on real keys), in
    the form `config._attn_implementation` takes.

    Eager, SDPA and other kernels get the release's additive mask, `mask_value` (-10000) on padding, `[B, 1, 1, L]`.
    flex_attention gets a `BlockMask`: the same weights wherever `mask_value` makes the padding weights underflow to
    zero. A row with no real key adds `mask_value` to every score, which softmax ignores (it is shift-invariant), so
    there the block mask allows every key; the additive mask also rounds those shifted scores (float32 resolution at
    10000 is ~1e-3), so for an image that kept no token flex agrees with eager / SDPA to ~1e-3 rather than 1e-6.
    """
    if config._attn_implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask  # only where flex attention is asked for

        real = key_mask.bool()
        allowed = real | ~real.any(dim=1, keepdim=True)
        if bool(allowed.all()):
            return None

        def attend(batch_index, head_index, query_index, key_index):
            return allowed[batch_index, key_index]

        return create_block_mask(
            attend, allowed.shape[0], None, num_queries, allowed.shape[1], device=allowed.device.type
        )
    return ((1.0 - key_mask.to(dtype)) * mask_value)[:, None, None, :]


def rotate_half_interleaved(x: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs `(x0, x1) -> (-x1, x0)` (EVA-02's rotary layout)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def eva_rotary_cos_sin(
    grid_size: int, pretrain_grid_size: int, head_dim: int, theta: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """EVA-02's 2-D rotary table `[grid_size**2, head_dim]`, frequencies interpolated from a pretraining grid.

    Half of each head rotates with the row index, half with the column index. Computed on the fly (it is derived,
    not a weight), so models loaded with `from_pretrained` never see an uninitialised buffer.
    """
    half = head_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, half, 2, device=device)[: half // 2].float() / half))
    positions = torch.arange(grid_size, device=device) / grid_size * pretrain_grid_size
    freqs = torch.outer(positions, inv_freq).repeat_interleave(2, dim=-1)  # [grid, half]
    rows = freqs[:, None, :].expand(grid_size, grid_size, half)
    cols = freqs[None, :, :].expand(grid_size, grid_size, half)
    table = torch.cat((rows, cols), dim=-1).reshape(grid_size * grid_size, head_dim)
    return table.cos(), table.sin()


def apply_rotary_to_patches(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the patch tokens of `x` `[B, H, 1 + N, d]`, leaving the leading CLS token untouched."""
    cls_token, patches = x[:, :, :1], x[:, :, 1:]
    rotated = patches * cos + rotate_half_interleaved(patches) * sin
    return torch.cat((cls_token, rotated.to(x.dtype)), dim=-2)


class GVTAttention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections, used by the encoders, the merger and the decoders.

    Self-attention when `key_value_states` is None, cross-attention otherwise. With `policy` it runs LaVIT's policy
    softmax ([`policy_softmax_attention_forward`], eager, float32); otherwise the kernel named by
    `config._attn_implementation` (`"sdpa"` by default, `"eager"`, `"flex_attention"`), all exact for a plain softmax.
    Returns the output and the attention weights (`None` from kernels that do not materialise them).
    """

    def __init__(
        self,
        config,
        hidden_size: int,
        num_heads: int,
        head_dim: int | None = None,
        query_bias: bool = True,
        key_bias: bool = True,
        value_bias: bool = True,
        output_bias: bool = True,
        sub_layer_norm_eps: float | None = None,
        policy_eps: float = 1e-6,
    ):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = head_dim or hidden_size // num_heads
        inner_dim = self.num_heads * self.head_dim
        self.scaling = self.head_dim**-0.5
        self.policy_eps = policy_eps
        self.is_causal = False
        self.q_proj = nn.Linear(hidden_size, inner_dim, bias=query_bias)
        self.k_proj = nn.Linear(hidden_size, inner_dim, bias=key_bias)
        self.v_proj = nn.Linear(hidden_size, inner_dim, bias=value_bias)
        # EVA-02 normalises the attention output before its projection ("sub-LN").
        self.sub_norm = nn.LayerNorm(inner_dim, eps=sub_layer_norm_eps) if sub_layer_norm_eps else nn.Identity()
        self.o_proj = nn.Linear(inner_dim, hidden_size, bias=output_bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        policy: torch.Tensor | None = None,
        rotary_cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context = hidden_states if key_value_states is None else key_value_states
        query = self._split_heads(self.q_proj(hidden_states))
        key = self._split_heads(self.k_proj(context))
        value = self._split_heads(self.v_proj(context))
        if rotary_cos_sin is not None:
            query = apply_rotary_to_patches(query, *rotary_cos_sin).type_as(value)
            key = apply_rotary_to_patches(key, *rotary_cos_sin).type_as(value)

        if policy is not None:
            output, weights = policy_softmax_attention_forward(
                self, query, key, value, policy, scaling=self.scaling, eps=self.policy_eps
            )
        else:
            attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
            if isinstance(attention_mask, torch.Tensor):
                attention_mask = attention_mask.to(query.dtype)
            output, weights = attention_interface(
                self, query, key, value, attention_mask, scaling=self.scaling, dropout=0.0
            )
        output = self.sub_norm(output.flatten(-2))
        return self.o_proj(output), weights


class GVTMLP(nn.Module):
    """Two-layer GELU MLP (`fc1`, exact GELU, `fc2`)."""

    def __init__(self, hidden_size: int, intermediate_size: int, output_size: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(intermediate_size, output_size or hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class GVTSwiGLU(nn.Module):
    """EVA-02's SwiGLU MLP: `w3(sub_norm(silu(w1 x) * w2 x))`."""

    def __init__(self, hidden_size: int, intermediate_size: int, sub_layer_norm_eps: float | None):
        super().__init__()
        self.w1 = nn.Linear(hidden_size, intermediate_size)
        self.w2 = nn.Linear(hidden_size, intermediate_size)
        self.act = nn.SiLU()
        self.sub_norm = (
            nn.LayerNorm(intermediate_size, eps=sub_layer_norm_eps) if sub_layer_norm_eps else nn.Identity()
        )
        self.w3 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.w3(self.sub_norm(self.act(self.w1(hidden_states)) * self.w2(hidden_states)))


class GVTSelfCrossLayer(GradientCheckpointingLayer):
    """Pre-norm block of self-attention, cross-attention to a context, and an MLP.

    The token merger runs it with policy softmaxes (`self_policy`, `cross_policy`); the feature decoders with plain
    softmaxes and a padding mask on the context (`cross_attention_mask`, see [`key_padding_attention_mask`]).
    """

    def __init__(self, config, hidden_size: int, num_heads: int, intermediate_size: int, layer_norm_eps: float):
        super().__init__()
        eps = config.policy_softmax_eps
        self.self_attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.self_attn = GVTAttention(config, hidden_size, num_heads, policy_eps=eps)
        self.cross_attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.cross_attn = GVTAttention(config, hidden_size, num_heads, policy_eps=eps)
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = GVTMLP(hidden_size, intermediate_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        self_policy: torch.Tensor | None = None,
        cross_policy: torch.Tensor | None = None,
        cross_attention_mask: torch.Tensor | None = None,
        sequence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`sequence`: when `hidden_states` are some rows of a sequence, the whole sequence they self-attend to
        (the policies then hold those rows); each output row equals that row of the whole sequence's output."""
        keys = None if sequence is None else self.self_attn_norm(sequence)
        attended, _ = self.self_attn(self.self_attn_norm(hidden_states), key_value_states=keys, policy=self_policy)
        hidden_states = hidden_states + attended
        attended, _ = self.cross_attn(
            self.cross_attn_norm(hidden_states),
            key_value_states=context,
            attention_mask=cross_attention_mask,
            policy=cross_policy,
        )
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.mlp_norm(hidden_states))
