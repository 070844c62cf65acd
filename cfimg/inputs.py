"""Which files a batch command reads: INPUT arguments expanded lazily into image paths.

An INPUT is a file (taken as given, image extension or not), a folder (recursive; files with an
image extension, case-insensitive; hidden names starting with "." skipped, e.g. macOS "._x.jpg"
resource forks and .thumbnails folders), a glob pattern (`shots/**/*.jpg`; image files only), an
`@list.txt` file of paths (one a line, taken as given; blank lines and lines starting with `#`
skipped), or `-` for such a list on stdin. Nothing is listed up front: memory stays flat for
millions of paths, and the first image is classified while the rest are still being found.

Order is deterministic: arguments in the order given, folder entries sorted by name at each
level (files and sub-folders interleaved by name), glob matches likewise. `--shard K/N` keeps the
paths whose stable hash falls in share K of N, so N machines split one input between them.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import IO

from cfimg.errors import UsageError
from cfimg.imageio import is_image_path

STDIN_INPUT = "-"
LIST_PREFIX = "@"
_GLOB_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True)
class Shard:
    """Share `index` (1-based) of `count`: `--shard 2/4` is Shard(2, 4)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise UsageError(
                f"--shard {self.index}/{self.count}: K must be between 1 and N (e.g. 1/4 ... 4/4)"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, path: str) -> bool:
        return shard_of(path, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """'K/N' -> Shard(K, N), 1 <= K <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--shard {text!r}: expected K/N, e.g. 1/4")
    return Shard(int(match.group(1)), int(match.group(2)))


def path_key(path: str) -> bytes:
    """A stable 16-byte digest of a path string: the same on every machine and Python run
    (unlike hash()), and small enough to keep millions of them in a set."""
    return hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=16).digest()


def shard_of(path: str, count: int) -> int:
    """The 1-based shard that `path` (as enumerated, byte for byte) belongs to."""
    return int.from_bytes(path_key(path)[:8], "big") % count + 1


def iter_input_paths(inputs: Iterable[str], *, stdin: IO[str] | None = None) -> Iterator[str]:
    """Expand INPUT arguments into paths, lazily and in a deterministic order."""
    for argument in inputs:
        if argument == STDIN_INPUT:
            yield from iter_path_list(stdin if stdin is not None else sys.stdin)
        elif argument.startswith(LIST_PREFIX) and len(argument) > 1:
            yield from _iter_list_file(argument[1:])
        elif os.path.isdir(argument):
            yield from iter_folder(argument)
        elif _GLOB_MAGIC.search(argument) and not os.path.lexists(argument):
            yield from iter_glob(argument)
        else:  # a file, or a path that does not exist: its row will say why
            yield argument


def _iter_list_file(list_path: str) -> Iterator[str]:
    try:
        handle = open(list_path, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    except OSError as exc:
        reason = _os_reason(exc)
        raise UsageError(f"@{list_path}: cannot read the list of paths ({reason})") from None
    with handle:
        yield from iter_path_list(handle)


def iter_path_list(lines: Iterable[str]) -> Iterator[str]:
    """Paths from lines of text, one a line; blank lines and `#` comments are skipped."""
    for line in lines:
        path = line.rstrip("\r\n")
        if path.strip() and not path.lstrip().startswith("#"):
            yield path


def iter_folder(root: str) -> Iterator[str]:
    """Image files under `root`, recursively, sorted by name at each level.

    Only one folder's entries are held at a time per level of depth. Hidden names are skipped.
    Symlinked folders are not followed (no loops); symlinked files are, and a dangling one is
    yielded so its row says so.
    """
    for entry in _sorted_entries(root):
        if entry.name.startswith("."):
            continue
        if _is_folder(entry):
            yield from iter_folder(entry.path)
        elif is_image_path(entry.name):
            yield entry.path


def _sorted_entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:  # unreadable folder: say so, keep going with the others
        reason = _os_reason(exc)
        print(f"warning: {folder}: cannot list folder ({reason}); skipped", file=sys.stderr)
        return []


def _os_reason(exc: OSError) -> str:
    """'permission denied', 'no such file or directory'...: the OS's words, or the error type."""
    return exc.strerror.lower() if exc.strerror else type(exc).__name__


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def iter_glob(pattern: str) -> Iterator[str]:
    """Image files matching a glob pattern (`*`, `?`, `[...]`, `**` for any depth), sorted by
    name at each level; a matching folder contributes its images recursively. Like the shell,
    `*` does not match names starting with a dot unless the pattern part does."""
    head, parts = _split_pattern(pattern)
    for match in _glob_parts(head, parts):
        if os.path.isdir(match):
            yield from iter_folder(match)
        elif is_image_path(match):
            yield match


def _split_pattern(pattern: str) -> tuple[str, list[str]]:
    """'photos/2024/*/x?.jpg' -> ('photos/2024', ['*', 'x?.jpg']): literal prefix, the rest."""
    parts = pattern.split(os.sep)
    literal: list[str] = []
    while parts and not _GLOB_MAGIC.search(parts[0]):
        literal.append(parts.pop(0))
    if not parts:  # no magic after all (a nonexistent literal path)
        return pattern, []
    head = os.sep.join(literal) if literal else ""
    if pattern.startswith(os.sep) and not head:
        head = os.sep
    return head, parts


def _glob_parts(folder: str, parts: list[str]) -> Iterator[str]:
    if not parts:
        if folder and os.path.lexists(folder):
            yield folder
        return
    part, rest = parts[0], parts[1:]
    if part == "**" and not rest:  # everything below: the folder itself, walked once
        yield folder or "."
        return
    if part == "**":
        yield from _glob_parts(folder, rest)  # zero folders
        for entry in _sorted_entries(folder or "."):
            if _is_folder(entry) and not entry.name.startswith("."):
                yield from _glob_parts(_join(folder, entry.name), parts)
        return
    if not _GLOB_MAGIC.search(part):
        yield from _glob_parts(_join(folder, part), rest)
        return
    for entry in _sorted_entries(folder or "."):
        if entry.name.startswith(".") and not part.startswith("."):
            continue
        if fnmatchcase(entry.name, part) and (not rest or _is_folder(entry)):
            yield from _glob_parts(_join(folder, entry.name), rest)


def _join(folder: str, name: str) -> str:
    return os.path.join(folder, name) if folder else name
