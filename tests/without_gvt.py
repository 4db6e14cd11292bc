"""Run a script in a fresh interpreter in which the `gvt` package cannot be imported, to test remote code.

Isolation by module location, not by names in paths (a clone may well live in a folder called `gvt`): `python -I`
(no PYTHONPATH, no user site, the script's folder not on `sys.path`), a temporary working folder, an import hook
that refuses `gvt` (and no `torchvision` either), and at the end a check that no loaded module's file lies inside the package
folder.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gvt

PACKAGE_DIR = Path(gvt.__file__).resolve().parent

PRELUDE = textwrap.dedent(
    """
    import importlib.abc, os, sys

    class _Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "gvt":
                raise ModuleNotFoundError(f"No module named {name!r} (refused: this interpreter runs without it)")
            return None

    sys.meta_path.insert(0, _Refuse())
    sys.modules["torchvision"] = None  # as transformers' own PIL-backend test: `import torchvision` fails
    _PACKAGE_DIR = sys.argv.pop(1)
    """
)

EPILOGUE = textwrap.dedent(
    """
    _inside = [
        name for name, module in list(sys.modules.items())
        if os.path.realpath(getattr(module, "__file__", None) or "").startswith(_PACKAGE_DIR + os.sep)
    ]
    assert not _inside, f"modules loaded from the gvt package folder: {_inside}"
    """
)


def run_without_gvt(script: str, *args: str, workdir: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `script` (its `sys.argv[1:]` are `args`) in `workdir` with `HF_HUB_OFFLINE=1` and a private module cache;
    fails when the script imported anything from the package folder."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(workdir / "modules"), "PYTHONPATH": ""}
    code = PRELUDE + textwrap.dedent(script) + EPILOGUE
    command = [sys.executable, "-I", "-c", code, str(PACKAGE_DIR), *map(str, args)]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env, timeout=timeout)
