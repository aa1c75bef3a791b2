"""Input discovery: globs to a deterministic list of regular files.

``glob.glob`` with ``**`` follows directory symlinks without remembering where it has
been: a symlink loop turns one file into dozens of paths, and two loops make the walk
exponential. So ``**`` patterns are expanded here by a walk that visits each physical
directory once (by device and inode), real directories before symlinked ones, in sorted
order. Files are then deduplicated by (device, inode), the first path in byte order
winning. Like ``glob``, wildcards do not match names that start with a dot.
Directories, FIFOs, sockets and devices are skipped with a reason: opening a FIFO would
block for ever. Unreadable directories are reported, not silently dropped.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence

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


def _recursive_glob(pattern: str, skipped: list[SkippedInput]) -> Iterator[str]:
    """Expand a pattern with a ``**`` component, visiting each directory once (a
    generator: a walk over many files never holds a second list of their paths). Paths
    come out normalised (``os.path.normpath``), each folder normalised once."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    root = "/" if fixed == [""] else "/".join(fixed) or "."
    regex_parts = []
    for part in parts[len(fixed) :]:
        regex_parts.append("(?:[^/.][^/]*/)*" if part == "**" else _component_regex(part) + "/")
    tail = "".join(regex_parts)
    tail = tail[:-1] if tail.endswith("/") else tail + "[^/.][^/]*"
    norm_root = os.path.normpath(root)
    prefix = re.escape(norm_root.rstrip("/") + "/") if fixed and norm_root != "." else ""
    matcher = re.compile(prefix + tail)

    if not os.path.isdir(root):
        return  # like glob: a missing folder simply matches nothing

    def unreadable(exc: OSError) -> None:
        skipped.append(SkippedInput(exc.filename or root, f"cannot read: {exc.strerror}"))

    if parts[-1] == "**" and fixed:
        yield norm_root  # as glob: "d/**" has d
    visited: set[tuple[int, int]] = set()
    for folder, subdirs, files in os.walk(root, followlinks=True, onerror=unreadable):
        try:
            st = os.stat(folder)
        except OSError:
            subdirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            subdirs[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        subdirs.sort(key=lambda d, f=folder: (os.path.islink(os.path.join(f, d)), d))
        base = os.path.normpath(folder)  # "./a" -> "a"; entries are plain names
        base = "" if base == "." else base if base.endswith("/") else base + "/"
        fullmatch = matcher.fullmatch
        for name in (*files, *subdirs):
            path = base + name
            if fullmatch(path):
                yield path


def path_sort_key(path: str) -> bytes:
    """Byte order of the path: deterministic even for names that are not valid UTF-8."""
    return os.fsencode(path)


def discover(
    patterns: Sequence[str], exclude: Sequence[str] = ()
) -> tuple[list[InputFile], list[SkippedInput], list[str]]:
    """Expand ``patterns`` into files; returns (files, skipped, patterns that matched nothing)."""
    matched: list[str] = []
    unmatched: list[str] = []
    files: list[InputFile] = []
    skipped: list[SkippedInput] = []
    for pattern in patterns:
        if "**" in pattern.split("/"):
            hits: Iterable[str] = _recursive_glob(pattern, skipped)  # already normalised
        else:
            hits = map(os.path.normpath, glob.iglob(pattern))
        before = len(matched)
        matched.extend(hits)
        if len(matched) == before and os.path.lexists(pattern):
            matched.append(os.path.normpath(pattern))  # a literal name with glob characters
        elif len(matched) == before:
            unmatched.append(pattern)

    # Sorted in place (for ASCII names, the usual case, str order is byte order: no key
    # objects to build); a path matched by several patterns is then next to itself.
    ascii_only = all(path.isascii() for path in matched)
    matched.sort(key=None if ascii_only else path_sort_key)
    seen: set[int] = set()  # (device, inode) as one int: a third of a tuple's size
    previous = None
    for path in matched:
        if path == previous or (exclude and _excluded(path, exclude)):
            continue
        previous = path
        try:
            st = os.stat(path)
        except OSError as exc:
            skipped.append(SkippedInput(path, f"cannot stat: {exc.strerror or exc}"))
            continue
        if not stat.S_ISREG(st.st_mode):
            skipped.append(SkippedInput(path, f"skipped: {_kind(st.st_mode)}"))
            continue
        identity = st.st_dev << 64 | st.st_ino
        if identity in seen:
            log.debug("%s: same file as an earlier path, skipped", path)
            continue
        seen.add(identity)
        files.append(InputFile(path, st.st_size, st.st_mtime_ns, compression_of(path)))
    matched.clear()
    return files, skipped, unmatched
