"""From test files to suites: one per file or folder, readable names, priorities."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deployloop.init.base import KINDS, MANY_FILES, PRIORITY_TOKEN
from deployloop.init.discover import relative_path

# --- suites ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suite:
    name: str
    paths: tuple[str, ...]
    priority: int


@dataclass(frozen=True)
class _Draft:
    folder: tuple[str, ...]  # where the suite lives, relative to workdir
    stem: str | None  # the file's name without .py, for a suite of one file
    paths: tuple[str, ...]


def plan_suites(
    files: Sequence[Path], workdir: Path, python_files: Sequence[str]
) -> list[Suite]:
    drafts = _drafts(files, workdir)
    common = _common_prefix([d.folder for d in drafts])
    names = _names(drafts, common, workdir, python_files)
    priorities = _priorities(drafts)
    suites = [
        Suite(name, draft.paths, priority)
        for draft, name, priority in zip(drafts, names, priorities, strict=True)
    ]
    return sorted(suites, key=lambda s: (s.priority, s.paths))


def _drafts(files: Sequence[Path], workdir: Path) -> list[_Draft]:
    rels = [relative_path(f, workdir) for f in files]
    by_folder: dict[str, list[str]] = {}
    for rel in rels:
        by_folder.setdefault(_parent(rel), []).append(rel)
    big = {folder for folder, own in by_folder.items() if len(own) > MANY_FILES}

    owner: dict[str, str | None] = {}
    for rel in rels:
        current: str | None = None
        for folder in _ancestors(_parent(rel)):
            if current is not None and _is_kind(_last(folder)):
                current = None  # a kind of tests is its own suite, even inside a big folder
            if current is None and folder in big:
                current = folder
        owner[rel] = current

    drafts: list[_Draft] = []
    done: set[str] = set()
    for rel in rels:
        suite = owner[rel]
        if suite is None:
            drafts.append(_Draft(_parts(_parent(rel)), Path(rel).stem, (rel,)))
        elif suite not in done:
            done.add(suite)
            drafts.append(_Draft(_parts(suite), None, _cover(suite, suite, owner)))
    return drafts


def _cover(folder: str, suite: str, owner: dict[str, str | None]) -> tuple[str, ...]:
    """The fewest paths under `folder` that hold every file of the suite of folder `suite`
    and no other test file: `folder` itself, unless suites of their own sit below it."""
    below = [rel for rel in owner if _under(rel, folder)]
    if all(owner[rel] == suite for rel in below):
        return (folder,)
    paths = [rel for rel in below if _parent(rel) == folder and owner[rel] == suite]
    depth = len(_parts(folder))
    children = dict.fromkeys(
        _join(folder, _parts(_parent(rel))[depth]) for rel in below if _parent(rel) != folder
    )
    for child in children:
        if any(owner[rel] == suite for rel in below if _under(rel, child)):
            paths.extend(_cover(child, suite, owner))
    return tuple(paths)


def _names(
    drafts: Sequence[_Draft], common: int, workdir: Path, python_files: Sequence[str]
) -> list[str]:
    names = []
    for draft in drafts:
        parts = [title(p) for p in draft.folder[common:] if not _is_test_word(p)]
        if draft.stem is not None:
            parts.append(title(_without_affixes(draft.stem, python_files)) or draft.stem)
        parts = [p for p in parts if p]
        if not parts:  # a folder suite holding everything: name it by its folder
            last = draft.folder[-1] if draft.folder else workdir.name
            parts = [title(last) or "Tests"]
        names.append(" / ".join(parts))
    # Every one of a clash gets its path: which one kept the plain name would be arbitrary.
    counts = Counter(names)
    seen: set[str] = set()
    unique = []
    for name, draft in zip(names, drafts, strict=True):
        if counts[name] > 1:
            name = f"{name} ({draft.paths[0]})"
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name} {n}"
        seen.add(candidate)
        unique.append(candidate)
    return unique


def _without_affixes(stem: str, python_files: Sequence[str]) -> str:
    """`stem` without what the pattern that found it puts around every test file's name:
    "check_login" found by "check_*.py" is "login"."""
    for pattern in python_files:
        match = re.fullmatch(r"([^*?\[\]/]*)\*([^*?\[\]/]*)\.py", pattern)
        if match is None:
            continue
        prefix, suffix = match.groups()
        fits = stem.startswith(prefix) and stem.endswith(suffix)
        if fits and len(stem) > len(prefix) + len(suffix):
            return stem[len(prefix) : len(stem) - len(suffix)]
    return stem


def _priorities(drafts: Sequence[_Draft]) -> list[int]:
    explicit = [_explicit_priority(d) for d in drafts]
    numbers = [n for n in explicit if n is not None]
    smoke = [n is None and _is_smoke(d) for d, n in zip(drafts, explicit, strict=True)]
    if numbers:
        first, after = max(min(numbers) - 1, 0), max(numbers) + 1
    else:
        first, after = 1, (2 if any(smoke) else 1)
    return [
        n if n is not None else first if is_smoke else after
        for n, is_smoke in zip(explicit, smoke, strict=True)
    ]


def _explicit_priority(draft: _Draft) -> int | None:
    names = ([draft.stem] if draft.stem else []) + list(reversed(draft.folder))
    for name in names:  # nearest first: the file's own name wins over its folders'
        tokens = _tokens(name)
        for i, token in enumerate(tokens):
            match = PRIORITY_TOKEN.fullmatch(token)
            if match:
                return int(match.group(1))
            if token in ("priority", "prio") and i + 1 < len(tokens) and re.fullmatch(
                r"\d{1,3}", tokens[i + 1]
            ):
                return int(tokens[i + 1])
    return None


def _is_smoke(draft: _Draft) -> bool:
    names = list(draft.folder) + ([draft.stem] if draft.stem else [])
    return any("smoke" in _tokens(name) for name in names)


def title(name: str) -> str:
    """A file or folder name as words: "test_priority1_critical" -> "Priority 1 Critical"."""
    tokens = _tokens(name, lower=False)  # "OAuth" stays "OAuth"
    if len(tokens) > 1 and tokens[0].lower() in ("test", "tests"):
        tokens = tokens[1:]
    if len(tokens) > 1 and tokens[-1].lower() in ("test", "tests"):
        tokens = tokens[:-1]
    words = []
    for token in tokens:
        match = re.fullmatch(r"priority(\d+)", token, flags=re.IGNORECASE)
        if match:
            words += ["Priority", match.group(1)]
        elif token.lower() == "e2e":
            words.append("E2E")
        else:
            words.append(token[:1].upper() + token[1:])
    return " ".join(words)


def _tokens(name: str, *, lower: bool = True) -> list[str]:
    tokens = [t for t in re.split(r"[\s_.\-]+", name) if t]
    return [t.lower() for t in tokens] if lower else tokens


def _is_test_word(name: str) -> bool:
    return _tokens(name) in (["test"], ["tests"], [])


def _is_kind(name: str) -> bool:
    words = [t for t in _tokens(name) if t not in ("test", "tests")]
    return "".join(words) in KINDS or "_".join(words) in KINDS


# Paths in drafts are posix strings relative to workdir; "." is workdir itself.
def _parent(rel: str) -> str:
    return Path(rel).parent.as_posix()


def _parts(rel: str) -> tuple[str, ...]:
    return () if rel == "." else Path(rel).parts


def _last(rel: str) -> str:
    parts = _parts(rel)
    return parts[-1] if parts else ""


def _join(folder: str, name: str) -> str:
    return name if folder == "." else f"{folder}/{name}"


def _ancestors(folder: str) -> list[str]:
    """`folder` and the folders above it, up to workdir (or to the top of a path outside
    it), top first."""
    parts = _parts(folder)
    top = ["."] if not parts or parts[0] != ".." else []
    return top + ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _under(rel: str, folder: str) -> bool:
    if folder == ".":
        return not rel.startswith("../")
    return rel.startswith(folder + "/")


def _common_prefix(folders: Sequence[tuple[str, ...]]) -> int:
    """How many leading folders every suite shares."""
    if not folders:
        return 0
    shortest = min(len(f) for f in folders)
    count = 0
    while count < shortest and len({f[count] for f in folders}) == 1:
        count += 1
    return count
