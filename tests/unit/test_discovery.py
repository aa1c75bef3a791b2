"""Discovery: globs -> a deterministic list of regular files, plus skipped and unmatched."""

from __future__ import annotations

import builtins
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.discovery import Discovery, discover, glob_problem, path_sort_key
from pipeline.models import InputFile


def touch(path: Path | str, data: bytes = b"x\n") -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def paths(files: list[InputFile]) -> list[str]:
    return [f.path for f in files]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short folder under /tmp: a unix socket path must fit in ~107 bytes."""
    folder = tempfile.mkdtemp(prefix="disc")
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- globbing --------------------------------------------------------------------------


def test_double_star_recurses_into_every_depth(tmp_path: Path) -> None:
    top = touch(tmp_path / "in" / "a.log")
    mid = touch(tmp_path / "in" / "x" / "b.log")
    deep = touch(tmp_path / "in" / "x" / "y" / "z" / "c.log")
    touch(tmp_path / "in" / "x" / "other.txt")
    files, skipped, unmatched = discover([str(tmp_path / "in" / "**" / "*.log")])
    assert sorted(paths(files)) == sorted([top, mid, deep])
    assert skipped == []
    assert unmatched == []


def test_single_star_does_not_recurse(tmp_path: Path) -> None:
    top = touch(tmp_path / "in" / "a.log")
    touch(tmp_path / "in" / "x" / "b.log")
    files, _, _ = discover([str(tmp_path / "in" / "*.log")])
    assert paths(files) == [top]


def test_input_file_carries_size_mtime_and_is_absolute_when_pattern_is(tmp_path: Path) -> None:
    path = touch(tmp_path / "a.log", b"hello\nworld\n")
    os.utime(path, ns=(1_000_000_123, 1_600_000_000_123_456_789))
    (found,), _, _ = discover([str(tmp_path / "*.log")])
    assert found == InputFile(path, 12, 1_600_000_000_123_456_789, None)


def test_overlapping_patterns_give_each_file_once(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.log")
    files, _, unmatched = discover(
        [str(tmp_path / "*.log"), str(tmp_path / "a.*"), str(tmp_path / "**" / "*.log")]
    )
    assert paths(files) == [a]
    assert unmatched == []


def test_paths_are_normalised(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.log")
    (tmp_path / "sub").mkdir()
    files, _, _ = discover([str(tmp_path) + "/./sub/../*.log"])
    assert paths(files) == [a]


def test_double_star_paths_are_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = touch(tmp_path / "d" / "e" / "x.log")
    top = touch(tmp_path / "d" / "y.log")
    for pattern in (str(tmp_path) + "//d/./**/*.log", str(tmp_path) + "/d/e/../**/*.log"):
        files, _, _ = discover([pattern])
        assert paths(files) == [deep, top], pattern
    monkeypatch.chdir(tmp_path)
    for pattern in ("**/*.log", "./**/*.log", "d/../d/**/*.log"):
        files, _, _ = discover([pattern])
        assert [f.path for f in files] == ["d/e/x.log", "d/y.log"], pattern
    files, _, _ = discover(["./d/**"])  # as glob, "d/**" has d itself: a folder, skipped
    assert [f.path for f in files] == ["d/e/x.log", "d/y.log"]


def test_literal_name_with_glob_characters(tmp_path: Path) -> None:
    literal = touch(tmp_path / "[x].log")
    files, _, unmatched = discover([str(tmp_path / "[x].log")])
    assert paths(files) == [literal]
    assert unmatched == []


# --- exclude ---------------------------------------------------------------------------


def test_exclude_basename_pattern_applies_at_every_depth(tmp_path: Path) -> None:
    keep = touch(tmp_path / "in" / "a.log")
    keep2 = touch(tmp_path / "in" / "sub" / "b.log")
    touch(tmp_path / "in" / "a.log.tmp")
    touch(tmp_path / "in" / "sub" / "deep" / "c.tmp")
    files, skipped, _ = discover([str(tmp_path / "in" / "**" / "*")], ["*.tmp"])
    assert sorted(paths(files)) == sorted([keep, keep2])
    # excluded files are silently dropped, not reported as skipped
    assert all(not s.path.endswith(".tmp") for s in skipped)


def test_exclude_basename_pattern_does_not_match_folder_names(tmp_path: Path) -> None:
    """A pattern without "/" is matched against the file's base name only."""
    inside = touch(tmp_path / "in" / "tmpdir" / "a.log")
    files, _, _ = discover([str(tmp_path / "in" / "**" / "*.log")], ["tmpdir"])
    assert paths(files) == [inside]


def test_exclude_pattern_with_slash_matches_the_whole_path(tmp_path: Path) -> None:
    keep = touch(tmp_path / "in" / "keep" / "a.log")
    touch(tmp_path / "in" / "drop" / "a.log")
    touch(tmp_path / "in" / "drop" / "b.log")
    files, _, _ = discover([str(tmp_path / "in" / "**" / "*.log")], ["*/drop/*"])
    assert paths(files) == [keep]
    # an absolute pattern with a slash works too
    files, _, _ = discover(
        [str(tmp_path / "in" / "**" / "*.log")], [str(tmp_path / "in" / "drop" / "a.log")]
    )
    assert paths(files) == [str(tmp_path / "in" / "drop" / "b.log"), keep]


def test_exclude_pattern_with_slash_is_not_applied_to_base_name(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.log")
    files, _, _ = discover([str(tmp_path / "*.log")], ["x/a.log"])
    assert paths(files) == [a]


def test_exclude_is_case_sensitive(tmp_path: Path) -> None:
    upper = touch(tmp_path / "A.TMP")
    touch(tmp_path / "b.tmp")
    files, _, _ = discover([str(tmp_path / "*")], ["*.tmp"])
    assert paths(files) == [upper]


# --- order -----------------------------------------------------------------------------


def test_order_is_by_path_bytes(tmp_path: Path) -> None:
    names = ["z.log", "B.log", "a.log", "a-b.log", "ä.log", "\ufffd.log", os.fsdecode(b"\xff.log")]
    for name in names:
        touch(tmp_path / name)
    touch(tmp_path / "a" / "b.log")
    files, _, _ = discover([str(tmp_path / "**" / "*.log")])
    got = paths(files)
    assert got == sorted(got, key=lambda p: os.fsencode(p))
    rel = [os.fsencode(os.path.relpath(p, tmp_path)) for p in got]
    # bytes order: "-" (0x2d) < "/" (0x2f); U+FFFD (0xef..) < the raw byte 0xff
    assert rel == [
        b"B.log",
        b"a-b.log",
        b"a.log",
        b"a/b.log",
        b"z.log",
        "ä.log".encode(),
        "\ufffd.log".encode(),
        b"\xff.log",
    ]


def test_order_does_not_depend_on_pattern_order(tmp_path: Path) -> None:
    for name in ("c.log", "a.txt", "b.log"):
        touch(tmp_path / name)
    one, _, _ = discover([str(tmp_path / "*.log"), str(tmp_path / "*.txt")])
    two, _, _ = discover([str(tmp_path / "*.txt"), str(tmp_path / "*.log")])
    assert one == two
    assert [os.path.basename(p) for p in paths(one)] == ["a.txt", "b.log", "c.log"]


def test_path_sort_key_is_fsencode() -> None:
    odd = os.fsdecode(b"bad\xff")
    assert path_sort_key(odd) == b"bad\xff"
    assert path_sort_key("bad\ufffd") < path_sort_key(odd) < path_sort_key(odd + "x")


# --- unmatched -------------------------------------------------------------------------


def test_unmatched_patterns_are_reported_in_order(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.log")
    p_none1 = str(tmp_path / "*.csv")
    p_hit = str(tmp_path / "*.log")
    p_none2 = str(tmp_path / "nowhere" / "**" / "*.gz")
    files, skipped, unmatched = discover([p_none1, p_hit, p_none2])
    assert paths(files) == [a]
    assert skipped == []
    assert unmatched == [p_none1, p_none2]


def test_empty_folder_gives_nothing_and_no_error(tmp_path: Path) -> None:
    pattern = str(tmp_path / "**" / "*.log")
    assert discover([pattern]) == ([], [], [pattern])


# --- special files ---------------------------------------------------------------------


def _forbid_opening(monkeypatch: pytest.MonkeyPatch, forbidden: set[str]) -> list[str]:
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def guard(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path) in forbidden:
            opened.append(os.fsdecode(path))
            raise AssertionError(f"discovery opened {path!r}")
        return real_open(path, *args, **kwargs)

    def os_guard(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path) in forbidden:
            opened.append(os.fsdecode(path))
            raise AssertionError(f"discovery opened {path!r}")
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guard)
    monkeypatch.setattr(os, "open", os_guard)
    return opened


def test_directories_fifos_and_sockets_are_skipped_with_a_reason(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    regular = touch(short_tmp / "f.log")
    folder = short_tmp / "d.log"
    folder.mkdir()
    fifo = str(short_tmp / "p.log")
    os.mkfifo(fifo)
    sock_path = str(short_tmp / "s.log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(sock_path)
    opened = _forbid_opening(monkeypatch, {fifo, sock_path})
    box: dict[str, object] = {}

    def work() -> None:
        box["result"] = discover([str(short_tmp / "*.log")])

    try:
        # in a thread: opening the FIFO would block for ever instead of failing the test
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "discover() blocked on a special file"
    finally:
        sock.close()
    assert opened == []
    files, skipped, unmatched = box["result"]  # type: ignore[misc]
    assert paths(files) == [regular]
    assert unmatched == []
    reasons = {s.path: s.reason for s in skipped}
    assert set(reasons) == {str(folder), fifo, sock_path}
    assert "directory" in reasons[str(folder)]
    assert "FIFO" in reasons[fifo]
    assert "socket" in reasons[sock_path]


def test_directories_matched_by_double_star_are_skipped(tmp_path: Path) -> None:
    a = touch(tmp_path / "in" / "sub" / "a.log")
    files, skipped, _ = discover([str(tmp_path / "in" / "**")])
    assert paths(files) == [a]
    assert {s.path for s in skipped} == {str(tmp_path / "in"), str(tmp_path / "in" / "sub")}
    assert all("directory" in s.reason for s in skipped)


def test_dangling_symlink_is_skipped_not_fatal(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.log")
    os.symlink(tmp_path / "gone.log", tmp_path / "b.log")
    files, skipped, _ = discover([str(tmp_path / "*.log")])
    assert paths(files) == [a]
    assert [s.path for s in skipped] == [str(tmp_path / "b.log")]
    assert "stat" in skipped[0].reason


def test_symlink_to_a_file_is_deduplicated_by_inode(tmp_path: Path) -> None:
    real = touch(tmp_path / "b.log")
    os.symlink("b.log", tmp_path / "a.log")  # sorts first, so its path wins
    files, _, _ = discover([str(tmp_path / "*.log")])
    assert paths(files) == [str(tmp_path / "a.log")]
    assert files[0].size == os.path.getsize(real)


def test_hard_links_are_one_file(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.log")
    os.link(a, tmp_path / "b.log")
    files, _, _ = discover([str(tmp_path / "*.log")])
    assert paths(files) == [a]


def test_symlink_after_its_real_file_is_deduplicated(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.log")
    os.symlink("a.log", tmp_path / "b.log")  # sorts after its target: the real path wins
    files, _, _ = discover([str(tmp_path / "*.log")])
    assert paths(files) == [a]


def test_files_under_a_symlinked_folder_are_found_once(tmp_path: Path) -> None:
    real = touch(tmp_path / "in" / "z" / "x.log")
    os.symlink("z", tmp_path / "in" / "a")  # in/a -> in/z: the real folder is walked
    for pattern in ("in/**/*.log", "in/*/x.log"):
        files, _, _ = discover([str(tmp_path / pattern)])
        assert paths(files) == [real], pattern


def test_a_folder_reached_only_through_a_symlink_is_walked(tmp_path: Path) -> None:
    touch(tmp_path / "elsewhere" / "x.log")
    (tmp_path / "in").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "link")
    files, _, _ = discover([str(tmp_path / "in" / "**" / "*.log")])
    assert paths(files) == [str(tmp_path / "in" / "link" / "x.log")]


def test_a_file_symlink_into_a_symlinked_folder_is_one_file(tmp_path: Path) -> None:
    target = touch(tmp_path / "elsewhere" / "x.log")
    (tmp_path / "in").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "b")
    os.symlink(target, tmp_path / "in" / "c.log")
    files, _, _ = discover([str(tmp_path / "in" / "**" / "*.log")])
    assert paths(files) == [str(tmp_path / "in" / "b" / "x.log")]


def test_overlapping_patterns_with_other_spellings_give_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path / "d" / "a.log")
    monkeypatch.chdir(tmp_path)
    files, _, _ = discover(["d/*.log", str(tmp_path / "d" / "*.log")])
    assert paths(files) == [str(tmp_path / "d" / "a.log")]  # "/..." sorts before "d/..."


def test_discovery_streams_files_as_the_walk_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first file comes out before most files are even looked at: nothing per file
    is collected ahead of the consumer."""
    for i in range(50):
        for j in range(20):
            touch(tmp_path / "in" / f"d{i:02d}" / f"f{j:02d}.log")
    stats: list[str] = []
    real_stat = os.stat

    def counting(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        stats.append(os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    found = Discovery([str(tmp_path / "in" / "**" / "*.log")])
    monkeypatch.setattr(os, "stat", counting)
    stream = iter(found)
    first = next(stream)
    assert first.path == str(tmp_path / "in" / "d00" / "f00.log")
    assert sum(p.endswith(".log") for p in stats) == 1
    assert len(list(stream)) == 999


def _real(files: list[InputFile]) -> list[str]:
    return [os.path.realpath(f.path) for f in files]


@pytest.mark.timeout(30)
def test_directory_symlink_loop_to_the_parent_terminates_without_duplicates(
    tmp_path: Path,
) -> None:
    root = tmp_path / "in"
    a = touch(root / "a.log")
    b = touch(root / "sub" / "b.log")
    os.symlink("..", root / "loop")  # in/loop -> tmp_path, which holds in/ again
    files, skipped, unmatched = discover([str(root / "**" / "*.log")])
    assert len(files) == 2
    assert sorted(_real(files)) == sorted(os.path.realpath(p) for p in (a, b))
    assert unmatched == []
    assert skipped == []
    # dedupe keeps the first path in byte order: in/a.log sorts before in/loop/...
    assert files[0].path == a


@pytest.mark.timeout(30)
def test_directory_symlink_loop_inside_the_tree_terminates_without_duplicates(
    tmp_path: Path,
) -> None:
    root = tmp_path / "in"
    a = touch(root / "a.log")
    b = touch(root / "sub" / "b.log")
    os.symlink("..", root / "sub" / "loop")  # in/sub/loop -> in
    files, _, unmatched = discover([str(root / "**" / "*.log")])
    assert paths(files) == [a, b]
    assert unmatched == []


def test_two_directory_symlink_loops_terminate(tmp_path: Path) -> None:
    root = tmp_path / "in"
    touch(root / "a.log")
    touch(root / "sub" / "b.log")
    os.symlink("..", root / "loop")
    os.symlink("..", root / "sub" / "loop")
    code = (
        "import sys; from pipeline.discovery import discover; "
        "files, _, _ = discover([sys.argv[1]]); print(len(files))"
    )
    repo = str(Path(__file__).resolve().parents[2])
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(root / "**" / "*.log")],
            capture_output=True,
            text=True,
            timeout=3,
            cwd=repo,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("discover() did not finish within 3 s on a tree with two symlink loops")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"


# --- awkward names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["with space.log", "ünïcødé 日本.log", os.fsdecode(b"bad\xff.log")],
    ids=["spaces", "non-ascii", "invalid-utf8"],
)
def test_awkward_file_names_are_found_and_usable(tmp_path: Path, name: str) -> None:
    path = touch(tmp_path / name, b"abc\n")
    files, skipped, unmatched = discover([str(tmp_path / "*.log")])
    assert paths(files) == [path]
    assert (skipped, unmatched) == ([], [])
    with open(files[0].path, "rb") as handle:
        assert handle.read() == b"abc\n"
    assert files[0].size == 4


def test_invalid_utf8_name_is_excludable(tmp_path: Path) -> None:
    keep = touch(tmp_path / "good.log")
    touch(tmp_path / os.fsdecode(b"bad\xff.log"))
    files, _, _ = discover([str(tmp_path / "*.log")], [os.fsdecode(b"bad\xff*")])
    assert paths(files) == [keep]


# --- compression -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.gz", "gz"),
        ("a.log.gz", "gz"),
        ("a.bz2", "bz2"),
        ("a.xz", "xz"),
        ("a.zst", "zst"),
        ("A.GZ", "gz"),
        ("a.log", None),
        ("a.gz.tmp", None),
        ("gz", None),
        ("a.tgz", None),
    ],
)
def test_compression_is_detected_from_the_suffix(
    tmp_path: Path, name: str, expected: str | None
) -> None:
    touch(tmp_path / name)
    (found,), _, _ = discover([str(tmp_path / "*")])
    assert found.compression == expected


# --- the output store is never an input ------------------------------------------------


def test_a_left_out_folder_is_never_entered_by_a_recursive_glob(tmp_path: Path) -> None:
    keep = touch(tmp_path / "in" / "a.jsonl")
    touch(tmp_path / "out" / "records.jsonl")
    touch(tmp_path / "out" / "parts" / "p.jsonl")
    files, _, unmatched = discover(
        [str(tmp_path / "**" / "*.jsonl")], left_out=[str(tmp_path / "out")]
    )
    assert paths(files) == [keep]
    assert unmatched == []


def test_a_glob_rooted_inside_the_left_out_folder_finds_nothing(tmp_path: Path) -> None:
    touch(tmp_path / "out" / "records.jsonl")
    touch(tmp_path / "out" / "sub" / "x.jsonl")
    out = str(tmp_path / "out")
    for pattern in ("out/*.jsonl", "out/**/*.jsonl", "out/records.jsonl", "out/sub/*"):
        files, _, unmatched = discover([str(tmp_path / pattern)], left_out=[out])
        assert (paths(files), unmatched) == ([], [str(tmp_path / pattern)]), pattern


def test_a_symlink_into_the_left_out_folder_does_not_lead_in(tmp_path: Path) -> None:
    keep = touch(tmp_path / "in" / "a.jsonl")
    touch(tmp_path / "store" / "out" / "records.jsonl")
    (tmp_path / "in" / "link").symlink_to(tmp_path / "store" / "out")
    (tmp_path / "in" / "file-link.jsonl").symlink_to(tmp_path / "store" / "out" / "records.jsonl")
    out = str(tmp_path / "store" / "out")
    files, _, _ = discover([str(tmp_path / "in" / "**" / "*.jsonl")], left_out=[out])
    # the file symlink is a file of "in": only the folder and what is below it are left out
    assert paths(files) == [keep, str(tmp_path / "in" / "file-link.jsonl")]
    files, _, _ = discover([str(tmp_path / "in" / "link" / "*.jsonl")], left_out=[out])
    assert paths(files) == []


def test_a_left_out_folder_that_does_not_exist_yet_changes_nothing(tmp_path: Path) -> None:
    keep = touch(tmp_path / "in" / "a.jsonl")
    files, _, _ = discover([str(tmp_path / "**" / "*.jsonl")], left_out=[str(tmp_path / "out")])
    assert paths(files) == [keep]


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("logs/[z-a].log", "bad character range z-a"),
        ("logs/**/[9-0]*.gz", "bad character range 9-0"),
        ("logs/*.log", None),
        ("logs/[!a-z]x.log", None),
        ("logs/[z-a]/plain-name.log", "bad character range z-a"),
    ],
)
def test_glob_problem_names_a_bad_range(pattern: str, problem: str | None) -> None:
    found = glob_problem(pattern)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and repr(pattern) in found
