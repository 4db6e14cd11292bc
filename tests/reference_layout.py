"""Test helper: write a GVTVisionTokenizer back into the released LaVIT / GVT checkpoint layouts.

The inverse of `gvt.conversion`, written independently (explicit key by key), so that conversion can be tested on
checkpoints of any size, not only on the reference fixture.
"""

from __future__ import annotations

import torch


def _self_cross(sd, src, dst, self_name, cross_name, num_layers):
    out = {}
    for i in range(num_layers):
        s, d = f"{src}layers.{i}.", f"{dst}blocks.{i}."
        for ours, theirs in (("self_attn_norm", "norm0"), ("cross_attn_norm", "norm1"), ("mlp_norm", "norm2")):
            for p in ("weight", "bias"):
                out[f"{d}{theirs}.{p}"] = sd[f"{s}{ours}.{p}"]
        for p in ("weight", "bias"):
            out[f"{d}{self_name}.qkv.{p}"] = torch.cat([sd[f"{s}self_attn.{x}_proj.{p}"] for x in "qkv"])
            out[f"{d}{self_name}.proj.{p}"] = sd[f"{s}self_attn.o_proj.{p}"]
            for x, name in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "proj")):
                out[f"{d}{cross_name}.{name}.{p}"] = sd[f"{s}cross_attn.{x}_proj.{p}"]
            for fc in ("fc1", "fc2"):
                out[f"{d}mlp.{fc}.{p}"] = sd[f"{s}mlp.{fc}.{p}"]
    return out


def _encoder(sd, config, prefix):
    out = {
        f"{prefix}patch_embed.proj.weight": sd["encoder.patch_embedding.weight"],
        f"{prefix}patch_embed.proj.bias": sd["encoder.patch_embedding.bias"],
        f"{prefix}cls_token": sd["encoder.cls_token"],
        f"{prefix}pos_embed": sd["encoder.position_embedding"],
        # unused parts the release carries
        f"{prefix}head.weight": torch.zeros(7, config.hidden_size),
        f"{prefix}head.bias": torch.zeros(7),
    }
    for i in range(config.num_hidden_layers):
        s, d = f"encoder.layers.{i}.", f"{prefix}blocks.{i}."
        for n in ("norm1", "norm2"):
            for p in ("weight", "bias"):
                out[f"{d}{n}.{p}"] = sd[f"{s}{n}.{p}"]
        if config.encoder_sub_layer_norm:
            for x in "qkv":
                out[f"{d}attn.{x}_proj.weight"] = sd[f"{s}attn.{x}_proj.weight"]
            for p in ("weight", "bias"):
                out[f"{d}attn.inner_attn_ln.{p}"] = sd[f"{s}attn.sub_norm.{p}"]
                out[f"{d}mlp.ffn_ln.{p}"] = sd[f"{s}mlp.sub_norm.{p}"]
            head_dim = config.hidden_size // config.num_attention_heads
            out[f"{d}attn.rope.freqs_cos"] = torch.zeros(config.num_patches, head_dim)
            out[f"{d}attn.rope.freqs_sin"] = torch.zeros(config.num_patches, head_dim)
        else:
            out[f"{d}attn.qkv.weight"] = torch.cat([sd[f"{s}attn.{x}_proj.weight"] for x in "qkv"])
        out[f"{d}attn.q_bias"] = sd[f"{s}attn.q_proj.bias"]
        out[f"{d}attn.v_bias"] = sd[f"{s}attn.v_proj.bias"]
        for p in ("weight", "bias"):
            out[f"{d}attn.proj.{p}"] = sd[f"{s}attn.o_proj.{p}"]
            for fc in ("w1", "w2", "w3") if config.encoder_mlp_type == "swiglu" else ("fc1", "fc2"):
                out[f"{d}mlp.{fc}.{p}"] = sd[f"{s}mlp.{fc}.{p}"]
    if not config.encoder_sub_layer_norm:
        out[f"{prefix}norm.weight"] = torch.ones(config.hidden_size)
        out[f"{prefix}norm.bias"] = torch.zeros(config.hidden_size)
    return out


def lavit_release_state_dicts(model) -> dict[str, dict[str, torch.Tensor]]:
    """`{stem: state_dict}` of the LaVIT release layout for a LaVIT-type GVTVisionTokenizer."""
    config, sd = model.config, model.state_dict()
    tokenizer = {
        "token_predictor.in_conv.0.weight": sd["token_selector.in_norm.weight"],
        "token_predictor.in_conv.0.bias": sd["token_selector.in_norm.bias"],
        "token_predictor.in_conv.1.weight": sd["token_selector.in_proj.weight"],
        "token_predictor.in_conv.1.bias": sd["token_selector.in_proj.bias"],
        "quantize.embedding.weight": sd["quantizer.codebook.weight"],
        "vit_proj.weight": sd["projection.weight"],
        "vit_proj.bias": sd["projection.bias"],
    }
    for i in (0, 2, 4):
        for p in ("weight", "bias"):
            tokenizer[f"token_predictor.out_conv.{i}.{p}"] = sd[f"token_selector.score_head.{i}.{p}"]
    for i in (0, 2):
        for p in ("weight", "bias"):
            tokenizer[f"encode_task_layer.{i}.{p}"] = sd[f"quantizer.project_in.{i}.{p}"]
    for n in ("ln_vision", "norm"):
        for p in ("weight", "bias"):
            tokenizer[f"causal_encoder.{n}.{p}"] = sd[f"token_merger.{n}.{p}"]
    tokenizer.update(
        _self_cross(
            sd, "token_merger.", "causal_encoder.", "token_causal_attn", "token_cross_attn", config.merger_num_layers
        )
    )
    stems = {
        "visual_tokenizer/eva_vitg_psz14": _encoder(sd, config, ""),
        "visual_tokenizer/tokenizer_encoder": tokenizer,
    }
    for decoder_type in config.decoder_types:
        s = f"decoders.{decoder_type}."
        dec = {
            "in_proj.weight": sd[s + "in_proj.weight"],
            "in_proj.bias": sd[s + "in_proj.bias"],
            "pos_embed": sd[s + "position_embedding"],
            "query_embed": sd[s + "query_embedding"],
            "norm.weight": sd[s + "norm.weight"],
            "norm.bias": sd[s + "norm.bias"],
        }
        for i in (0, 2):
            for p in ("weight", "bias"):
                dec[f"decode_task_layer.{i}.{p}"] = sd[f"{s}output_mlp.{i}.{p}"]
        dec.update(_self_cross(sd, s, "", "self_attn", "cross_attn", config.decoder_num_layers))
        for p in ("weight", "bias"):
            if decoder_type == "lowres":
                dec[f"unet_proj.{p}"] = sd[f"{s}prompt_proj.{p}"]
            else:
                dec[f"unet_proj_1.{p}"] = sd[f"{s}prompt_proj.{p}"]
                dec[f"unet_proj_2.{p}"] = sd[f"{s}prompt_proj_2.{p}"]
                for n in ("q_proj", "k_proj", "v_proj", "c_proj"):
                    dec[f"unet_attnpool.{n}.{p}"] = sd[f"{s}attention_pool.{n}.{p}"]
        if decoder_type == "highres":
            dec["unet_attnpool.positional_embedding"] = sd[s + "attention_pool.position_embedding"]
        stem = "highres_tokenizer_decoder" if decoder_type == "highres" else "tokenizer_decoder"
        stems[f"visual_tokenizer/{stem}"] = dec
    return stems


def gvt_release_state_dict(model) -> dict[str, torch.Tensor]:
    """The GVT checkpoint layout for a GVT-type GVTVisionTokenizer."""
    config, sd = model.config, model.state_dict()
    out = _encoder(sd, config, "visual_encoder.")
    out.update(
        {
            "ln_vision.weight": sd["ln_vision.weight"],
            "ln_vision.bias": sd["ln_vision.bias"],
            "llm_proj.weight": sd["projection.weight"],
            "llm_proj.bias": sd["projection.bias"],
            "perceiver.latents": sd["resampler.latents"],
            "perceiver.media_pos_emb": sd["resampler.media_position_embedding"],
            "perceiver.norm.weight": sd["resampler.norm.weight"],
            "perceiver.norm.bias": sd["resampler.norm.bias"],
        }
    )
    for i in range(config.resampler_num_layers):
        s, d = f"resampler.layers.{i}.", f"perceiver.layers.{i}."
        for n in ("norm_media", "norm_latents"):
            for p in ("weight", "bias"):
                out[f"{d}0.{n}.{p}"] = sd[f"{s}attention.{n}.{p}"]
        out[f"{d}0.to_q.weight"] = sd[f"{s}attention.q_proj.weight"]
        out[f"{d}0.to_kv.weight"] = torch.cat([sd[f"{s}attention.k_proj.weight"], sd[f"{s}attention.v_proj.weight"]])
        out[f"{d}0.to_out.weight"] = sd[f"{s}attention.o_proj.weight"]
        out[f"{d}1.0.weight"] = sd[f"{s}feed_forward.0.weight"]
        out[f"{d}1.0.bias"] = sd[f"{s}feed_forward.0.bias"]
        out[f"{d}1.1.weight"] = sd[f"{s}feed_forward.1.weight"]
        out[f"{d}1.3.weight"] = sd[f"{s}feed_forward.3.weight"]
    return out
