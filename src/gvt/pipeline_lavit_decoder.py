"""LaVITDecoderPipeline: LaVIT's detokenizer, visual token ids (or images, for reconstruction) -> images.

Components: `conditioning` ([`LaVITConditioningModel`]: codebook + feature decoder + head), `unet`
(`UNet2DConditionModel`: SDXL `text_time` conditioning for `"highres"`, plain cross-attention for `"lowres"`), `vae`
(`AutoencoderKL`), `scheduler` (DDIM by default; any diffusers scheduler), optional `vision_tokenizer`
([`GVTVisionTokenizer`], needed only for `images=` input).

Loading, with the package imported (`gvt.LaVITDecoderPipeline`)::

    pipe = gvt.LaVITDecoderPipeline.from_pretrained("path/to/decoder")  # dtype=torch.bfloat16 for half precision
    image = pipe(visual_token_ids=ids, attention_mask=mask, generator=torch.Generator().manual_seed(0)).images[0]
    images = pipe(visual_token_ids=[ids_a, ids_b]).images  # or one 1-D id tensor per image, any lengths
    reconstruction = pipe(images=[pil_image]).images[0]  # tokenize, then decode
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # any scheduler

or without it: a saved folder carries its code (`save_pretrained` writes `pipeline_lavit_decoder.py` and the modules
it needs at the root, each custom component's module in its subfolder, and `model_index.json` names them), so
`diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` loads it in a Python without `gvt`.
`LaVITDecoderPipeline.from_pretrained` reads the same folder with the package's own classes (no remote code runs;
from the Hub, diffusers still asks for `trust_remote_code=True` to download a folder that holds code).

Text-to-image with the LLM: [`LaVITForCausalLM.generate_images`] samples visual token ids after the image-start
token and returns them as codebook indices with a mask, which is exactly this pipeline's input::

    model = gvt.LaVITForCausalLM.from_pretrained("path/to/repo")
    processor = gvt.GVTProcessor.from_pretrained("path/to/repo")
    pipe = gvt.LaVITDecoderPipeline.from_pretrained("path/to/repo/decoder")  # `gvt tiny-random OUT` writes one
    inputs = processor(text=["a red circle above a blue square"], return_tensors="pt")
    tokens = model.generate_images(**inputs, guidance_scale=3.0, do_sample=True, top_k=50, top_p=0.9)
    image = pipe(visual_token_ids=tokens.image_token_ids, attention_mask=tokens.attention_mask).images[0]
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    ImagePipelineOutput,
    UNet2DConditionModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from transformers.dynamic_module_utils import get_relative_import_files

# Remote code: for a local folder, diffusers copies only the files that the pipeline module imports directly (one
# level), so this module imports from every module of its code, not only the ones it uses.
from .configuration_gvt import GVTVisionConfig  # noqa: F401
from .layers import GVTAttention  # noqa: F401
from .modeling_gvt import GVTVisionTokenizer
from .modeling_lavit_conditioning import LaVITConditioningModel, check_visual_token_ids
from .weight_files import weight_read_errors  # noqa: F401

logger = logging.get_logger(__name__)

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | list
OutputType = Literal["pil", "np", "pt", "latent"]
VisualTokenIds = torch.Tensor | Sequence[torch.Tensor]
"""Codebook ids: one right-padded `[B, L]` tensor (with an `attention_mask`), one image's 1-D ids, or one 1-D tensor per
image (any lengths; diffusers' list-per-sample batching)."""

# LaVIT's image preprocessing (EVA-CLIP): the pipeline's default; saved in its config, so a tokenizer trained with
# other statistics sets its own.
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


class LaVITDecoderPipeline(DiffusionPipeline):
    r"""
    Visual token ids -> images with a latent diffusion decoder, following the structure of diffusers'
    `StableDiffusionXLPipeline`.

    Args:
        conditioning ([`LaVITConditioningModel`]): token ids -> UNet conditioning (highres: SDXL, lowres: SD-1.5).
        unet ([`UNet2DConditionModel`]): the denoiser; `cross_attention_dim` must equal the conditioning width, and a
            highres UNet needs `addition_embed_type="text_time"`.
        vae ([`AutoencoderKL`]): latents <-> pixels.
        scheduler ([`SchedulerMixin`]): the sampler (DDIM in the release).
        vision_tokenizer ([`GVTVisionTokenizer`], *optional*): for `images=` input (reconstruction).
        image_mean, image_std: the vision tokenizer's pixel normalisation.
    """

    model_cpu_offload_seq = "vision_tokenizer->conditioning->unet->vae"
    _optional_components = ["vision_tokenizer"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"]

    def __init__(
        self,
        conditioning: LaVITConditioningModel,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: SchedulerMixin,
        vision_tokenizer: GVTVisionTokenizer | None = None,
        image_mean: tuple[float, ...] | list[float] = CLIP_IMAGE_MEAN,
        image_std: tuple[float, ...] | list[float] = CLIP_IMAGE_STD,
    ):
        super().__init__()
        self.register_modules(
            conditioning=conditioning, unet=unet, vae=vae, scheduler=scheduler, vision_tokenizer=vision_tokenizer
        )
        self.register_to_config(image_mean=list(image_mean), image_std=list(image_std))
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.default_sample_size = (
            self.unet.config.sample_size
            if getattr(self, "unet", None) is not None and hasattr(self.unet.config, "sample_size")
            else 128
        )

    # -- the folder carries its code -----------------------------------------------------------------------------

    @staticmethod
    def _code_dir() -> Path:
        """The folder of this module and the modules it imports (the package, or diffusers' module cache)."""
        return Path(sys.modules[LaVITDecoderPipeline.__module__].__file__).parent

    @classmethod
    def _is_code_module(cls, module: str) -> bool:
        """Whether `module` (dotted, or a bare file name) is one of this folder's code modules."""
        package = LaVITDecoderPipeline.__module__.rpartition(".")[0]
        name = module[len(package) + 1 :] if module.startswith(package + ".") else module
        return "." not in name and (cls._code_dir() / f"{name}.py").is_file()

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """Save as diffusers does, plus the code: `pipeline_lavit_decoder.py` and the modules it imports at the root,
        and each custom component's module (with its imports) in the component's folder; `model_index.json` names
        them (see `to_json_string`), so `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` works
        without `gvt`. The code is written first, so that `push_to_hub=True` uploads it."""
        directory = Path(save_directory)
        entry_files = {directory: Path(sys.modules[LaVITDecoderPipeline.__module__].__file__)}
        for name, component in self.components.items():
            if component is not None and self._is_code_module(type(component).__module__):
                entry_files[directory / name] = Path(sys.modules[type(component).__module__].__file__)
        for folder, entry in entry_files.items():
            folder.mkdir(parents=True, exist_ok=True)
            for code_file in [entry, *map(Path, get_relative_import_files(entry))]:
                shutil.copyfile(code_file, folder / code_file.name)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def to_json_string(self) -> str:
        """The pipeline config (`model_index.json`) in diffusers' remote-code layout: `_class_name` is
        `["pipeline_lavit_decoder", "LaVITDecoderPipeline"]` and a component whose class lives in this package is
        `[module file, class]` (its code sits in the component's folder)."""
        config = json.loads(super().to_json_string())
        if type(self).__module__ == LaVITDecoderPipeline.__module__:
            config["_class_name"] = [LaVITDecoderPipeline.__module__.rpartition(".")[2], type(self).__name__]
        for key, value in config.items():
            if not key.startswith("_") and isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                if self._is_code_module(value[0]):
                    config[key] = [value[0].rpartition(".")[2], value[1]]
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load_config(cls, *args, **kwargs):
        """Read `model_index.json`, naming this package's own classes where the folder names its code files: this
        class then loads the folder with its own code, without `trust_remote_code`."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        package = LaVITDecoderPipeline.__module__.rpartition(".")[0]
        if isinstance(config.get("_class_name"), (list, tuple)):
            config["_class_name"] = config["_class_name"][1]
        for key, value in config.items():
            if not key.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2:
                if isinstance(value[0], str) and "." not in value[0] and cls._is_code_module(value[0]):
                    config[key] = [f"{package}.{value[0]}", value[1]]
        return loaded

    @property
    def decoder_type(self) -> str:
        return self.conditioning.config.decoder_type

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # -- checks -------------------------------------------------------------------------------------------------------

    def check_inputs(
        self,
        visual_token_ids,
        attention_mask,
        images,
        prompt_embeds,
        pooled_prompt_embeds,
        height,
        width,
        latents=None,
        callback_on_step_end_tensor_inputs=None,
        num_inference_steps=1,
        guidance_scale=1.0,
        num_images_per_prompt=1,
    ):
        for name, value in (
            ("num_inference_steps", num_inference_steps),
            ("num_images_per_prompt", num_images_per_prompt),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
            raise TypeError(f"`guidance_scale` must be a number, got {type(guidance_scale).__name__}.")
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(
                f"`guidance_scale` must be a finite number >= 0 (values <= 1 run no unconditional pass), got "
                f"{guidance_scale!r}."
            )
        if height % self.vae_scale_factor != 0 or width % self.vae_scale_factor != 0:
            raise ValueError(
                f"`height` and `width` have to be divisible by the VAE factor {self.vae_scale_factor} but are "
                f"{height} and {width}."
            )
        if callback_on_step_end_tensor_inputs is not None and not all(
            k in self._callback_tensor_inputs for k in callback_on_step_end_tensor_inputs
        ):
            unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has to be in {self._callback_tensor_inputs}, but found {unknown}"
            )
        given = [name for name, value in (("visual_token_ids", visual_token_ids), ("images", images),
                                          ("prompt_embeds", prompt_embeds)) if value is not None]  # fmt: skip
        if len(given) != 1:
            raise ValueError(
                "Provide exactly one of `visual_token_ids`, `images` or `prompt_embeds`, got "
                + (", ".join(f"`{g}`" for g in given) if given else "none")
                + "."
            )
        if visual_token_ids is not None:
            visual_token_ids, attention_mask = self.batch_visual_token_ids(visual_token_ids, attention_mask)
            check_visual_token_ids(visual_token_ids, attention_mask, self.conditioning.config.codebook_size)
        elif attention_mask is not None:
            raise ValueError("`attention_mask` goes with `visual_token_ids`.")
        if images is not None and self.vision_tokenizer is None:
            raise ValueError(
                "`images` input needs the pipeline's `vision_tokenizer` component to tokenize them; load or build "
                "the pipeline with one, or pass `visual_token_ids`."
            )
        if prompt_embeds is not None:
            expected = self.conditioning.cross_attention_dim
            if prompt_embeds.ndim != 3 or prompt_embeds.shape[-1] != expected:
                raise ValueError(
                    f"`prompt_embeds` must have shape [batch, length, {expected}], got {tuple(prompt_embeds.shape)}."
                )
            if self.decoder_type == "highres":
                if pooled_prompt_embeds is None:
                    raise ValueError("`prompt_embeds` for a highres decoder need `pooled_prompt_embeds` too.")
                if pooled_prompt_embeds.shape != (prompt_embeds.shape[0], self.conditioning.pooled_dim):
                    raise ValueError(
                        f"`pooled_prompt_embeds` must have shape [{prompt_embeds.shape[0]}, "
                        f"{self.conditioning.pooled_dim}], got {tuple(pooled_prompt_embeds.shape)}."
                    )
        elif pooled_prompt_embeds is not None:
            raise ValueError("`pooled_prompt_embeds` goes with `prompt_embeds`.")
        if latents is not None:
            shape = (self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
            if latents.ndim != 4 or tuple(latents.shape[1:]) != shape:
                raise ValueError(
                    f"`latents` must have shape [batch, {', '.join(map(str, shape))}], got {tuple(latents.shape)}."
                )

    # -- stages -------------------------------------------------------------------------------------------------------

    @classmethod
    def batch_visual_token_ids(
        cls, visual_token_ids: VisualTokenIds, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch form of `visual_token_ids`: one image's 1-D ids (as diffusers pipelines take one prompt) become a
        batch of one, a list of 1-D ids is padded (with its mask); a `[B, L]` tensor passes unchanged."""
        if isinstance(visual_token_ids, torch.Tensor):
            if visual_token_ids.ndim == 1:
                if attention_mask is not None and attention_mask.ndim != 1:
                    raise ValueError(
                        f"`attention_mask` of one image's ids must be 1-D, got shape {tuple(attention_mask.shape)}."
                    )
                return visual_token_ids[None], None if attention_mask is None else attention_mask[None]
            return visual_token_ids, attention_mask
        if attention_mask is not None:
            raise ValueError(
                "`attention_mask` goes with a padded `visual_token_ids` tensor, not with a list of per-image ids."
            )
        return cls.pad_visual_token_ids(visual_token_ids)

    @staticmethod
    def pad_visual_token_ids(visual_token_ids: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One 1-D id tensor per image (any lengths, empty allowed) -> right-padded `[B, L]` ids and their mask."""
        if isinstance(visual_token_ids, torch.Tensor) or not isinstance(visual_token_ids, Sequence):
            raise TypeError("visual_token_ids must be a [batch, length] tensor or a list of 1-D id tensors.")
        if len(visual_token_ids) == 0:
            raise ValueError("visual_token_ids is an empty list; give one id tensor per image.")
        for index, ids in enumerate(visual_token_ids):
            if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int32, torch.int64) or ids.ndim != 1:
                described = f"shape {tuple(ids.shape)}, {ids.dtype}" if isinstance(ids, torch.Tensor) else type(ids)
                raise TypeError(
                    f"visual_token_ids[{index}] must be a 1-D integer tensor of codebook ids, got {described}."
                )
        lengths = torch.tensor([len(ids) for ids in visual_token_ids])
        padded = torch.nn.utils.rnn.pad_sequence([ids.long() for ids in visual_token_ids], batch_first=True)
        mask = (torch.arange(padded.shape[1])[None, :] < lengths[:, None]).long()
        return padded, mask

    def preprocess_images(self, images: ImageInput, device: torch.device | None = None) -> torch.Tensor:
        """PIL / numpy / tensor images in [0, 1] (`[B, C, H, W]` or `[B, H, W, C]`) -> the tokenizer's pixel values:
        bicubic resize to its `image_size`, normalised with the pipeline's `image_mean` / `image_std`."""
        size = self.vision_tokenizer.config.image_size
        processor = VaeImageProcessor(vae_scale_factor=1, resample="bicubic", do_normalize=False, do_convert_rgb=True)
        pixels = processor.preprocess(images, height=size, width=size).clamp(0, 1)
        mean = torch.tensor(self.config.image_mean, dtype=pixels.dtype)[None, :, None, None]
        std = torch.tensor(self.config.image_std, dtype=pixels.dtype)[None, :, None, None]
        return ((pixels - mean) / std).to(device=device or self._execution_device, dtype=self.vision_tokenizer.dtype)

    @torch.no_grad()
    def tokenize_images(self, images: ImageInput, **tokenize_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> `(visual_token_ids, attention_mask)` through the `vision_tokenizer` component."""
        if self.vision_tokenizer is None:
            raise ValueError("This pipeline has no `vision_tokenizer` component to tokenize images with.")
        output = self.vision_tokenizer.tokenize(self.preprocess_images(images), **tokenize_kwargs)
        return output.token_ids, output.attention_mask

    def encode_visual_tokens(
        self,
        visual_token_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Token ids (or precomputed `prompt_embeds`) -> `(prompt_embeds, negative_prompt_embeds,
        pooled_prompt_embeds, negative_pooled_prompt_embeds, negative_attention_mask)`, repeated
        `num_images_per_prompt` times. Negatives are `None` without guidance; pooled ones are `None` for lowres."""
        device = device or self._execution_device
        if prompt_embeds is None:
            output = self.conditioning(
                visual_token_ids.to(device), None if attention_mask is None else attention_mask.to(device)
            )
            prompt_embeds, pooled_prompt_embeds = output.prompt_embeds, output.pooled_prompt_embeds
        dtype = self.unet.dtype
        prompt_embeds = prompt_embeds.to(device=device, dtype=dtype).repeat_interleave(num_images_per_prompt, dim=0)
        if pooled_prompt_embeds is not None:
            pooled_prompt_embeds = pooled_prompt_embeds.to(device=device, dtype=dtype)
            pooled_prompt_embeds = pooled_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        negative_prompt_embeds = negative_pooled_prompt_embeds = negative_attention_mask = None
        if do_classifier_free_guidance:
            negative_prompt_embeds, negative_pooled_prompt_embeds, negative_attention_mask = (
                self.conditioning.unconditional(prompt_embeds.shape[0])
            )
            if negative_prompt_embeds.shape[1] != prompt_embeds.shape[1]:  # precomputed embeds of another length
                raise ValueError(
                    f"`prompt_embeds` have {prompt_embeds.shape[1]} rows but the unconditional embeddings "
                    f"{negative_prompt_embeds.shape[1]}."
                )
            negative_prompt_embeds = negative_prompt_embeds.to(device=device, dtype=dtype)
            if negative_pooled_prompt_embeds is not None:
                negative_pooled_prompt_embeds = negative_pooled_prompt_embeds.to(device=device, dtype=dtype)
        return (
            prompt_embeds,
            negative_prompt_embeds,
            pooled_prompt_embeds,
            negative_pooled_prompt_embeds,
            negative_attention_mask,
        )

    # Copied from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion.StableDiffusionPipeline.prepare_extra_step_kwargs
    def prepare_extra_step_kwargs(self, generator, eta):
        accepts_eta = "eta" in set(inspect.signature(self.scheduler.step).parameters.keys())
        extra_step_kwargs = {}
        if accepts_eta:
            extra_step_kwargs["eta"] = eta
        accepts_generator = "generator" in set(inspect.signature(self.scheduler.step).parameters.keys())
        if accepts_generator:
            extra_step_kwargs["generator"] = generator
        return extra_step_kwargs

    # Copied from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion.StableDiffusionPipeline.prepare_latents
    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator, latents=None):
        shape = (
            batch_size,
            num_channels_latents,
            int(height) // self.vae_scale_factor,
            int(width) // self.vae_scale_factor,
        )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"You have passed a list of generators of length {len(generator)}, but requested an effective batch"
                f" size of {batch_size}. Make sure the batch size matches the length of the generators."
            )

        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device)

        # scale the initial noise by the standard deviation required by the scheduler
        latents = latents * self.scheduler.init_noise_sigma
        return latents

    def _get_add_time_ids(self, original_size, crops_coords_top_left, target_size, dtype, pooled_dim):
        """SDXL micro-conditioning: (original size, crop top-left, target size)."""
        add_time_ids = list(original_size + crops_coords_top_left + target_size)
        passed_add_embed_dim = self.unet.config.addition_time_embed_dim * len(add_time_ids) + pooled_dim
        expected_add_embed_dim = self.unet.add_embedding.linear_1.in_features
        if expected_add_embed_dim != passed_add_embed_dim:
            raise ValueError(
                f"The UNet expects an added time embedding vector of length {expected_add_embed_dim}, but a vector of "
                f"{passed_add_embed_dim} was created (pooled width {pooled_dim}); check the UNet's "
                "`projection_class_embeddings_input_dim` against the conditioning model's `highres_pooled_dim`."
            )
        return torch.tensor([add_time_ids], dtype=dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> VAE output in [-1, 1] (`[B, C, H, W]`)."""
        latents = latents.to(self.vae.dtype)
        has_mean = getattr(self.vae.config, "latents_mean", None) is not None
        has_std = getattr(self.vae.config, "latents_std", None) is not None
        if has_mean and has_std:
            channels = latents.shape[1]
            mean = torch.tensor(self.vae.config.latents_mean).view(1, channels, 1, 1).to(latents)
            std = torch.tensor(self.vae.config.latents_std).view(1, channels, 1, 1).to(latents)
            latents = latents * std / self.vae.config.scaling_factor + mean
        else:
            latents = latents / self.vae.config.scaling_factor
        return self.vae.decode(latents, return_dict=False)[0]

    # -- call ---------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        visual_token_ids: VisualTokenIds | None = None,
        attention_mask: torch.Tensor | None = None,
        images: ImageInput | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.0,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' convention)
    ) -> ImagePipelineOutput | tuple:
        r"""
        Decode visual tokens into images.

        Args:
            visual_token_ids (`torch.LongTensor` `[B, L]`, `[L]`, or a list of 1-D tensors): codebook indices,
                right-padded; one image's ids; or one tensor per image of any length.
            attention_mask (`torch.LongTensor` `[B, L]`, *optional*): 1 on real tokens (all ones when omitted); only
                with a padded tensor.
            images (PIL images, arrays or tensors in [0, 1]): tokenized with `vision_tokenizer` first (reconstruction).
            num_inference_steps (`int`): denoising steps (>= 1). guidance_scale (`float`): classifier-free guidance
                against all-zero (highres) or learned unconditional (lowres) conditioning, finite and >= 0; `<= 1`
                runs no unconditional pass.
            num_images_per_prompt (`int`): images drawn per id sequence (output order: all images of the first
                sequence, then the next).
            height, width (`int`): output size, multiples of `vae_scale_factor` (default: the UNet's sample size times
                `vae_scale_factor`).
            generator: a `torch.Generator` or one per image. latents: initial noise `[B, C, h, w]`.
            prompt_embeds, pooled_prompt_embeds: precomputed conditioning instead of token ids.
            original_size, crops_coords_top_left, target_size: SDXL time ids (highres; default (height, width), (0, 0)).
            output_type: `"pil"` (list of images), `"np"` (`[B, H, W, 3]` in [0, 1]), `"pt"` (`[B, 3, H, W]` in
                [0, 1]) or `"latent"` (`[B, C, H / f, W / f]`, no VAE decoding).
            callback_on_step_end: `fn(pipe, step, timestep, tensors) -> dict` after each step; it may replace the
                tensors named in `callback_on_step_end_tensor_inputs` and stop the loop with `pipe._interrupt = True`.

        Returns:
            [`~diffusers.ImagePipelineOutput`] or `(images,)`.
        """
        # 0. Default height and width
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        original_size = original_size or (height, width)
        target_size = target_size or (height, width)

        # 1. Check inputs. Raise error if not correct
        self.check_inputs(
            visual_token_ids,
            attention_mask,
            images,
            prompt_embeds,
            pooled_prompt_embeds,
            height,
            width,
            latents,
            callback_on_step_end_tensor_inputs,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            num_images_per_prompt=num_images_per_prompt,
        )
        if visual_token_ids is not None:
            visual_token_ids, attention_mask = self.batch_visual_token_ids(visual_token_ids, attention_mask)
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}.")
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device

        # 2. Tokenize images (reconstruction)
        if images is not None:
            visual_token_ids, attention_mask = self.tokenize_images(images)

        # 3. Encode visual tokens into UNet conditioning
        (
            prompt_embeds,
            negative_prompt_embeds,
            pooled_prompt_embeds,
            negative_pooled_prompt_embeds,
            negative_attention_mask,
        ) = self.encode_visual_tokens(
            visual_token_ids,
            attention_mask,
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=self.do_classifier_free_guidance,
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
        )
        batch_size = prompt_embeds.shape[0]

        # 4. Prepare timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 5. Prepare latent variables
        latents = self.prepare_latents(
            batch_size,
            self.unet.config.in_channels,
            height,
            width,
            prompt_embeds.dtype,
            device,
            generator,
            latents,
        )

        # 6. Prepare extra step kwargs
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 7. Prepare added time ids & embeddings (highres) or the unconditional mask (lowres)
        add_text_embeds = add_time_ids = encoder_attention_mask = None
        if self.decoder_type == "highres":
            add_text_embeds = pooled_prompt_embeds
            add_time_ids = self._get_add_time_ids(
                original_size,
                crops_coords_top_left,
                target_size,
                dtype=prompt_embeds.dtype,
                pooled_dim=int(pooled_prompt_embeds.shape[-1]),
            )
            if self.do_classifier_free_guidance:
                add_text_embeds = torch.cat([negative_pooled_prompt_embeds, add_text_embeds], dim=0)
                add_time_ids = torch.cat([add_time_ids, add_time_ids], dim=0)
            add_time_ids = add_time_ids.to(device).repeat(batch_size, 1)
        if self.do_classifier_free_guidance:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)
            if negative_attention_mask is not None:
                ones = torch.ones(batch_size, prompt_embeds.shape[1], dtype=torch.long, device=device)
                encoder_attention_mask = torch.cat([negative_attention_mask.to(device), ones], dim=0)

        # 8. Denoising loop
        num_warmup_steps = max(len(timesteps) - num_inference_steps * self.scheduler.order, 0)
        self._num_timesteps = len(timesteps)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue

                # expand the latents if we are doing classifier free guidance
                latent_model_input = torch.cat([latents] * 2) if self.do_classifier_free_guidance else latents
                latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)

                # predict the noise residual
                added_cond_kwargs = None
                if add_text_embeds is not None:
                    added_cond_kwargs = {"text_embeds": add_text_embeds, "time_ids": add_time_ids}
                noise_pred = self.unet(
                    latent_model_input,
                    t,
                    encoder_hidden_states=prompt_embeds,
                    encoder_attention_mask=encoder_attention_mask,
                    added_cond_kwargs=added_cond_kwargs,
                    return_dict=False,
                )[0]

                # perform guidance
                if self.do_classifier_free_guidance:
                    noise_pred_uncond, noise_pred_cond = noise_pred.chunk(2)
                    noise_pred = noise_pred_uncond + self.guidance_scale * (noise_pred_cond - noise_pred_uncond)

                # compute the previous noisy sample x_t -> x_t-1
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    callback_kwargs = {}
                    for k in callback_on_step_end_tensor_inputs:
                        callback_kwargs[k] = locals()[k]
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)

                    latents = callback_outputs.pop("latents", latents)
                    prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                    add_text_embeds = callback_outputs.pop("add_text_embeds", add_text_embeds)
                    add_time_ids = callback_outputs.pop("add_time_ids", add_time_ids)

                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        # 9. Decode latents and post-process
        if output_type == "latent":
            image = latents
        else:
            image = self.decode_latents(latents)
            image = self.image_processor.postprocess(image, output_type=output_type)

        # Offload all models
        self.maybe_free_model_hooks()

        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)


# ----------------------------------------------------------------------------------------------------------------
# Builders: a tiny random pipeline (tests, `gvt tiny-random`) and the LaVIT release's diffusion folders
# ----------------------------------------------------------------------------------------------------------------


def tiny_unet_config(conditioning: LaVITConditioningModel, sample_size: int = 16) -> dict[str, Any]:
    """The smallest working `UNet2DConditionModel` config for `conditioning` (SDXL-style for highres)."""
    config: dict[str, Any] = {
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (8,),
        "down_block_types": ("CrossAttnDownBlock2D",),
        "up_block_types": ("CrossAttnUpBlock2D",),
        "layers_per_block": 1,
        "norm_num_groups": 1,
        "attention_head_dim": 2,
        "use_linear_projection": True,
        "cross_attention_dim": conditioning.cross_attention_dim,
    }
    if conditioning.config.decoder_type == "highres":
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=conditioning.pooled_dim + 6 * 4,
        )
    return config


def two_level_unet_config(
    conditioning: LaVITConditioningModel, sample_size: int = 16, width: int = 32, attention_head_dim: int = 8
) -> dict[str, Any]:
    """A small two-level `UNet2DConditionModel` config (widths `width`, `2 * width`; cross-attention at the lower
    level) with real cross-attention capacity: the smallest UNet that learns to follow the visual tokens."""
    config = tiny_unet_config(conditioning, sample_size)
    config.update(
        block_out_channels=(width, 2 * width),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=attention_head_dim,
    )
    return config


def tiny_vae_config(sample_size: int = 32) -> dict[str, Any]:
    """A tiny `AutoencoderKL` config (scale factor 2, 4 latent channels)."""
    return {
        "sample_size": sample_size,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (8, 8),
        "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
        "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
        "latent_channels": 4,
        "norm_num_groups": 2,
        "layers_per_block": 1,
    }


def release_scheduler_config() -> dict[str, Any]:
    """DDIM with the SD / SDXL training betas (the release's scheduler config)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
    }


def build_tiny_decoder_pipeline(
    vision_tokenizer,
    decoder_type: Literal["highres", "lowres"] = "highres",
    seed: int = 0,
    sample_size: int = 16,
) -> LaVITDecoderPipeline:
    """A tiny random pipeline around `vision_tokenizer`'s codebook and decoder (images of `2 * sample_size` px)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        uncond = None
        if decoder_type == "lowres":
            length = min(8, vision_tokenizer.config.decoder_num_queries)
            uncond = torch.randn(1, length, vision_tokenizer.config.lowres_cross_attention_dim) * 0.1
        conditioning = LaVITConditioningModel.from_vision_tokenizer(vision_tokenizer, decoder_type, uncond)
        unet = UNet2DConditionModel(**tiny_unet_config(conditioning, sample_size))
        vae = AutoencoderKL(**tiny_vae_config(2 * sample_size))
    finally:
        torch.random.set_rng_state(generator_state)
    scheduler = DDIMScheduler(**release_scheduler_config())
    pipeline = LaVITDecoderPipeline(
        conditioning=conditioning, unet=unet, vae=vae, scheduler=scheduler, vision_tokenizer=vision_tokenizer
    )
    return pipeline if vision_tokenizer.dtype == torch.float32 else pipeline.to(dtype=vision_tokenizer.dtype)


RELEASE_FOLDERS = {"highres": "highres_pixel_decoding", "lowres": "pixel_decoding"}


def assemble_release_pipeline(
    release_dir: str | os.PathLike,
    vision_tokenizer,
    decoder_type: Literal["highres", "lowres"] = "highres",
    dtype: torch.dtype | None = None,
) -> LaVITDecoderPipeline:
    """Assemble the LaVIT release's diffusion decoder: `highres_pixel_decoding/{unet,vae,scheduler}` (or
    `pixel_decoding/...` + `uncond_embeddings.bin`) around the codebook and decoder of a converted `vision_tokenizer`.
    Save the result with `save_pretrained` and load it with `LaVITDecoderPipeline.from_pretrained`."""
    if decoder_type not in RELEASE_FOLDERS:
        raise ValueError(f"decoder_type must be 'highres' or 'lowres', got {decoder_type!r}.")
    folder = Path(release_dir) / RELEASE_FOLDERS[decoder_type]
    for sub in ("unet", "vae", "scheduler"):
        if not (folder / sub).is_dir():
            raise FileNotFoundError(f"{folder / sub} does not exist; is {release_dir} a LaVIT release folder?")
    uncond = None
    if decoder_type == "lowres":
        path = folder / "uncond_embeddings.bin"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (the lowres decoder's unconditional embeddings).")
        uncond = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(uncond, torch.Tensor):
            raise ValueError(f"{path} should hold a tensor, got {type(uncond).__name__}.")
    conditioning = LaVITConditioningModel.from_vision_tokenizer(vision_tokenizer, decoder_type, uncond)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    if unet.config.cross_attention_dim != conditioning.cross_attention_dim:
        raise ValueError(
            f"The UNet's cross_attention_dim ({unet.config.cross_attention_dim}) does not match the {decoder_type} "
            f"decoder's conditioning width ({conditioning.cross_attention_dim})."
        )
    if decoder_type == "highres" and unet.config.addition_embed_type != "text_time":
        raise ValueError("The highres UNet must use SDXL's addition_embed_type='text_time'.")
    pipeline = LaVITDecoderPipeline(
        conditioning=conditioning, unet=unet, vae=vae, scheduler=scheduler, vision_tokenizer=vision_tokenizer
    )
    return pipeline if dtype is None else pipeline.to(dtype=dtype)


__all__ = [
    "LaVITDecoderPipeline",
    "build_tiny_decoder_pipeline",
    "assemble_release_pipeline",
    "tiny_unet_config",
    "tiny_vae_config",
    "release_scheduler_config",
]
