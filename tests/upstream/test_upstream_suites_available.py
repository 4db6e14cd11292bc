"""The upstream common testers must be there: without them the gvt testers beside this file are not collected."""

import upstream_suites


def test_transformers_common_suites_are_importable():
    suites = upstream_suites.load_transformers_suites()  # raises UpstreamUnavailable with the reason
    modeling = upstream_suites.import_suite("tests.test_modeling_common")
    assert hasattr(modeling, "ModelTesterMixin")
    assert suites.sdist_tests.joinpath("test_processing_common.py").is_file()
