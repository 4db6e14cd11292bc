"""Full-release conversion (LaVIT-7B-v2 layout, GVT + Llama): a fake release built from the reference fixture, a tiny
Llama folder (sharded `.bin`, `tokenizer.json`) and tiny diffusers folders converts into one repo that loads with the
Auto classes and the decoder pipeline and reproduces the fixture; broken releases fail naming the tensor and write
nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

import gvt
from gvt import GVTVisionTokenizer, LaVITDecoderPipeline, LaVITForCausalLM
from gvt.conversion import build_tokenizer, load_lavit_release
from gvt.pipeline_lavit_decoder import build_tiny_decoder_pipeline
from gvt.release_conversion import (
    ShardedSafetensorsWriter,
    convert_lavit_release,
    extend_rows,
    parse_size,
    verify_conversion,
)
from gvt.tiny_random import _WORDS

REPO = Path(__file__).resolve().parents[1]
TEXT_VOCAB = 256
LLM_SIZES = dict(
    hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


# ----------------------------------------------------------------------------------------------------------------
# Fake releases
# ----------------------------------------------------------------------------------------------------------------


def build_llama_tokenizer(vocab_size: int = TEXT_VOCAB) -> PreTrainedTokenizerFast:
    """A Llama-like word-level tokenizer (`<unk>`=0, `<s>`=1, `</s>`=2, BOS prepended), no image tokens."""
    words = ["<unk>", "<s>", "</s>"] + [w for w in dict.fromkeys(_WORDS) if w not in ("<unk>", "<s>", "</s>")]
    words += [f"t{i}" for i in range(vocab_size - len(words))]
    vocab = {word: index for index, word in enumerate(words[:vocab_size])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def write_language_model(
    directory: Path,
    vocab_size: int,
    num_shards: int = 2,
    fmt: str = "bin",
    seed: int = 0,
    text_vocab: int = TEXT_VOCAB,
    **sizes,
) -> dict[str, torch.Tensor]:
    """A tiny `LlamaForCausalLM` saved the way the release ships it: `pytorch_model-0000k-of-0000n.bin` + index (or
    safetensors), `config.json`, `tokenizer.json`. Returns its state dict."""
    directory.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(vocab_size=vocab_size, **{**LLM_SIZES, **sizes}, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.05)
    config.save_pretrained(directory)
    build_llama_tokenizer(text_vocab).save_pretrained(directory)
    state_dict = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    write_sharded(directory, state_dict, num_shards, fmt)
    return state_dict


def write_sharded(directory: Path, state_dict: dict, num_shards: int, fmt: str) -> None:
    for old in list(directory.glob("pytorch_model*")) + list(directory.glob("model*.safetensors*")):
        old.unlink()
    keys = list(state_dict)
    groups = [keys[i::num_shards] for i in range(num_shards)]
    stem, suffix = ("pytorch_model", "bin") if fmt == "bin" else ("model", "safetensors")
    weight_map = {}
    for number, group in enumerate(groups, start=1):
        name = f"{stem}-{number:05d}-of-{num_shards:05d}.{suffix}" if num_shards > 1 else f"{stem}.{suffix}"
        part = {k: state_dict[k] for k in group}
        if fmt == "bin":
            torch.save(part, directory / name)
        else:
            save_file(part, str(directory / name))
        weight_map.update(dict.fromkeys(group, name))
    if num_shards > 1:
        index = {"metadata": {}, "weight_map": weight_map}
        (directory / f"{stem}.{suffix}.index.json").write_text(json.dumps(index))


def write_fake_release(root: Path, reference_dir: Path, num_shards: int = 2, decoders: bool = True) -> dict:
    """The LaVIT-7B-v2 layout at fixture size: `.bin` pickles of the fixture's tokenizer files, a tiny Llama of
    text + 2 + 512 rows, tiny diffusers folders. Returns `{"llm": state_dict, "tokenizer": GVTVisionTokenizer}`."""
    for path in (reference_dir / "original").rglob("*.safetensors"):
        relative = path.relative_to(reference_dir / "original")
        if relative.parts[0] == "gvt":
            continue
        target = (root / relative).with_suffix(".bin")
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(load_file(str(path)), target)
    tokenizer = build_tokenizer(*load_lavit_release(root, num_heads=4))
    llm = write_language_model(root / "language_model", TEXT_VOCAB + 2 + tokenizer.config.codebook_size, num_shards)
    if decoders:
        for decoder_type, folder in (("highres", "highres_pixel_decoding"), ("lowres", "pixel_decoding")):
            pipe = build_tiny_decoder_pipeline(tokenizer, decoder_type, seed=5)
            pipe.unet.save_pretrained(root / folder / "unet", safe_serialization=False)
            pipe.vae.save_pretrained(root / folder / "vae")
            pipe.scheduler.save_pretrained(root / folder / "scheduler")
            if decoder_type == "lowres":
                torch.save(
                    pipe.conditioning.uncond_embeddings.detach().clone(), root / folder / "uncond_embeddings.bin"
                )
    return {"llm": llm, "tokenizer": tokenizer}


def run_script(*args):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def release(reference_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "LaVIT-7B-v2"
    return root, write_fake_release(root, reference_dir)


@pytest.fixture(scope="module")
def converted(release, reference_dir, tmp_path_factory):
    """The full conversion through the script, with small output shards and --verify."""
    root, _ = release
    out = tmp_path_factory.mktemp("converted") / "lavit-hf"
    result = run_script(
        "conversion_scripts/convert_lavit_to_hf.py", "--input-dir", root, "--output-dir", out, "--num-heads", 4,
        "--max-shard-size", "150KB", "--verify", reference_dir / "io.safetensors",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result.stdout


# ----------------------------------------------------------------------------------------------------------------
# LaVIT
# ----------------------------------------------------------------------------------------------------------------


def test_full_repo_layout(converted):
    out, _ = converted
    names = {path.name for path in out.iterdir()}
    expected = {
        "config.json", "model.safetensors.index.json", "generation_config.json", "image_generation_config.json",
        "processor_config.json", "tokenizer.json", "tokenizer_config.json", "README.md", "conversion_provenance.json",
        "modeling_lavit.py", "configuration_gvt.py", "modeling_gvt.py", "vocabulary.py", "processing_gvt.py",
        "image_processing_gvt.py", "pipeline_image_to_text.py", "decoder", "decoder_lowres",
    }  # fmt: skip
    assert expected <= names, expected - names
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((out / name).is_file() for name in shards)
    for name in shards:  # streamed shards respect the size limit (a lone larger tensor gets its own shard)
        with safe_open(str(out / name), "pt") as handle:
            sizes = [handle.get_slice(k).get_shape() for k in handle.keys()]
        assert len(sizes) == 1 or (out / name).stat().st_size <= parse_size("150KB") + 4096
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_lavit.LaVITForCausalLM"
    assert config["image_input_mode"] == "ids"
    assert not any(p.name.startswith(".lavit-hf") for p in out.parent.iterdir())  # no staging leftovers


def test_converted_model_reproduces_fixture_and_release_weights(converted, release, reference_io):
    out, stdout = converted
    _, parts = release
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert isinstance(model, LaVITForCausalLM)
    tokens = model.vision_tokenizer.tokenize(reference_io["pixel_values"])
    assert torch.equal(tokens.token_ids[tokens.attention_mask.bool()], reference_io["codes"])
    assert tokens.attention_mask.sum(1).tolist() == reference_io["token_counts"].tolist()

    # language model: every released tensor unchanged; one appended vocabulary row = the mean of the released rows
    state = model.language_model.state_dict()
    for key, tensor in parts["llm"].items():
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            rows = tensor.shape[0]
            assert torch.equal(state[key][:rows], tensor)
            torch.testing.assert_close(state[key][rows:], tensor.mean(0, keepdim=True))
        else:
            assert torch.equal(state[key], tensor), key
    # the verification table printed by --verify
    for name in ("codes", "token_counts", "quantized", "continuous_features", "decoder_prompt_embeds"):
        line = next(line for line in stdout.splitlines() if line.startswith(name + " "))
        assert line.rstrip().endswith(("ok", "ok (mismatches)")), line


def test_processor_vocabulary_matches_the_release_ids(converted, reference_io):
    out, _ = converted
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    config = model.config
    rows = TEXT_VOCAB + 2 + 512
    assert (config.image_start_token_id, config.image_end_token_id) == (TEXT_VOCAB, TEXT_VOCAB + 1)
    assert config.visual_token_offset == TEXT_VOCAB + 2
    assert config.image_token_id == rows and config.text_config.vocab_size == rows + 1
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids(["[IMG]", "[/IMG]", "<visual_0>", "<visual_511>", "<image>"]) == [
        TEXT_VOCAB, TEXT_VOCAB + 1, TEXT_VOCAB + 2, TEXT_VOCAB + 2 + 511, rows,
    ]  # fmt: skip
    # pre-tokenized ids hold exactly the fixture's codes, shifted by the offset, between [IMG] and [/IMG]
    images = list(reference_io["raw_images"].permute(0, 2, 3, 1).numpy())
    ids = processor(images=images[:1], text="", vision_tokenizer=model.vision_tokenizer, return_tensors="pt")
    sequence = ids["input_ids"][0].tolist()
    start, end = sequence.index(TEXT_VOCAB), sequence.index(TEXT_VOCAB + 1)
    expected_codes = reference_io["codes"][: int(reference_io["token_counts"][0])]
    assert sequence[start + 1 : end] == (expected_codes + TEXT_VOCAB + 2).tolist()
    # captioning with the saved defaults
    inputs = processor(images=images[:1], text="describe the image", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4, num_beams=1, min_new_tokens=1)
    assert output.shape[1] > inputs["input_ids"].shape[1]
    assert GenerationConfig.from_pretrained(out).num_beams == 2
    assert GenerationConfig.from_pretrained(out, "image_generation_config.json").guidance_scale == 4.0


def test_decoder_pipeline_in_subfolder(converted, release):
    out, _ = converted
    _, parts = release
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])

    def run(p):
        return p(visual_token_ids=ids, attention_mask=mask, num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images  # fmt: skip

    for folder, decoder_type in (("decoder", "highres"), ("decoder_lowres", "lowres")):
        pipe = LaVITDecoderPipeline.from_pretrained(out / folder)
        pipe.set_progress_bar_config(disable=True)
        assert pipe.decoder_type == decoder_type and pipe.vision_tokenizer is None
        reference = build_tiny_decoder_pipeline(parts["tokenizer"], decoder_type, seed=5)
        reference.set_progress_bar_config(disable=True)
        reference.conditioning.eval()
        assert torch.equal(torch.as_tensor(run(pipe)), torch.as_tensor(run(reference)))


def test_understanding_mode_and_dtype(release, reference_dir, reference_io, tmp_path):
    root, _ = release
    out = tmp_path / "understanding"
    summary = convert_lavit_release(root, out, understanding=True, num_heads=4, dtype="bf16", decoders=False)
    assert summary.image_input_mode == "features" and summary.understanding
    shards = set(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"].values())
    for name in shards:
        with safe_open(str(out / name), "pt") as handle:
            assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"BF16"}
    model = LaVITForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        features = model.vision_tokenizer.encode_features(reference_io["pixel_values"])
    assert features.attention_mask.sum(1).tolist() == reference_io["token_counts_understanding"].tolist()
    assert not (out / "decoder").exists()
    # verification in bf16 reports the (expected) rounding errors as failures, by name
    results = {r.name: r for r in verify_conversion(out, reference_dir / "io.safetensors")}
    assert set(results) == {"token_counts_understanding", "continuous_features_understanding"}


def assert_captions_in_bfloat16(out: Path, reference_io) -> None:
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.bfloat16).eval()
    assert model.dtype == torch.bfloat16 and model.vision_tokenizer.dtype == torch.bfloat16
    images = list(reference_io["raw_images"].permute(0, 2, 3, 1).numpy())
    inputs = processor(images=images[:2], text=["describe the image", "how many circle ?"], return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=4, min_new_tokens=2, num_beams=1, do_sample=False)
    assert output.shape[0] == 2 and output.shape[1] >= inputs["input_ids"].shape[1] + 2
    assert (output[:, -2:] < model.config.visual_token_offset).all()  # the answer is text, never visual ids


@pytest.mark.parametrize("understanding", [False, True], ids=["ids", "features"])
def test_bf16_conversion_captions(release, reference_io, tmp_path, understanding):
    """`convert_lavit_to_hf.py --dtype bf16` writes bfloat16 shards, and the repo captions in bfloat16 (issue 12)."""
    root, _ = release
    out = tmp_path / "lavit-bf16"
    result = run_script(
        "conversion_scripts/convert_lavit_to_hf.py", "--input-dir", root, "--output-dir", out, "--num-heads", 4,
        "--dtype", "bf16", "--no-decoders", "--no-model-card", *(["--understanding"] if understanding else []),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "conversion_provenance.json").read_text())["dtype"] == "bfloat16"
    assert_captions_in_bfloat16(out, reference_io)


def _break_llm(root: Path, llm: dict, drop: str | None = None, add: str | None = None) -> None:
    state = dict(llm)
    if drop:
        del state[drop]
    if add:
        state[add] = torch.zeros(3)
    write_sharded(root / "language_model", state, num_shards=2, fmt="bin")


@pytest.mark.parametrize(
    "where, change, message",
    [
        ("llm", "drop", r"missing keys: \['language_model\.model\.layers\.1\.mlp\.down_proj\.weight'\]"),
        (
            "llm",
            "add",
            r"Unexpected keys in the language model checkpoint \(index\): \['model\.layers\.0\.extra_gate'\]",
        ),
        ("tokenizer", "drop", r"missing keys: \['token_merger\.layers\.0\.mlp\.fc2\.bias'\]"),
        ("tokenizer", "add", r"Unexpected keys in the tokenizer_encoder checkpoint: \['causal_encoder\.extra_gate'\]"),
    ],
)
def test_missing_or_extra_tensor_fails_naming_it(release, tmp_path, where, change, message):
    root, parts = release
    broken = tmp_path / "broken"
    for path in root.rglob("*"):
        if path.is_file():
            target = broken / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    if where == "llm":
        key = "model.layers.1.mlp.down_proj.weight" if change == "drop" else "model.layers.0.extra_gate"
        for link in (broken / "language_model").glob("pytorch_model*"):
            link.unlink()
        _break_llm(broken, parts["llm"], drop=key if change == "drop" else None, add=key if change == "add" else None)
    else:
        path = broken / "visual_tokenizer" / "tokenizer_encoder.bin"
        state = torch.load(path, weights_only=True)
        path.unlink()
        if change == "drop":
            del state["causal_encoder.blocks.0.mlp.fc2.bias"]
        else:
            state["causal_encoder.extra_gate"] = torch.zeros(3)
        torch.save(state, path)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        convert_lavit_release(broken, out, num_heads=4, decoders=False)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_unindexed_extra_tensor_is_caught_while_streaming(release, tmp_path):
    root, parts = release
    (tmp_path / "rel").mkdir()
    for sub in ("visual_tokenizer",):
        (tmp_path / "rel" / sub).symlink_to(root / sub)
    llm_dir = tmp_path / "rel" / "language_model"
    llm_dir.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (llm_dir / name).symlink_to(root / "language_model" / name)
    state = {**parts["llm"], "model.stray": torch.zeros(2)}
    write_sharded(llm_dir, state, num_shards=1, fmt="safetensors")
    with pytest.raises(ValueError, match=r"\['model\.stray'\]"):
        convert_lavit_release(tmp_path / "rel", tmp_path / "out", num_heads=4, decoders=False)
    assert not (tmp_path / "out").exists()


def test_script_failure_exits_nonzero_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = run_script("conversion_scripts/convert_lavit_to_hf.py", "--input-dir", tmp_path / "nowhere",
                        "--output-dir", out)  # fmt: skip
    assert result.returncode == 1 and "No LaVIT release folder" in result.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------------------
# GVT
# ----------------------------------------------------------------------------------------------------------------


def test_gvt_with_language_model(reference_dir, reference_io, tmp_path):
    llm_dir = tmp_path / "vicuna"
    llm = write_language_model(llm_dir, TEXT_VOCAB, num_shards=2, fmt="safetensors", seed=2)
    out = tmp_path / "gvt-hf"
    result = run_script(
        "conversion_scripts/convert_gvt_to_hf.py", "--checkpoint",
        reference_dir / "original" / "gvt" / "gvt_checkpoint.safetensors", "--language-model", llm_dir,
        "--output-dir", out, "--num-heads", 4, "--verify", reference_dir / "io.safetensors",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "gvt_projected" in result.stdout and "FAIL" not in result.stdout
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert model.config.image_input_mode == "features"
    with torch.no_grad():
        features = model.vision_tokenizer.encode_features(reference_io["pixel_values"]).features
    torch.testing.assert_close(features, reference_io["gvt_projected"], atol=1e-4, rtol=0)
    rows = model.language_model.get_input_embeddings().weight
    assert rows.shape[0] == TEXT_VOCAB + 3
    assert torch.equal(rows[:TEXT_VOCAB], llm["model.embed_tokens.weight"])
    processor = AutoProcessor.from_pretrained(out)
    images = list(reference_io["raw_images"].permute(0, 2, 3, 1).numpy())
    inputs = processor(images=images[:2], text=["how many circle ?", "is there a square ?"], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=3, num_beams=1, min_new_tokens=1)
    assert output.shape[0] == 2


# ----------------------------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------------------------


def test_shard_writer_and_sizes(tmp_path):
    assert parse_size("2GB") == 2 * 10**9 and parse_size("64KiB") == 65536 and parse_size(10) == 10
    with pytest.raises(ValueError, match="parse"):
        parse_size("two gigs")
    writer = ShardedSafetensorsWriter(tmp_path, max_shard_size=1000, dtype=torch.float16)
    tensors = {f"t{i}": torch.randn(100) for i in range(5)}  # 200 bytes each in fp16
    for key, tensor in tensors.items():
        writer.add(key, tensor)
    writer.add("big", torch.randn(1000))  # larger than a shard: a shard of its own
    files = writer.finish()
    assert [f.name for f in files] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["big"] == files[1].name and index["metadata"]["total_size"] == 5 * 200 + 2000
    assert load_file(str(files[0]))["t3"].dtype == torch.float16
    with pytest.raises(ValueError, match="twice"):
        writer.add("t0", torch.zeros(1))
    grown = extend_rows(torch.tensor([[1.0, 2.0], [3.0, 6.0]]), 2)
    assert grown.tolist() == [[1, 2], [3, 6], [2, 4], [2, 4]]


def test_auto_classes_resolve_without_pipeline_import(converted):
    """`gvt` registered everything: AutoModel on the converted folder gives the same class."""
    out, _ = converted
    assert type(gvt.LaVITForCausalLM.from_pretrained(out)) is type(AutoModelForImageTextToText.from_pretrained(out))
    assert isinstance(gvt.LaVITForCausalLM.from_pretrained(out).vision_tokenizer, GVTVisionTokenizer)
