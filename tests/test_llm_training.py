"""LLM training: GVTDataCollator over `datasets` rows (formats, interleaving, label masks, bad input), a Trainer run
on a streaming dataset, and LoRA adapters that save, reload onto a fresh base and reproduce the logits."""

import functools
import io
import json
import logging

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Trainer

from gvt.data import build_synthetic_dataset, to_caption_rows, to_qa_rows
from gvt.tiny_random import build_tiny_random
from gvt.training.collator import GVTDataCollator
from gvt.training.llm_training import load_rows, make_lora_model, training_arguments

torch.set_num_threads(1)


@functools.cache
def scenes():
    return build_synthetic_dataset(6, 0, 0, image_size=112)["train"]


@functools.cache
def tiny():
    return build_tiny_random("ids", seed=0)


def png_bytes(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def supervised_text(processor, batch, row):
    ids = batch["input_ids"][row][batch["labels"][row] != -100]
    return processor.tokenizer.decode(ids)


def test_caption_rows_supervise_the_caption_only():
    _, processor = tiny()
    rows = to_caption_rows(scenes())
    batch = GVTDataCollator(processor)([rows[0], rows[1]])
    assert set(batch) == {"input_ids", "attention_mask", "labels", "pixel_values"}
    assert batch["pixel_values"].shape == (2, 3, 112, 112)
    tokenizer = processor.tokenizer
    for row in range(2):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        length = int(mask.sum())
        assert bool(mask[:length].all()) and not bool(mask[length:].any())  # right padding
        assert bool((labels[length:] == -100).all()) and bool((ids[length:] == tokenizer.pad_token_id).all())
        # <s> [IMG] <image> [/IMG] are context; the caption and EOS are supervised.
        assert ids[:4].tolist() == tokenizer.convert_tokens_to_ids(["<s>", "[IMG]", "<image>", "[/IMG]"])
        assert bool((labels[:4] == -100).all())
        expected = tokenizer(rows[row]["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert labels[4:length].tolist() == expected


def test_prompt_answer_rows_supervise_the_answer_and_supervise_all():
    _, processor = tiny()
    rows = to_qa_rows(scenes(), kind="presence")
    row = rows[0]
    batch = GVTDataCollator(processor)([row])
    assert supervised_text(processor, batch, 0) == f"{row['answer']} </s>"
    everything = GVTDataCollator(processor, supervise="all")([row])
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    labels, ids = everything["labels"][0], everything["input_ids"][0]
    assert torch.equal(labels[ids != image_id], ids[ids != image_id]) and bool((labels[ids == image_id] == -100).all())


def test_interleaved_images_and_image_formats(tmp_path):
    _, processor = tiny()
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(1))
    rows = [
        {"image": [png_bytes(0), {"bytes": None, "path": str(path)}], "text": "a red circle <image> and <image> ."},
        {"image": Image.new("RGB", (50, 30), (0, 0, 255)), "prompt": "what color ?", "answer": "blue"},
        {"image": "a.png", "text": "a square"},
    ]
    batch = GVTDataCollator(processor, image_root=tmp_path)(rows)
    assert batch["pixel_values"].shape[0] == 4
    tokenizer = processor.tokenizer
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist())
    assert tokens[:6] == ["<s>", "a", "red", "circle", "[IMG]", "<image>"]
    assert tokens.count("<image>") == 2 and tokens.count("[IMG]") == 2
    with pytest.raises(ValueError, match="Row 0: the text holds 1 image placeholder"):
        GVTDataCollator(processor)([{"image": [png_bytes(0), png_bytes(1)], "text": "one <image> only"}])


def test_pretokenized_rows_pass_through():
    model, processor = tiny()
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    encoded = processor(images=image, text="a red square", vision_tokenizer=model.vision_tokenizer)
    batch = GVTDataCollator(processor)([{"input_ids": encoded["input_ids"]}, to_caption_rows(scenes())[0]])
    assert batch["input_ids"][0, : len(encoded["input_ids"])].tolist() == encoded["input_ids"]
    assert batch["pixel_values"].shape[0] == 1  # only the raw row has pixels
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_bad_rows(caplog):
    _, processor = tiny()
    good = to_caption_rows(scenes())[0]
    with pytest.raises(ValueError, match=r"Row 1 of the batch has no image \(column 'image'"):
        GVTDataCollator(processor)([good, {"text": "no image"}])
    with pytest.raises(ValueError, match=r"Row 1 of the batch has no text: column 'text'"):
        GVTDataCollator(processor)([good, {"image": png_bytes()}])
    with pytest.raises(ValueError, match="Row 1 of the batch has no text: column 'answer'"):
        GVTDataCollator(processor)([good, {"image": png_bytes(), "prompt": "how many ?"}])
    broken = {"image": b"not an image at all", "text": "a circle"}
    with pytest.raises(ValueError, match="Row 1 of the batch: could not load its image"):
        GVTDataCollator(processor)([good, broken])
    collator = GVTDataCollator(processor, on_bad_image="skip")
    with caplog.at_level(logging.WARNING):
        batch = collator([good, broken, {"image": {"bytes": png_bytes()[:40], "path": None}, "text": "cut"}])
    assert batch["input_ids"].shape[0] == 1 and batch["pixel_values"].shape[0] == 1
    assert collator.num_skipped == 2
    with pytest.raises(ValueError, match="Every row of the batch was skipped"):
        collator([broken])
    text_only = GVTDataCollator(processor, allow_text_only=True)([{"text": "a circle"}])
    assert "pixel_values" not in text_only


def test_dataset_files_image_folder_jsonl_parquet(tmp_path):
    _, processor = tiny()
    folder = tmp_path / "folder"
    folder.mkdir()
    records = []
    for index in range(2):
        (folder / f"{index}.png").write_bytes(png_bytes(index))
        records.append({"file_name": f"{index}.png", "text": f"a picture {index}"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(record) for record in records))
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("\n".join(json.dumps({"image": f"folder/{r['file_name']}", "text": r["text"]}) for r in records))
    parquet = tmp_path / "rows.parquet"
    datasets.Dataset.from_dict(
        {"image": [{"bytes": png_bytes(i), "path": None} for i in range(2)], "text": ["one", "two"]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}),
    ).to_parquet(str(parquet))
    for source, root in ((folder, None), (jsonl, tmp_path), (parquet, None)):
        for streaming in (False, True):
            rows = list(load_rows(str(source), streaming=streaming))
            batch = GVTDataCollator(processor, image_root=root)(rows)
            assert batch["pixel_values"].shape == (2, 3, 112, 112), (source, streaming)


def test_trainer_on_a_streaming_dataset(tmp_path):
    model, processor = build_tiny_random("ids", seed=0)
    model.vision_tokenizer.requires_grad_(False)
    rows = to_qa_rows(scenes(), kind="count").to_iterable_dataset()
    args = training_arguments(tmp_path, max_steps=2, per_device_train_batch_size=2, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=GVTDataCollator(processor))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_lora_trains_only_adapters_and_reloads_onto_a_fresh_base(tmp_path):
    from peft import PeftModel

    base, processor = build_tiny_random("ids", seed=0)
    initial = {name: p.detach().clone() for name, p in base.named_parameters()}
    model = make_lora_model(base, r=4)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name and ".language_model." in name for name in trainable)
    rows = to_caption_rows(scenes())
    args = training_arguments(tmp_path, max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=GVTDataCollator(processor)).train()
    for name, param in model.get_base_model().named_parameters():
        if "lora_" in name:
            continue
        original = name.replace(".base_layer.", ".")
        assert torch.equal(param, initial[original]), name  # the base is bit-identical
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert any(bool(p.abs().sum() > 0) for p in lora_b)  # adapters moved off their zero init

    model.save_pretrained(tmp_path / "adapter")
    fresh, _ = build_tiny_random("ids", seed=0)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    model.eval()
    batch = GVTDataCollator(processor)([rows[0], rows[1]])
    batch.pop("labels")
    with torch.no_grad():
        expected = model(**batch).logits
        got = reloaded(**batch).logits
        plain = build_tiny_random("ids", seed=0)[0](**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(plain, expected, atol=1e-4)  # the adapter matters


def test_train_job_arguments_are_typed_and_checked(tmp_path, capsys):
    from gvt.training.arguments import TrainJobArguments
    from gvt_cli import build_parser, main

    args = build_parser("train").parse_args(["train", "ett", "--output-dir", "out", "--fsdp", "--alpha", "0.5"])
    job = TrainJobArguments(**{name: getattr(args, name) for name in TrainJobArguments.__dataclass_fields__})
    assert (job.job, job.fsdp, job.alpha, job.max_steps, job.dataset) == ("ett", True, 0.5, 100, "synthetic:64")
    for bad, named in (
        ({"job": "vae"}, "job='vae'"),
        ({"job": "llm", "batch_size": 0}, "batch_size"),
        ({"job": "tokenizer", "fsdp": True}, "fsdp applies to the llm and ett jobs"),
        ({"job": "llm", "fsdp_config": str(tmp_path / "fsdp.json")}, "pass --fsdp"),
        ({"job": "llm", "fsdp": True, "fsdp_config": str(tmp_path / "fsdp.json")}, "no such file"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=named):
            TrainJobArguments(output_dir=str(tmp_path / "out"), **bad)
    assert main(["train", "tokenizer", "--fsdp", "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gvt train: error: fsdp applies") and "Traceback" not in error
    # one process: nothing to shard
    assert main(["train", "llm", "--fsdp", "--output-dir", str(tmp_path / "out")]) == 2
    assert "torchrun --nproc_per_node N" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
