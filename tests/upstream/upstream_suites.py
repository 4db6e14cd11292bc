"""Make transformers' (and, when given, diffusers') own common test suites importable, without copying them here.

transformers: the sdist of the *installed* version ships `tests/test_modeling_common.py`, `test_configuration_common.py`,
`test_processing_common.py`, `test_image_processing_common.py`, `test_pipeline_mixin.py`, ... It is downloaded once
with pip (`pip download --no-deps --no-binary :all: transformers==X`) into a cache folder (`GVT_UPSTREAM_CACHE`,
default `~/.cache/gvt/upstream`); `GVT_TRANSFORMERS_SDIST` may name an sdist already on disk instead. Its `tests/` is
copied into a temporary package named `tests` (the name its absolute imports use) and put first on `sys.path`.

What those files import but the sdist lacks comes from a transformers checkout when `GVT_TRANSFORMERS_TESTS` names one
(its `tests/generation/` and `tests/exporters/`), and otherwise from the stand-ins in `shims/`;
a stand-in for a test mixin contributes no tests, and `describe()` says which file came from where.

diffusers: its sdist ships no test suite; `GVT_DIFFUSERS_TESTS` may name a diffusers checkout (with `tests/`), whose
`tests/` becomes the package `diffusers_tests`.

Nothing here passes silently: when the sdist cannot be had, `load_transformers_suites()` raises `UpstreamUnavailable`
with the reason, and `tests/upstream/test_upstream_suites_available.py` fails with it.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SHIMS_DIR = Path(__file__).resolve().parent / "shims"

ENV_CACHE = "GVT_UPSTREAM_CACHE"
ENV_TRANSFORMERS_SDIST = "GVT_TRANSFORMERS_SDIST"
ENV_TRANSFORMERS_TESTS = "GVT_TRANSFORMERS_TESTS"
ENV_DIFFUSERS_TESTS = "GVT_DIFFUSERS_TESTS"

DOWNLOAD_TIMEOUT_S = 600

# Files the sdist's tests import but do not ship: path in the package root -> stand-in in `shims/`.
MISSING_FROM_SDIST = {
    "tests/generation/test_utils.py": "generation_test_utils.py",
    "tests/exporters/test_export.py": "exporters_test_export.py",
    "tests/utils/test_configuration_utils.py": "utils_test_configuration_utils.py",
    "utils/fetch_hub_objects_for_ci.py": "fetch_hub_objects_for_ci.py",
}
# Folders taken whole from a transformers checkout when one is given: the generation and export testers. The other two
# files above import `httpx` (not a dependency here) for Hub tests that cannot run offline, so their stand-ins stay.
CHECKOUT_FOLDERS = ("tests/generation", "tests/exporters")


class UpstreamUnavailable(RuntimeError):
    """The upstream test suites could not be had (no registry, no sdist, wrong layout)."""


@dataclass
class UpstreamSuites:
    root: Path
    transformers_version: str
    sdist_tests: Path
    sources: dict[str, str] = field(default_factory=dict)
    diffusers_tests: Path | None = None

    def uses_shim(self, relative_path: str) -> bool:
        return self.sources.get(relative_path, "").startswith("gvt shim")

    def describe(self) -> list[str]:
        lines = [f"transformers {self.transformers_version} test suites from the sdist: {self.sdist_tests}"]
        lines += [f"  {path}: {source}" for path, source in sorted(self.sources.items())]
        diffusers = self.diffusers_tests or f"absent (set {ENV_DIFFUSERS_TESTS} to a diffusers checkout)"
        lines.append(f"diffusers test suites: {diffusers}")
        return lines


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "gvt" / "upstream")


def _download_sdist(version: str, destination: Path) -> Path:
    """`pip download` the sdist of transformers==version into `destination`; return the archive's path."""
    destination.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        f"transformers=={version}",
        "-d",
        str(destination),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UpstreamUnavailable(f"`{' '.join(command)}` failed: {error}") from error
    archives = sorted(destination.glob(f"transformers-{version}.tar.gz"))
    if result.returncode != 0 or not archives:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise UpstreamUnavailable(
            f"Could not download the transformers {version} sdist (its tests/ hold the common testers). "
            f"`{' '.join(command)}` exited with {result.returncode}:\n{tail}\n"
            f"Without a package registry, point {ENV_TRANSFORMERS_SDIST} at transformers-{version}.tar.gz."
        )
    return archives[0]


def _extract_tests(archive: Path, version: str, target: Path) -> None:
    """Copy `transformers-<version>/tests/**` of the sdist into `target` (written to a staging folder, then renamed)."""
    prefix = f"transformers-{version}/tests/"
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                if not member.isfile() or not member.name.startswith(prefix):
                    continue
                relative = Path(member.name[len(prefix) :])
                if relative.is_absolute() or ".." in relative.parts:
                    raise UpstreamUnavailable(f"Unsafe path in {archive}: {member.name}")
                output = staging / relative
                output.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, open(output, "wb") as sink:
                    shutil.copyfileobj(source, sink)
        if not (staging / "test_modeling_common.py").is_file():
            raise UpstreamUnavailable(f"{archive} holds no {prefix}test_modeling_common.py.")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def sdist_tests_dir(version: str) -> Path:
    """The sdist's `tests/` for transformers==version, downloaded and extracted once into the cache folder."""
    version_dir = cache_dir() / f"transformers-{version}"
    target = version_dir / "tests"
    if (target / "test_modeling_common.py").is_file():
        return target
    version_dir.mkdir(parents=True, exist_ok=True)
    given = os.environ.get(ENV_TRANSFORMERS_SDIST)
    if given:
        archive = Path(given)
        if not archive.is_file():
            raise UpstreamUnavailable(f"{ENV_TRANSFORMERS_SDIST}={given} is not a file.")
    else:
        existing = version_dir / f"transformers-{version}.tar.gz"
        archive = existing if existing.is_file() else _download_sdist(version, version_dir)
    _extract_tests(archive, version, target)
    return target


def _build_package(version: str) -> UpstreamSuites:
    sdist_tests = sdist_tests_dir(version)
    root = Path(tempfile.mkdtemp(prefix="gvt-upstream-suites-"))
    atexit.register(shutil.rmtree, root, True)
    suites = UpstreamSuites(root=root, transformers_version=version, sdist_tests=sdist_tests)

    checkout = os.environ.get(ENV_TRANSFORMERS_TESTS)
    if checkout:
        checkout_path = Path(checkout)
        if not (checkout_path / "tests" / "generation" / "test_utils.py").is_file():
            raise UpstreamUnavailable(
                f"{ENV_TRANSFORMERS_TESTS}={checkout} must be a transformers checkout holding "
                "tests/generation/test_utils.py."
            )
        for folder in CHECKOUT_FOLDERS:
            if (checkout_path / folder).is_dir():
                shutil.copytree(checkout_path / folder, root / folder, dirs_exist_ok=True)
    shutil.copytree(sdist_tests, root / "tests", dirs_exist_ok=True)

    for relative, shim in MISSING_FROM_SDIST.items():
        path = root / relative
        if path.is_file():
            suites.sources[relative] = f"transformers checkout {checkout}"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(SHIMS_DIR / shim, path)
            suites.sources[relative] = f"gvt shim tests/upstream/shims/{shim} (absent from the sdist)"
    for package in ("tests", "tests/generation", "tests/exporters", "tests/utils"):
        (root / package / "__init__.py").touch()

    diffusers = os.environ.get(ENV_DIFFUSERS_TESTS)
    if diffusers:
        diffusers_tests = Path(diffusers) / "tests"
        if not (diffusers_tests / "pipelines" / "test_pipelines_common.py").is_file():
            raise UpstreamUnavailable(
                f"{ENV_DIFFUSERS_TESTS}={diffusers} must be a diffusers checkout holding "
                "tests/pipelines/test_pipelines_common.py."
            )
        (root / "diffusers_tests").symlink_to(diffusers_tests.resolve(), target_is_directory=True)
        suites.diffusers_tests = diffusers_tests
    return suites


_SUITES: UpstreamSuites | None = None
_FAILURE: UpstreamUnavailable | None = None


def load_transformers_suites() -> UpstreamSuites:
    """Build (once per process) and import the package `tests` of transformers' own test suites."""
    global _SUITES, _FAILURE
    if _SUITES is not None:
        return _SUITES
    if _FAILURE is not None:
        raise _FAILURE
    version = importlib.metadata.version("transformers")
    try:
        suites = _build_package(version)
    except UpstreamUnavailable as error:
        _FAILURE = error
        raise
    loaded = sys.modules.get("tests")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(suites.root)):
        sys.modules.pop("tests")  # a namespace package (this repository's own tests/ folder)
    sys.path.insert(0, str(suites.root))
    importlib.invalidate_caches()
    package = importlib.import_module("tests")
    if not str(package.__file__).startswith(str(suites.root)):
        raise UpstreamUnavailable(f"`import tests` resolved to {package.__file__}, not to {suites.root}.")
    _SUITES = suites
    return suites


def import_suite(name: str):
    """Import one upstream test module, e.g. `import_suite("tests.test_modeling_common")`."""
    load_transformers_suites()
    return importlib.import_module(name)


def diffusers_suites_available() -> bool:
    return load_transformers_suites().diffusers_tests is not None
