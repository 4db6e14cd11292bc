"""Atomic outputs: every file and folder gvt writes is staged beside its target and swapped into place, so that a
reader never sees a half-written output, a killed run leaves the old or the new output, and nothing the run did not
create is deleted.

    from gvt.atomic_write import atomic_output_dir, atomic_output_file

    with atomic_output_dir("lavit-hf", overwrite=False, inputs=["LaVIT-7B-v2"]) as staging:
        model.save_pretrained(staging)          # written into .lavit-hf.gvt-staging-<pid>-<token>/
    with atomic_output_file("picture.png") as staging:
        image.save(staging, format="PNG")

A folder output, step by step:

1. Checks, before any work ([`check_output_dir`]): the target (symbolic links resolved) is not the working
   directory or one of its parents, is not, is not inside and does not contain any of `inputs`; then, after the
   recovery of step 2, it is not a file, and is absent or empty unless `overwrite=True`.
2. Recovery ([`recover_output`]): leftovers of earlier *killed* runs on the same target (their process is gone) are
   handled: a staging folder `.NAME.gvt-staging-<pid>-<token>` is deleted (it never became an output); a replaced
   folder `.NAME.gvt-replaced-<pid>-<token>` (the old output, set aside) is moved back when the target is missing,
   else its carry-over (step 4) is finished.
3. Staging: `.NAME.gvt-staging-<pid>-<token>` is created beside the target and the caller writes into it. On an
   exception it is deleted and the target is untouched. When the block ends, everything in it gets the permissions
   the umask grants (safetensors, for one, writes its files 0600).
4. Commit: an absent or empty target is replaced by one `rename` (atomic). An existing output (`overwrite=True`) is
   renamed aside to `.NAME.gvt-replaced-<pid>-<token>`, the staging folder is renamed into place, then the old
   entries are sorted: those the new output supersedes (same name, or matching the writer's `owns` patterns, e.g.
   the weight shards of an earlier conversion) are deleted; every other entry (a user's `notes.txt`) is moved into
   the new folder, never deleted; the emptied replaced folder is removed with `rmdir`.

A kill at any point therefore leaves the old output or the new complete one in place, except in the instant between
the two renames of step 4, when the old output waits complete under its replaced name and the next write to the same
target moves it back (step 2; or call [`recover_output`]). Stale staging folders are cleaned the same way. Only
names carrying this module's marker are ever cleaned, and only when the process that made them is gone.

A file output is written to `.NAME.gvt-staging-<pid>-<token>` and moved over the target with `os.replace` (atomic);
an existing file of that name is replaced (the usual contract of an output file argument).
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)

STAGING_MARK = "gvt-staging"
REPLACED_MARK = "gvt-replaced"

HF_WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model-*-of-*.bin",
    "pytorch_model.bin.index.json",
)
"""Weight files of a `save_pretrained` folder: an earlier output's shards are superseded by any new weights (a stale
`model.safetensors` beside a new sharded index would otherwise be loaded instead of it)."""

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------------------------


def _marked_name(target: Path, mark: str) -> Path:
    return target.with_name(f".{target.name}.{mark}-{os.getpid()}-{secrets.token_hex(4)}")


def _leftovers(target: Path, mark: str) -> list[tuple[Path, int]]:
    """Marked siblings of `target` (`.NAME.<mark>-<pid>-<token>`) with the pid that made them."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{mark}-(\d+)-[0-9a-f]{{8}}")
    if not target.parent.is_dir():
        return []
    found = []
    for entry in target.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match:
            found.append((entry, int(match.group(1))))
    return sorted(found)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(root: Path) -> None:
    """Give everything under `root` the permissions the umask grants new files and folders (some writers, e.g.
    safetensors, create their files 0600): folders and executables `0o777 & ~umask`, other files `0o666 & ~umask`."""
    mask = _umask()
    paths = [root] if not root.is_dir() else [root, *root.rglob("*")]
    for path in paths:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------------


def _resolve(path: PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _check_not_overlapping(target: Path, inputs: Iterable[PathLike]) -> None:
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise ValueError(
            f"Refusing to write the output to {target}: it is the working directory or one of its parents. "
            "Give a new folder, e.g. ./converted."
        )
    for given in inputs:
        if given is None:
            continue
        source = _resolve(given)
        if target == source:
            raise ValueError(f"The output {target} is the input {source}; give another output path.")
        if source in target.parents:
            raise ValueError(f"The output {target} is inside the input {source}; give a path outside it.")
        if target in source.parents:
            raise ValueError(f"The output {target} would contain the input {source}; give another output path.")


def check_output_dir(
    path: PathLike, overwrite: bool = False, inputs: Iterable[PathLike] = (), owns: Sequence[str] = HF_WEIGHT_FILES
) -> Path:
    """Check that `path` may receive a folder output (see the module docstring) and return it resolved; first finish
    what killed runs left for it ([`recover_output`] with `owns`), so that the check sees the real output.

    Raises `ValueError` for a path that is the working directory (or above it) or overlaps an input, and
    `FileExistsError` for a file, or for a non-empty folder without `overwrite`."""
    target = _resolve(path)
    _check_not_overlapping(target, inputs)
    recover_output(target, owns)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"The output path {target} is a file; give a folder path.")
    if target.is_dir() and not overwrite and any(target.iterdir()):
        raise FileExistsError(
            f"The output folder {target} exists and is not empty; pass overwrite=True (--overwrite) to replace its "
            "output (other files in it are kept), or give a new folder."
        )
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f"Cannot create {target}: {parent} is a file.")
            break
    return target


def check_output_file(path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Check that `path` may receive a file output and return it resolved (`ValueError` / `FileExistsError`)."""
    target = _resolve(path)
    _check_not_overlapping(target, inputs)
    if target.is_dir():
        raise FileExistsError(f"The output path {target} is a folder; give a file path.")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f"Cannot create {target}: {parent} is a file.")
            break
    return target


# ----------------------------------------------------------------------------------------------------------------
# Commit and recovery
# ----------------------------------------------------------------------------------------------------------------


def _set_aside(target: Path) -> Path:
    """Rename the old output to its replaced name (step 4a)."""
    replaced = _marked_name(target, REPLACED_MARK)
    os.rename(target, replaced)
    return replaced


def _move_in(staging: Path, target: Path) -> None:
    """Rename the staged output into place (step 4b; atomic, also over an empty folder)."""
    os.rename(staging, target)


def _owned(name: str, owns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in owns)


def _carry_over(replaced: Path, target: Path, owns: Sequence[str] = ()) -> None:
    """Step 4c: delete the old entries the new output supersedes, move every other one into it, `rmdir` the rest."""
    new_names = {entry.name for entry in target.iterdir()}
    for entry in sorted(replaced.iterdir()):
        if entry.name in new_names or _owned(entry.name, owns):
            _remove(entry)
        else:
            os.rename(entry, target / entry.name)
    os.rmdir(replaced)


def recover_output(path: PathLike, owns: Sequence[str] = ()) -> None:
    """Finish what earlier killed runs left for the output `path`: delete their staging leftovers, put a set-aside
    old output back when the target is missing, or finish its carry-over. Leftovers of live processes are not
    touched."""
    target = _resolve(path)
    for replaced, pid in _leftovers(target, REPLACED_MARK):
        if _process_alive(pid):
            continue
        if not target.exists():
            os.rename(replaced, target)
            logger.warning(f"Restored the output {target} that an interrupted run had set aside.")
        elif replaced.is_dir() and target.is_dir():
            _carry_over(replaced, target, owns)
    for staging, pid in _leftovers(target, STAGING_MARK):
        if not _process_alive(pid):
            _remove(staging)


# ----------------------------------------------------------------------------------------------------------------
# The helpers
# ----------------------------------------------------------------------------------------------------------------


@contextmanager
def atomic_output_dir(
    path: PathLike, overwrite: bool = False, inputs: Iterable[PathLike] = (), owns: Sequence[str] = HF_WEIGHT_FILES
) -> Iterator[Path]:
    """Yield a staging folder beside `path`; when the block succeeds, it becomes `path` (see the module docstring).

    Args:
        path: the output folder.
        overwrite: replace an existing non-empty output. The old entries the new output supersedes (same name, or
            matching `owns`) are deleted; every other entry is moved into the new output.
        inputs: paths the output must not be, be inside, or contain (the run's input files and folders).
        owns: name patterns of entries an earlier output of this writer may hold that the new output supersedes even
            when it does not hold the same name (default: Hugging Face weight files and shards).
    """
    target = check_output_dir(path, overwrite=overwrite, inputs=list(inputs), owns=owns)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _marked_name(target, STAGING_MARK)
    os.mkdir(staging)
    try:
        yield staging
        _apply_umask(staging)
        _commit_dir(staging, target, overwrite, owns)
    except BaseException:
        if staging.exists():
            _remove(staging)
        raise


def _commit_dir(staging: Path, target: Path, overwrite: bool, owns: Sequence[str]) -> None:
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"The output path {target} became a file while the output was written.")
    if not target.exists() or not any(target.iterdir()):
        try:
            _move_in(staging, target)
            return
        except OSError as error:  # a folder filled in the meantime
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if not overwrite:
        raise FileExistsError(
            f"The output folder {target} was filled while this run wrote its output; nothing was replaced. Pass "
            "overwrite=True (--overwrite) to replace it."
        )
    replaced = _set_aside(target)
    try:
        _move_in(staging, target)
    except BaseException:
        if not target.exists():
            os.rename(replaced, target)
        raise
    _carry_over(replaced, target, owns)


@contextmanager
def atomic_output_file(path: PathLike, inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a staging file path beside `path` (an empty file, created with the umask's permissions); when the block
    succeeds it replaces `path` with `os.replace`. Stale staging files of killed runs are deleted first."""
    target = check_output_file(path, inputs=list(inputs))
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale, pid in _leftovers(target, STAGING_MARK):
        if not _process_alive(pid):
            _remove(stale)
    staging = _marked_name(target, STAGING_MARK)
    os.close(os.open(staging, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield staging
        _apply_umask(staging)
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def write_text_atomically(path: PathLike, text: str, inputs: Iterable[PathLike] = ()) -> Path:
    """`Path.write_text` through [`atomic_output_file`]; returns the resolved path."""
    with atomic_output_file(path, inputs=inputs) as staging:
        staging.write_text(text)
    return _resolve(path)


__all__ = [
    "atomic_output_dir",
    "atomic_output_file",
    "write_text_atomically",
    "check_output_dir",
    "check_output_file",
    "recover_output",
    "HF_WEIGHT_FILES",
]
