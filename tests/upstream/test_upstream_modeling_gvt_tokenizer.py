"""transformers' ModelTesterMixin and ConfigTester against GVTVisionTokenizer, LaVIT (discrete) and GVT (resampler)."""

import unittest

import torch
import upstream_suites
from torch import nn

from gvt import GVTVisionConfig, GVTVisionTokenizer

common = upstream_suites.import_suite("tests.test_modeling_common")
configuration_common = upstream_suites.import_suite("tests.test_configuration_common")
ModelTesterMixin, floats_tensor = common.ModelTesterMixin, common.floats_tensor
ConfigTester = configuration_common.ConfigTester


class GVTVisionTokenizerModelTester:
    """A tiny tokenizer: 28 px images of 14 px patches (4 patches + CLS), two encoder layers of width 32."""

    def __init__(self, parent, tokenizer_type="lavit", batch_size=2, image_size=28, patch_size=14, is_training=False):
        self.parent = parent
        self.tokenizer_type = tokenizer_type
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = 3
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        # The tokenizer's forward computes no loss (its objective is `gvt.training.losses.tokenizer_loss`), so the
        # common training tests, which backpropagate `outputs.loss`, cannot apply (as for Janus' VQ model).
        self.is_training = is_training
        self.num_patches = (image_size // patch_size) ** 2
        self.seq_length = self.num_patches + 1  # the encoder's CLS token + one token per patch
        # `output_hidden_states` adds the encoder's hidden states and, for LaVIT, the token merger's.
        self.num_hidden_states_types = 2 if tokenizer_type == "lavit" else 1

    def get_config(self) -> GVTVisionConfig:
        sizes = {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": 37,
            "projection_dim": 24,
        }
        if self.tokenizer_type == "gvt":
            return GVTVisionConfig.from_preset(
                "tiny-gvt",
                **sizes,
                resampler_num_layers=2,
                resampler_num_attention_heads=4,
                resampler_head_dim=8,
                resampler_num_latents=3,
            )
        return GVTVisionConfig.from_preset(
            "tiny",
            **sizes,
            merger_num_layers=2,
            merger_num_attention_heads=4,
            merger_intermediate_size=37,
            codebook_size=16,
            codebook_dim=8,
            decoder_hidden_size=16,
            decoder_num_layers=1,
            decoder_num_attention_heads=4,
            decoder_intermediate_size=20,
            decoder_output_dim=32,
            decoder_num_queries=self.num_patches,
            decoder_max_positions=self.num_patches,
            lowres_cross_attention_dim=12,
            highres_cross_attention_dims=[12, 16],
            highres_pooled_dim=16,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), pixel_values

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values = self.prepare_config_and_inputs()
        inputs = {"pixel_values": pixel_values}
        if self.tokenizer_type == "lavit":
            # A random selector scores every patch near p(keep) = 0.5, so its decision (and with it the number of
            # tokens, possibly none) would hang on rounding: fix it, as `keep_mask` allows, to 3 and 2 kept patches.
            keep_mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]])
            inputs["keep_mask"] = keep_mask.repeat(self.batch_size // 2 + 1, 1)[: self.batch_size]
        return config, inputs


class GVTVisionTokenizerModelTest(ModelTesterMixin, unittest.TestCase):
    """The LaVIT tokenizer: encoder, token selector, token merger, quantizer, feature decoders."""

    all_model_classes = (GVTVisionTokenizer,)
    tokenizer_type = "lavit"
    test_resize_embeddings = False  # a vision model: no token embedding table to resize
    test_torch_exportable = False  # the number of kept tokens depends on the image (data-dependent shapes)

    def setUp(self):
        self.model_tester = GVTVisionTokenizerModelTester(self, tokenizer_type=self.tokenizer_type)
        self.config_tester = ConfigTester(
            self, config_class=GVTVisionConfig, has_text_modality=False, **self._config_tester_kwargs()
        )

    def _config_tester_kwargs(self):
        config = self.model_tester.get_config()
        keys = ("tokenizer_type", "image_size", "hidden_size", "projection_dim", "decoder_types")
        return {key: getattr(config, key) for key in keys}

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model_get_set_embeddings(self):
        # As for transformers' vision encoders (ViT, SigLIP): the input embedding is the patch embedding, a
        # convolution, not an `nn.Embedding`; no output embedding.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            patch_embedding = model.get_input_embeddings()
            self.assertIsInstance(patch_embedding, nn.Conv2d)
            self.assertIs(patch_embedding, model.encoder.patch_embedding)
            self.assertIsNone(model.get_output_embeddings())


class GVTResamplerTokenizerModelTest(GVTVisionTokenizerModelTest):
    """The GVT tokenizer: EVA-02 encoder (SwiGLU, sub-LN, 2-D RoPE) and perceiver resampler."""

    tokenizer_type = "gvt"
