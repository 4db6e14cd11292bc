"""Tests for the LaVIT detokenizer: `LaVITConditioningModel`, `LaVITDecoderPipeline`, the release assembly and the
decoder training loop. Tiny components, CPU, one thread."""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UNet2DConditionModel
from safetensors.torch import load_file

import gvt  # noqa: F401  (diffusers resolves gvt's component classes from sys.modules)
from gvt.configuration_gvt import GVTVisionConfig
from gvt.conversion import build_tokenizer, load_lavit_release
from gvt.modeling_gvt import GVTVisionTokenizer
from gvt.modeling_lavit_conditioning import LaVITConditioningModel
from gvt.pipeline_lavit_decoder import (
    LaVITDecoderPipeline,
    assemble_release_pipeline,
    build_tiny_decoder_pipeline,
    tiny_unet_config,
)
from gvt.training import fit_vae, train_decoder

torch.set_num_threads(1)

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "reference" / "tiny_a"
CODEBOOK_SIZE = 512  # the "tiny" preset


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny")).eval()


def eval_pipeline(tokenizer, decoder_type="highres", **kwargs) -> LaVITDecoderPipeline:
    pipe = build_tiny_decoder_pipeline(tokenizer, decoder_type, **kwargs)
    for module in (pipe.conditioning, pipe.unet, pipe.vae):
        module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def highres(tokenizer):
    return eval_pipeline(tokenizer, "highres")


@pytest.fixture(scope="module")
def lowres(tokenizer):
    return eval_pipeline(tokenizer, "lowres")


def token_batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CODEBOOK_SIZE, (2, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    return ids, mask


def run(pipe, ids=None, mask=None, seed=0, steps=3, **kwargs):
    kwargs.setdefault("output_type", "pt")
    return pipe(ids, mask, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), **kwargs).images


class UNetCalls:
    """Records the batch size and the conditioning of every UNet call."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.calls.append({"batch": args[0].shape[0], **kwargs})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ----------------------------------------------------------------------------------------------------------------
# The conditioning model against the reference
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    config, state_dict = load_lavit_release(FIXTURE_DIR / "original", num_heads=4)
    io = load_file(FIXTURE_DIR / "io.safetensors")
    counts = io["token_counts"]
    mask = (torch.arange(int(counts.max()))[None, :] < counts[:, None]).long()
    ids = torch.zeros(mask.shape, dtype=torch.long).masked_scatter(mask.bool(), io["codes"])
    return build_tokenizer(config, state_dict), ids, mask, io


def test_conditioning_reproduces_reference_highres(reference):
    vision_tokenizer, ids, mask, io = reference
    model = LaVITConditioningModel.from_vision_tokenizer(vision_tokenizer, "highres").eval()
    assert mask.sum(1).tolist() == [31, 22, 0]  # image 3 keeps no patch: an all-padding row
    with torch.no_grad():
        output = model(ids, mask)
    torch.testing.assert_close(output.prompt_embeds, io["decoder_prompt_embeds"], atol=1e-4, rtol=0)
    torch.testing.assert_close(output.pooled_prompt_embeds, io["decoder_pooled_prompt_embeds"], atol=1e-4, rtol=0)
    assert model.cross_attention_dim == 96 and model.pooled_dim == 56


def test_conditioning_reproduces_reference_lowres_and_reloads(reference, tmp_path):
    vision_tokenizer, ids, mask, io = reference
    uncond = torch.randn(1, 5, 40)
    model = LaVITConditioningModel.from_vision_tokenizer(vision_tokenizer, "lowres", uncond).eval()
    with torch.no_grad():
        output = model(ids, mask)
    torch.testing.assert_close(output.prompt_embeds, io["lowres_decoder_embeds"], atol=1e-4, rtol=0)
    assert output.pooled_prompt_embeds is None
    model.save_pretrained(tmp_path)
    reloaded = LaVITConditioningModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids, mask).prompt_embeds, output.prompt_embeds)
    embeds, pooled, uncond_mask = reloaded.unconditional(2)
    assert embeds.shape == (2, 64, 40) and pooled is None
    assert torch.equal(embeds[:, :5], uncond.expand(2, -1, -1)) and not embeds[:, 5:].any()
    assert uncond_mask.sum(1).tolist() == [5, 5]


# ----------------------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder_type", ["highres", "lowres"])
def test_reload_gives_bit_identical_images(tokenizer, tmp_path, decoder_type):
    pipe = eval_pipeline(tokenizer, decoder_type)
    ids, mask = token_batch()
    expected = run(pipe, ids, mask)
    pipe.save_pretrained(tmp_path)
    reloaded = LaVITDecoderPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert isinstance(reloaded.conditioning, LaVITConditioningModel)
    assert isinstance(reloaded.vision_tokenizer, GVTVisionTokenizer)
    assert not reloaded.unet.training and reloaded.decoder_type == decoder_type
    assert torch.equal(run(reloaded, ids, mask), expected)
    assert not torch.equal(run(reloaded, ids, mask, seed=1), expected)


def test_a_list_of_per_image_ids_equals_padded_ids_and_mask(highres, lowres):
    ids, mask = token_batch()
    as_list = [ids[0], ids[1, : int(mask[1].sum())]]  # lengths 7 and 4
    for pipe in (highres, lowres):
        assert torch.equal(run(pipe, as_list), run(pipe, ids, mask))
        assert torch.equal(run(pipe, ids[0]), run(pipe, ids[:1]))  # one image's 1-D ids: a batch of one
    empty = torch.tensor([], dtype=torch.long)
    padded, padded_mask = LaVITDecoderPipeline.pad_visual_token_ids([torch.tensor([3, 4]), empty])
    assert padded.tolist() == [[3, 4], [0, 0]] and padded_mask.tolist() == [[1, 1], [0, 0]]


def test_num_images_per_prompt(highres):
    ids, mask = token_batch()
    generators = [torch.Generator().manual_seed(seed) for seed in range(4)]
    images = highres(ids, mask, num_images_per_prompt=2, num_inference_steps=2, generator=generators, output_type="pt")
    assert images.images.shape == (4, 3, 32, 32)
    # Image k of prompt p is image k of prompt p drawn alone with the same generator: order prompt-major.
    for index, (row, seed) in enumerate([(0, 0), (0, 1), (1, 2), (1, 3)]):
        alone = run(highres, ids[row : row + 1], mask[row : row + 1], seed=seed, steps=2)
        torch.testing.assert_close(images.images[index : index + 1], alone, atol=1e-5, rtol=0)
    listed = highres([ids[0]], num_images_per_prompt=3, num_inference_steps=1, output_type="latent").images
    assert listed.shape[0] == 3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_from_pretrained(tokenizer, tmp_path, dtype):
    eval_pipeline(tokenizer).save_pretrained(tmp_path)
    pipe = LaVITDecoderPipeline.from_pretrained(tmp_path, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.dtype == pipe.conditioning.dtype == pipe.vae.dtype == dtype
    ids, mask = token_batch()
    images = pipe(ids, mask, num_inference_steps=2, guidance_scale=3.0, output_type="np").images
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()
    listed = pipe([ids[0], ids[1, :4]], num_inference_steps=1, output_type="pt").images
    assert listed.shape == (2, 3, 32, 32)
    assert pipe.vision_tokenizer.dtype == dtype
    reconstructed = pipe(images=torch.rand(2, 3, 32, 32), num_inference_steps=1, output_type="np").images
    assert reconstructed.shape == (2, 32, 32, 3) and np.isfinite(reconstructed).all()


def test_scheduler_swap(highres):
    ids, mask = token_batch()
    ddim = run(highres, ids, mask)
    original = highres.scheduler
    try:
        for scheduler_class in (EulerDiscreteScheduler, DPMSolverMultistepScheduler):
            highres.scheduler = scheduler_class.from_config(original.config)
            images = run(highres, ids, mask)
            assert images.shape == ddim.shape and torch.isfinite(images).all()
            assert not torch.equal(images, ddim)
    finally:
        highres.scheduler = original
    assert isinstance(highres.scheduler, DDIMScheduler) and torch.equal(run(highres, ids, mask), ddim)


def test_output_types_have_documented_shapes(highres):
    ids, mask = token_batch()
    pil = run(highres, ids, mask, output_type="pil", height=32, width=48)
    assert len(pil) == 2 and all(isinstance(i, PIL.Image.Image) and i.size == (48, 32) for i in pil)
    array = run(highres, ids, mask, output_type="np", height=32, width=48)
    assert array.shape == (2, 32, 48, 3) and array.dtype == np.float32 and 0 <= array.min() <= array.max() <= 1
    tensor = run(highres, ids, mask, output_type="pt", height=32, width=48)
    assert tensor.shape == (2, 3, 32, 48)
    np.testing.assert_allclose(tensor.permute(0, 2, 3, 1).numpy(), array, atol=1e-6)
    latents = run(highres, ids, mask, output_type="latent", height=32, width=48)
    assert latents.shape == (2, 4, 16, 24)
    (default,) = highres(ids, mask, num_inference_steps=1, output_type="np", return_dict=False)
    assert default.shape == (2, 32, 32, 3)  # UNet sample size 16 x VAE factor 2
    repeated = run(highres, ids, mask, num_images_per_prompt=3, output_type="latent")
    assert repeated.shape == (6, 4, 16, 16)


def test_callback_on_step_end_can_stop_the_loop(highres):
    ids, mask = token_batch()
    seen = []

    def stop_after_two(pipe, step, timestep, tensors):
        seen.append((step, int(timestep), tuple(tensors)))
        if step == 1:
            pipe._interrupt = True
        return {"latents": tensors["latents"]}

    with UNetCalls(highres.unet) as calls:
        run(highres, ids, mask, steps=5, output_type="latent", callback_on_step_end=stop_after_two,
            callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])  # fmt: skip
    assert [s[0] for s in seen] == [0, 1] and len(calls.calls) == 2
    assert seen[0][2] == ("latents", "prompt_embeds")
    assert highres.num_timesteps == 5

    zeroed = run(highres, ids, mask, steps=2, output_type="latent",
                 callback_on_step_end=lambda pipe, i, t, kw: {"latents": torch.zeros_like(kw["latents"])})  # fmt: skip
    assert not zeroed.any()


def test_guidance_one_skips_the_unconditional_pass(highres):
    ids, mask = token_batch()
    with UNetCalls(highres.unet) as calls:
        run(highres, ids, mask, steps=2, guidance_scale=1.0)
    assert [c["batch"] for c in calls.calls] == [2, 2]
    with UNetCalls(highres.unet) as calls:
        run(highres, ids, mask, steps=2, guidance_scale=5.0)
    assert [c["batch"] for c in calls.calls] == [4, 4]
    # Highres guidance runs against all-zero conditioning, with SDXL time ids (original, crop, target).
    call = calls.calls[0]
    assert not call["encoder_hidden_states"][:2].any() and call["encoder_hidden_states"][2:].abs().sum() > 0
    assert not call["added_cond_kwargs"]["text_embeds"][:2].any()
    assert call["added_cond_kwargs"]["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 4


def test_lowres_guidance_uses_learned_unconditional_embeddings(lowres):
    ids, mask = token_batch()
    with UNetCalls(lowres.unet) as calls:
        run(lowres, ids, mask, steps=1, guidance_scale=3.0)
    call = calls.calls[0]
    uncond = lowres.conditioning.uncond_embeddings
    length = uncond.shape[1]
    assert call["added_cond_kwargs"] is None
    torch.testing.assert_close(call["encoder_hidden_states"][:2, :length], uncond.expand(2, -1, -1).detach())
    assert not call["encoder_hidden_states"][:2, length:].any()
    assert call["encoder_attention_mask"].sum(1).tolist() == [length, length, 64, 64]
    with UNetCalls(lowres.unet) as calls:
        run(lowres, ids, mask, steps=1, guidance_scale=1.0)
    assert calls.calls[0]["batch"] == 2 and calls.calls[0]["encoder_attention_mask"] is None


def test_generator_list_gives_per_image_reproducibility(highres):
    ids, mask = token_batch()
    generators = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)]
    pair = highres(ids, mask, num_inference_steps=2, generator=generators, output_type="pt").images
    second = highres(ids[1:], mask[1:], num_inference_steps=2, generator=torch.Generator().manual_seed(4),
                     output_type="pt").images  # fmt: skip
    torch.testing.assert_close(pair[1:], second, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="list of generators of length 1"):
        highres(ids, mask, num_inference_steps=1, generator=generators[:1])


def test_images_input_tokenizes_first(highres):
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    ids, mask = highres.tokenize_images(images, max_tokens=10)
    assert ids.shape[0] == 2 and mask.shape == ids.shape and int(mask.sum(1).max()) <= 10
    ids, mask = highres.tokenize_images(images)
    expected = run(highres, ids, mask)
    reconstructed = highres(images=images, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                            output_type="pt").images  # fmt: skip
    assert torch.equal(reconstructed, expected)
    pil = [PIL.Image.fromarray((i.permute(1, 2, 0).numpy() * 255).astype(np.uint8)) for i in images]
    assert len(highres(images=pil, num_inference_steps=1).images) == 2


def test_precomputed_prompt_embeds_match_token_ids(highres):
    ids, mask = token_batch()
    with torch.no_grad():
        output = highres.conditioning(ids, mask)
    from_embeds = highres(prompt_embeds=output.prompt_embeds, pooled_prompt_embeds=output.pooled_prompt_embeds,
                          num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images  # fmt: skip
    assert torch.equal(from_embeds, run(highres, ids, mask))


def test_bad_inputs_raise_clear_errors(highres, lowres):
    ids, mask = token_batch()
    cases = [
        (dict(visual_token_ids=ids.clamp(max=0) + CODEBOOK_SIZE), r"codebook indices in \[0, 512\)"),
        (dict(visual_token_ids=ids - 1000), r"codebook indices in \[0, 512\)"),
        (dict(visual_token_ids=ids, attention_mask=mask[:, :5]), "does not match visual_token_ids shape"),
        (dict(visual_token_ids=ids.float()), "integer torch.Tensor"),
        (dict(visual_token_ids=ids[None]), r"shape \[batch, length\]"),
        (dict(visual_token_ids=ids[0], attention_mask=mask), "`attention_mask` of one image's ids must be 1-D"),
        (dict(visual_token_ids=ids, height=33), "divisible by the VAE factor 2"),
        (dict(visual_token_ids=ids, width=31), "divisible by the VAE factor 2"),
        (dict(), "exactly one of"),
        (dict(visual_token_ids=ids, images=torch.rand(1, 3, 8, 8)), "exactly one of"),
        (dict(visual_token_ids=ids, callback_on_step_end_tensor_inputs=["noise"]), "has to be in"),
        (dict(visual_token_ids=ids, output_type="jpeg"), "output_type"),
        (dict(prompt_embeds=torch.zeros(2, 64, 96)), "need `pooled_prompt_embeds`"),
        (
            dict(prompt_embeds=torch.zeros(2, 64, 95), pooled_prompt_embeds=torch.zeros(2, 56)),
            r"\[batch, length, 96\]",
        ),
        (dict(visual_token_ids=ids, latents=torch.zeros(2, 4, 8, 8)), "`latents` must have shape"),
        (dict(visual_token_ids=ids, num_inference_steps=0), "`num_inference_steps` must be a positive integer"),
        (dict(visual_token_ids=ids, num_inference_steps=2.5), "`num_inference_steps` must be a positive integer"),
        (dict(visual_token_ids=ids, num_images_per_prompt=0), "`num_images_per_prompt` must be a positive integer"),
        (dict(visual_token_ids=ids, guidance_scale=float("nan")), "`guidance_scale` must be a finite number >= 0"),
        (dict(visual_token_ids=ids, guidance_scale=float("inf")), "`guidance_scale` must be a finite number >= 0"),
        (dict(visual_token_ids=ids, guidance_scale=-1.0), "`guidance_scale` must be a finite number >= 0"),
        (dict(visual_token_ids=ids, guidance_scale="3"), "`guidance_scale` must be a number"),
        (dict(visual_token_ids=[ids[0], mask[0]], attention_mask=mask), "not with a list of per-image ids"),
        (dict(visual_token_ids=[ids[0], ids[1].float()]), r"visual_token_ids\[1\] must be a 1-D integer tensor"),
        (dict(visual_token_ids=[ids]), r"visual_token_ids\[0\] must be a 1-D integer tensor"),
        (dict(visual_token_ids=[]), "empty list"),
        (dict(visual_token_ids=[torch.tensor([CODEBOOK_SIZE])]), r"codebook indices in \[0, 512\)"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("num_inference_steps", 1)
        with pytest.raises((ValueError, TypeError), match=message):
            highres(**kwargs)
    # Masked positions may hold anything: only real tokens are checked (padding with -100 is fine).
    padded = ids.masked_fill(~mask.bool(), -100)
    assert torch.equal(run(highres, padded, mask, steps=1), run(highres, ids, mask, steps=1))
    tokenizer = lowres.vision_tokenizer
    try:
        lowres.register_modules(vision_tokenizer=None)
        with pytest.raises(ValueError, match="needs the pipeline's `vision_tokenizer`"):
            lowres(images=torch.rand(1, 3, 8, 8), num_inference_steps=1)
    finally:
        lowres.register_modules(vision_tokenizer=tokenizer)


# ----------------------------------------------------------------------------------------------------------------
# The LaVIT release's diffusion folders
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder_type", ["highres", "lowres"])
def test_assemble_release_pipeline_from_fake_release(tokenizer, tmp_path, decoder_type):
    source = eval_pipeline(tokenizer, decoder_type, seed=3)
    folder = tmp_path / "release" / {"highres": "highres_pixel_decoding", "lowres": "pixel_decoding"}[decoder_type]
    source.unet.save_pretrained(folder / "unet", safe_serialization=False)  # the release ships .bin UNet weights
    source.vae.save_pretrained(folder / "vae")
    source.scheduler.save_pretrained(folder / "scheduler")
    assert (folder / "unet" / "diffusion_pytorch_model.bin").is_file()
    if decoder_type == "lowres":
        torch.save(source.conditioning.uncond_embeddings.detach().clone(), folder / "uncond_embeddings.bin")
    assembled = assemble_release_pipeline(tmp_path / "release", tokenizer, decoder_type)
    assembled.set_progress_bar_config(disable=True)
    assembled.conditioning.eval()
    ids, mask = token_batch()
    expected = run(source, ids, mask)
    assert torch.equal(run(assembled, ids, mask), expected)
    assembled.save_pretrained(tmp_path / "converted")
    reloaded = LaVITDecoderPipeline.from_pretrained(tmp_path / "converted")
    reloaded.set_progress_bar_config(disable=True)
    assert torch.equal(run(reloaded, ids, mask), expected)
    with pytest.raises(FileNotFoundError, match="LaVIT release folder"):
        assemble_release_pipeline(tmp_path, tokenizer, decoder_type)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def synthetic_pairs(count=4, size=16, tokens=6):
    generator = torch.Generator().manual_seed(1)
    colours = torch.rand(count, 3, 1, 1, generator=generator)
    images = colours.expand(-1, -1, size, size).clone()
    images[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1 - colours
    ids = torch.randint(0, CODEBOOK_SIZE, (count, tokens), generator=generator)
    return images * 2 - 1, ids


def test_training_lowers_the_loss(tokenizer):
    pipe = eval_pipeline(tokenizer, "highres", sample_size=8)
    pixels, ids = synthetic_pairs()
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    conditioning_before = {k: v.clone() for k, v in pipe.conditioning.state_dict().items()}
    vae_before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    history = train_decoder(pipe, pixels, ids, num_steps=60, learning_rate=3e-3)
    losses = np.array(history.losses)
    assert len(losses) == 60 and np.isfinite(losses).all()
    assert losses[-15:].mean() < 0.6 * losses[:15].mean()
    assert any(not torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())
    changed = {k for k, v in pipe.conditioning.state_dict().items() if not torch.equal(conditioning_before[k], v)}
    assert "decoder.in_proj.weight" in changed and "codebook.weight" not in changed  # the codebook is the tokenizer's
    assert all(torch.equal(vae_before[k], v) for k, v in pipe.vae.state_dict().items())  # the VAE is frozen
    assert not pipe.unet.training and not pipe.conditioning.training


def test_training_options_v_prediction_min_snr_ema_accelerate(tokenizer):
    from accelerate import Accelerator

    pipe = eval_pipeline(tokenizer, "lowres", sample_size=8)
    pixels, ids = synthetic_pairs(count=2)
    history = train_decoder(
        pipe, pixels, ids, num_steps=4, prediction_type="v_prediction", snr_gamma=5.0, use_ema=True,
        conditioning_dropout=0.5, accelerator=Accelerator(cpu=True),
    )  # fmt: skip
    assert len(history.losses) == 4 and np.isfinite(history.losses).all()
    assert pipe.scheduler.config.prediction_type == "v_prediction"  # sampling matches training
    assert run(pipe, ids, steps=2).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="prediction_type"):
        train_decoder(pipe, pixels, ids, num_steps=1, prediction_type="sample")
    with pytest.raises(ValueError, match="same number of images"):
        train_decoder(pipe, pixels, ids[:1], num_steps=1)


def test_fit_vae_fits_sampled_latents_and_sets_unit_scale(tokenizer):
    """The VAE is fitted on sampled latents (what diffusion training encodes): its posterior noise must shrink."""
    vae = eval_pipeline(tokenizer, "highres").vae
    pixels = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pixels = torch.nn.functional.avg_pool2d(pixels, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    with torch.no_grad():
        noise_before = vae.encode(pixels).latent_dist.std.mean().item()
    losses = fit_vae(vae, pixels, 150, batch_size=8, learning_rate=3e-3, seed=0)
    assert len(losses) == 150 and sum(losses[-10:]) / 10 < 0.5 * losses[0]
    with torch.no_grad():
        posterior = vae.encode(pixels).latent_dist
        scaled = posterior.mode() * vae.config.scaling_factor
    assert posterior.std.mean().item() < 0.5 * noise_before
    assert abs(scaled.std().item() - 1.0) < 0.05
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())


def test_training_makes_reconstructions_follow_the_tokens(reference):
    """After a short memorisation run, decoding an image's own tokens lands closer to its latents than decoding another
    image's tokens: the UNet uses the conditioning instead of only learning the image distribution."""
    pipe = eval_pipeline(reference[0], "highres", sample_size=8)  # non-trivial feature decoder: tokens matter
    config = tiny_unet_config(pipe.conditioning, 8)
    config.update(block_out_channels=(16,), attention_head_dim=8, norm_num_groups=8)
    torch.manual_seed(0)
    pipe.unet = UNet2DConditionModel(**config)
    colours = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])
    pixels = colours[:, :, None, None].expand(-1, -1, 16, 16).clone()
    pixels[:, :, 4:12, 4:12] *= -1
    ids = torch.randint(0, CODEBOOK_SIZE, (4, 8), generator=torch.Generator().manual_seed(0))
    fit_vae(pipe.vae, pixels, 100, learning_rate=3e-3)  # a random VAE's latents barely tell the images apart
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    train_decoder(pipe, pixels, ids, num_steps=120, batch_size=4, learning_rate=5e-3, prediction_type="v_prediction")

    def error(token_ids):
        generators = [torch.Generator().manual_seed(index) for index in range(4)]
        sampled = pipe(
            token_ids, num_inference_steps=10, guidance_scale=1.0, generator=generators, output_type="latent"
        )
        return torch.mean((sampled.images - latents) ** 2).item()

    right, wrong = error(ids), error(ids.roll(1, dims=0))
    assert right < 0.8 * wrong, (right, wrong)  # ~0.5-0.6 over seeds; 1.0 when the conditioning is ignored


def test_text_to_image_with_the_language_model(tmp_path):
    tiny_random = pytest.importorskip("gvt.tiny_random")
    model, processor = tiny_random.build_tiny_random()
    pipe = eval_pipeline(model.vision_tokenizer, "highres")
    inputs = processor(text=["a red circle"], return_tensors="pt")
    tokens = model.generate_images(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                   max_new_tokens=6, do_sample=False)  # fmt: skip
    assert tokens.image_token_ids.shape == tokens.attention_mask.shape and int(tokens.attention_mask.sum()) >= 1
    image = pipe(visual_token_ids=tokens.image_token_ids, attention_mask=tokens.attention_mask,
                 num_inference_steps=2).images[0]  # fmt: skip
    assert isinstance(image, PIL.Image.Image) and image.size == (32, 32)


def test_cli_reconstruct_writes_images(highres, tmp_path):
    from gvt.cli import main

    highres.save_pretrained(tmp_path / "decoder")
    image_path = tmp_path / "square.png"
    PIL.Image.fromarray(np.full((40, 40, 3), 200, dtype=np.uint8)).save(image_path)
    code = main(["reconstruct", str(image_path), "--decoder", str(tmp_path / "decoder"), "--out",
                 str(tmp_path / "out"), "--steps", "2"])  # fmt: skip
    assert code == 0
    with PIL.Image.open(tmp_path / "out" / "square_reconstruction.png") as image:
        assert image.size == (32, 32)
    assert main(["reconstruct", str(tmp_path / "missing.png"), "--decoder", str(tmp_path / "decoder")]) == 2
