"""Bad inputs and faults, tried as a new user would: nothing lost, nothing silently wrong.

Outputs (`gvt.atomic_write`): staged beside the target and swapped in; a non-empty folder is refused without
`--overwrite`; the working directory and the inputs are never an output; a run killed (SIGKILL) at any point leaves
the old or the new complete output and none of the user's files lost, and the next run cleans up. Configs: strict
types and positive sizes, fields that decide the weight layout required on load. Broken weights: errors name the
file. Tiny-random repos train their tokenizer and run ETT. Training killed after a checkpoint resumes and finishes.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gvt import GVTConfig, GVTVisionConfig, GVTVisionTokenizer, LaVITForCausalLM
from gvt.atomic_write import (
    atomic_output_dir,
    atomic_output_file,
    check_output_dir,
    recover_output,
    write_text_atomically,
)
from gvt.cli import main as cli_main
from gvt.conversion import load_state_dict_file
from gvt.tiny_random import build_tiny_random, save_tiny_random
from gvt.training.llm_training import last_complete_checkpoint

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
LAVIT_SCRIPT = REPO / "conversion_scripts" / "convert_lavit_to_hf.py"
CONVERTED = {"config.json", "model.safetensors"}


def dead_pid() -> int:
    """The pid of a process that has exited (what a killed run leaves in its staging names)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".gvt-staging-" in p.name or ".gvt-replaced-" in p.name)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------------------------
# The atomic writer
# ----------------------------------------------------------------------------------------------------------------


def test_new_folder_is_staged_then_renamed_with_umask_permissions(tmp_path):
    target = tmp_path / "out"
    old_mask = os.umask(0o027)
    try:
        with atomic_output_dir(target) as staging:
            assert staging.parent == tmp_path and staging.name.startswith(".out.gvt-staging-")
            assert not target.exists()
            model = GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny", decoder_types=[], num_hidden_layers=1))
            model.save_pretrained(staging)  # safetensors writes its files 0600
    finally:
        os.umask(old_mask)
    assert CONVERTED <= {p.name for p in target.iterdir()} and leftovers(tmp_path) == []
    assert target.stat().st_mode & 0o777 == 0o750
    assert {(p.stat().st_mode & 0o777) for p in target.iterdir()} == {0o640}


def test_non_empty_folder_is_refused_without_overwrite(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty.*--overwrite"):
        with atomic_output_dir(target):
            raise AssertionError("never reached: refused before any work")
    assert tree(target) == {"notes.txt": b"mine"} and leftovers(tmp_path) == []
    (target / "notes.txt").unlink()
    with atomic_output_dir(target) as staging:  # an empty folder is replaced
        (staging / "config.json").write_text("{}")
    assert tree(target) == {"config.json": b"{}"}


def test_overwrite_replaces_the_output_and_keeps_other_files(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    for name, text in {
        "notes.txt": "mine",
        "config.json": "old",
        "model-00001-of-00002.safetensors": "old shard",
        "model-00002-of-00002.safetensors": "old shard",
        "model.safetensors.index.json": "old index",
    }.items():
        (target / name).write_text(text)
    (target / "runs").mkdir()
    (target / "runs" / "log.txt").write_text("mine too")
    with atomic_output_dir(target, overwrite=True) as staging:
        (staging / "config.json").write_text("new")
        (staging / "model.safetensors").write_text("new weights")
    # the earlier output's shards and index are superseded by the new single file; the user's files stay
    assert tree(target) == {
        "config.json": b"new",
        "model.safetensors": b"new weights",
        "notes.txt": b"mine",
        "runs/log.txt": b"mine too",
    }
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["cwd", "parent_of_cwd"])
def test_the_working_directory_is_never_an_output(tmp_path, monkeypatch, where):
    work = tmp_path / "project"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    path = "." if where == "cwd" else ".."
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="working directory"):
            with atomic_output_dir(path, overwrite=overwrite):
                pass
    assert tree(tmp_path) == {"project/notes.txt": b"mine"}


@pytest.mark.parametrize(
    "output, message",
    [("release", "is the input"), ("release/converted", "inside the input"), (".", "would contain the input")],
)
def test_outputs_overlapping_the_input_are_refused(tmp_path, output, message):
    release = tmp_path / "release"
    release.mkdir()
    (release / "weights.bin").write_text("precious")
    work = tmp_path / "elsewhere"
    work.mkdir()
    target = tmp_path / output if output != "." else tmp_path
    with pytest.raises(ValueError, match=message):
        with atomic_output_dir(target, overwrite=True, inputs=[release]):
            pass
    assert (release / "weights.bin").read_text() == "precious" and leftovers(tmp_path) == []


def test_a_file_where_a_folder_goes_and_the_reverse(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        check_output_dir(tmp_path / "a_file", overwrite=True)
    with pytest.raises(FileExistsError, match="is a file"):
        check_output_dir(tmp_path / "a_file" / "below")
    with pytest.raises(FileExistsError, match="is a folder"):
        write_text_atomically(tmp_path, "x")
    assert (tmp_path / "a_file").read_text() == "x"


def test_a_failing_writer_leaves_the_old_output_and_no_staging(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "config.json").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_output_dir(target, overwrite=True) as staging:
            (staging / "config.json").write_text("half")
            raise RuntimeError("disk full")
    assert tree(target) == {"config.json": b"old"} and leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_file(tmp_path / "picture.png") as staging:
            staging.write_bytes(b"half")
            raise KeyboardInterrupt
    assert not (tmp_path / "picture.png").exists() and leftovers(tmp_path) == []


def test_recovery_touches_only_marked_leftovers_of_dead_runs(tmp_path):
    pid = dead_pid()
    target = tmp_path / "out"
    stale = tmp_path / f".out.gvt-staging-{pid}-0123abcd"
    stale.mkdir()
    (stale / "config.json").write_text("half")
    live = tmp_path / f".out.gvt-staging-{os.getpid()}-0123abcd"  # a run in progress (this process)
    live.mkdir()
    foreign = [
        tmp_path / ".out.tmp",
        tmp_path / f".other.gvt-staging-{pid}-0123abcd",
        tmp_path / "out.gvt-staging-1-x",
    ]
    for path in foreign:
        path.mkdir()
    # a replaced old output of a run killed between its two renames: restored, since the target is missing
    replaced = tmp_path / f".out.gvt-replaced-{pid}-89abcdef"
    replaced.mkdir()
    (replaced / "config.json").write_text("old")
    (replaced / "notes.txt").write_text("mine")
    recover_output(target)
    assert not stale.exists() and live.is_dir() and all(path.is_dir() for path in foreign)
    assert tree(target) == {"config.json": b"old", "notes.txt": b"mine"}
    # a replaced folder whose carry-over was interrupted: superseded entries go, the user's move in
    replaced.mkdir()
    (replaced / "config.json").write_text("older")
    (replaced / "todo.txt").write_text("mine")
    recover_output(target)
    assert tree(target) == {"config.json": b"old", "notes.txt": b"mine", "todo.txt": b"mine"}
    assert not replaced.exists()


def test_file_outputs_replace_atomically_and_clean_stale_staging(tmp_path):
    stale = tmp_path / f".metrics.json.gvt-staging-{dead_pid()}-0123abcd"
    stale.write_text("half")
    (tmp_path / "metrics.json").write_text("old")
    old_mask = os.umask(0o022)
    try:
        write_text_atomically(tmp_path / "metrics.json", "new")
    finally:
        os.umask(old_mask)
    assert tree(tmp_path) == {"metrics.json": b"new"}
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------------------------------------------
# Conversion: bad arguments, broken checkpoints, kills
# ----------------------------------------------------------------------------------------------------------------


def run(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def lavit_script():
    """`conversion_scripts/convert_lavit_to_hf.py` as a module: its `main(argv)` runs in this process."""
    spec = importlib.util.spec_from_file_location("convert_lavit_to_hf", LAVIT_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tokenizer_conversion_argv(reference_dir, out, *extra) -> list[str]:
    """The visual-tokenizer conversion of the fixture release (a few MB: quick)."""
    return [
        "--input-dir", str(reference_dir / "original"), "--output-dir", str(out), "--vision-tokenizer-only",
        "--num-heads", "4", "--no-decoders", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def converted_once(lavit_script, reference_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "converted"
    assert lavit_script.main(tokenizer_conversion_argv(reference_dir, out)) == 0
    return out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num-heads", "0"], "num_heads must be >= 1, got 0"),
        (["--num-heads", "-4"], "num_heads must be >= 1"),
        (["--num-heads", "5"], "divisible"),
    ],
)
def test_invalid_conversion_arguments_are_named(lavit_script, reference_dir, tmp_path, capsys, extra, message):
    argv = tokenizer_conversion_argv(reference_dir, tmp_path / "out")
    argv = argv[: argv.index("--num-heads")] + extra
    assert lavit_script.main(argv) == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_release_conversion_refuses_bad_sizes_and_overlapping_outputs(tmp_path):
    from gvt.release_conversion import convert_lavit_release, parse_size

    release = tmp_path / "release"
    (release / "language_model").mkdir(parents=True)
    (release / "notes.txt").write_text("precious")
    for size, error in (("0", ValueError), ("-1GB", ValueError), (2.5, TypeError)):
        with pytest.raises(error):
            parse_size(size)
    with pytest.raises(ValueError, match="shard size"):
        convert_lavit_release(release, tmp_path / "out", max_shard_size=0)
    with pytest.raises(ValueError, match="num_heads"):
        convert_lavit_release(release, tmp_path / "out", num_heads=0)
    with pytest.raises(ValueError, match="dtype"):
        convert_lavit_release(release, tmp_path / "out", dtype=torch.int8)
    for output in (release, release / "hf", tmp_path):
        with pytest.raises(ValueError, match="input"):
            convert_lavit_release(release, output, overwrite=True)
    assert tree(release) == {"notes.txt": b"precious"} and not (tmp_path / "out").exists()


def test_the_scripts_never_empty_the_working_directory(lavit_script, reference_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert lavit_script.main(tokenizer_conversion_argv(reference_dir, ".", *extra)) == 1
        assert "working directory" in capsys.readouterr().err
    assert tree(tmp_path) == {"notes.txt": b"mine"}
    (tmp_path / "out").write_text("a file")
    assert lavit_script.main(tokenizer_conversion_argv(reference_dir, tmp_path / "out")) == 1
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "out").read_text() == "a file"


def test_cli_outputs_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for argv in (["train", "tokenizer", "--output-dir", "."], ["train", "llm", "--output-dir", "notes.txt"],
                 ["tiny-random", "."], ["tiny-random", "notes.txt", "--overwrite"]):  # fmt: skip
        assert cli_main(argv) != 0
        error = capsys.readouterr().err
        assert ("working directory" in error or "is a file" in error) and "Traceback" not in error
    assert tree(tmp_path) == {"notes.txt": b"mine"}


def test_broken_weight_files_are_named(tmp_path):
    bad_safetensors, bad_bin = tmp_path / "cut.safetensors", tmp_path / "cut.bin"
    from safetensors.torch import save_file

    save_file({"w": torch.randn(64, 64)}, str(bad_safetensors))
    torch.save({"w": torch.randn(64, 64)}, bad_bin)
    for path in (bad_safetensors, bad_bin):
        path.write_bytes(path.read_bytes()[:1000])
        with pytest.raises(ValueError, match=f"Cannot read the checkpoint {path}"):
            load_state_dict_file(path)
    repo = save_tiny_random(tmp_path / "repo", with_decoder=False)
    weights = repo / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for load in (LaVITForCausalLM.from_pretrained, GVTVisionTokenizer.from_pretrained):
        with pytest.raises(ValueError, match=f"Cannot read the weights file {weights}"):
            load(repo)


def arm_kill(target: str, when: str, count: int) -> None:
    """Make this process SIGKILL itself `when` ("before" / "after") the `count`-th call of `target`, a dotted
    function (`gvt.atomic_write._move_in`) or method (`transformers.trainer_callback.TrainerState.save_to_json`)."""
    module_name, _, attribute = target.rpartition(".")
    try:
        owner = importlib.import_module(module_name)
    except ImportError:  # a class attribute
        module_name, _, class_name = module_name.rpartition(".")
        owner = getattr(importlib.import_module(module_name), class_name)
    original = getattr(owner, attribute)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if when == "before" and calls[0] == count:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if when == "after" and calls[0] == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, attribute, wrapper)


KILL_DRIVER = """
import runpy, sys
sys.path.insert(0, {tests!r})
from test_faults import arm_kill

arm_kill(sys.argv[1], sys.argv[2], int(sys.argv[3]))
sys.argv = sys.argv[5:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def run_killed(tmp_path, target: str, when: str, count: int, *argv) -> None:
    """Run `python -m argv...` in a new interpreter and SIGKILL it `when` the `count`-th call of `target` happens."""
    driver = tmp_path / "kill_driver.py"
    driver.write_text(KILL_DRIVER.format(tests=str(Path(__file__).parent)))
    result = run(driver, target, when, count, *argv)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


def fork_killed(target: str, when: str, count: int, function, *args) -> None:
    """Run `function(*args)` in a forked copy of this process (no second start-up: it has everything imported) and
    SIGKILL it `when` the `count`-th call of `target` happens."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            arm_kill(target, when, count)
            function(*args)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"not killed: status {status}"


def assert_complete_tokenizer(folder: Path, reference_io) -> None:
    tokens = GVTVisionTokenizer.from_pretrained(folder).tokenize(reference_io["pixel_values"])
    assert torch.equal(tokens.token_ids[tokens.attention_mask.bool()], reference_io["codes"])


@pytest.mark.parametrize(
    "target, when, count",
    [
        ("transformers.modeling_utils.safe_save_file", "before", 1),  # config written, weights not yet
        ("gvt.atomic_write._set_aside", "after", 1),  # old output renamed aside, new not yet in
        ("gvt.atomic_write._move_in", "after", 1),  # new output in, old not yet sorted
        ("gvt.atomic_write._remove", "after", 1),  # carry-over half done
    ],
)
def test_a_conversion_killed_anywhere_loses_nothing(
    lavit_script, converted_once, reference_dir, reference_io, tmp_path, target, when, count
):
    out = tmp_path / "converted"
    shutil.copytree(converted_once, out)
    (out / "notes.txt").write_text("mine")
    (out / "model-00001-of-00009.safetensors").write_text("a stale shard of an earlier conversion")
    before = tree(out)

    fork_killed(target, when, count, lavit_script.main, tokenizer_conversion_argv(reference_dir, out, "--overwrite"))
    # the old output or the new one is complete in place; at worst (between the two renames) the old one waits
    # complete under its replaced name; the user's file is in one of them
    replaced = [p for p in tmp_path.iterdir() if p.name.startswith(".converted.gvt-replaced-")]
    if out.exists():
        assert_complete_tokenizer(out, reference_io)
        if target.endswith("safe_save_file"):
            assert tree(out) == before  # killed while staging: the target was never touched
    else:
        assert target.endswith("_set_aside") and len(replaced) == 1
        assert tree(replaced[0]) == before
    assert any((folder / "notes.txt").is_file() for folder in [out, *replaced] if folder.exists())

    # the next run restores / finishes, converts, and leaves no marked leftover
    assert lavit_script.main(tokenizer_conversion_argv(reference_dir, out, "--overwrite")) == 0
    assert_complete_tokenizer(out, reference_io)
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "model-00001-of-00009.safetensors").exists()
    assert leftovers(tmp_path) == []


def test_a_killed_fresh_conversion_leaves_no_output_and_the_rerun_cleans(
    lavit_script, reference_dir, reference_io, tmp_path
):
    out = tmp_path / "converted"
    fork_killed(
        "gvt.atomic_write._move_in", "before", 1, lavit_script.main, tokenizer_conversion_argv(reference_dir, out)
    )
    assert not out.exists() and len(leftovers(tmp_path)) == 1  # a complete staging folder, never an output
    assert lavit_script.main(tokenizer_conversion_argv(reference_dir, out)) == 0  # the leftover is not an output
    assert_complete_tokenizer(out, reference_io)
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"loss_on_visual_tokens": "false"}, TypeError, "GVTConfig.loss_on_visual_tokens: .*expected bool.*'false'"),
        ({"image_token_id": "4"}, TypeError, "GVTConfig.image_token_id: .*expected int.*'4'"),
        ({"image_input_mode": "pixels"}, TypeError, "image_input_mode"),
        ({"ett_reconstruction_weight": float("nan")}, ValueError, "ett_reconstruction_weight: must be a finite"),
        ({"vision_config": {"image_size": "112"}}, TypeError, "GVTVisionConfig.image_size: .*expected int.*'112'"),
        ({"vision_config": {"hidden_size": 512.0}}, TypeError, "GVTVisionConfig.hidden_size: .*got float.*512.0"),
        ({"vision_config": {"num_hidden_layers": []}}, TypeError, "num_hidden_layers: .*got list"),
        ({"vision_config": {"patch_size": 0}}, ValueError, "GVTVisionConfig.patch_size: must be >= 1, got 0"),
        ({"vision_config": {"image_size": -112}}, ValueError, "image_size: must be >= 1, got -112"),
        ({"vision_config": {"num_hidden_layers": -1}}, ValueError, "num_hidden_layers: must be >= 1, got -1"),
        ({"vision_config": {"encoder_rope": "false"}}, TypeError, "encoder_rope: .*expected bool"),
        ({"vision_config": {"layer_norm_eps": 0.0}}, ValueError, "layer_norm_eps: must be a finite number > 0"),
        ({"text_config": {"model_type": "no-such-model"}}, ValueError, "no-such-model"),
    ],
)
def test_config_values_are_checked_by_type_and_range(overrides, error, message):
    with pytest.raises(error, match=message):
        GVTConfig.from_preset("tiny", **overrides)


def test_int_where_a_float_is_expected_is_fine():
    config = GVTConfig.from_preset("tiny", ett_reconstruction_weight=1, vision_config={"layer_norm_eps": 1})
    assert config.ett_reconstruction_weight == 1 and config.vision_config.layer_norm_eps == 1


@pytest.mark.parametrize(
    "path, field",
    [
        ((), "image_input_mode"),
        (("vision_config",), "num_hidden_layers"),
        (("vision_config",), "decoder_output_dim"),
        (("vision_config",), "tokenizer_type"),
        (("text_config",), "num_hidden_layers"),
    ],
)
def test_a_saved_repo_missing_a_layout_field_does_not_load(tmp_path, path, field):
    repo = save_tiny_random(tmp_path / "repo", image_input_mode="codebook", with_decoder=False)
    config = json.loads((repo / "config.json").read_text())
    holder = config
    for key in path:
        holder = holder[key]
    del holder[field]
    (repo / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"lacks \['{field}'\].*decide how the saved weights are read"):
        LaVITForCausalLM.from_pretrained(repo)
    if field == "image_input_mode":  # given explicitly, it loads
        model = LaVITForCausalLM.from_pretrained(repo, image_input_mode="codebook")
        assert model.config.image_input_mode == "codebook" and model.codebook_projector is not None


def test_presets_and_the_shipped_default_still_load():
    for name in ("lavit-7b-v2", "tiny"):
        GVTConfig.from_preset(name)
    for name in ("lavit-7b-v2", "gvt-eva02-l", "tiny", "tiny-gvt"):
        GVTVisionConfig.from_preset(name)
    weights = REPO / "src" / "gvt" / "default_model" / "weights"
    assert GVTConfig.from_pretrained(weights).image_input_mode == "codebook"


# ----------------------------------------------------------------------------------------------------------------
# Tiny-random repos are usable in CI: tokenizer training and ETT
# ----------------------------------------------------------------------------------------------------------------


def test_tiny_random_repos_train_their_tokenizer_and_run_ett(tmp_path):
    codebook = save_tiny_random(tmp_path / "codebook", image_input_mode="codebook", with_decoder=False)
    ids = save_tiny_random(tmp_path / "ids", image_input_mode="ids", with_decoder=False)
    common = ["--dataset", "synthetic:4", "--max-steps", "2", "--batch-size", "2", "--no-progress"]
    assert cli_main(["train", "tokenizer", "--model", str(ids), "--output-dir", str(tmp_path / "tok"), *common]) == 0
    trained = GVTVisionTokenizer.from_pretrained(tmp_path / "tok")
    assert trained.config.decoder_output_dim == trained.config.hidden_size
    result_json = tmp_path / "ett.json"
    argv = ["train", "ett", "--model", str(codebook), "--output-dir", str(tmp_path / "ett"), "--unfreeze-step", "1"]
    assert cli_main([*argv, *common, "--result-json", str(result_json)]) == 0
    result = json.loads(result_json.read_text())
    assert all(torch.isfinite(torch.tensor(result["loss"]))) and result["ett_stages"]


def test_ett_on_a_repo_without_a_fitting_decoder_names_the_cli_flag(tmp_path, capsys):
    model, processor = build_tiny_random("codebook", vision_config={"decoder_output_dim": 96})
    model.save_pretrained(tmp_path / "repo")
    processor.save_pretrained(tmp_path / "repo")
    argv = [
        "train",
        "ett",
        "--model",
        str(tmp_path / "repo"),
        "--output-dir",
        str(tmp_path / "out"),
        "--max-steps",
        "1",
    ]
    assert cli_main(argv) != 0
    error = capsys.readouterr().err
    assert "decoder_output_dim" in error and "--alpha 0" in error and "config.ett_reconstruction_weight" not in error
    assert "Traceback" not in error and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------
# Training killed, resumed, finished
# ----------------------------------------------------------------------------------------------------------------


TRAIN_TOKENIZER = ["train", "tokenizer", "--model", "tiny", "--dataset", "synthetic:6", "--batch-size", "2",
                   "--max-steps", "6", "--save-steps", "2", "--no-progress"]  # fmt: skip


def test_tokenizer_training_killed_resumes_to_the_uninterrupted_weights(tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    assert cli_main([*TRAIN_TOKENIZER, "--output-dir", str(uninterrupted)]) == 0
    out = tmp_path / "killed"
    # killed while writing checkpoint-4 (its staging folder is left), after checkpoint-2 was complete
    run_killed(tmp_path, "torch.save", "before", 2, "-m", "gvt.cli",
               *TRAIN_TOKENIZER, "--output-dir", out)  # fmt: skip
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["checkpoint-2"]
    assert len(leftovers(out)) == 1
    assert cli_main([*TRAIN_TOKENIZER, "--output-dir", str(out)]) != 0  # a fresh run does not mix with a killed one
    assert cli_main([*TRAIN_TOKENIZER, "--output-dir", str(out), "--resume", "last"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint-2", "checkpoint-4", "checkpoint-6", "config.json", "model.safetensors"
    ]  # fmt: skip
    expected, resumed = load_file(uninterrupted / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)


def test_llm_training_killed_while_checkpointing_resumes_from_the_last_complete_one(tmp_path):
    out = tmp_path / "llm"
    argv = ["train", "llm", "--model", "tiny", "--dataset", "synthetic:4", "--batch-size", "2", "--max-steps", "4",
            "--save-steps", "2", "--no-progress"]  # fmt: skip
    # killed while saving checkpoint-4, before its trainer_state.json: an incomplete checkpoint
    run_killed(tmp_path, "transformers.trainer_callback.TrainerState.save_to_json", "before", 2, "-m", "gvt.cli",
               *argv, "--output-dir", out)  # fmt: skip
    assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-4" / "trainer_state.json").exists()
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2")
    assert cli_main([*argv, "--output-dir", str(out), "--resume", "last"]) == 0
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3, 4]
    assert (out / "model.safetensors").is_file()
