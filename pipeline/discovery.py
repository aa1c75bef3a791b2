"""Input discovery: globs to a deterministic stream of regular files, in path-byte order.

``glob.glob`` with ``**`` follows directory symlinks without remembering where it has
been: a symlink loop turns one file into dozens of paths, and two loops make the walk
exponential. So patterns are expanded here by two passes per pattern. The first lists
the folders the pattern can reach, each physical folder once (by device and inode), real
folders before symlinked ones, and notes where symlinks point. The second lists those
folders again, each sorted by name, yielding matches in the byte order of their full
paths without ever holding a list of them. Files reached by two paths (hard links, a
symlink, overlapping patterns) are deduplicated by (device, inode), the first path in
byte order winning. Like ``glob``, wildcards do not match names that start with a dot.
Directories, FIFOs, sockets and devices are skipped with a reason: opening a FIFO would
block for ever. Unreadable directories are reported, not silently dropped.
"""

from __future__ import annotations

import fnmatch
import glob
import heapq
import itertools
import logging
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.chunking import compression_of
from pipeline.models import InputFile, SkippedInput

log = logging.getLogger(__name__)


def _excluded(path: str, patterns: Sequence[str]) -> bool:
    base = os.path.basename(path)
    for pattern in patterns:
        target = path if "/" in pattern else base
        if fnmatch.fnmatchcase(target, pattern):
            return True
    return False


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _component_regex(component: str) -> str:
    """A regex for one path component of a glob: ``*``, ``?`` and ``[...]`` never cross
    a ``/``, and a leading wildcard does not match a leading dot."""
    out = ["(?!\\.)"] if component[:1] in ("*", "?", "[") else []
    i = 0
    while i < len(component):
        char = component[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := component.find("]", i + 2)) != -1:
            body = component[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def glob_problem(pattern: str) -> str | None:
    """What is wrong with a glob's syntax (a reversed range like ``[z-a]``), or None: for
    ``validate`` to say before a run would trip on it."""
    for part in pattern.split("/"):
        if not glob.has_magic(part):
            continue
        try:
            re.compile(_component_regex(part))
        except re.error as exc:
            return f"bad glob {pattern!r}: {exc.msg} in {part!r}"
    return None


def _pattern_regex(fixed: list[str], rest: list[str], norm_root: str) -> re.Pattern[str]:
    """The regex a normalised matching path fullmatches: the root, then the wildcard
    components (``**``: any number of folders not starting with a dot)."""
    regex_parts = []
    for part in rest:
        regex_parts.append("(?:[^/.][^/]*/)*" if part == "**" else _component_regex(part) + "/")
    tail = "".join(regex_parts)
    tail = tail[:-1] if tail.endswith("/") else tail + "[^/.][^/]*"
    prefix = re.escape(norm_root.rstrip("/") + "/") if fixed and norm_root != "." else ""
    return re.compile(prefix + tail)


def _join(base: str, name: str) -> str:
    """``base`` (a normalised folder, "." for the current one) joined with ``name``."""
    if base == ".":
        return name
    return base + name if base.endswith("/") else base + "/" + name


def _identity(st: os.stat_result) -> int:
    return st.st_dev << 64 | st.st_ino  # (device, inode) as one int: a third of a tuple


@dataclass
class _Tree:
    """What the first pass over a pattern's folders learnt (memory: a few values per
    folder and per symlink, nothing per file)."""

    chosen: set[str] = field(default_factory=set)  # folders to list, as normalised paths
    targets: set[int] = field(default_factory=set)  # what symlinks in them point at


def _choose_folders(
    root: str, rest: list[str], skipped: list[SkippedInput], left_out: frozenset[int]
) -> _Tree:
    """First pass: which folders the walk lists. Each physical folder once (by device and
    inode), real folders before symlinked ones, depth first in name order; without ``**``
    only as deep as the pattern goes, into folders its components match. It also notes
    what the symlinks in those folders point at: with each folder listed once, a file
    has two paths only if a symlink points at it or it has several hard links. Folders in
    ``left_out`` (by device and inode) are never entered, whatever path leads there."""
    tree = _Tree()
    recursive = "**" in rest
    components = [re.compile(_component_regex(part)) for part in rest]
    visited: set[int] = set()
    stack = [(root, os.path.normpath(root), 0)]
    while stack:
        folder, norm, depth = stack.pop()
        try:
            identity = _identity(os.stat(folder))
        except OSError:
            continue
        if identity in visited or identity in left_out:
            continue
        visited.add(identity)
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:
            skipped.append(SkippedInput(exc.filename or folder, f"cannot read: {exc.strerror}"))
            continue
        tree.chosen.add(norm)
        deeper = recursive or depth < len(rest) - 1
        subdirs = []
        for entry in entries:
            link = entry.is_symlink()
            if link:
                try:
                    target = os.stat(entry.path)
                except OSError:
                    continue  # dangling: reported when matched
                tree.targets.add(_identity(target))
                is_dir = stat.S_ISDIR(target.st_mode)
            else:
                is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir and deeper and (recursive or components[depth].fullmatch(entry.name)):
                subdirs.append((link, entry.name))
        subdirs.sort(reverse=True)  # popped in (real before symlinked, name) order
        for _link, name in subdirs:
            stack.append((os.path.join(folder, name), _join(norm, name), depth + 1))
    return tree


def _sorted_matches(
    folder: str, norm: str, chosen: set[str], matcher: re.Pattern[str]
) -> Iterator[tuple[str, os.stat_result | OSError]]:
    """Second pass: the matching paths under ``folder``, in byte order, each with its
    ``stat`` (or the error). Only the listings of the folders on the current path are
    held: a folder's entries are sorted by name, a subfolder taking its place as
    ``name/``, which is the byte order of full paths. A match is stat'ed by its name in
    the open folder, which spares the kernel a walk down the whole path."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # unreadable: the first pass reported it
    try:
        try:
            with os.scandir(fd) as listing:
                entries = list(listing)
        except OSError:
            return
        prefix = "" if norm == "." else norm if norm.endswith("/") else norm + "/"
        as_str = all(entry.name.isascii() for entry in entries)  # then str order is byte order
        items: list[tuple[str | bytes, str, str, bool]] = []
        append = items.append
        for entry in entries:
            name = entry.name
            path = prefix + name
            key = name if as_str else os.fsencode(name)
            append((key, path, name, False))
            if path in chosen:
                append((key + ("/" if as_str else b"/"), path, name, True))  # type: ignore[operator]
        entries.clear()
        items.sort(key=_first)
        fullmatch = matcher.fullmatch
        for _key, path, name, descend in items:
            if descend:
                yield from _sorted_matches(os.path.join(folder, name), path, chosen, matcher)
            elif fullmatch(path):
                try:
                    st: os.stat_result | OSError = os.stat(name, dir_fd=fd)
                except OSError as exc:
                    st = exc
                yield path, st
    finally:
        os.close(fd)


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]


def _pattern_matches(
    pattern: str, skipped: list[SkippedInput], targets: set[int], left_out: frozenset[int]
) -> Iterator[tuple[str, os.stat_result | OSError]]:
    """The normalised paths a pattern matches, in byte order, with their ``stat``.
    Symlinked folders are followed without going round a loop: each physical folder is
    listed once. ``targets`` gathers what symlinks point at. Nothing inside a folder of
    ``left_out`` comes out."""
    if not glob.has_magic(pattern):
        if os.path.lexists(pattern) and not _inside(os.path.dirname(pattern), left_out):
            yield _stated(os.path.normpath(pattern))
        return
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    rest = parts[len(fixed) :]
    root = "/" if fixed == [""] else "/".join(fixed) or "."
    if not os.path.isdir(root) or _inside(root, left_out):
        return  # like glob: a missing folder simply matches nothing
    norm_root = os.path.normpath(root)
    matcher = _pattern_regex(fixed, rest, norm_root)
    tree = _choose_folders(root, rest, skipped, left_out)
    targets |= tree.targets
    if rest[-1] == "**" and fixed:
        yield _stated(norm_root)  # as glob: "d/**" has d
    yield from _sorted_matches(root, norm_root, tree.chosen, matcher)


def _inside(folder: str, left_out: frozenset[int]) -> bool:
    """Whether ``folder`` is one of ``left_out`` or lies below one (symlinks resolved)."""
    if not left_out:
        return False
    current = os.path.realpath(folder or ".")
    while True:
        try:
            if _identity(os.stat(current)) in left_out:
                return True
        except OSError:
            pass
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent


def _folder_identities(folders: Sequence[str]) -> frozenset[int]:
    """The (device, inode) of each folder that exists now."""
    found = set()
    for folder in folders:
        try:
            found.add(_identity(os.stat(folder)))
        except OSError:
            continue
    return frozenset(found)


def _stated(path: str) -> tuple[str, os.stat_result | OSError]:
    try:
        return path, os.stat(path)
    except OSError as exc:
        return path, exc


def _path_key(match: tuple[str, Any]) -> bytes:
    return os.fsencode(match[0])


def path_sort_key(path: str) -> bytes:
    """Byte order of the path: deterministic even for names that are not valid UTF-8."""
    return os.fsencode(path)


class Discovery:
    """The input files the globs name, found as the folders are walked: iterating yields
    them in path-byte order, and fills ``skipped`` and ``unmatched`` as it goes.

    Memory holds the folders (and symlinks) of the tree, never a list of its files: a
    million inputs stream through planning like a thousand. With each folder listed once,
    a file has two paths only through a hard link, a symlink or a second pattern, so only
    such files' (device, inode) are remembered, the first path in byte order winning.
    Nothing in the folders ``left_out`` is ever found (the run's own output store), even
    where a glob reaches into them; they are looked up when iteration starts, so a store
    created after this object is still left out."""

    def __init__(
        self, patterns: Sequence[str], exclude: Sequence[str] = (), left_out: Sequence[str] = ()
    ) -> None:
        self.patterns = list(patterns)
        self.exclude = list(exclude)
        self.left_out = list(left_out)
        self.skipped: list[SkippedInput] = []
        self.unmatched: list[str] = []

    def __iter__(self) -> Iterator[InputFile]:
        targets: set[int] = set()
        left_out = _folder_identities(self.left_out)
        streams: list[Iterator[tuple[str, os.stat_result | OSError]]] = []
        for pattern in self.patterns:
            stream = _pattern_matches(pattern, self.skipped, targets, left_out)
            first = next(stream, None)
            if first is not None:
                streams.append(itertools.chain([first], stream))
            elif (
                glob.has_magic(pattern)
                and os.path.lexists(pattern)
                and not _inside(os.path.dirname(pattern), left_out)
            ):
                streams.append(iter([_stated(os.path.normpath(pattern))]))  # a literal name
            else:
                self.unmatched.append(pattern)
        several = len(streams) > 1  # the same file may come out of two of them
        merged = heapq.merge(*streams, key=_path_key) if several else itertools.chain(*streams)
        seen: set[int] = set()
        exclude = self.exclude
        previous = None
        for path, st in merged:
            if path == previous or (exclude and _excluded(path, exclude)):
                continue
            previous = path
            if isinstance(st, OSError):
                self.skipped.append(SkippedInput(path, f"cannot stat: {st.strerror or st}"))
                continue
            if not stat.S_ISREG(st.st_mode):
                self.skipped.append(SkippedInput(path, f"skipped: {_kind(st.st_mode)}"))
                continue
            if seen or targets or several or st.st_nlink > 1:  # else: one path to it
                identity = _identity(st)
                if identity in seen:
                    log.debug("%s: same file as an earlier path, skipped", path)
                    continue
                if several or st.st_nlink > 1 or identity in targets:
                    seen.add(identity)  # one of two paths to it: remember it
            yield InputFile(path, st.st_size, st.st_mtime_ns, compression_of(path))


def discover(
    patterns: Sequence[str], exclude: Sequence[str] = (), left_out: Sequence[str] = ()
) -> tuple[list[InputFile], list[SkippedInput], list[str]]:
    """Expand ``patterns`` into files; returns (files, skipped, patterns that matched nothing)."""
    found = Discovery(patterns, exclude, left_out)
    files = list(found)
    return files, found.skipped, found.unmatched
