"""Weight conversion from the released LaVIT and GVT checkpoint layouts to [`GVTVisionTokenizer`].

Each conversion is a pure function from reference state dicts to `(config, state_dict)`: every size is read from
tensor shapes (only head counts, which shapes do not determine, are arguments), every reference key must be used
(only the encoders' unused classification head and final norms and the derived rotary tables are skipped), and
every model key must be produced; otherwise a `ValueError` lists the offending keys.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from .atomic_write import atomic_output_dir
from .configuration_gvt import GVTVisionConfig
from .weight_files import checkpoint_read_errors

StateDict = dict[str, torch.Tensor]
Rule = tuple[str, Callable[[re.Match, torch.Tensor], StateDict]]

# Reference keys that carry no weight of the tokenizer: the encoders' classification head and final norms (the
# tokenizers read the last block's output) and EVA-02's rotary tables (derived from sizes, recomputed on the fly).
IGNORED_ENCODER_KEYS = re.compile(r"^(head|norm|fc_norm)\.")
IGNORED_GVT_KEYS = re.compile(
    r"^visual_encoder\.(head|norm|fc_norm)\.|^visual_encoder\.(blocks\.\d+\.attn\.)?rope\.freqs_(cos|sin)$"
)

LAVIT_STEMS = {
    "encoder": "visual_tokenizer/eva_vitg_psz14",
    "tokenizer": "visual_tokenizer/tokenizer_encoder",
    "highres": "visual_tokenizer/highres_tokenizer_decoder",
    "lowres": "visual_tokenizer/tokenizer_decoder",
    "visual_weight": "language_model/visual_weight",
}


# ----------------------------------------------------------------------------------------------------------------
# Reading checkpoints
# ----------------------------------------------------------------------------------------------------------------


def load_state_dict_file(path: str | os.PathLike) -> StateDict:
    """Read a `.safetensors` file or a pickled `.bin`/`.pt`/`.pth` state dict (with `weights_only=True`).

    A file that cannot be read (truncated, not a checkpoint, or a pickle of anything but tensors) raises a
    `ValueError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    with checkpoint_read_errors(path):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(state, Mapping) and set(state) == {wrapper}:
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat state dict of tensors.")
    return dict(state)


def find_checkpoint(directory: str | os.PathLike, stem: str) -> Path | None:
    """The file of a reference stem (`visual_tokenizer/eva_vitg_psz14`) as `.safetensors` or `.bin`, if present."""
    for suffix in (".safetensors", ".bin"):
        candidate = Path(directory) / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


# ----------------------------------------------------------------------------------------------------------------
# Renaming machinery
# ----------------------------------------------------------------------------------------------------------------


def _rename(target: str) -> Callable[[re.Match, torch.Tensor], StateDict]:
    return lambda match, tensor: {match.expand(target): tensor}


def _split(*targets: str) -> Callable[[re.Match, torch.Tensor], StateDict]:
    """Split a fused projection along its output dimension into equal parts (`qkv` -> q, k, v)."""

    def handler(match: re.Match, tensor: torch.Tensor) -> StateDict:
        if tensor.shape[0] % len(targets):
            raise ValueError(f"Cannot split {match.string} of shape {tuple(tensor.shape)} into {len(targets)} parts.")
        return {match.expand(t): part.clone() for t, part in zip(targets, tensor.chunk(len(targets), dim=0))}

    return handler


def apply_rules(
    state_dict: Mapping[str, torch.Tensor], rules: list[Rule], source: str, ignore: re.Pattern | None = None
) -> StateDict:
    """Rename every key by the first matching rule; raise on keys no rule covers (keys matching `ignore` excepted)."""
    converted: StateDict = {}
    unknown = []
    compiled = [(re.compile(pattern), handler) for pattern, handler in rules]
    for key, tensor in state_dict.items():
        for pattern, handler in compiled:
            match = pattern.fullmatch(key)
            if match:
                converted.update(handler(match, tensor))
                break
        else:
            if ignore is None or not ignore.search(key):
                unknown.append(key)
    if unknown:
        raise ValueError(f"Unexpected keys in the {source} checkpoint: {sorted(unknown)}")
    return converted


def _self_cross_rules(src: str, dst: str, self_name: str, cross_name: str) -> list[Rule]:
    """Rules for a LaVIT block of self-attention (fused qkv), cross-attention (query/key/value) and MLP."""
    block = rf"{src}blocks\.(\d+)\."
    out = rf"{dst}layers.\1."
    return [
        (block + r"norm0\.(weight|bias)", _rename(out + r"self_attn_norm.\2")),
        (block + r"norm1\.(weight|bias)", _rename(out + r"cross_attn_norm.\2")),
        (block + r"norm2\.(weight|bias)", _rename(out + r"mlp_norm.\2")),
        (
            block + rf"{self_name}\.qkv\.(weight|bias)",
            _split(out + r"self_attn.q_proj.\2", out + r"self_attn.k_proj.\2", out + r"self_attn.v_proj.\2"),
        ),
        (block + rf"{self_name}\.proj\.(weight|bias)", _rename(out + r"self_attn.o_proj.\2")),
        (block + rf"{cross_name}\.query\.(weight|bias)", _rename(out + r"cross_attn.q_proj.\2")),
        (block + rf"{cross_name}\.key\.(weight|bias)", _rename(out + r"cross_attn.k_proj.\2")),
        (block + rf"{cross_name}\.value\.(weight|bias)", _rename(out + r"cross_attn.v_proj.\2")),
        (block + rf"{cross_name}\.proj\.(weight|bias)", _rename(out + r"cross_attn.o_proj.\2")),
        (block + r"mlp\.(fc1|fc2)\.(weight|bias)", _rename(out + r"mlp.\2.\3")),
    ]


def _eva_rules(src: str) -> list[Rule]:
    """EVA-CLIP (fused qkv) and EVA-02 (separate q/k/v, SwiGLU, sub-LN) encoders."""
    block = rf"{src}blocks\.(\d+)\."
    out = r"encoder.layers.\1."
    return [
        (rf"{src}patch_embed\.proj\.(weight|bias)", _rename(r"encoder.patch_embedding.\1")),
        (rf"{src}cls_token", _rename("encoder.cls_token")),
        (rf"{src}pos_embed", _rename("encoder.position_embedding")),
        (block + r"(norm1|norm2)\.(weight|bias)", _rename(out + r"\2.\3")),
        (
            block + r"attn\.qkv\.weight",
            _split(out + "attn.q_proj.weight", out + "attn.k_proj.weight", out + "attn.v_proj.weight"),
        ),
        (block + r"attn\.(q|k|v)_proj\.weight", _rename(out + r"attn.\2_proj.weight")),
        (block + r"attn\.(q|v)_bias", _rename(out + r"attn.\2_proj.bias")),
        (block + r"attn\.proj\.(weight|bias)", _rename(out + r"attn.o_proj.\2")),
        (block + r"attn\.inner_attn_ln\.(weight|bias)", _rename(out + r"attn.sub_norm.\2")),
        (block + r"mlp\.(fc1|fc2|w1|w2|w3)\.(weight|bias)", _rename(out + r"mlp.\2.\3")),
        (block + r"mlp\.ffn_ln\.(weight|bias)", _rename(out + r"mlp.sub_norm.\2")),
    ]


_TOKENIZER_RULES: list[Rule] = [
    (r"token_predictor\.in_conv\.0\.(weight|bias)", _rename(r"token_selector.in_norm.\1")),
    (r"token_predictor\.in_conv\.1\.(weight|bias)", _rename(r"token_selector.in_proj.\1")),
    (r"token_predictor\.out_conv\.(0|2|4)\.(weight|bias)", _rename(r"token_selector.score_head.\1.\2")),
    (r"causal_encoder\.(ln_vision|norm)\.(weight|bias)", _rename(r"token_merger.\1.\2")),
    *_self_cross_rules(r"causal_encoder\.", "token_merger.", "token_causal_attn", "token_cross_attn"),
    (r"quantize\.embedding\.weight", _rename("quantizer.codebook.weight")),
    (r"encode_task_layer\.(0|2)\.(weight|bias)", _rename(r"quantizer.project_in.\1.\2")),
    (r"vit_proj\.(weight|bias)", _rename(r"projection.\1")),
]


def _decoder_rules(decoder_type: str) -> list[Rule]:
    dst = f"decoders.{decoder_type}."
    rules: list[Rule] = [
        (r"in_proj\.(weight|bias)", _rename(dst + r"in_proj.\1")),
        (r"pos_embed", _rename(dst + "position_embedding")),
        (r"query_embed", _rename(dst + "query_embedding")),
        (r"norm\.(weight|bias)", _rename(dst + r"norm.\1")),
        (r"decode_task_layer\.(0|2)\.(weight|bias)", _rename(dst + r"output_mlp.\1.\2")),
        *_self_cross_rules("", dst, "self_attn", "cross_attn"),
    ]
    if decoder_type == "lowres":
        rules.append((r"unet_proj\.(weight|bias)", _rename(dst + r"prompt_proj.\1")))
    else:
        rules += [
            (r"unet_proj_1\.(weight|bias)", _rename(dst + r"prompt_proj.\1")),
            (r"unet_proj_2\.(weight|bias)", _rename(dst + r"prompt_proj_2.\1")),
            (r"unet_attnpool\.positional_embedding", _rename(dst + "attention_pool.position_embedding")),
            (r"unet_attnpool\.(q_proj|k_proj|v_proj|c_proj)\.(weight|bias)", _rename(dst + r"attention_pool.\1.\2")),
        ]
    return rules


_GVT_RULES: list[Rule] = [
    *_eva_rules(r"visual_encoder\."),
    (r"ln_vision\.(weight|bias)", _rename(r"ln_vision.\1")),
    (r"llm_proj\.(weight|bias)", _rename(r"projection.\1")),
    (r"perceiver\.latents", _rename("resampler.latents")),
    (r"perceiver\.media_pos_emb", _rename("resampler.media_position_embedding")),
    (r"perceiver\.norm\.(weight|bias)", _rename(r"resampler.norm.\1")),
    (
        r"perceiver\.layers\.(\d+)\.0\.(norm_media|norm_latents)\.(weight|bias)",
        _rename(r"resampler.layers.\1.attention.\2.\3"),
    ),
    (r"perceiver\.layers\.(\d+)\.0\.to_q\.weight", _rename(r"resampler.layers.\1.attention.q_proj.weight")),
    (
        r"perceiver\.layers\.(\d+)\.0\.to_kv\.weight",
        _split(r"resampler.layers.\1.attention.k_proj.weight", r"resampler.layers.\1.attention.v_proj.weight"),
    ),
    (r"perceiver\.layers\.(\d+)\.0\.to_out\.weight", _rename(r"resampler.layers.\1.attention.o_proj.weight")),
    (r"perceiver\.layers\.(\d+)\.1\.(0|1|3)\.(weight|bias)", _rename(r"resampler.layers.\1.feed_forward.\2.\3")),
]


# ----------------------------------------------------------------------------------------------------------------
# Size inference
# ----------------------------------------------------------------------------------------------------------------


def check_num_heads(num_heads: int) -> int:
    """The head count argument of a conversion: a positive `int` (shapes do not determine it)."""
    if isinstance(num_heads, bool) or not isinstance(num_heads, int):
        raise TypeError(f"num_heads must be an int, got {num_heads!r}.")
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads} (LaVIT-7B-v2 and GVT use 16).")
    return num_heads


def _require(state_dict: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(f"Missing key {key!r} in the {source} checkpoint.")
    return state_dict[key]


def _count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    if indices != set(range(len(indices))):
        raise ValueError(f"Blocks under {prefix!r} are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def _encoder_sizes(state_dict: Mapping[str, torch.Tensor], prefix: str, source: str) -> dict:
    patch_weight = _require(state_dict, f"{prefix}patch_embed.proj.weight", source)
    num_positions = _require(state_dict, f"{prefix}pos_embed", source).shape[1]
    grid = math.isqrt(num_positions - 1)
    if grid * grid != num_positions - 1:
        raise ValueError(f"{source}: pos_embed holds {num_positions} positions, not a square grid plus CLS.")
    swiglu = f"{prefix}blocks.0.mlp.w1.weight" in state_dict
    first_mlp = f"{prefix}blocks.0.mlp.w1.weight" if swiglu else f"{prefix}blocks.0.mlp.fc1.weight"
    return {
        "hidden_size": patch_weight.shape[0],
        "num_channels": patch_weight.shape[1],
        "patch_size": patch_weight.shape[2],
        "image_size": grid * patch_weight.shape[2],
        "num_hidden_layers": _count_blocks(state_dict, f"{prefix}blocks."),
        "intermediate_size": _require(state_dict, first_mlp, source).shape[0],
        "encoder_mlp_type": "swiglu" if swiglu else "gelu",
        "encoder_sub_layer_norm": f"{prefix}blocks.0.attn.inner_attn_ln.weight" in state_dict,
    }


def _decoder_sizes(state_dict: Mapping[str, torch.Tensor], decoder_type: str) -> dict:
    source = f"{decoder_type} decoder"
    sizes = {
        "decoder_hidden_size": _require(state_dict, "in_proj.weight", source).shape[0],
        "decoder_max_positions": _require(state_dict, "pos_embed", source).shape[1],
        "decoder_num_queries": _require(state_dict, "query_embed", source).shape[1],
        "decoder_num_layers": _count_blocks(state_dict, "blocks."),
        "decoder_intermediate_size": _require(state_dict, "blocks.0.mlp.fc1.weight", source).shape[0],
        "decoder_output_dim": _require(state_dict, "decode_task_layer.2.weight", source).shape[0],
    }
    if decoder_type == "lowres":
        sizes["lowres_cross_attention_dim"] = _require(state_dict, "unet_proj.weight", source).shape[0]
    else:
        sizes["highres_cross_attention_dims"] = [
            _require(state_dict, "unet_proj_1.weight", source).shape[0],
            _require(state_dict, "unet_proj_2.weight", source).shape[0],
        ]
        sizes["highres_pooled_dim"] = _require(state_dict, "unet_attnpool.c_proj.weight", source).shape[0]
    return sizes


# ----------------------------------------------------------------------------------------------------------------
# Conversions
# ----------------------------------------------------------------------------------------------------------------


def check_against_model(config: GVTVisionConfig, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise if `state_dict` misses a key of the model built from `config`, has an extra one, or a wrong shape."""
    from .modeling_gvt import GVTVisionTokenizer

    with torch.device("meta"):
        expected = {k: v.shape for k, v in GVTVisionTokenizer(config).state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if wrong:
        problems.append(
            "shape mismatches: "
            + ", ".join(f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k])}" for k in wrong)
        )
    if problems:
        raise ValueError("The converted checkpoint does not fit GVTVisionTokenizer: " + "; ".join(problems))


def convert_lavit_tokenizer(
    encoder_state_dict: Mapping[str, torch.Tensor],
    tokenizer_state_dict: Mapping[str, torch.Tensor],
    highres_decoder_state_dict: Mapping[str, torch.Tensor] | None = None,
    lowres_decoder_state_dict: Mapping[str, torch.Tensor] | None = None,
    visual_weight_state_dict: Mapping[str, torch.Tensor] | None = None,
    num_heads: int = 16,
) -> tuple[GVTVisionConfig, StateDict]:
    """LaVIT's `eva_vitg_psz14` + `tokenizer_encoder` (+ decoders, + `visual_weight` for the understanding variant)
    -> `(GVTVisionConfig, state_dict)` of a [`GVTVisionTokenizer`]."""
    check_num_heads(num_heads)
    tokenizer_state_dict = dict(tokenizer_state_dict)
    if visual_weight_state_dict is not None:
        allowed = ("causal_encoder.", "token_predictor.", "vit_proj.")
        stray = sorted(k for k in visual_weight_state_dict if not k.startswith(allowed))
        if stray:
            raise ValueError(f"Unexpected keys in the visual_weight checkpoint: {stray}")
        absent = sorted(k for k in visual_weight_state_dict if k not in tokenizer_state_dict)
        if absent:
            raise ValueError(f"visual_weight keys without a tokenizer_encoder counterpart: {absent}")
        tokenizer_state_dict.update(visual_weight_state_dict)

    sizes = _encoder_sizes(encoder_state_dict, "", "EVA-CLIP encoder")
    codebook = _require(tokenizer_state_dict, "quantize.embedding.weight", "tokenizer_encoder")
    sizes.update(
        tokenizer_type="lavit",
        num_attention_heads=num_heads,
        merger_num_attention_heads=num_heads,
        decoder_num_attention_heads=num_heads,
        merger_num_layers=_count_blocks(tokenizer_state_dict, "causal_encoder.blocks."),
        merger_intermediate_size=_require(
            tokenizer_state_dict, "causal_encoder.blocks.0.mlp.fc1.weight", "tokenizer_encoder"
        ).shape[0],
        codebook_size=codebook.shape[0],
        codebook_dim=codebook.shape[1],
        projection_dim=_require(tokenizer_state_dict, "vit_proj.weight", "tokenizer_encoder").shape[0],
    )
    state_dict = apply_rules(encoder_state_dict, _eva_rules(""), "EVA-CLIP encoder", IGNORED_ENCODER_KEYS)
    state_dict.update(apply_rules(tokenizer_state_dict, _TOKENIZER_RULES, "tokenizer_encoder"))

    decoder_types = []
    for decoder_type, decoder_state_dict in (
        ("highres", highres_decoder_state_dict),
        ("lowres", lowres_decoder_state_dict),
    ):
        if decoder_state_dict is None:
            continue
        decoder_sizes = _decoder_sizes(decoder_state_dict, decoder_type)
        clashes = {k for k, v in decoder_sizes.items() if k in sizes and sizes[k] != v}
        if clashes:
            raise ValueError(f"The highres and lowres decoders disagree on {sorted(clashes)}.")
        sizes.update(decoder_sizes)
        state_dict.update(apply_rules(decoder_state_dict, _decoder_rules(decoder_type), f"{decoder_type} decoder"))
        decoder_types.append(decoder_type)
    sizes["decoder_types"] = decoder_types

    config = GVTVisionConfig(**sizes)
    check_against_model(config, state_dict)
    return config, state_dict


def convert_gvt_tokenizer(
    state_dict: Mapping[str, torch.Tensor], num_heads: int = 16
) -> tuple[GVTVisionConfig, StateDict]:
    """A GVT checkpoint (`visual_encoder.*`, `ln_vision.*`, `perceiver.*`, `llm_proj.*`) -> `(config, state_dict)`."""
    check_num_heads(num_heads)
    source = "GVT"
    sizes = _encoder_sizes(state_dict, "visual_encoder.", source)
    width = sizes["hidden_size"]
    inner = _require(state_dict, "perceiver.layers.0.0.to_q.weight", source).shape[0]
    if inner % num_heads:
        raise ValueError(f"The resampler's inner width {inner} is not divisible by num_heads={num_heads}.")
    sizes.update(
        tokenizer_type="gvt",
        decoder_types=[],
        num_attention_heads=num_heads,
        encoder_rope=True,
        resampler_num_attention_heads=num_heads,
        resampler_head_dim=inner // num_heads,
        resampler_num_latents=_require(state_dict, "perceiver.latents", source).shape[0],
        resampler_num_layers=_count_blocks(state_dict, "perceiver.layers."),
        resampler_ff_mult=_require(state_dict, "perceiver.layers.0.1.1.weight", source).shape[0] // width,
        resampler_num_media_embeds=_require(state_dict, "perceiver.media_pos_emb", source).shape[0],
        projection_dim=_require(state_dict, "llm_proj.weight", source).shape[0],
    )
    config = GVTVisionConfig(**sizes)
    converted = apply_rules(state_dict, _GVT_RULES, source, IGNORED_GVT_KEYS)
    check_against_model(config, converted)
    return config, converted


def load_lavit_release(
    input_dir: str | os.PathLike, understanding: bool = False, num_heads: int = 16, decoders: bool = True
) -> tuple[GVTVisionConfig, StateDict]:
    """Convert the visual tokenizer of a local LaVIT release folder (`.bin` or `.safetensors` files)."""
    check_num_heads(num_heads)
    files = {name: find_checkpoint(input_dir, stem) for name, stem in LAVIT_STEMS.items()}
    required = ("encoder", "tokenizer") + (("visual_weight",) if understanding else ())
    absent = [f"{LAVIT_STEMS[name]}.bin" for name in required if files[name] is None]
    if absent:
        raise FileNotFoundError(f"{input_dir} lacks {', '.join(absent)} (or the .safetensors of the same stem).")
    load = lambda name: load_state_dict_file(files[name]) if files[name] is not None else None  # noqa: E731
    return convert_lavit_tokenizer(
        load("encoder"),
        load("tokenizer"),
        highres_decoder_state_dict=load("highres") if decoders else None,
        lowres_decoder_state_dict=load("lowres") if decoders else None,
        visual_weight_state_dict=load("visual_weight") if understanding else None,
        num_heads=num_heads,
    )


def build_tokenizer(config: GVTVisionConfig, state_dict: Mapping[str, torch.Tensor]):
    """Instantiate a [`GVTVisionTokenizer`] holding exactly `state_dict` (already checked)."""
    from .modeling_gvt import GVTVisionTokenizer

    model = GVTVisionTokenizer(config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def save_atomically(
    model,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    **save_kwargs,
) -> Path:
    """`save_pretrained` through [`gvt.atomic_write.atomic_output_dir`]: staged beside `output_dir`, then swapped into
    place; a non-empty `output_dir` is refused unless `overwrite`, and so is an output that is, is inside or contains
    one of `inputs`."""
    with atomic_output_dir(output_dir, overwrite=overwrite, inputs=inputs) as staging:
        model.save_pretrained(staging, **save_kwargs)
    return Path(output_dir)


__all__ = [
    "load_state_dict_file",
    "find_checkpoint",
    "convert_lavit_tokenizer",
    "convert_gvt_tokenizer",
    "load_lavit_release",
    "build_tokenizer",
    "save_atomically",
    "check_num_heads",
]
