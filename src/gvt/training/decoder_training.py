"""Training of LaVIT's detokenizer: the conditioning model and the UNet of a [`LaVITDecoderPipeline`] on
(image, visual tokens) pairs with the standard latent-diffusion noise-prediction loss.

LaVIT never released this code; the recipe is diffusers' `train_text_to_image_sdxl.py` with visual tokens in place of
text: frozen VAE latents, uniform timesteps, epsilon or v targets from a `DDPMScheduler` with the sampler's betas,
conditioning dropped to the unconditional branch with probability `conditioning_dropout` (for classifier-free
guidance), optional Min-SNR weighting (`diffusers.training_utils.compute_snr`) and EMA (`EMAModel`), and an optional
`accelerate.Accelerator` for devices, mixed precision and distributed data parallelism.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr
from diffusers.utils import logging
from torch import nn
from tqdm.auto import tqdm

logger = logging.get_logger(__name__)


@dataclass
class DecoderTrainingOutput:
    """What [`train_decoder`] returns: `losses` (one per step) and the timesteps of each step's batch."""

    losses: list[float] = field(default_factory=list)
    timesteps: list[list[int]] = field(default_factory=list)


class DecoderDenoiser(nn.Module):
    """Conditioning model + UNet as one module (one `accelerator.prepare`, one DDP wrapper): visual tokens and noisy
    latents -> the UNet's prediction, with per-sample dropout of the conditioning to the unconditional branch."""

    def __init__(self, conditioning: nn.Module, unet: nn.Module):
        super().__init__()
        self.conditioning = conditioning
        self.unet = unet

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        visual_token_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        drop: torch.Tensor,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        output = self.conditioning(visual_token_ids, attention_mask)
        batch = visual_token_ids.shape[0]
        uncond_embeds, uncond_pooled, uncond_mask = self.conditioning.unconditional(batch)
        keep = (~drop)[:, None, None].to(output.prompt_embeds.dtype)
        prompt_embeds = output.prompt_embeds * keep + uncond_embeds * (1 - keep)
        encoder_attention_mask = None
        if uncond_mask is not None:
            encoder_attention_mask = torch.where(drop[:, None], uncond_mask, torch.ones_like(uncond_mask))
        added_cond_kwargs = None
        if output.pooled_prompt_embeds is not None:
            pooled = output.pooled_prompt_embeds * keep[:, 0] + uncond_pooled * (1 - keep[:, 0])
            added_cond_kwargs = {"text_embeds": pooled, "time_ids": time_ids}
        return self.unet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=prompt_embeds,
            encoder_attention_mask=encoder_attention_mask,
            added_cond_kwargs=added_cond_kwargs,
            return_dict=False,
        )[0]


def _as_batches(
    data: torch.Tensor | Iterable[Mapping[str, torch.Tensor]],
    token_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    batch_size: int,
    generator: torch.Generator,
):
    """Endless batches of `pixel_values` / `token_ids` / `attention_mask` from tensors (random minibatches) or from an
    iterable of such dicts (a `DataLoader`, cycled)."""
    if isinstance(data, torch.Tensor):
        if token_ids is None:
            raise ValueError("Pass `token_ids` with a `pixel_values` tensor.")
        if attention_mask is None:
            attention_mask = torch.ones_like(token_ids)
        if not (data.shape[0] == token_ids.shape[0] == attention_mask.shape[0]):
            raise ValueError(
                f"pixel_values ({data.shape[0]}), token_ids ({token_ids.shape[0]}) and attention_mask "
                f"({attention_mask.shape[0]}) must hold the same number of images."
            )
        if token_ids.shape != attention_mask.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != token_ids {tuple(token_ids.shape)}."
            )
        count = data.shape[0]
        while True:
            index = torch.randperm(count, generator=generator)[: min(batch_size, count)]
            yield {"pixel_values": data[index], "token_ids": token_ids[index], "attention_mask": attention_mask[index]}
    else:
        while True:
            empty = True
            for batch in data:
                empty = False
                yield batch
            if empty:
                raise ValueError("The training data yielded no batch.")


def train_decoder(
    pipeline,
    pixel_values_or_dataset: torch.Tensor | Iterable[Mapping[str, torch.Tensor]],
    token_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    num_steps: int = 1000,
    batch_size: int = 4,
    learning_rate: float = 1e-4,
    conditioning_learning_rate: float | None = None,
    weight_decay: float = 1e-2,
    prediction_type: Literal["epsilon", "v_prediction"] | None = None,
    conditioning_dropout: float = 0.1,
    train_conditioning: bool = True,
    train_unet: bool = True,
    train_codebook: bool = False,
    use_ema: bool = False,
    ema_decay: float = 0.999,
    snr_gamma: float | None = None,
    max_grad_norm: float | None = 1.0,
    accelerator=None,
    seed: int = 0,
    progress_bar: bool = False,
) -> DecoderTrainingOutput:
    """Train the conditioning model and/or UNet of `pipeline` in place; the VAE stays frozen.

    Args:
        pixel_values_or_dataset: images in [-1, 1] `[N, 3, H, W]` (H, W multiples of the VAE factor) with `token_ids`
            `[N, L]` (+ `attention_mask`), or an iterable of batches with keys `pixel_values`, `token_ids`,
            `attention_mask` (e.g. a `DataLoader`, cycled until `num_steps`).
        conditioning_learning_rate: learning rate of the conditioning model (its own AdamW parameter group;
            default: `learning_rate`). The UNet can only use tokens that the feature decoder maps to different
            conditioning: a freshly initialised one maps all sequences to almost the same embeddings, so start from a
            trained tokenizer's decoder.
        prediction_type: `"epsilon"` or `"v_prediction"`; default: the pipeline scheduler's. When it differs, the
            pipeline's scheduler is reconfigured so that sampling matches training.
        conditioning_dropout: probability of training a sample on the unconditional branch (zeros for highres, the
            learned embedding for lowres), which classifier-free guidance needs.
        use_ema: keep an exponential moving average of the trained weights (`EMAModel`) and copy it into the
            pipeline at the end.
        snr_gamma: Min-SNR-gamma loss weighting (5.0 is the paper's value); `None` for the plain MSE.
        train_codebook: also train the codebook (off by default: it is the tokenizer's, shared with the quantizer
            and the language model's visual vocabulary).
        accelerator: an `accelerate.Accelerator`; without one, training runs on the pipeline's device.
        progress_bar: show a progress bar (on the main process).

    Returns:
        [`DecoderTrainingOutput`] with the loss of every step.
    """
    if not 0.0 <= conditioning_dropout <= 1.0:
        raise ValueError(f"conditioning_dropout must be in [0, 1], got {conditioning_dropout}.")
    if not (train_conditioning or train_unet):
        raise ValueError("Nothing to train: set train_conditioning and/or train_unet.")
    scheduler_config = dict(pipeline.scheduler.config)
    prediction_type = prediction_type or scheduler_config.get("prediction_type", "epsilon")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}.")
    if scheduler_config.get("prediction_type") != prediction_type:
        logger.info(f"Setting the pipeline scheduler's prediction_type to {prediction_type!r}.")
        pipeline.scheduler = type(pipeline.scheduler).from_config(scheduler_config, prediction_type=prediction_type)
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config, prediction_type=prediction_type)

    vae, conditioning, unet = pipeline.vae, pipeline.conditioning, pipeline.unet
    vae.requires_grad_(False).eval()
    conditioning.requires_grad_(train_conditioning).train(train_conditioning)
    conditioning.codebook.requires_grad_(train_conditioning and train_codebook)
    unet.requires_grad_(train_unet).train(train_unet)
    model = DecoderDenoiser(conditioning, unet)
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in unet.parameters() if p.requires_grad], "lr": learning_rate},
        {
            "params": [p for p in conditioning.parameters() if p.requires_grad],
            "lr": learning_rate if conditioning_learning_rate is None else conditioning_learning_rate,
        },
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate, weight_decay=weight_decay)
    ema = EMAModel(parameters, decay=ema_decay) if use_ema else None

    device = pipeline.device
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
        device = accelerator.device
        vae.to(device)
        if ema is not None:
            ema.to(device)
    generator = torch.Generator().manual_seed(seed)
    batches = _as_batches(pixel_values_or_dataset, token_ids, attention_mask, batch_size, generator)
    factor = pipeline.vae_scale_factor
    highres = conditioning.config.decoder_type == "highres"
    history = DecoderTrainingOutput()
    show = progress_bar and (accelerator is None or accelerator.is_local_main_process)
    progress = tqdm(range(num_steps), desc="decoder UNet", disable=not show)
    for _step in progress:
        batch = next(batches)
        pixels = batch["pixel_values"].to(device=device, dtype=vae.dtype)
        if pixels.shape[-2] % factor or pixels.shape[-1] % factor:
            raise ValueError(
                f"Image height and width must be multiples of the VAE factor {factor}, got {tuple(pixels.shape[-2:])}."
            )
        ids = batch["token_ids"].to(device)
        mask = batch.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.to(device)
        count = pixels.shape[0]

        with torch.no_grad():
            latent_dist = vae.encode(pixels).latent_dist
            latents = latent_dist.mean + latent_dist.std * torch.randn(latent_dist.mean.shape, generator=generator).to(
                device=device, dtype=latent_dist.mean.dtype
            )
            latents = latents * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(device=device, dtype=latents.dtype)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (count,), generator=generator).to(
            device
        )
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
        target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
        drop = (torch.rand(count, generator=generator) < conditioning_dropout).to(device)
        time_ids = None
        if highres:
            height, width = pixels.shape[-2:]
            time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=latents.dtype, device=device)
            time_ids = time_ids.expand(count, -1)

        prediction = model(noisy_latents, timesteps, ids, mask, drop, time_ids)
        if snr_gamma is None:
            loss = F.mse_loss(prediction.float(), target.float())
        else:
            snr = compute_snr(noise_scheduler, timesteps)
            weights = torch.minimum(snr, torch.full_like(snr, snr_gamma))
            weights = weights / snr if prediction_type == "epsilon" else weights / (snr + 1)
            per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
            loss = (per_sample * weights).mean()

        optimizer.zero_grad(set_to_none=True)
        if accelerator is not None:
            accelerator.backward(loss)
            if max_grad_norm is not None and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(parameters, max_grad_norm)
        else:
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        if ema is not None:
            ema.step(parameters)
        history.losses.append(float(loss.detach()))
        history.timesteps.append(timesteps.tolist())
        progress.set_postfix(loss=f"{history.losses[-1]:.4f}", refresh=False)

    if ema is not None:
        ema.copy_to(parameters)
    conditioning.requires_grad_(False).eval()
    unet.requires_grad_(False).eval()
    return history


def fit_vae(
    vae,
    images: torch.Tensor,
    num_steps: int,
    batch_size: int | None = None,
    learning_rate: float = 2e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    progress_bar: bool = False,
) -> list[float]:
    """Fit a small `AutoencoderKL` to images in [-1, 1] `[N, 3, H, W]` (a stand-in for a pretrained VAE, which the
    release ships), then set its `scaling_factor` so that scaled latents have unit variance (SD's convention).

    Decodes *sampled* latents, as the diffusion training that follows encodes them: fitting on the posterior mode
    leaves the posterior's variance untrained, and the UNet then learns to denoise noise. Returns the step losses."""
    generator = torch.Generator().manual_seed(seed)
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate)
    count = images.shape[0]
    losses = []
    for _ in tqdm(range(num_steps), desc="decoder VAE", disable=not progress_bar):
        index = torch.randperm(count, generator=generator)[: batch_size or count]
        pixels = images[index]
        posterior = vae.encode(pixels).latent_dist
        loss = (
            F.mse_loss(vae.decode(posterior.sample(generator=generator)).sample, pixels)
            + kl_weight * posterior.kl().mean()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        std = float(vae.encode(images[:64]).latent_dist.mode().std())
    vae.register_to_config(scaling_factor=1.0 / max(std, 1e-3))
    return losses


__all__ = ["train_decoder", "fit_vae", "DecoderDenoiser", "DecoderTrainingOutput"]
