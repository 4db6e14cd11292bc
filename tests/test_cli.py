"""The `gvt` command line: help without the heavy imports, defaults in the help, the chosen command configured."""

import subprocess
import sys

import pytest

from gvt_cli import COMMANDS, build_parser, main

LIGHT_HELP = """
import sys
import gvt_cli
try:
    gvt_cli.main(["--help"])
except SystemExit:
    pass
heavy = sorted(name for name in ("gvt", "torch", "transformers", "diffusers", "datasets") if name in sys.modules)
print("HEAVY", heavy)
"""


def test_top_level_help_imports_neither_gvt_nor_torch():
    result = subprocess.run([sys.executable, "-c", LIGHT_HELP], capture_output=True, text=True, check=True)
    assert "HEAVY []" in result.stdout, result.stdout
    for name in COMMANDS:
        assert name in result.stdout


def test_command_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tokenize", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default: deterministic)" in help_text
    assert "(default: None)" not in help_text  # None defaults are said in words


def test_only_the_chosen_command_is_configured():
    parser = build_parser("tiny-random")
    args = parser.parse_args(["tiny-random", "out", "--mode", "codebook"])
    assert (args.command, args.out, args.mode, args.seed) == ("tiny-random", "out", "codebook", 0)
    with pytest.raises(SystemExit):
        build_parser(None).parse_args(["tiny-random", "out"])  # unconfigured: its arguments are unknown


def test_errors_are_one_line(tmp_path, capsys):
    code = main(["tokenize", str(tmp_path / "missing.png"), "--random"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("gvt tokenize: error:") and "\n" not in err


def test_train_help_documents_the_dataset_formats(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for form in (
        "synthetic:N",
        "imagefolder",
        ".json/.jsonl/.parquet",
        "datasets.load_dataset",
        "(default: synthetic:64)",
    ):
        assert form in help_text, form
