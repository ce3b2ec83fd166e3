"""Outputs that are never half-written, and manifests that say what they were made from.

Every stage writes through these helpers:

- :func:`atomic_file` / :func:`write_text` / :func:`write_json` / :func:`write_jsonl` / :func:`save_dataset`:
  the data goes to a temporary name in the same folder (``.<name>.tmp-<pid><suffix>``) and is renamed over the
  target with ``os.replace`` only once complete, so a kill leaves either the old output or the new one;
- :func:`atomic_dir`: a folder of outputs (e.g. select's four splits and ``stats.json``) is built in a temporary
  folder and swapped in as a whole (``renameat2(RENAME_EXCHANGE)`` on Linux), so the splits always come from the
  same run;
- :func:`relocate_text`: paths that tools wrote into a folder built aside are rewritten to its final place;
- :func:`write_manifest`: ``manifest.yaml`` in an output folder, or ``<file>.manifest.yaml`` beside a file output,
  records the stage, its inputs with their fingerprints (:func:`fingerprint`), its arguments (secrets redacted),
  the row counts and the outputs' own fingerprints. :func:`manifest_matches` is how a stage decides to reuse an
  earlier output: same stage, same inputs (by content), same arguments, and outputs unchanged since written --
  never file times alone;
- :func:`check_rows`: every stage logs ``rows in = sum of rows out`` and records it in its manifest; a mismatch
  is a bug and raises.

The manifest is YAML (not ``.json``) so that folders of JSON data and globs over ``*.json`` never pick it up.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from empathy_recipes.redact import redact_argv, redact_mapping

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.yaml"
MANIFEST_SUFFIX = ".manifest.yaml"
FULL_HASH_LIMIT = 64 * 2**20  # files up to this size are hashed whole; bigger ones by head + tail + size
_EDGE = 2**20


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------------------
def _tmp_name(target: Path) -> Path:
    suffix = "".join(target.suffixes[-1:]) if target.suffix else ""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}{suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike) -> int:
    """Remove temporaries of ``target`` left by killed writers (their pid is gone). Returns how many."""
    target = Path(target)
    removed = 0
    if not target.parent.is_dir():
        return 0
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        pid = tmp.name[len(f".{target.name}.tmp-") :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target`` (same suffix, so writers that pick a format by suffix still
    work); on a clean exit it replaces ``target`` in one ``os.replace``, on an error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = _tmp_name(target)
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON (UTF-8, trailing newline) to ``target`` atomically."""
    return write_text(target, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(target: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write ``rows`` as JSON Lines to ``target`` atomically; returns the number of rows."""
    n = 0
    with atomic_file(target) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(source: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of the JSON Lines file ``source`` (what :func:`write_jsonl` writes); blank lines are skipped."""
    with open(source, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def save_dataset(ds: Any, output: str | os.PathLike) -> Path:
    """:func:`empathy_recipes.data.save_dataset`, atomically: a file is replaced in one rename, a ``save_to_disk``
    folder is swapped in as a whole."""
    from empathy_recipes.data import FILE_BUILDERS
    from empathy_recipes.data import save_dataset as _save

    output = Path(output)
    if output.suffix.lower() in FILE_BUILDERS:
        with atomic_file(output) as tmp:
            _save(ds, tmp)
    else:
        with atomic_dir(output) as tmp:
            _save(ds, tmp)
    return output


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one system call (Linux ``renameat2``); False when unsupported here."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the folder ``tmp`` in place of ``target`` as a whole (atomic swap on Linux), removing the old one."""
    tmp, target = Path(tmp), Path(target)
    if not target.exists() and not target.is_symlink():
        os.replace(tmp, target)
        return
    if target.is_dir() and not target.is_symlink() and _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old folder
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    _remove(old)
    os.replace(target, old)
    os.replace(tmp, target)
    _remove(old)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, owned: Iterable[str] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on a clean exit it replaces ``target`` as a whole.

    ``owned``: when given, ``target`` may already exist only if it holds nothing but these names (and manifests,
    dot files): a folder that holds anything else is refused rather than replaced, so a mistaken
    ``--output-dir`` never deletes a user's files.
    """
    from empathy_recipes.errors import EmpathyRecipesError

    target = Path(target)
    if owned is not None and target.is_dir():
        allowed = set(owned) | {MANIFEST_NAME}
        foreign = sorted(p.name for p in target.iterdir() if p.name not in allowed and not p.name.startswith("."))
        if foreign:
            raise EmpathyRecipesError(
                f"{target} holds files this stage did not write ({', '.join(foreign[:5])}): give an empty or new "
                "output folder"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = _tmp_name(target)
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".txt", ".yaml", ".yml")


def relocate_text(folder: str | os.PathLike, old: str | os.PathLike, new: str | os.PathLike) -> int:
    """Rewrite the path ``old`` as ``new`` in the text files (:data:`TEXT_SUFFIXES`, up to 64 MiB) under ``folder``.

    A folder built aside with :func:`atomic_dir` by tools that record their own paths (mergekit's configs and model
    cards) then names its final place, not the temporary one. Returns the number of files rewritten."""
    old_bytes, new_bytes = os.fsencode(old), os.fsencode(new)
    changed = 0
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.suffix not in TEXT_SUFFIXES or path.stat().st_size > FULL_HASH_LIMIT:
            continue
        data = path.read_bytes()
        if old_bytes in data:
            with atomic_file(path) as tmp:
                tmp.write_bytes(data.replace(old_bytes, new_bytes))
            changed += 1
    return changed


# ---------------------------------------------------------------------------------------------------------------
# Fingerprints and manifests
# ---------------------------------------------------------------------------------------------------------------
def _file_digest(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(2**20), b""):
                h.update(block)
            return h.hexdigest()
        h.update(handle.read(_EDGE))
        handle.seek(size - _EDGE)
        h.update(handle.read(_EDGE))
    return "edges:" + h.hexdigest()


def fingerprint(ref: str | os.PathLike | None) -> dict[str, Any] | None:
    """What identifies an input: for a file its size and content hash (whole up to 64 MiB, else head + tail +
    size + mtime), for a folder the same for every file in it (one combined hash), for anything else (a Hub id)
    the id itself. ``None`` for ``None``."""
    if ref is None:
        return None
    path = Path(ref).expanduser()
    if path.is_file():
        stat = path.stat()
        fp: dict[str, Any] = {"path": str(ref), "kind": "file", "size": stat.st_size}
        fp["sha256"] = _file_digest(path, stat.st_size)
        if stat.st_size > FULL_HASH_LIMIT:
            fp["mtime_ns"] = stat.st_mtime_ns
        return fp
    if path.is_dir():
        h = hashlib.sha256()
        files = size = 0
        for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if child.name == MANIFEST_NAME or child.name.endswith(MANIFEST_SUFFIX):
                continue
            stat = child.stat()
            h.update(f"{child.relative_to(path)}\0{stat.st_size}\0".encode())
            h.update(_file_digest(child, stat.st_size).encode())
            if stat.st_size > FULL_HASH_LIMIT:
                h.update(str(stat.st_mtime_ns).encode())
            files += 1
            size += stat.st_size
        return {"path": str(ref), "kind": "dir", "files": files, "size": size, "sha256": h.hexdigest()}
    return {"path": str(ref), "kind": "ref"}


def manifest_path(output: str | os.PathLike) -> Path:
    """Where the manifest of ``output`` lives: ``<folder>/manifest.yaml``, or ``<file>.manifest.yaml``."""
    output = Path(output)
    if output.is_dir() or not output.suffix:
        return output / MANIFEST_NAME
    return output.with_name(output.name + MANIFEST_SUFFIX)


def describe_args(args: Any) -> dict[str, Any]:
    """A stage's arguments (an ``argparse.Namespace`` or a mapping) as plain data with secrets redacted."""
    data = vars(args) if hasattr(args, "__dict__") and not isinstance(args, Mapping) else dict(args)
    plain = json.loads(json.dumps(data, default=str))
    return redact_mapping(plain)


def build_manifest(
    stage: str,
    inputs: Mapping[str, str | os.PathLike | None],
    args: Any,
    counts: Mapping[str, Any] | None = None,
    outputs: Mapping[str, str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """The manifest of one run of ``stage`` (see the module docstring)."""
    return {
        "stage": stage,
        "inputs": {name: fingerprint(ref) for name, ref in inputs.items()},
        "args": describe_args(args),
        "counts": dict(counts or {}),
        "outputs": {name: fingerprint(path) for name, path in (outputs or {}).items()},
        "command": redact_argv(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_manifest(
    output: str | os.PathLike,
    stage: str,
    inputs: Mapping[str, str | os.PathLike | None],
    args: Any,
    counts: Mapping[str, Any] | None = None,
    outputs: Mapping[str, str | os.PathLike] | None = None,
    path: str | os.PathLike | None = None,
) -> Path:
    """Write the manifest of ``output`` atomically (last, after the outputs themselves); returns its path."""
    manifest = build_manifest(stage, inputs, args, counts, outputs)
    target = Path(path) if path is not None else manifest_path(output)
    return write_text(target, yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=1000))


def read_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    """A manifest read back (``path`` is the manifest or the output it describes); ``None`` when absent or
    unreadable."""
    path = Path(path)
    if not path.name.endswith((MANIFEST_NAME, MANIFEST_SUFFIX)):
        path = manifest_path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def manifest_matches(
    output: str | os.PathLike,
    stage: str,
    inputs: Mapping[str, str | os.PathLike | None],
    args: Any,
    ignore_args: Iterable[str] = (),
    path: str | os.PathLike | None = None,
) -> tuple[bool, str]:
    """Whether ``output`` may be reused: ``(True, "")`` when its manifest names the same stage, inputs with the
    same fingerprints and the same arguments (except ``ignore_args``), and every output it lists is unchanged;
    else ``(False, reason)``."""
    manifest = read_manifest(path if path is not None else output)
    if manifest is None:
        return False, "no manifest"
    if manifest.get("stage") != stage:
        return False, f"made by {manifest.get('stage')!r}"
    want = {name: fingerprint(ref) for name, ref in inputs.items()}
    have = manifest.get("inputs") or {}
    for name, fp in want.items():
        if _comparable(have.get(name)) != _comparable(fp):
            return False, f"input {name} changed"
    skip = set(ignore_args)
    want_args = {k: v for k, v in describe_args(args).items() if k not in skip}
    have_args = {k: v for k, v in (manifest.get("args") or {}).items() if k not in skip}
    if want_args != have_args:
        changed = sorted(k for k in set(want_args) | set(have_args) if want_args.get(k) != have_args.get(k))
        return False, f"arguments changed ({', '.join(changed)})"
    for name, fp in (manifest.get("outputs") or {}).items():
        now = fingerprint(fp["path"]) if fp else None
        if _comparable(now) != _comparable(fp):
            return False, f"output {name} changed since it was written"
    return True, ""


def _comparable(fp: Mapping[str, Any] | None) -> Any:
    """A fingerprint without its path (the same content under another name is the same input)."""
    if fp is None:
        return None
    if fp.get("kind") == "ref":
        return dict(fp)
    return {k: v for k, v in fp.items() if k != "path"}


# ---------------------------------------------------------------------------------------------------------------
# Row accounting
# ---------------------------------------------------------------------------------------------------------------
def check_rows(stage: str, rows_in: int, rows_out: Mapping[str, int], log: logging.Logger | None = None) -> dict:
    """Log ``rows in = sum of rows out`` for ``stage`` and return it as manifest counts; raise when it does not hold
    (a row lost or duplicated is a bug, never a user error)."""
    total = sum(rows_out.values())
    parts = " + ".join(f"{n} {name}" for name, n in rows_out.items()) or "0"
    line = f"rows in {rows_in} = {parts}"
    if total != rows_in:
        raise RuntimeError(f"[{stage}] {line} is false: {total} rows out; rows were lost or duplicated")
    (log or logger).info(line)
    return {"rows_in": rows_in, "rows_out": dict(rows_out)}


# ---------------------------------------------------------------------------------------------------------------
# Spreadsheets
# ---------------------------------------------------------------------------------------------------------------
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run as a formula: text starting with ``= + - @``, a tab or a carriage
    return gets a leading ``'`` (OWASP's advice for CSV injection); other values are returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_LEADS):
        return "'" + value
    return value
