"""gvt's tokenizers against the original code, same weights, interleaved in one process.

    git clone https://github.com/jy0205/LaVIT /tmp/LaVIT       # the reference code: fetched by you, never committed
    git clone https://github.com/TencentARC/GVT /tmp/GVT       # its EVA-02 and perceiver need einops, einops-exts
    python benchmarks/bench_vs_reference.py --reference-repo /tmp/LaVIT [--gvt-repo /tmp/GVT] [--bfloat16]
        [--threads 1 2] [--batches 1 8] [--rounds 7]

Mid size for both (encoder width 384, 12 blocks, 8 heads, 224 px): LaVIT's `DynamicVisualTokenizer` (EVA-CLIP
encoder, merger 4 blocks, 16384 codes) and GVT's visual path (EVA-02 encoder with SwiGLU, sub-LN and 2-D RoPE,
perceiver resampler 2 layers x 32 latents, LLM projection), random weights drawn by the references' own
initialisation and converted with `gvt.conversion`. The LaVIT reference samples its keep decision (Gumbel); for an
exact comparison its `F.gumbel_softmax` is replaced by the noiseless hard argmax, which keeps a patch where
p_keep >= p_drop, as gvt's `selection="deterministic"`. Before timing, LaVIT ids are checked identical on every image
and GVT features equal to 1e-4 of their largest value. Rows:
- LaVIT ids: reference `tokenize_image` vs gvt `tokenize`;
- LaVIT features: reference `encode_features` (its list of kept LLM inputs) vs gvt `encode_features`;
- with `--bfloat16`: the reference's float32 ids vs gvt's `tokenize` loaded in bfloat16 (the fast path on CPUs with
  bf16 instructions and on accelerators), with its agreement with float32 (keep decisions, ids of patches both keep);
- GVT features: the reference's `visual_encoder` -> `ln_vision` -> `perceiver` -> `llm_proj` vs gvt `encode_features`.
Each round times both back to back in alternating order (all under `no_grad`); the table gives medians and the
median of paired ratios.

The references import `timm` only for `drop_path`, `to_2tuple` and `trunc_normal_`; where timm is absent (it pulls
torchvision) a three-function stand-in serves while their model files import (their package `__init__`s, which
import the whole LLM and training stack, are not run).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import sys
import types
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_inference_paths import bfloat16_copy, interleaved, token_agreement
from torch import nn

from gvt import GVTVisionTokenizer
from gvt.conversion import build_tokenizer, convert_gvt_tokenizer, convert_lavit_tokenizer

WIDTH, DEPTH, HEADS, MERGER_DEPTH, CODES, CODE_DIM = 384, 12, 8, 4, 16384, 32
GVT_RESAMPLER_DEPTH, GVT_LATENTS, GVT_PROJECTION = 2, 32, 512


@contextlib.contextmanager
def timm_stand_in():
    """While the reference modules import: what they take from timm (stochastic depth, the identity at rate 0;
    pairs; truncated normal init), unless timm is installed. Removed afterwards, so nothing else sees it."""
    try:
        importlib.import_module("timm.models.layers")
        yield
        return
    except ImportError:
        pass

    def drop_path(x, drop_prob: float = 0.0, training: bool = False):
        if drop_prob and training:
            raise NotImplementedError("the stand-in only serves inference (drop_path_rate 0)")
        return x

    def to_2tuple(value):
        return tuple(value) if isinstance(value, (tuple, list)) else (value, value)

    layers = types.ModuleType("timm.models.layers")
    layers.drop_path, layers.to_2tuple, layers.trunc_normal_ = drop_path, to_2tuple, nn.init.trunc_normal_
    timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
    timm.models, models.layers = models, layers
    names = {"timm": timm, "timm.models": models, "timm.models.layers": layers}
    sys.modules.update(names)
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)


def import_reference_module(models_dir: Path, name: str, package: str = "models") -> types.ModuleType:
    """`<package>.<name>` from a reference's model folder, without running that folder's `__init__` (which imports
    the whole LLM and training stack)."""
    if package not in sys.modules:
        module = types.ModuleType(package)
        module.__path__ = [str(models_dir)]
        sys.modules[package] = module
    spec = importlib.util.spec_from_file_location(f"{package}.{name}", models_dir / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def deterministic_hard_choice(logits: torch.Tensor, tau: float = 1.0, hard: bool = True, dim: int = -1, **_):
    """The noiseless hard Gumbel-softmax: a one-hot of the argmax (ties to the first column, "keep")."""
    return F.one_hot(logits.argmax(dim=dim), logits.shape[dim]).to(logits.dtype)


def build_reference(repo: Path):
    models_dir = repo / "LaVIT" / "models"
    with timm_stand_in():
        encoder_module = import_reference_module(models_dir, "modeling_visual_encoder")
        tokenizer_module = import_reference_module(models_dir, "modeling_visual_tokenzier")
    vision_cfg = {
        "image_size": 224,
        "layers": DEPTH,
        "width": WIDTH,
        "head_width": WIDTH // HEADS,
        "mlp_ratio": 4.0,
        "patch_size": 14,
        "drop_path_rate": 0,
    }

    def mid_size_encoder(model_path="", use_xformers=False):
        return encoder_module._build_vision_tower(embed_dim=CODE_DIM, vision_cfg=vision_cfg)

    tokenizer_module.build_eva_clip = mid_size_encoder
    tokenizer_module.F = types.SimpleNamespace(**{**vars(F), "gumbel_softmax": deterministic_hard_choice})
    torch.manual_seed(0)
    model = tokenizer_module.DynamicVisualTokenizer(
        width=WIDTH, layers=MERGER_DEPTH, heads=HEADS, n_code=CODES, code_dim=CODE_DIM
    ).eval()
    return model


def convert(reference) -> GVTVisionTokenizer:
    encoder_state = reference.encoder.state_dict()
    tokenizer_state = {k: v for k, v in reference.state_dict().items() if not k.startswith("encoder.")}
    config, state_dict = convert_lavit_tokenizer(encoder_state, tokenizer_state, num_heads=HEADS)
    return build_tokenizer(config, state_dict).eval()


class GVTReference(nn.Module):
    """The GVT model's visual path (`visual_encoder` -> `ln_vision` -> `perceiver` -> `llm_proj`, as its
    `modeling_gvt.py` wires them), built from its own modules at the mid size."""

    def __init__(self, eva_module, perceiver_module):
        super().__init__()
        self.visual_encoder = eva_module.EVAVisionTransformer(
            img_size=224, patch_size=14, depth=DEPTH, mlp_ratio=2.6667, num_heads=HEADS, embed_dim=WIDTH,
            drop_path_rate=0, xattn=False, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), rope=True,
            pt_hw_seq_len=16, intp_freq=True, naiveswiglu=True, subln=True,
        )  # fmt: skip
        self.ln_vision = nn.LayerNorm(WIDTH)
        self.perceiver = perceiver_module.PerceiverResampler(
            dim=WIDTH, dim_head=WIDTH // HEADS, depth=GVT_RESAMPLER_DEPTH, heads=HEADS, num_latents=GVT_LATENTS,
            num_media_embeds=1,
        )  # fmt: skip
        self.llm_proj = nn.Linear(WIDTH, GVT_PROJECTION)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.visual_encoder.forward_features(pixel_values, return_all_features=True)
        return self.llm_proj(self.perceiver(self.ln_vision(features)))


def build_gvt_reference(repo: Path) -> GVTReference:
    modules_dir = repo / "gvt" / "gvt" / "modules" / "visual_modules"
    with timm_stand_in():
        eva = import_reference_module(modules_dir, "eva", package="gvt_reference")
        perceiver = import_reference_module(modules_dir, "perceiver", package="gvt_reference")
    torch.manual_seed(0)
    return GVTReference(eva, perceiver).eval()


def convert_gvt(reference: GVTReference) -> GVTVisionTokenizer:
    config, state_dict = convert_gvt_tokenizer(reference.state_dict(), num_heads=HEADS)
    return build_tokenizer(config, state_dict).eval()


def check_identical(reference, model, pixels: torch.Tensor) -> int:
    """Raise unless gvt's ids equal the reference's on every image; return the number of tokens."""
    with torch.no_grad():
        theirs = [row - 32002 for row in reference.tokenize_image(pixels)]  # the reference offsets ids into LLaMA's
    tokens = model.tokenize(pixels)
    ours = [row[: int(count)] for row, count in zip(tokens.token_ids, tokens.attention_mask.sum(1))]
    for index, (expected, actual) in enumerate(zip(theirs, ours)):
        if not torch.equal(expected, actual):
            raise AssertionError(
                f"image {index}: ids differ from the reference ({expected.tolist()} vs {actual.tolist()})"
            )
    return sum(len(row) for row in ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-repo", type=Path, default=None, help="a clone of github.com/jy0205/LaVIT")
    parser.add_argument(
        "--gvt-repo",
        type=Path,
        default=None,
        help="a clone of github.com/TencentARC/GVT (its EVA-02 and perceiver modules need einops and einops-exts)",
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--bfloat16",
        action="store_true",
        help="add gvt's bfloat16 fast path (`from_pretrained(..., dtype=torch.bfloat16)`) against the float32 reference",
    )
    args = parser.parse_args()
    if args.reference_repo is None and args.gvt_repo is None:
        parser.error("pass --reference-repo (LaVIT) and/or --gvt-repo (GVT)")
    if (
        args.reference_repo
        and not (args.reference_repo / "LaVIT" / "models" / "modeling_visual_tokenzier.py").is_file()
    ):
        parser.error(
            f"{args.reference_repo} is not a clone of jy0205/LaVIT (no LaVIT/models/modeling_visual_tokenzier.py)"
        )
    if args.gvt_repo and not (args.gvt_repo / "gvt" / "gvt" / "modules" / "visual_modules" / "eva.py").is_file():
        parser.error(f"{args.gvt_repo} is not a clone of TencentARC/GVT (no gvt/gvt/modules/visual_modules/eva.py)")
    images = torch.randn(max(args.batches), 3, 224, 224, generator=torch.Generator().manual_seed(0))
    print(f"float32 unless said, same weights in both, {args.rounds} interleaved rounds")
    print("| path | threads | batch | reference ms | gvt ms | gvt speed-up (median of paired ratios) |")
    print("|---|---:|---:|---:|---:|---:|")
    if args.reference_repo:
        benchmark_lavit(args, images)
    if args.gvt_repo:
        benchmark_gvt(args, images)


def print_rows(rows: dict, threads: int, batch: int, rounds: int) -> None:
    for name, (theirs, ours) in rows.items():
        with torch.no_grad():  # the references' forwards do not disable gradients themselves
            before, now, ratio = interleaved(theirs, ours, rounds)
        print(f"| {name} | {threads} | {batch} | {1e3 * before:.1f} | {1e3 * now:.1f} | {ratio:.2f}x |")


def benchmark_lavit(args, images: torch.Tensor) -> None:
    reference = build_reference(args.reference_repo)
    model = convert(reference)
    kept = check_identical(reference, model, images)
    half = bfloat16_copy(model) if args.bfloat16 else None
    print(f"| LaVIT: ids identical on {len(images)} images ({kept} tokens) | | | | | |")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            pixels = images[:batch]
            rows = {
                "LaVIT ids": (
                    lambda pixels=pixels: reference.tokenize_image(pixels),
                    lambda pixels=pixels: model.tokenize(pixels),
                ),
                "LaVIT features": (
                    lambda pixels=pixels: reference.encode_features(pixels),
                    lambda pixels=pixels: model.encode_features(pixels),
                ),
            }
            if half is not None:
                half_pixels = pixels.to(torch.bfloat16)
                agreement = token_agreement(model.tokenize(pixels), half.tokenize(half_pixels))
                rows[f"LaVIT ids, gvt in bfloat16 ({agreement} of float32's)"] = (
                    rows["LaVIT ids"][0],
                    lambda half=half, half_pixels=half_pixels: half.tokenize(half_pixels),
                )
            print_rows(rows, threads, batch, args.rounds)


def benchmark_gvt(args, images: torch.Tensor) -> None:
    reference = build_gvt_reference(args.gvt_repo)
    model = convert_gvt(reference)
    with torch.no_grad():
        expected = reference(images)
    actual = model.encode_features(images).features
    error = ((actual - expected).abs().max() / expected.abs().max()).item()
    if error > 1e-4:
        raise AssertionError(f"GVT features differ from the reference's: max error {error:.2e} of the largest value")
    print(f"| GVT: features equal to {error:.1e} of the largest value | | | | | |")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            pixels = images[:batch]
            rows = {
                "GVT features (EVA-02 + perceiver)": (
                    lambda pixels=pixels: reference(pixels),
                    lambda pixels=pixels: model.encode_features(pixels),
                )
            }
            print_rows(rows, threads, batch, args.rounds)


if __name__ == "__main__":
    main()
