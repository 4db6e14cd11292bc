"""Tiny random repos: `gvt tiny-random`, Auto classes, remote code without `gvt`, an offline Hub cache, pipelines."""

import json
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    pipeline,
)
from without_gvt import run_without_gvt

import gvt
from gvt import GVTConfig, GVTImageToTextPipeline, GVTProcessor, LaVITForCausalLM
from gvt.cli import main as cli_main

torch.set_num_threads(1)

IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "tiny-lavit"
    assert cli_main(["tiny-random", str(out), "--mode", "features"]) == 0
    return out


def reference_logits(path) -> tuple[dict, torch.Tensor]:
    processor = AutoProcessor.from_pretrained(path)
    inputs = processor(images=IMAGE, text="describe the image", return_tensors="pt")
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    with torch.no_grad():
        return inputs, model(**inputs).logits


def test_tiny_random_repo_is_complete(repo):
    names = {path.name for path in repo.iterdir()}
    expected = {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "processor_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "modeling_lavit.py",
        "configuration_gvt.py",
        "modeling_gvt.py",
        "layers.py",
        "vocabulary.py",
        "processing_gvt.py",
        "image_processing_gvt.py",
        "pipeline_image_to_text.py",
    }
    assert expected <= names
    config = json.loads((repo / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_lavit.LaVITForCausalLM"
    assert config["auto_map"]["AutoConfig"] == "configuration_gvt.GVTConfig"
    assert config["image_input_mode"] == "features"
    assert not any(name.startswith(".tiny-lavit") for name in os.listdir(repo.parent))  # no staging leftovers
    assert cli_main(["tiny-random", str(repo)]) == 2  # refuses to overwrite


def test_every_auto_class_reloads_with_equal_outputs(repo):
    model, processor = gvt.tiny_random.build_tiny_random(image_input_mode="features", seed=0)
    inputs = processor(images=IMAGE, text="describe the image", return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits
    assert isinstance(AutoConfig.from_pretrained(repo), GVTConfig)
    assert isinstance(AutoProcessor.from_pretrained(repo), GVTProcessor)
    for auto in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
        loaded = auto.from_pretrained(repo).eval()
        assert isinstance(loaded, LaVITForCausalLM)
        with torch.no_grad():
            torch.testing.assert_close(loaded(**inputs).logits, expected, atol=1e-6, rtol=0)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    torch.set_num_threads(1)
    repo = sys.argv[1]
    model = AutoModelForImageTextToText.from_pretrained(repo, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    inputs = processor(images=image, text="describe the image", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    print(json.dumps({
        "module": type(model).__module__, "processor": type(processor).__module__,
        "input_ids": inputs["input_ids"].tolist(), "logits": logits[0, -1, :8].tolist(),
        "generated": generated.tolist(),
    }))
    """
)


def test_remote_code_loads_in_a_fresh_interpreter_without_gvt(repo, tmp_path):
    result = run_without_gvt(REMOTE_SCRIPT, repo, workdir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["module"].startswith("transformers_modules.") and remote["processor"].startswith(
        "transformers_modules."
    )
    inputs, logits = reference_logits(repo)
    model = AutoModelForImageTextToText.from_pretrained(repo).eval()
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert remote["input_ids"] == inputs["input_ids"].tolist()
    torch.testing.assert_close(torch.tensor(remote["logits"]), logits[0, -1, :8], atol=1e-5, rtol=0)
    assert remote["generated"] == generated.tolist()


def test_from_pretrained_via_an_offline_hub_cache(repo, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--org--tiny-lavit" / "snapshots" / revision
    shutil.copytree(repo, snapshot)
    (cache / "models--org--tiny-lavit" / "refs").mkdir()
    (cache / "models--org--tiny-lavit" / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    model = AutoModelForImageTextToText.from_pretrained("org/tiny-lavit", cache_dir=cache).eval()
    processor = AutoProcessor.from_pretrained("org/tiny-lavit", cache_dir=cache)
    inputs, expected = reference_logits(repo)
    with torch.no_grad():
        torch.testing.assert_close(
            model(**processor(images=IMAGE, text="describe the image", return_tensors="pt")).logits, expected
        )


def test_pipelines_caption_without_prompt_and_answer_questions(repo):
    answer = pipeline("image-text-to-text", model=str(repo))
    out = answer(images=IMAGE, text="what color is it ?", max_new_tokens=4)
    assert isinstance(out[0]["generated_text"], str) and out[0]["generated_text"].startswith("what color is it ?")
    chat = [{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "what"}]}]
    out = answer(text=chat, max_new_tokens=4)
    assert out[0]["generated_text"][-1]["role"] == "assistant"
    # An image alone: the repo's own image-to-text pipeline (remote code), or the class after `import gvt`.
    captioner = pipeline("image-to-text", model=str(repo), trust_remote_code=True)
    assert type(captioner).__name__ == "GVTImageToTextPipeline"
    caption = captioner(IMAGE, max_new_tokens=4)
    local = pipeline("image-text-to-text", model=str(repo), pipeline_class=GVTImageToTextPipeline)
    assert local(IMAGE, max_new_tokens=4)[0]["generated_text"] == caption[0]["generated_text"]
    inputs, _ = reference_logits(repo)
    model = AutoModelForImageTextToText.from_pretrained(repo).eval()
    processor = AutoProcessor.from_pretrained(repo)
    with torch.no_grad():
        sequences = model.generate(**processor(images=IMAGE, return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert caption[0]["generated_text"] == processor.batch_decode(sequences[:, 4:], skip_special_tokens=True)[0]
