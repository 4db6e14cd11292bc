"""diffusers' PipelineTesterMixin against LaVITDecoderPipeline (visual token ids -> images), highres and lowres.

diffusers' sdist ships no test suite: this module runs only when `GVT_DIFFUSERS_TESTS` names a diffusers checkout
(`scripts/run_upstream_suites.py --diffusers-repo DIR`); otherwise it is skipped for that reason.

As in diffusers' own pipeline tests, `get_dummy_inputs` describes one sample (`visual_token_ids`: one image's 1-D ids)
and the mixin batches it as a list of samples.
"""

import unittest

import pytest
import torch
import upstream_suites
from test_upstream_modeling_gvt_tokenizer import GVTVisionTokenizerModelTester

from gvt import GVTVisionTokenizer, LaVITDecoderPipeline, build_tiny_decoder_pipeline

if not upstream_suites.diffusers_suites_available():
    pytest.skip(
        f"diffusers' tests/pipelines/test_pipelines_common.py is not in its sdist; set {upstream_suites.ENV_DIFFUSERS_TESTS} "
        "to a diffusers checkout (scripts/run_upstream_suites.py --diffusers-repo DIR) to run PipelineTesterMixin",
        allow_module_level=True,
    )

PipelineTesterMixin = upstream_suites.import_suite(
    "diffusers_tests.pipelines.test_pipelines_common"
).PipelineTesterMixin


class LaVITDecoderPipelineHighresTest(PipelineTesterMixin, unittest.TestCase):
    """The SDXL-style decoder (LaVIT's highres pixel decoding)."""

    pipeline_class = LaVITDecoderPipeline
    decoder_type = "highres"
    params = frozenset(
        [
            "visual_token_ids",
            "attention_mask",
            "height",
            "width",
            "guidance_scale",
            "prompt_embeds",
            "pooled_prompt_embeds",
        ]
    )
    batch_params = frozenset(["visual_token_ids"])
    callback_cfg_params = frozenset(["prompt_embeds", "add_text_embeds", "add_time_ids"])
    test_xformers_attention = False  # no xformers on CPU

    def get_dummy_components(self):
        torch.manual_seed(0)
        vision_config = GVTVisionTokenizerModelTester(self).get_config()
        vision_tokenizer = GVTVisionTokenizer(vision_config).eval()
        pipeline = build_tiny_decoder_pipeline(vision_tokenizer, decoder_type=self.decoder_type, seed=0, sample_size=8)
        return dict(pipeline.components)

    def get_dummy_inputs(self, device, seed=0):
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return {
            "visual_token_ids": torch.tensor([3, 1, 4, 1], device=device),
            "generator": generator,
            "num_inference_steps": 2,
            "guidance_scale": 5.0,
            "output_type": "np",
        }


class LaVITDecoderPipelineLowresTest(LaVITDecoderPipelineHighresTest):
    """The SD-1.5-style decoder (LaVIT's lowres pixel decoding, learned unconditional embeddings)."""

    decoder_type = "lowres"
    callback_cfg_params = frozenset(["prompt_embeds"])
