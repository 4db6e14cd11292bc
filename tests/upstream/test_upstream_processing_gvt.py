"""transformers' ProcessorTesterMixin against GVTProcessor (a text tokenizer + GVTImageProcessor)."""

import unittest

import upstream_suites

from gvt import GVTImageProcessor, GVTProcessor
from gvt.tiny_random import CHAT_TEMPLATE, build_tiny_text_tokenizer

ProcessorTesterMixin = upstream_suites.import_suite("tests.test_processing_common").ProcessorTesterMixin


class GVTProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = GVTProcessor

    @classmethod
    def _setup_tokenizer(cls):
        return build_tiny_text_tokenizer()

    @classmethod
    def _setup_image_processor(cls):
        return GVTImageProcessor(size={"height": 28, "width": 28})

    @staticmethod
    def prepare_processor_dict():
        return {"chat_template": CHAT_TEMPLATE}
