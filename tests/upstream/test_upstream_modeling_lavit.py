"""transformers' ModelTesterMixin, GenerationTesterMixin and ConfigTester against LaVITForCausalLM, in its three
image input modes, with *expanded* sequences: every image occupies as many positions as it has tokens, so logits,
hidden states, attentions, cache and generated sequences all cover exactly the input length.

- "ids": `input_ids` hold text, `[IMG]`, the image's visual ids, `[/IMG]`; no pixels.
- "codebook" (ETT): the same ids; visual ids enter through the codebook and the MLP projector; no pixels.
- "features" (GVT tokenizer, a fixed number of latents per image): `input_ids` hold `image_token_id` once per latent,
  between `[IMG]` and `[/IMG]`, plus `pixel_values`.

GenerationTesterMixin is transformers' own only when `GVT_TRANSFORMERS_TESTS` names a transformers checkout (the sdist
does not ship `tests/generation/test_utils.py`); otherwise its stand-in contributes no tests.
"""

import unittest

import torch
import upstream_suites
from test_upstream_modeling_gvt_tokenizer import GVTVisionTokenizerModelTester

from gvt import GVTConfig, LaVITForCausalLM

common = upstream_suites.import_suite("tests.test_modeling_common")
ModelTesterMixin, ids_tensor = common.ModelTesterMixin, common.ids_tensor
ConfigTester = upstream_suites.import_suite("tests.test_configuration_common").ConfigTester
GenerationTesterMixin = upstream_suites.import_suite("tests.generation.test_utils").GenerationTesterMixin

# One small shared vocabulary: 0 <pad>, 1 <s>, 2 </s>, 3-8 words, 9 <image>, 10 [IMG], 11 [/IMG], 12-19 visual ids.
# (The visual ids lie above 4: some common tests append rows of random ids below 5, which must stay plain text.)
# "features" mode reads the placeholder 3 instead (words 4-9): as LLaVA's testers do, it lies below the bound to which
# the embedding-resizing tests clamp `input_ids` (vocabulary - 16 = 4), so that their images keep their placeholders;
# appended random rows may hold it without pixels, which embeds it as an ordinary token.
PAD, BOS, EOS = 0, 1, 2
FIRST_WORD = 3
IMAGE, IMAGE_START, IMAGE_END = 9, 10, 11
FEATURES_IMAGE = 3
VISUAL_TOKEN_OFFSET = 12
CODEBOOK_SIZE = 8


class LaVITForCausalLMModelTester:
    def __init__(
        self,
        parent,
        image_input_mode="ids",
        batch_size=2,
        text_length=5,
        num_image_tokens=3,
        is_training=True,
    ):
        self.parent = parent
        self.image_input_mode = image_input_mode
        self.batch_size = batch_size
        self.is_training = is_training
        tokenizer_type = "gvt" if image_input_mode == "features" else "lavit"
        self.vision_model_tester = GVTVisionTokenizerModelTester(parent, tokenizer_type=tokenizer_type)
        self.vocab_size = VISUAL_TOKEN_OFFSET + CODEBOOK_SIZE
        self.hidden_size = 24
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.num_key_value_heads = 2
        self.text_config = {
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": 37,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "max_position_embeddings": 64,
            "pad_token_id": PAD,
            "bos_token_id": BOS,
            "eos_token_id": EOS,
        }
        # "features" mode reads a fixed number of latents per image; the other modes read ids (any count).
        self.num_image_tokens = 3 if image_input_mode == "features" else num_image_tokens
        self.image_token_id = FEATURES_IMAGE if image_input_mode == "features" else IMAGE
        # words: [first_word, end_of_words)
        self.first_word, self.end_of_words = (
            (FEATURES_IMAGE + 1, IMAGE_START) if image_input_mode == "features" else (FIRST_WORD, IMAGE)
        )
        self.seq_length = text_length + 2 + self.num_image_tokens  # text + [IMG] image tokens [/IMG]

    def get_vision_config(self):
        vision_config = self.vision_model_tester.get_config()
        vision_config.projection_dim = self.hidden_size
        if vision_config.tokenizer_type == "gvt":
            vision_config.resampler_num_latents = self.num_image_tokens
        else:
            vision_config.codebook_size = CODEBOOK_SIZE
        return vision_config

    def get_config(self) -> GVTConfig:
        return GVTConfig(
            vision_config=self.get_vision_config(),
            text_config=self.text_config,
            image_token_id=self.image_token_id,
            image_start_token_id=IMAGE_START,
            image_end_token_id=IMAGE_END,
            visual_token_offset=VISUAL_TOKEN_OFFSET,
            image_input_mode=self.image_input_mode,
        )

    def prepare_config_and_inputs(self):
        config = self.get_config()
        words = self.end_of_words - self.first_word
        input_ids = ids_tensor([self.batch_size, self.seq_length], words) + self.first_word
        if self.image_input_mode == "features":
            image_tokens = torch.full((self.batch_size, self.num_image_tokens), self.image_token_id, dtype=torch.long)
        else:
            image_tokens = ids_tensor([self.batch_size, self.num_image_tokens], CODEBOOK_SIZE) + VISUAL_TOKEN_OFFSET
        input_ids[:, 0] = IMAGE_START
        input_ids[:, 1 : 1 + self.num_image_tokens] = image_tokens
        input_ids[:, 1 + self.num_image_tokens] = IMAGE_END
        attention_mask = torch.ones_like(input_ids)
        pixel_values = None
        if self.image_input_mode == "features":
            _, pixel_values = self.vision_model_tester.prepare_config_and_inputs()
        return config, input_ids, attention_mask, pixel_values

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, attention_mask, pixel_values = self.prepare_config_and_inputs()
        inputs_dict = {"input_ids": input_ids, "attention_mask": attention_mask}
        if pixel_values is not None:
            inputs_dict["pixel_values"] = pixel_values
        return config, inputs_dict


class LaVITForCausalLMIdsModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """LaVIT reading visual ids through its embedding table (pretraining, image generation)."""

    all_model_classes = (LaVITForCausalLM,)
    image_input_mode = "ids"
    _is_composite = True
    test_torch_exportable = False  # an image's token count depends on the image (data-dependent shapes)
    # The base model (`base_model_prefix = "language_model"`) is the Llama inside, with a Llama config: a LaVIT cannot
    # be built from its checkpoint alone (no vision tokenizer, no image token ids), and `from_pretrained` says so
    # instead of reporting missing keys (tests/test_lavit.py::test_a_language_model_checkpoint_alone_is_refused).
    test_missing_keys = False

    def setUp(self):
        self.model_tester = LaVITForCausalLMModelTester(self, image_input_mode=self.image_input_mode)
        self.config_tester = ConfigTester(
            self,
            config_class=GVTConfig,
            has_text_modality=False,
            common_properties=["image_token_id", "image_start_token_id", "image_end_token_id", "visual_token_offset"],
            image_input_mode=self.image_input_mode,
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        # The mixin adds causal-LM labels only for classes named in transformers' static model mappings, which
        # `AutoModelForCausalLM.register` does not extend: add the same labels it gives every causal LM.
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and "labels" not in inputs_dict:
            inputs_dict["labels"] = torch.zeros(
                (self.model_tester.batch_size, self.model_tester.seq_length), dtype=torch.long
            )
        return inputs_dict

    # Inputs of the "ids" and "codebook" testers are pre-tokenized: they hold visual ids and no pixels, so the forward
    # never runs the vision tokenizer. The "features" tester (with pixels) runs these tests.

    def test_multimodal_outputs_are_returned(self):
        if self.image_input_mode != "features":
            self.skipTest(reason="Pre-tokenized inputs (visual ids, no pixels) run no image encoder: no image_outputs")
        super().test_multimodal_outputs_are_returned()

    def _skip_if_vision_tokenizer_idle(self):
        if self.image_input_mode != "features":
            self.skipTest(
                reason="The test watches the first GradientCheckpointingLayer in module order, the vision tokenizer's "
                "first encoder layer, which pre-tokenized inputs (visual ids, no pixels) never run"
            )

    def test_training_gradient_checkpointing(self):
        self._skip_if_vision_tokenizer_idle()
        super().test_training_gradient_checkpointing()

    def test_training_gradient_checkpointing_use_reentrant_false(self):
        self._skip_if_vision_tokenizer_idle()
        super().test_training_gradient_checkpointing_use_reentrant_false()

    def test_training_gradient_checkpointing_use_reentrant_true(self):
        self._skip_if_vision_tokenizer_idle()
        super().test_training_gradient_checkpointing_use_reentrant_true()


class LaVITForCausalLMCodebookModelTest(LaVITForCausalLMIdsModelTest):
    """ETT: visual ids enter through the codebook and the MLP projector."""

    image_input_mode = "codebook"


class LaVITForCausalLMFeaturesModelTest(LaVITForCausalLMIdsModelTest):
    """GVT: a fixed number of resampled latents per image, through the tokenizer's projection."""

    image_input_mode = "features"
