"""Find and load submissions: a .py file, a folder holding it, a .ipynb, a folder of per-student entries,
or a .zip of any of these. Produces Submission objects holding the files' bytes (nothing is executed here).

Archives are unpacked defensively: no absolute paths, no `..`, no links, bounded size and member count.
Notebooks are converted to a module: code cells joined, IPython magics and `!` shell lines stripped.
"""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from grader.errors import InputError

MAX_FILE_BYTES = 5 << 20  # one source or weights file
MAX_SUBMISSION_BYTES = 50 << 20
MAX_ZIP_BYTES = 2 << 30
MAX_ZIP_MEMBERS = 20_000
CARRIED_SUFFIXES = (".py", ".npz", ".pt", ".pth", ".json", ".txt", ".csv")
SKIP_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints", "__MACOSX", ".venv", "venv"}


@dataclass(frozen=True)
class Submission:
    """One student's submission: the files to copy into the worker's directory, keyed by relative path.

    `problem` is set when the submission cannot be graded at all (it then scores 0 with that reason).
    """

    student: str
    files: dict[str, bytes] = field(default_factory=dict)
    origin: str = ""
    notes: tuple[str, ...] = ()
    problem: str = ""


def discover(path: Path, module: str, *, workdir: Path | None = None) -> list[Submission]:
    """All submissions under `path`: one if it is (or holds) the student's module, else one per entry.

    `workdir` receives unpacked archives (a temporary directory if None; the caller keeps it alive).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="seqgrade-unzip-"))
    try:
        if path.is_file() and path.suffix == ".zip":
            root = unpack_zip(path, tmp / _slug(path.stem))
            return discover_folder(root, module, tmp, origin=str(path), default_id=path.stem)
        if path.is_file():
            return [load_entry(path, module, tmp)]
        return discover_folder(path, module, tmp, origin=str(path), default_id=path.resolve().name)
    except InputError:
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def discover_folder(root: Path, module: str, tmp: Path, *, origin: str, default_id: str) -> list[Submission]:
    entries = [p for p in sorted(root.iterdir()) if p.name not in SKIP_DIRS and not p.name.startswith(".")]
    if _holds_module(root, module):
        return [load_entry(root, module, tmp, student=default_id)]
    # an archive holding one top folder: descend
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return discover_folder(entries[0], module, tmp, origin=origin, default_id=entries[0].name)
    subs = []
    for entry in entries:
        if entry.is_symlink():
            subs.append(Submission(entry.name, origin=str(entry), problem="is a symbolic link: not followed"))
        elif entry.is_dir() or entry.suffix in (".py", ".ipynb", ".zip"):
            subs.append(load_entry(entry, module, tmp))
    if not subs:
        raise InputError(f"{origin}: no {module}.py, {module}.ipynb or per-student entries found")
    return subs


def load_entry(entry: Path, module: str, tmp: Path, *, student: str | None = None) -> Submission:
    """One student's entry (a file or a folder) -> Submission. Never raises for the student's mistakes."""
    sid = student or (entry.stem if entry.is_file() else entry.name)
    try:
        if entry.is_file() and entry.suffix == ".zip":
            folder = unpack_zip(entry, tmp / _slug(sid))
            return _from_folder(folder, module, sid, str(entry))
        if entry.is_file():
            return _from_file(entry, module, sid)
        return _from_folder(entry, module, sid, str(entry))
    except InputError as e:
        return Submission(sid, origin=str(entry), problem=str(e))


def _from_file(path: Path, module: str, sid: str) -> Submission:
    if path.suffix == ".ipynb":
        source = notebook_to_source(path)
        return Submission(sid, {f"{module}.py": source.encode()}, str(path), ("converted from a notebook",))
    if path.suffix != ".py":
        raise InputError(f"{path.name} is not a .py or .ipynb file")
    return Submission(sid, {f"{module}.py": _read(path)}, str(path))


def _from_folder(folder: Path, module: str, sid: str, origin: str) -> Submission:
    files: dict[str, bytes] = {}
    notes: list[str] = []
    total = 0
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if p.is_symlink() or not p.is_file() or p.suffix not in CARRIED_SUFFIXES + (".ipynb",):
            continue
        data = _read(p)
        total += len(data)
        if total > MAX_SUBMISSION_BYTES:
            raise InputError(f"the submission is larger than {MAX_SUBMISSION_BYTES >> 20} MiB")
        if p.suffix == ".ipynb":
            continue
        files[rel.as_posix()] = data
    main = f"{module}.py"
    if main not in files:
        nb = folder / f"{module}.ipynb"
        candidates = [folder / main] if (folder / main).is_file() else []
        if nb.is_file():
            files[main] = notebook_to_source(nb).encode()
            notes.append("converted from a notebook")
        else:
            top = [p for p in sorted(folder.iterdir()) if p.suffix in (".py", ".ipynb") and p.is_file()]
            named = [p for p in top if module in p.stem.lower()]
            pick = named[:1] if len(named) == 1 else (top if len(top) == 1 else candidates)
            if not pick:
                found = ", ".join(p.name for p in top) or "nothing"
                problem = f"no {module}.py or {module}.ipynb in the submission (found {found})"
                # its other files still count where the plan grades files (a weights file, say)
                return Submission(sid, files, origin, tuple(notes), problem=problem)
            p = pick[0]
            files[main] = notebook_to_source(p).encode() if p.suffix == ".ipynb" else _read(p)
            notes.append(f"graded {p.name} as {main}")
    return Submission(sid, files, origin, tuple(notes))


def _holds_module(folder: Path, module: str) -> bool:
    return (folder / f"{module}.py").is_file() or (folder / f"{module}.ipynb").is_file()


def _read(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(
            f"{path.name} is {size >> 20} MiB, over the {MAX_FILE_BYTES >> 20} MiB limit per file"
        )
    return path.read_bytes()


# ----------------------------------------------------------------------------------------------- notebooks

_MAGIC = re.compile(r"^(\s*)(%{1,2}[A-Za-z]|!(?!=))")  # %magic, %%magic, !cmd (not a `% n` continuation)
_SHELL_ASSIGN = re.compile(r"^(\s*)[\w\s,]+=\s*!(?!=)")  # files = !ls


def notebook_to_source(path: Path) -> str:
    """The notebook's code cells as one module; cell magics drop the cell, line magics and !shell drop the line."""
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as e:
        raise InputError(f"{path.name} is not a readable notebook ({e.__class__.__name__})") from None
    parts = []
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        if src.lstrip().startswith("%%"):
            parts.append(f"# cell {i}: cell magic removed")
            continue
        lines = [_strip_magic(ln) for ln in src.splitlines()]
        parts.append(f"# cell {i}\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _strip_magic(line: str) -> str:
    """A magic or shell line becomes `pass` at the same indent, so the code around it still compiles."""
    m = _MAGIC.match(line) or _SHELL_ASSIGN.match(line)
    return f"{m.group(1)}pass  # removed: IPython magic or shell command" if m else line


# ----------------------------------------------------------------------------------------------- archives


def unpack_zip(path: Path, dest: Path) -> Path:
    """Unpack `path` into `dest` safely: members escaping dest, links, and bombs are refused or skipped."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{path.name} is not a readable zip archive ({e.__class__.__name__})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise InputError(f"{path.name} has {len(infos)} members (limit {MAX_ZIP_MEMBERS})")
        if sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
            raise InputError(f"{path.name} unpacks to more than {MAX_ZIP_BYTES >> 30} GiB")
        dest.mkdir(parents=True, exist_ok=True)
        base = dest.resolve()
        for info in infos:
            name = info.filename.replace("\\", "/")
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name):
                continue  # would land outside the folder
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                continue
            target = (base / pure).resolve()
            if not target.is_relative_to(base):
                continue
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                remaining = MAX_FILE_BYTES * 4
                while chunk := src.read(1 << 20):
                    remaining -= len(chunk)
                    if remaining < 0:
                        break
                    out.write(chunk)
    return dest


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)[:80] or "_"
