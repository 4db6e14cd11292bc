"""`gvt pretokenize`: 2 processes give the rows of 1, a killed run restarts to the rows of an uninterrupted one, bad
images are skipped and counted (or raise), the output folder is checked, and the shards train through the collator."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gvt_cli
from gvt.pretokenize import PretokenizeArguments, load_pretokenized, pretokenize
from gvt.training import GVTDataCollator

SRC = Path(__file__).resolve().parents[1] / "src"
NUM_IMAGES = 11  # + 1 undecodable
SETTINGS = {"model": "random", "shard_size": 3, "batch_size": 2, "progress": False}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """An image folder of random pictures of several sizes with captions, and one file that is not an image."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    metadata = []
    for index in range(NUM_IMAGES):
        size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)), 3)
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(root / f"picture-{index:02d}.png")
        metadata.append({"file_name": f"picture-{index:02d}.png", "text": f"caption number {index}"})
    (root / "broken.png").write_bytes(b"\x89PNG this is not an image")
    metadata.insert(4, {"file_name": "broken.png", "text": "broken"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in metadata) + "\n")
    return root


@pytest.fixture(scope="module")
def reference(image_folder, tmp_path_factory) -> Path:
    """One uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("reference") / "ids"
    result = pretokenize(PretokenizeArguments(source=str(image_folder), output_dir=str(out), **SETTINGS))
    assert result.world_size == 1 and result.shards_written == 4 and result.shards_skipped == 0
    return out


def rows_by_key(output_dir: Path) -> dict[str, dict]:
    rows = load_pretokenized(output_dir).to_list()
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys)), "a row was written twice"
    return {row["key"]: row for row in rows}


def test_rows_manifest_and_bad_images_skipped(reference):
    rows = rows_by_key(reference)
    assert len(rows) == NUM_IMAGES
    assert "4" not in rows  # the undecodable file's row
    for row in rows.values():
        assert row["num_tokens"] == len(row["visual_token_ids"]) > 0
        assert row["text"].startswith("caption number ")
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_rows"] == NUM_IMAGES and manifest["num_skipped_images"] == 1
    assert [entry["rows"] for entry in manifest["shards"]] == [3, 2, 3, 3]
    assert [entry["skipped_images"] for entry in manifest["shards"]] == [0, 1, 0, 0]
    assert manifest["settings"]["shard_size"] == 3


def test_bad_image_raises_when_asked(image_folder, tmp_path):
    arguments = PretokenizeArguments(
        source=str(image_folder), output_dir=str(tmp_path / "ids"), on_bad_image="raise", num_workers=2, **SETTINGS
    )
    with pytest.raises(ValueError, match="broken.png"):
        pretokenize(arguments)
    assert not json.loads((tmp_path / "ids" / "manifest.json").read_text())["complete"]
    command = ["pretokenize", str(image_folder), "--output-dir", str(tmp_path / "cli"), "--model", "random"]
    assert gvt_cli.main([*command, "--on-bad-image", "raise", "--no-progress"]) == 2


def test_streaming_and_decoding_threads_give_the_rows_of_map_style(image_folder, reference, tmp_path):
    out = tmp_path / "streamed"
    arguments = PretokenizeArguments(
        source=str(image_folder), output_dir=str(out), streaming=True, num_workers=2, **SETTINGS
    )
    pretokenize(arguments)
    streamed = list(load_pretokenized(out, streaming=True))
    assert {row["key"]: row for row in streamed} == rows_by_key(reference)


def test_a_stream_of_several_files_is_split_by_file(image_folder, tmp_path):
    """json lines files (image paths relative to them), given as a pattern: streamed, each file is an input shard;
    the rows are those of the same files read map-style."""
    (tmp_path / "pictures").mkdir()
    for part in range(2):
        lines = []
        for index in range(part * 4, part * 4 + 4 + part):  # 4 and 5 rows
            shutil.copy(image_folder / f"picture-{index:02d}.png", tmp_path / "pictures")
            row = {"id": f"picture-{index}", "image": f"pictures/picture-{index:02d}.png", "text": f"text {index}"}
            lines.append(json.dumps(row))
        (tmp_path / f"part-{part}.jsonl").write_text("\n".join(lines) + "\n")
    pattern = str(tmp_path / "part-*.jsonl")
    streamed, mapped = tmp_path / "streamed", tmp_path / "mapped"
    pretokenize(PretokenizeArguments(source=pattern, output_dir=str(streamed), streaming=True, **SETTINGS))
    pretokenize(PretokenizeArguments(source=pattern, output_dir=str(mapped), **SETTINGS))
    names = sorted(path.stem for path in (streamed / "data").glob("*.parquet"))
    assert names == ["shard-00000-00000", "shard-00000-00001", "shard-00001-00000", "shard-00001-00001"]
    assert len(list((mapped / "data").glob("*.parquet"))) == 3
    rows = rows_by_key(streamed)
    assert rows == rows_by_key(mapped) and len(rows) == 9 and rows["picture-8"]["text"] == "text 8"


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
def test_two_processes_give_the_rows_of_one(image_folder, reference, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path / "two"
    command = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_addr",
        "localhost",
        "--master_port",
        str(free_port()),
        "-m",
        "gvt.cli",
        "pretokenize",
        str(image_folder),
        "--output-dir",
        str(out),
        "--model",
        "random",
        "--shard-size",
        "2",  # another shard layout than the reference's
        "--batch-size",
        "2",
        "--no-progress",
    ]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "11 rows in 6 shards, 1 images skipped" in result.stdout
    writers = [entry["written_by"] for entry in json.loads((out / "manifest.json").read_text())["shards"]]
    assert writers == [{"rank": index % 2, "world_size": 2} for index in range(6)]
    assert rows_by_key(out) == rows_by_key(reference)


KILLER = """
import os, signal, sys
import pyarrow.parquet
import gvt.pretokenize as pretokenize_module

point, source, output_dir, shard_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if os.environ.get("RANK", "0") != sys.argv[5]:
    point = None  # another rank than the one to kill (under torchrun)
calls = []
write_table, write_entry = pyarrow.parquet.write_table, pretokenize_module._write_entry

def killing_write_table(table, where, **kwargs):  # the second shard: half its bytes, then SIGKILL
    write_table(table, where, **kwargs)
    calls.append(where)
    if point == "during_shard" and len(calls) == 2:
        size = os.path.getsize(where)
        with open(where, "r+b") as handle:
            handle.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)

def killing_write_entry(entry, path):  # the second shard is in place, its manifest entry not yet
    if point == "before_entry" and len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    write_entry(entry, path)

pyarrow.parquet.write_table = killing_write_table
pretokenize_module._write_entry = killing_write_entry
pretokenize_module.pretokenize(pretokenize_module.PretokenizeArguments(
    source=source, output_dir=output_dir, model="random", shard_size=shard_size, batch_size=2, progress=False))
"""


def test_killed_run_restarts_to_the_same_rows(image_folder, reference, tmp_path):
    """SIGKILL after the second shard is in place, before its manifest entry: the restart writes it again."""
    out = tmp_path / "ids"
    command = [sys.executable, "-c", KILLER, "before_entry", str(image_folder), str(out), "3", "0"]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr[-3000:]
    assert [path.name for path in (out / "manifest").glob("shard-*.json")] == ["shard-00000-00000.json"]
    assert (out / "data" / "shard-00000-00001.parquet").is_file()

    resumed = pretokenize(PretokenizeArguments(source=str(image_folder), output_dir=str(out), **SETTINGS))
    assert (resumed.shards_skipped, resumed.shards_written) == (1, 3)
    assert rows_by_key(out) == rows_by_key(reference)
    manifest = json.loads((out / "manifest.json").read_text())
    expected = json.loads((reference / "manifest.json").read_text())
    assert [entry["content_sha256"] for entry in manifest["shards"]] == [
        entry["content_sha256"] for entry in expected["shards"]
    ]


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
def test_rank_killed_mid_shard_restarts_to_the_same_rows(image_folder, reference, tmp_path):
    """2 processes, rank 1 SIGKILLed half-way through writing its second shard (torchrun then stops rank 0); the
    restart, here with 1 process, finishes the run with exactly the reference rows."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    out = tmp_path / "ids"
    command = [torchrun, "--nproc_per_node", "2", "--master_addr", "localhost", "--master_port", str(free_port())]
    command += [str(script), "during_shard", str(image_folder), str(out), "2", "1"]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode != 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Signal 9 (SIGKILL)" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"]
    done = sorted(path.name for path in (out / "manifest").glob("shard-*.json"))
    assert "shard-00000-00001.json" in done and "shard-00000-00003.json" not in done
    assert [path for path in (out / "data").iterdir() if "gvt-staging" in path.name]  # rank 1's half-written shard

    settings = {**SETTINGS, "shard_size": 2}
    resumed = pretokenize(PretokenizeArguments(source=str(image_folder), output_dir=str(out), **settings))
    assert resumed.shards_skipped == len(done) and resumed.shards_skipped + resumed.shards_written == 6
    assert rows_by_key(out) == rows_by_key(reference)
    assert not [path for path in (out / "data").iterdir() if "gvt-staging" in path.name]


def test_output_folder_is_checked(image_folder, reference, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no manifest.json"):
        pretokenize(PretokenizeArguments(source=str(image_folder), output_dir=str(foreign), **SETTINGS))
    assert [path.name for path in foreign.iterdir()] == ["notes.txt"]

    other_settings = {**SETTINGS, "shard_size": 5}
    with pytest.raises(ValueError, match="shard_size: 3 -> 5"):
        pretokenize(PretokenizeArguments(source=str(image_folder), output_dir=str(reference), **other_settings))
    with pytest.raises(ValueError, match="inside the input"):
        pretokenize(PretokenizeArguments(source=str(image_folder), output_dir=str(image_folder / "ids"), **SETTINGS))

    again = pretokenize(PretokenizeArguments(source=str(image_folder), output_dir=str(reference), **SETTINGS))
    assert (again.shards_written, again.shards_skipped) == (0, 4)  # a finished run of the same settings: nothing to do


def test_shards_train_without_pixels(image_folder, tmp_path):
    """The collator lays out pre-tokenized rows as the model lays out pixel rows: the same loss."""
    import datasets

    from gvt.tiny_random import build_tiny_random

    model, processor = build_tiny_random(image_input_mode="ids", seed=0)
    out = tmp_path / "ids"
    arguments = PretokenizeArguments(source=str(image_folder), output_dir=str(out), shard_size=4, progress=False)
    pretokenize(arguments, vision_tokenizer=model.vision_tokenizer, image_processor=processor.image_processor)
    rows = load_pretokenized(out).to_list()[:5]
    source = datasets.load_dataset("imagefolder", data_dir=str(image_folder), split="train")
    pixel_rows = [{"image": source[int(row["key"])]["image"], "text": row["text"]} for row in rows]

    for supervise in ("answer", "all"):
        collator = GVTDataCollator(processor, supervise=supervise)
        from_ids = collator(rows)
        assert "pixel_values" not in from_ids and "pixel_values" in collator(pixel_rows)
        for row in range(len(rows)):  # one row at a time: the model pads its expansion on the tokenizer's side
            ids, pixels = collator(rows[row : row + 1]), collator(pixel_rows[row : row + 1])
            with torch.no_grad():
                output = model(**pixels)
                torch.testing.assert_close(model(**ids).loss, output.loss)
            assert torch.equal(ids["input_ids"], output.expanded_input_ids)
            length = int(from_ids["attention_mask"][row].sum())
            assert torch.equal(from_ids["input_ids"][row, :length], ids["input_ids"][0])
    codebook_size = model.config.vision_config.codebook_size
    with pytest.raises(ValueError, match="codes outside"):
        GVTDataCollator(processor)([{**rows[0], "visual_token_ids": [0, codebook_size]}])
    # A blank image keeps no token in LaVIT: its row is `[IMG] [/IMG]` then the text, as the model lays it out.
    empty = GVTDataCollator(processor)([{**rows[0], "visual_token_ids": []}])["input_ids"][0].tolist()
    start, end = processor.tokenizer.convert_tokens_to_ids([processor.image_start_token, processor.image_end_token])
    assert empty[empty.index(start) + 1] == end


def test_trainer_reads_the_shards_streaming(image_folder, tmp_path):
    """`transformers.Trainer` trains "ids" mode on the shards, streamed, without decoding an image."""
    from transformers import Trainer

    from gvt.tiny_random import build_tiny_random
    from gvt.training.llm_training import training_arguments

    model, processor = build_tiny_random(image_input_mode="ids", seed=0)
    model.vision_tokenizer.requires_grad_(False)
    out = tmp_path / "ids"
    arguments = PretokenizeArguments(source=str(image_folder), output_dir=str(out), shard_size=4, progress=False)
    pretokenize(arguments, vision_tokenizer=model.vision_tokenizer, image_processor=processor.image_processor)
    args = training_arguments(tmp_path / "train", max_steps=3, per_device_train_batch_size=2, disable_tqdm=True)
    collator = GVTDataCollator(processor)
    trainer = Trainer(
        model=model, args=args, train_dataset=load_pretokenized(out, streaming=True), data_collator=collator
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_sampled_selection_is_recomputed_identically(image_folder, reference, tmp_path):
    """`selection="sample"` is seeded per shard and batch: a shard computed again (its entry lost) gets the same ids."""
    out = tmp_path / "sampled"
    arguments = PretokenizeArguments(source=str(image_folder), output_dir=str(out), selection="sample", **SETTINGS)
    pretokenize(arguments)
    first = rows_by_key(out)
    deterministic = rows_by_key(reference)
    assert any(first[key]["visual_token_ids"] != deterministic[key]["visual_token_ids"] for key in first)
    (out / "manifest" / "shard-00000-00002.json").unlink()
    again = pretokenize(arguments)
    assert (again.shards_written, again.shards_skipped) == (1, 3)
    assert rows_by_key(out) == first


def test_gvt_train_reads_the_shards(reference, tmp_path, capsys):
    """`gvt train llm --dataset <pretokenize output>` trains on the ids; jobs that tune the tokenizer refuse them."""
    from gvt_cli import main

    out = tmp_path / "llm"
    code = main(["train", "llm", "--dataset", str(reference), "--output-dir", str(out), "--max-steps", "2",
                 "--batch-size", "2", "--no-progress"])  # fmt: skip
    assert code == 0 and (out / "config.json").is_file()
    assert "final loss" in capsys.readouterr().out
    code = main(["train", "ett", "--dataset", str(reference), "--output-dir", str(tmp_path / "ett"), "--no-progress"])
    assert code == 2
    assert "needs images" in capsys.readouterr().err
    assert not (tmp_path / "ett").exists()
