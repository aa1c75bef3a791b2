"""Deterministic sample data for the example configs (stdlib only).

    python data/generate.py --out data --scale 1             # the small samples kept in git
    python data/generate.py --out data/generated --scale 50  # `make data`: 50x the volume

Every file gets its own ``random.Random`` seeded from ``--seed`` and the file's path, and
gzip members are written with ``mtime=0`` and no file name, so the same seed, scale and
Python/zlib give byte-identical output. Existing files are overwritten and nothing is
deleted, so remove the folder before regenerating with a smaller --scale or another --seed.

What is written under ``--out`` (volumes at scale 1):
- ``logs/``: combined-format access logs. ``access.log`` (~400 KB, big enough to be split
  by a small ``chunk_size``), ``api.log`` (no trailing newline), ``empty.log`` (0 bytes)
  and gzipped days under ``logs/archive/`` (one a folder deeper, so ``**`` matters). The
  odd lines of ``_special_lines`` are mixed in: garbage that the regex rejects, ``-`` and
  corrupt byte counts, CRLF endings, a UTF-8 path, an invalid UTF-8 byte, a lone CR,
  U+0085 and U+2028 inside a line.
- ``text/``: prose from a seeded word list (LF, CRLF, and a file without final newline).
- ``sales/``: CSV with a header, quoted fields holding a comma, quotes and a newline, and
  one row with an empty ``units``.
- ``files/``: ~30 small mixed files (text, PNG, random binary, an empty one, names with a
  space and a non-ASCII letter). No ``.gz``/``.bz2``/``.xz``/``.zst`` names: the pipeline
  would decompress those.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import logging
import random
import struct
import textwrap
import zlib
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

log = logging.getLogger("generate")

Output = Iterator[tuple[str, bytes]]  # (path relative to --out, file content)

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _rng(seed: int, name: str) -> random.Random:
    return random.Random(f"{seed}/{name}")


# --- access logs -----------------------------------------------------------------------

# (path template, weight); {id}, {slug} and {q} are filled in per line.
PATHS = [
    ("/", 30),
    ("/index.html", 8),
    ("/static/css/site.css", 20),
    ("/static/js/app.js", 18),
    ("/static/img/logo.png", 15),
    ("/favicon.ico", 10),
    ("/robots.txt", 3),
    ("/login", 6),
    ("/api/v1/items", 12),
    ("/api/v1/items/{id}", 10),
    ("/blog/{slug}", 8),
    ("/search?q={q}", 5),
    ("/old-page", 2),
    ("/wp-login.php", 2),
    ("/.env", 1),
]
API_PATHS = [("/api/v1/items", 10), ("/api/v1/items/{id}", 12), ("/api/v1/orders", 5)]
METHODS = [("GET", 80), ("POST", 10), ("HEAD", 4), ("OPTIONS", 2), ("PUT", 2), ("DELETE", 1)]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/129.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Version/18.0 Safari",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Mobile/15E148",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
]
SLUGS = ["hello-world", "release-notes", "tuning-postgres", "a-year-in-review", "faq"]
HEALTH = '10.0.0.2 - - [{ts}] "GET /healthz HTTP/1.1" 200 2 "-" "ELB-HealthChecker/2.0"'


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def _timestamp(day: date, second: int) -> str:
    h, m, s = second // 3600, second // 60 % 60, second % 60
    return f"{day.day:02d}/{MONTHS[day.month - 1]}/{day.year}:{h:02d}:{m:02d}:{s:02d} +0000"


def _request(rng: random.Random, paths: list[tuple[str, int]]) -> tuple[str, str, int, str]:
    """A plausible (method, path, status, bytes) with bytes ``-`` when nothing was sent."""
    method = _pick(rng, METHODS)
    template = _pick(rng, paths)
    path = template.format(
        id=rng.randint(1, 500), slug=rng.choice(SLUGS), q=rng.choice(["shoes", "red+hat", "faq"])
    )
    if template in ("/wp-login.php", "/.env"):
        return method, path, 404, "153"
    if rng.random() < 0.02:
        return method, f"/missing-{rng.randint(1, 99)}", 404, "153"
    if template == "/old-page":
        return method, path, 301, rng.choice(["178", "-"])
    if method in ("HEAD", "OPTIONS"):
        return method, path, 200, "-"
    if template.startswith("/api/") and rng.random() < 0.04:
        return method, path, rng.choice([500, 500, 503]), rng.choice(["531", "-", "299"])
    if template == "/login" and method == "POST":
        return method, path, 302, "-"
    if template.startswith(("/static/", "/favicon")) and rng.random() < 0.25:
        return method, path, 304, "-"
    low, high = (200, 6000) if template.startswith("/api/") else (2000, 90000)
    return method, path, 200, str(rng.randint(low, high))


def _access_line(rng: random.Random, ts: str, ips: list[str], paths: list) -> str:
    method, path, status, size = _request(rng, paths)
    referer = rng.choice(["-", "-", "https://example.org/", "https://www.google.com/"])
    return (
        f'{rng.choice(ips)} - - [{ts}] "{method} {path} HTTP/1.1" {status} {size} '
        f'"{referer}" "{rng.choice(AGENTS)}"'
    )


def _special_lines(ts: str) -> list[bytes]:
    """Odd lines, as bytes, each with its own line ending."""
    ok = f'203.0.113.9 - - [{ts}] "GET {{}} HTTP/1.1" 200 {{}} "-" "{{}}"'
    return [
        b"\n",  # blank line: no match
        f'198.51.100.7 - - [{ts}] "\\x16\\x03\\x01\\x00\\xa5" 400 166 "-" "-"\n'.encode(),
        f'198.51.100.8 - - [{ts}] "-" 408 0 "-" "-"\n'.encode(),
        f"192.0.2.44 - - [{ts[:12]}\n".encode(),  # truncated
        b"2026/11/03 04:05:06 [error] 311#0: *77 connect() failed (111: Connection refused)\n",
        ok.format("/static/js/app.js", "5120x", "curl/8.5.0").encode() + b"\n",  # bad int
        ok.format("/", "4711", "Mozilla/5.0 (Windows)").encode() + b"\r\n",  # CRLF
        ok.format("/faq", "-", "Mozilla/5.0 (Windows)").encode() + b"\r\n",  # CRLF, null
        ok.format("/wiki/Zürich", "2048", "Mozilla/5.0").encode() + b"\n",  # UTF-8 path
        ok.format("/search?q=caf\udce9", "1024", "Mozilla/5.0").encode(  # raw 0xE9 byte
            "utf-8", "surrogateescape"
        )
        + b"\n",
        ok.format("/", "512", "Bot\rlone-CR").encode() + b"\n",  # a lone CR is data
        ok.format("/", "512", "Bot\x85NEL\u2028LS\x0cFF").encode() + b"\n",  # so are these
    ]


def _access_log(rng: random.Random, day: date, n: int, paths: list, special: bool) -> bytes:
    ips = [
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{i}"
        for i in range(1, 120)
    ]
    ips += ["2001:db8::1", "2001:db8:85a3::8a2e:370:7334"]
    seconds = sorted(rng.randrange(86400) for _ in range(n))
    kinds = range(12) if special else [1, 6, 9]  # indexes into _special_lines, inserted
    # before line i >= 1: never first, never last
    at = dict(zip(rng.sample(range(1, n), len(kinds)), kinds, strict=True))
    lines = []
    for i, second in enumerate(seconds):
        ts = _timestamp(day, second)
        if i in at:
            lines.append(_special_lines(ts)[at[i]])
        line = HEALTH.format(ts=ts) if rng.random() < 0.1 else _access_line(rng, ts, ips, paths)
        lines.append(line.encode() + b"\n")
    return b"".join(lines)


def logs(seed: int, scale: int) -> Output:
    day = date(2026, 11, 3)
    yield "logs/access.log", _access_log(_rng(seed, "access"), day, 2600 * scale, PATHS, True)
    api = _access_log(_rng(seed, "api"), day, 250 * scale, API_PATHS, False)
    yield "logs/api.log", api.rstrip(b"\n")  # no newline after the last line
    yield "logs/empty.log", b""
    for rel, day in [
        ("archive/2026-11-01.log.gz", date(2026, 11, 1)),
        ("archive/2026-11-02.log.gz", date(2026, 11, 2)),
        ("archive/2026-10/2026-10-31.log.gz", date(2026, 10, 31)),
    ]:
        raw = _access_log(_rng(seed, rel), day, 500 * scale, PATHS, False)
        yield f"logs/{rel}", gzip.compress(raw, compresslevel=9, mtime=0)


# --- text ------------------------------------------------------------------------------

WORD_TEXT = """the of and to a in that it was he for on are as with his they at be this from
have or by one had not but what all were when we there can an your which their said if do
will each about how up out them then she many some so these would other into has more her
two like him see time could no make than first been its who now people my made over did
down only way find use may water long little very after words called just where most know
get through back much go good new write our me man too any day same right look think also
around another came come work three word must because does part even place well such here
take why things help put years different away again off went old number great tell men say
small every found still between name should home big give air line set own under read last
never us left end along while might next sound below saw something thought both few those
always looked show large often together asked house don't world going want school important
until form food keep children feet land side without boy once animals life enough took
sometimes four head above kind began almost live page got earth need far hand high year
mother light country father let night picture being study second eyes soon times story boys
since white days paper hard near sentence better best across during today others however
sure means knew it's try told young miles sun ways thing whole hear example heard several
change answer room sea against top turned learn point city play toward five using himself
usually well-known"""
WORDS = WORD_TEXT.split()  # most frequent first
FOREIGN = ["café", "naïve", "façade", "über", "Straße", "déjà", "vu", "jalapeño", "Ελλάδα"]


def _prose(rng: random.Random, paragraphs: int) -> list[str]:
    """Paragraphs of wrapped lines, words drawn with Zipf-like weights."""
    weights = [1 / (rank + 8) for rank in range(len(WORDS))]
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            words = rng.choices(WORDS, weights, k=rng.randint(4, 18))
            if rng.random() < 0.15:
                words.insert(rng.randrange(len(words)), rng.choice(FOREIGN))
            if rng.random() < 0.1:
                words.insert(rng.randrange(len(words)), str(rng.randint(2, 1999)))
            if len(words) > 6 and rng.random() < 0.4:
                words[rng.randrange(1, len(words) - 1)] += ","
            sentence = " ".join(words)
            sentences.append(sentence[0].upper() + sentence[1:] + rng.choice(".....?!"))
        out.append(textwrap.fill(" ".join(sentences), width=72))
    return out


def texts(seed: int, scale: int) -> Output:
    chapter1 = "\n\n".join(["Chapter 1", *_prose(_rng(seed, "ch1"), 200 * scale)])
    yield "text/chapter-01.txt", (chapter1 + "\n").encode()
    chapter2 = "\n\n".join(["Chapter 2", *_prose(_rng(seed, "ch2"), 180 * scale)])
    yield "text/chapter-02.txt", (chapter2.replace("\n", "\r\n") + "\r\n").encode()  # CRLF
    notes = _prose(_rng(seed, "notes"), 40 * scale)
    half = len(notes) // 2  # a form feed (page break) line between two halves; no final \n
    yield "text/notes.txt", "\n\n".join([*notes[:half], "\x0c", *notes[half:]]).encode()


# --- sales -----------------------------------------------------------------------------

PRODUCTS = [  # (name, base price, weight)
    ("Widget", 4.99, 30),
    ("Gadget", 12.5, 20),
    ("Sprocket", 0.75, 25),
    ("Widget, large", 9.99, 10),
    ('Cable 2m "braided"', 7.25, 8),
    ("Gift set\n(boxed)", 24.0, 5),
]
REGIONS = ["North", "South", "East", "West", "Central"]


def _sales(rng: random.Random, start: date, rows: int, newline: str, blank_units: bool) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(["date", "region", "product", "units", "price"])
    picks = []
    for _ in range(rows):
        name, base, _ = rng.choices(PRODUCTS, [w for *_, w in PRODUCTS])[0]
        day = start + timedelta(days=rng.randrange(91))
        price = f"{base * rng.uniform(0.9, 1.1):.2f}"
        picks.append([day.isoformat(), rng.choice(REGIONS), name, rng.randint(1, 40), price])
    picks.sort(key=lambda row: row[0])
    if blank_units:
        picks[len(picks) // 2][3] = ""  # units missing: dropped as malformed by `types`
    writer.writerows(picks)
    return buf.getvalue().encode()


def sales(seed: int, scale: int) -> Output:
    yield "sales/2026-q2.csv", _sales(_rng(seed, "q2"), date(2026, 4, 1), 60 * scale, "\n", False)
    yield (
        "sales/2026-q3.csv",
        _sales(_rng(seed, "q3"), date(2026, 7, 1), 250 * scale, "\r\n", False),
    )
    yield "sales/2026-q4.csv", _sales(_rng(seed, "q4"), date(2026, 10, 1), 250 * scale, "\n", True)


# --- mixed files -----------------------------------------------------------------------


def _png(rng: random.Random, width: int, height: int) -> bytes:
    """A small valid RGB PNG: a gradient with a little noise."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00"
        + bytes(
            v
            for x in range(width)
            for v in (x * 255 // width, y * 255 // height, rng.randrange(64))
        )
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def files(seed: int, scale: int) -> Output:
    rng = _rng(seed, "files")
    yield (
        "files/docs/readme.md",
        b"# Sample files\n\nSmall mixed files for the checksums example.\n",
    )
    yield "files/docs/empty.txt", b""
    yield "files/docs/annual report.txt", "\n".join(_prose(rng, 3)).encode() + b"\n"
    yield "files/docs/café-menu.txt", "Crème brûlée 6,50 €\nCafé au lait 3,20 €\n".encode()
    config = {"name": "demo", "retries": 2, "tags": ["a", "b"], "nested": {"ok": True}}
    yield "files/docs/config.json", json.dumps(config, indent=2).encode() + b"\n"
    yield (
        "files/docs/table.csv",
        b"id,value\r\n" + b"".join(f"{i},{rng.random():.6f}\r\n".encode() for i in range(200)),
    )
    yield "files/docs/index.html", b"<!doctype html>\n<title>demo</title>\n<p>Hello</p>\n"
    yield "files/docs/crlf-notes.txt", "\r\n".join(_prose(rng, 2)).encode()
    for i, (w, h) in enumerate([(16, 16), (32, 24), (64, 48), (8, 64)]):
        yield f"files/images/tile-{i}.png", _png(rng, w, h)
    for i in range(18 * scale):
        size = 65536 if i == 7 else rng.choice([1, 17, 512, 1000, 4096, rng.randrange(16384)])
        yield f"files/blobs/blob-{i:03d}.{'dat' if i % 3 else 'bin'}", rng.randbytes(size)


# --- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="output folder")
    parser.add_argument("--scale", type=int, default=1, help="volume multiplier (>= 1)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    count = total = 0
    for part in (logs, texts, sales, files):
        for rel, content in part(args.seed, args.scale):
            path = args.out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            count, total = count + 1, total + len(content)
    log.info("wrote %d files, %d bytes, under %s (scale %d)", count, total, args.out, args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
