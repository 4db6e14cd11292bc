"""Every shipped or saved repo loads with `trust_remote_code=True` in a Python without `gvt`: the embedded default
(through `gvt.default_model.export`), its decoder, and saved decoder pipelines (highres and lowres, with a vision
tokenizer component); and the package still loads the same folders with its own classes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.dynamic_module_utils import get_relative_import_files, get_relative_imports
from without_gvt import run_without_gvt

import gvt
from gvt.configuration_gvt import GVTVisionConfig
from gvt.data import build_synthetic_dataset
from gvt.default_model import DEFAULT_MODEL_DIR, export, load_default
from gvt.modeling_gvt import GVTVisionTokenizer
from gvt.pipeline_lavit_decoder import LaVITDecoderPipeline, build_tiny_decoder_pipeline

torch.set_num_threads(1)

QUESTION = "How many circles are there?"
TOKENS = [[1, 2, 3], [4]]  # two images' visual ids, of different lengths


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export(tmp_path_factory.mktemp("export") / "gvt-default")


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    for index, row in enumerate(build_synthetic_dataset(0, 0, 2, image_size=112, seed=0)["test"]):
        row["image"].convert("RGB").save(folder / f"scene{index}.png")
    return sorted(folder.glob("*.png"))


def decode(pipe, **kwargs) -> np.ndarray:
    generators = [torch.Generator().manual_seed(index) for index in range(len(TOKENS))]
    ids = [torch.tensor(tokens) for tokens in TOKENS]
    return pipe(visual_token_ids=ids, num_inference_steps=2, generator=generators, output_type="np", **kwargs).images


EXPORT_SCRIPT = """
import json, sys
import numpy as np, torch
from diffusers import DiffusionPipeline
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
torch.set_num_threads(1)
repo, question, tokens, *paths = sys.argv[1:]
model = AutoModelForImageTextToText.from_pretrained(repo, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
captioner = pipeline("image-to-text", model=repo, trust_remote_code=True)
captions = [out["generated_text"] for out in captioner(paths, max_new_tokens=12)]
answer = captioner(paths[0], text=question, max_new_tokens=4, return_full_text=False)[0]["generated_text"]
decoder = DiffusionPipeline.from_pretrained(repo + "/decoder", trust_remote_code=True)
decoder.set_progress_bar_config(disable=True)
ids = [torch.tensor(row) for row in json.loads(tokens)]
generators = [torch.Generator().manual_seed(index) for index in range(len(ids))]
pixels = decoder(visual_token_ids=ids, num_inference_steps=2, generator=generators, output_type="np").images
print(json.dumps({
    "classes": [type(obj).__module__ for obj in (model, processor, captioner, decoder, decoder.conditioning)],
    "captions": captions, "answer": answer, "pixels": pixels.tolist(),
}))
"""


def test_exported_default_runs_without_gvt(exported, scene_files, tmp_path):
    assert {"modeling_lavit.py", "processing_gvt.py", "pipeline_image_to_text.py"} <= {
        p.name for p in exported.iterdir()
    }
    result = run_without_gvt(EXPORT_SCRIPT, exported, QUESTION, json.dumps(TOKENS), *scene_files, workdir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith(("transformers_modules.", "diffusers_modules.")) for module in remote["classes"])

    default = load_default()
    captioner = default.captioner()
    assert remote["captions"] == [out["generated_text"] for out in captioner(scene_files, max_new_tokens=12)]
    local_answer = captioner(scene_files[0], text=QUESTION, max_new_tokens=4, return_full_text=False)
    assert remote["answer"] == local_answer[0]["generated_text"] and remote["answer"].strip().isdigit()
    decoder = LaVITDecoderPipeline.from_pretrained(DEFAULT_MODEL_DIR / "decoder")
    decoder.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(np.asarray(remote["pixels"]), decode(decoder), atol=1e-5, rtol=0)


def test_export_refuses_to_overwrite_or_nest(exported, tmp_path):
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        export(exported)
    with pytest.raises(ValueError, match="is inside the input"):
        export(DEFAULT_MODEL_DIR / "copy")
    with pytest.raises(ValueError, match="would contain the input"):
        export(DEFAULT_MODEL_DIR.parent)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        export(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"
    assert not (DEFAULT_MODEL_DIR / "copy").exists()


DECODER_SCRIPT = """
import json, sys
import numpy as np, torch
from diffusers import DiffusionPipeline
torch.set_num_threads(1)
tokens, *folders = sys.argv[1:]
ids = [torch.tensor(row) for row in json.loads(tokens)]
out = {}
for folder in folders:
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(index) for index in range(len(ids))]
    pixels = pipe(visual_token_ids=ids, num_inference_steps=2, generator=generators, output_type="np").images
    reconstruction = pipe(images=np.full((1, 32, 32, 3), 0.5, dtype=np.float32), num_inference_steps=1,
                          output_type="np", generator=torch.Generator().manual_seed(0)).images
    out[folder] = {"pixels": pixels.tolist(), "reconstruction": reconstruction.tolist(),
                   "vision_tokenizer": type(pipe.vision_tokenizer).__module__}
print(json.dumps(out))
"""


def test_saved_decoders_run_without_gvt_and_load_natively(tmp_path):
    torch.manual_seed(0)
    tokenizer = GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny")).eval()
    folders, expected = [], {}
    for decoder_type in ("highres", "lowres"):
        pipe = build_tiny_decoder_pipeline(tokenizer, decoder_type)
        pipe.set_progress_bar_config(disable=True)
        folder = tmp_path / decoder_type
        pipe.save_pretrained(folder)
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == ["pipeline_lavit_decoder", "LaVITDecoderPipeline"]
        assert index["conditioning"] == ["modeling_lavit_conditioning", "LaVITConditioningModel"]
        assert (folder / "conditioning" / "modeling_gvt.py").is_file() and (folder / "layers.py").is_file()
        native = LaVITDecoderPipeline.from_pretrained(folder)  # the package's own classes, no remote code
        native.set_progress_bar_config(disable=True)
        assert type(native) is LaVITDecoderPipeline and type(native.vision_tokenizer) is GVTVisionTokenizer
        expected[str(folder)] = decode(native)
        folders.append(folder)
    result = run_without_gvt(DECODER_SCRIPT, json.dumps(TOKENS), *folders, workdir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    for folder, pixels in expected.items():
        np.testing.assert_allclose(np.asarray(remote[folder]["pixels"]), pixels, atol=1e-5, rtol=0)
        assert np.asarray(remote[folder]["reconstruction"]).shape == (1, 32, 32, 3)
        assert remote[folder]["vision_tokenizer"].startswith("diffusers_modules.")


def test_native_load_of_older_decoder_folders(tmp_path):
    """Decoder folders written before the remote-code layout (`gvt.` module names, a plain `_class_name`) still load;
    so does the shipped one, whose code files are not in the package (the package is its code)."""
    older = tmp_path / "decoder"
    shutil.copytree(DEFAULT_MODEL_DIR / "decoder", older, ignore=shutil.ignore_patterns("*.py"))
    index = json.loads((older / "model_index.json").read_text())
    index.update(
        _class_name="LaVITDecoderPipeline", conditioning=["gvt.modeling_lavit_conditioning", "LaVITConditioningModel"]
    )
    (older / "model_index.json").write_text(json.dumps(index))
    for folder in (older, DEFAULT_MODEL_DIR / "decoder"):
        pipe = LaVITDecoderPipeline.from_pretrained(folder)
        assert isinstance(pipe.conditioning, gvt.LaVITConditioningModel)


def test_the_decoder_pipeline_module_imports_all_its_code_directly():
    """For a local folder diffusers copies only the files a custom pipeline imports directly, one level deep: the
    pipeline module must import from every module its code needs (else `trust_remote_code` loading fails)."""
    module_file = Path(gvt.pipeline_lavit_decoder.__file__)
    needed = {Path(path).stem for path in get_relative_import_files(module_file)}
    assert needed <= set(get_relative_imports(module_file))
