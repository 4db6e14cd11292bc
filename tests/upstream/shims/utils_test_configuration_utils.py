"""gvt shim for transformers' `tests/utils/test_configuration_utils.py`, which the transformers sdist does not ship.

`ConfigTester.check_config_arguments_init` reads `config_common_kwargs` from here: keyword arguments that every
`PreTrainedConfig` accepts, each set to a value other than its default, so that the test sees whether a config class
passes them through to its parent.
"""

GVT_SHIM = True

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 3,
    "architectures": ["GVTCommonKwargsModel"],
    "id2label": {0: "negative", 1: "positive"},
    "label2id": {"negative": 0, "positive": 1},
    "problem_type": "single_label_classification",
}
