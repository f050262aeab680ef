"""Who is who: a roster (CSV) of students, and the ids that LMS bulk downloads put in file names.

    Roster.from_csv(path)               Canvas gradebook export, Gradescope roster, GitHub Classroom roster,
                                        or any CSV with id/name/email-like columns
    parse_entry(name)                   the ids hidden in a downloaded entry's name:
        Canvas        smithjohn_12345_678901_rnn.py, smithjohn_LATE_12345_678901_rnn-1.py
        Gradescope    submission_123456/  (+ submission_metadata.yml: names, SIDs, emails, times)
        GitHub        rnn-assignment-octocat/   (Classroom: <assignment>-<github user>)
        plain         jdoe.py, jdoe@uni.edu/, 1234567.zip
    collect(download, roster, dest)     one folder per rostered student (dest/<key>/...), ready for
                                        `seqgrade grade`; unmatched entries keep their name and are listed,
                                        students without a submission are listed; dest/collect.csv says all.

Nothing is dropped silently: every entry ends up matched or unmatched, every student submitted or missing.
"""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from grader.errors import InputError

MANIFEST = "collect.csv"

# ----------------------------------------------------------------------------------------------- roster

COLUMNS = {
    "name": ("student", "name", "full name", "student name", "display name"),
    "first": ("first name", "first", "given name", "firstname"),
    "last": ("last name", "last", "family name", "surname", "lastname"),
    "email": ("email", "e-mail", "email address", "mail"),
    "sis_id": (
        "sis user id",
        "sis id",
        "sid",
        "student id",
        "student number",
        "student_id",
        "matriculation number",
    ),
    "login": ("sis login id", "login", "login id", "username", "user name", "netid", "uni"),
    "canvas_id": ("canvas id", "canvas user id"),
    "section": ("section", "sections"),
    "github": ("github", "github_username", "github username", "github login"),
}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@dataclass(frozen=True)
class Student:
    key: str  # the id reports and folders use: SIS id, else login, email, Canvas id, GitHub user, name
    name: str = ""
    email: str = ""
    sis_id: str = ""
    login: str = ""
    canvas_id: str = ""
    section: str = ""
    github: str = ""

    def aliases(self) -> set[str]:
        """Lower-cased strings that identify this student in file and folder names."""
        out = {self.key, self.sis_id, self.login, self.canvas_id, self.email, self.github}
        out |= {a.split("@")[0] for a in out if "@" in a}  # jdoe@uni.edu also names jdoe.py
        if self.name:
            if "," in self.name:  # Canvas: "Last, First"
                last, _, first = self.name.partition(",")
            else:
                *firsts, last = self.name.split() or [""]
                first = " ".join(firsts)
            out |= {slug(last + first), slug(first + last), slug(self.name)}
        return {a.lower() for a in out if a}


@dataclass
class Roster:
    students: list[Student]
    _index: dict[str, list[Student]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for s in self.students:
            for a in s.aliases():
                self._index.setdefault(a, []).append(s)

    def lookup(self, token: str) -> Student | None:
        """The one student `token` names (None if nobody, or more than one student, has that alias)."""
        hits = self._index.get(token.lower().strip(), [])
        unique = {s.key: s for s in hits}
        return next(iter(unique.values())) if len(unique) == 1 else None

    def by_key(self, key: str) -> Student | None:
        return next((s for s in self.students if s.key == key), None)

    @classmethod
    def from_csv(cls, path: Path) -> Roster:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as e:
            raise InputError(f"{path}: cannot read the roster ({e.strerror})") from None
        rows = list(csv.DictReader(text.splitlines()))
        if not rows:
            raise InputError(f"{path}: the roster has no rows")
        header = {h.strip().lower(): h for h in rows[0] if h}
        col = {k: next((header[c] for c in cands if c in header), None) for k, cands in COLUMNS.items()}
        if "id" in header:  # Canvas's "ID" is its user id when SIS columns are there; else the student id
            which = "canvas_id" if "sis user id" in header or "sis login id" in header else "sis_id"
            col[which] = col[which] or header["id"]
        if "identifier" in header and not col["sis_id"]:  # GitHub Classroom's roster identifier
            col["sis_id"] = header["identifier"]
        students, seen = [], set()
        for row in rows:
            get = {k: (row.get(c) or "").strip() if c else "" for k, c in col.items()}
            name = get["name"] or " ".join(x for x in (get["first"], get["last"]) if x)
            if name.strip().lower() in (
                "points possible",
                "test student",
                "student, test",
            ):
                continue
            key = (
                next((get[k] for k in ("sis_id", "login", "email", "canvas_id", "github") if get[k]), "")
                or name
            )
            if not key:
                continue
            if key in seen:
                raise InputError(f"{path}: student id {key!r} appears twice in the roster")
            seen.add(key)
            students.append(
                Student(
                    key,
                    name,
                    get["email"],
                    get["sis_id"],
                    get["login"],
                    get["canvas_id"],
                    get["section"],
                    get["github"],
                )
            )
        if not students:
            raise InputError(f"{path}: no students found (columns: {', '.join(header.values())})")
        return cls(students)


# ----------------------------------------------------------------------------------------------- entry names


@dataclass(frozen=True)
class Entry:
    """What an entry's name says: ids to look up (most specific first), lateness, its source."""

    name: str
    tokens: tuple[str, ...]
    source: str  # "canvas" | "gradescope" | "github" | "plain"
    late: bool = False
    file: str = ""  # Canvas: the student's own file name, without Canvas's prefix and resubmission suffix
    submission_id: str = ""


_CANVAS = re.compile(r"^(?P<slug>[a-z0-9-]+?)(?P<late>_late)?_(?P<uid>\d+)_(?P<sid>\d+)_(?P<file>.+)$", re.I)
_CANVAS_RESUBMIT = re.compile(r"-(\d+)(\.[A-Za-z0-9]+)$")
_GRADESCOPE = re.compile(r"^submission_(\d+)$")


def parse_entry(name: str) -> Entry:
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in (".py", ".ipynb", ".zip") else name
    m = _CANVAS.match(name)
    if m:
        own = _CANVAS_RESUBMIT.sub(r"\2", m["file"])
        return Entry(name, (m["uid"], m["slug"]), "canvas", bool(m["late"]), own, m["sid"])
    m = _GRADESCOPE.match(stem)
    if m:
        return Entry(name, (), "gradescope", submission_id=m[1])
    tokens = [stem]
    parts = stem.split("-")
    if len(parts) > 1:  # GitHub Classroom: <assignment>-<user>; the user may contain '-' too
        tokens += ["-".join(parts[i:]) for i in range(1, len(parts))]
    tokens += [p for p in re.split(r"[_\s.]+", stem) if p and p not in tokens]
    return Entry(name, tuple(tokens), "github" if len(parts) > 1 else "plain")


def gradescope_metadata(path: Path) -> dict[str, dict]:
    """submission_metadata.yml of a Gradescope export -> {'submission_<id>': {submitters, created_at}}.

    A small reader for the fixed shape Gradescope writes (no YAML library needed):
        submission_123:
          :submitters:
          - :name: Jane Doe
            :sid: '123'
            :email: jane@uni.edu
          :created_at: 2024-02-01 10:00:00.123456000 -08:00
    """
    out: dict[str, dict] = {}
    current: dict | None = None
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"^(submission_\d+):\s*$", line)
        if m:
            current = out.setdefault(m[1], {"submitters": [], "created_at": None})
            continue
        if current is None:
            continue
        m = re.match(r"^\s*(-\s*)?:(name|sid|email|created_at):\s*(.*?)\s*$", line)
        if not m:
            continue
        value = m[3].strip().strip("'\"")
        if m[2] == "created_at":
            current["created_at"] = parse_time(value)
        elif m[1] or not current["submitters"]:
            current["submitters"].append({m[2]: value})
        else:
            current["submitters"][-1][m[2]] = value
    return out


def parse_time(text: str) -> datetime | None:
    """ISO 8601, or Gradescope's '2024-02-01 10:00:00.123456789 -08:00'."""
    text = text.strip()
    m = re.match(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)(?:\.(\d+))?\s*(Z|[+-]\d\d:?\d\d)?$", text)
    if not m:
        return None
    frac = (m[2] or "0")[:6].ljust(6, "0")
    tz = m[3] or ""
    tz = "+00:00" if tz == "Z" else (tz if ":" in tz or not tz else f"{tz[:3]}:{tz[3:]}")
    try:
        return datetime.fromisoformat(f"{m[1].replace(' ', 'T')}.{frac}{tz}")
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------- collect


@dataclass
class Match:
    entry: str  # the downloaded entry (file or folder name); "" for a missing student
    folder: str  # the folder under dest it was copied to (the id `seqgrade grade` reports under)
    status: str  # "matched" | "unmatched" | "missing"
    student: Student | None = None
    source: str = ""
    late: bool = False
    submitted_at: datetime | None = None


@dataclass
class Collected:
    dest: Path
    matches: list[Match]

    @property
    def unmatched(self) -> list[Match]:
        return [m for m in self.matches if m.status == "unmatched"]

    @property
    def missing(self) -> list[Match]:
        return [m for m in self.matches if m.status == "missing"]


def identify(
    entry: Entry, roster: Roster, metadata: dict[str, dict] | None = None
) -> tuple[Student | None, dict]:
    """The rostered student an entry belongs to, and what the download says about it (time)."""
    info: dict = {}
    tokens = list(entry.tokens)
    if entry.source == "gradescope" and metadata:
        meta = metadata.get(f"submission_{entry.submission_id}", {})
        info["submitted_at"] = meta.get("created_at")
        for sub in meta.get("submitters", [])[:1]:  # group submissions: the first submitter
            tokens += [sub.get("sid", ""), sub.get("email", ""), slug(sub.get("name", ""))]
    for t in tokens:
        if t:
            s = roster.lookup(t)
            if s is not None:
                return s, info
    return None, info


def collect(download: Path, roster: Roster, dest: Path, *, overwrite: bool = False) -> Collected:
    """Sort an LMS bulk download (folder or .zip) into dest/<student key>/ and write dest/collect.csv."""
    from grader.loader import SKIP_DIRS, unpack_zip

    download, dest = Path(download), Path(dest)
    if not download.exists():
        raise InputError(f"{download}: no such file or directory")
    if dest.exists() and any(dest.iterdir()):
        if not overwrite:
            raise InputError(f"{dest} is not empty (use --overwrite to replace it)")
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="seqgrade-collect-"))
    try:
        root = unpack_zip(download, tmp / "dl") if download.suffix == ".zip" else download
        entries = [
            p for p in sorted(root.iterdir()) if p.name not in SKIP_DIRS and not p.name.startswith(".")
        ]
        if len(entries) == 1 and entries[0].is_dir() and not _GRADESCOPE.match(entries[0].name):
            root = entries[0]  # an archive with one top folder
            entries = [
                p for p in sorted(root.iterdir()) if p.name not in SKIP_DIRS and not p.name.startswith(".")
            ]
        meta_file = root / "submission_metadata.yml"
        metadata = gradescope_metadata(meta_file) if meta_file.is_file() else None
        matches: dict[str, Match] = {}
        canvas_versions: dict[tuple[str, str], int] = {}
        for p in entries:
            if p == meta_file or p.is_symlink() or p.name == MANIFEST:
                continue
            entry = parse_entry(p.name)
            student, info = identify(entry, roster, metadata)
            folder = student.key if student else _safe(p.stem if p.is_file() else p.name)
            m = matches.get(folder)
            if m is None:
                m = matches[folder] = Match(
                    p.name,
                    folder,
                    "matched" if student else "unmatched",
                    student,
                    entry.source,
                    entry.late,
                    info.get("submitted_at"),
                )
            else:
                m.entry += f"; {p.name}"
                m.late = m.late or entry.late
            target = dest / _safe(folder)
            target.mkdir(parents=True, exist_ok=True)
            if p.is_dir():
                shutil.copytree(
                    p, target, dirs_exist_ok=True, symlinks=False, ignore=shutil.ignore_patterns(*SKIP_DIRS)
                )
            elif entry.source == "canvas":
                # Canvas renames resubmissions rnn.py -> rnn-1.py, rnn-2.py: keep the latest, as rnn.py
                version, own = _version(p.name), entry.file
                if canvas_versions.get((folder, own), -1) <= version:
                    canvas_versions[(folder, own)] = version
                    shutil.copy2(p, target / own)
            else:
                shutil.copy2(p, target / p.name)
        for s in roster.students:
            if s.key not in matches:
                matches[s.key] = Match("", s.key, "missing", s)
        result = Collected(dest, sorted(matches.values(), key=lambda m: (m.status != "matched", m.folder)))
        write_manifest(dest / MANIFEST, result.matches)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _version(name: str) -> int:
    m = _CANVAS.match(name)
    v = _CANVAS_RESUBMIT.search(m["file"]) if m else None
    return int(v[1]) if v else 0


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._+-]+", "_", name).strip("._") or "entry"


def write_manifest(path: Path, matches: list[Match]) -> None:
    from grader.report import atomic_write, csv_safe

    lines: list[list[str]] = [
        ["folder", "status", "student", "name", "email", "entry", "source", "late", "submitted_at"]
    ]
    for m in matches:
        s = m.student
        lines.append(
            [
                m.folder,
                m.status,
                s.key if s else "",
                s.name if s else "",
                s.email if s else "",
                m.entry,
                m.source,
                "yes" if m.late else "",
                m.submitted_at.isoformat() if m.submitted_at else "",
            ]
        )
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows([[csv_safe(c) for c in row] for row in lines])
    atomic_write(path, buf.getvalue())


def read_manifest(path: Path) -> dict[str, dict[str, str]]:
    """folder -> row of a collect.csv (as written by `seqgrade collect`)."""
    with open(path, newline="", encoding="utf-8") as f:
        return {row["folder"]: row for row in csv.DictReader(f)}
