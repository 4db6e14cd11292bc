"""Model cards: metadata that validates offline, and usage snippets that run on a tiny converted repo."""

from __future__ import annotations

import json
import os

import pytest
import torch
from huggingface_hub import ModelCard, metadata_load
from test_release_conversion import TEXT_VOCAB, write_fake_release, write_language_model

from gvt.model_cards import TAGS, build_model_card, extract_snippets, validate_model_card
from gvt.release_conversion import convert_gvt_release, convert_lavit_release


@pytest.fixture(scope="module")
def lavit_repo(reference_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("card-release") / "LaVIT-7B-v2"
    write_fake_release(root, reference_dir)
    out = tmp_path_factory.mktemp("card-out") / "lavit-hf"
    convert_lavit_release(root, out, num_heads=4, model_card={"repo_id": "my-org/LaVIT-7B-v2-hf", "kind": "lavit"})
    return out


@pytest.fixture(scope="module")
def gvt_repo(reference_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("card-gvt")
    write_language_model(base / "vicuna", TEXT_VOCAB, num_shards=1, fmt="safetensors", seed=2)
    out = base / "gvt-hf"
    convert_gvt_release(reference_dir / "original" / "gvt" / "gvt_checkpoint.safetensors", base / "vicuna", out,
                        num_heads=4, model_card={"repo_id": "my-org/GVT-hf", "kind": "gvt"})  # fmt: skip
    return out


def run_snippets(readme: str, repo_id: str, path, workdir) -> dict:
    snippets = extract_snippets(readme)
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(workdir)  # snippets may save files
    try:
        for snippet in snippets:
            assert repo_id in snippets[0]
            exec(compile(snippet.replace(repo_id, str(path)), "<model card snippet>", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace


def test_lavit_card_metadata_validates(lavit_repo):
    text = (lavit_repo / "README.md").read_text()
    data = validate_model_card(text)
    assert data.library_name == "transformers" and data.pipeline_tag == "image-text-to-text"
    assert data.base_model == "rain1011/LaVIT-7B-v2" and data.license == "llama2"
    assert set(TAGS) <= set(data.tags) and data.datasets
    assert {r.dataset_type for r in data.eval_results} >= {"coco", "vqav2", "gqa"}
    assert metadata_load(lavit_repo / "README.md")["pipeline_tag"] == "image-text-to-text"
    provenance = json.loads((lavit_repo / "conversion_provenance.json").read_text())
    assert provenance["vocabulary"]["visual_token_offset"] == TEXT_VOCAB + 2
    assert "mean of the released rows" in text and "133.3" in text and "decoder/" in text


def test_lavit_card_snippets_run(lavit_repo, tmp_path):
    text = (lavit_repo / "README.md").read_text()
    assert len(extract_snippets(text)) == 5
    namespace = run_snippets(text, "my-org/LaVIT-7B-v2-hf", lavit_repo, tmp_path)
    assert isinstance(namespace["caption"], str) and isinstance(namespace["answer"], str)
    assert namespace["codes"].numel() > 0
    assert namespace["picture"].size == (32, 32)
    assert (tmp_path / "lavit_text_to_image.png").is_file()


def test_gvt_card_snippets_run(gvt_repo, tmp_path):
    text = (gvt_repo / "README.md").read_text()
    data = validate_model_card(text)
    assert data.base_model == "lmsys/vicuna-7b-v1.1" and "gvt" in data.tags
    namespace = run_snippets(text, "my-org/GVT-hf", gvt_repo, tmp_path)
    assert namespace["features"].shape == (1, 8, 48)
    assert "text_to_image" not in text


def test_validation_names_the_problem():
    card = build_model_card(repo_id="my-org/x", kind="lavit")
    validate_model_card(card)
    with pytest.raises(ValueError, match="license"):
        validate_model_card(str(card).replace("license: llama2", "license: not-a-license"))
    with pytest.raises(ValueError, match="lacks"):
        validate_model_card(str(card).replace("pipeline_tag: image-text-to-text\n", ""))
    with pytest.raises(ValueError, match="repo id"):
        validate_model_card(build_model_card(kind="gvt", base_model="not a//repo"))
    with pytest.raises(ValueError, match="kind"):
        build_model_card(kind="emu")
    assert isinstance(ModelCard(str(card)).data.eval_results, list)


def test_card_without_summary_still_complete():
    card = build_model_card(kind="gvt")
    assert "Conversion provenance" in str(card) and len(extract_snippets(str(card))) == 4
    assert torch.__version__  # imports used by snippets are available
