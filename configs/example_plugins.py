"""Plugin functions for the example configs, used as ``call: example_plugins:<function>``.

The config file's folder is importable in every worker, so this module needs no install.
Each plugin is a plain top-level function (it must pickle under the ``spawn`` start
method): it gets one record and returns a mapping (one record), ``None`` (drop the record)
or a list / generator (fan out into several records). A batch plugin (``call: {function:
..., batch: true}``) gets a list of records and returns a list of records.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

# A run of letters in any script: \w minus digits and underscore.
_WORD = re.compile(r"[^\W\d_]+")


def words(record: dict[str, Any]) -> Iterator[dict[str, str]]:
    """wordcount: fan a ``lines`` record out into one ``{"word": w}`` per word, lowercased.

    Words are runs of Unicode letters, so ``don't`` gives ``don`` and ``t`` and ``Straße``
    stays one word.
    """
    for word in _WORD.findall(record["line"]):
        yield {"word": word.lower()}


def words_batch(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """wordcount-batch: ``words`` in the batch form, many lines at a time: one regex scan
    over the lines joined by newlines (a newline is no letter, so no word spans two
    lines) instead of one call and one scan per line. Same words, in the same order.

    Each word is lowercased on its own, as ``words`` does: lowercasing the whole text
    first would differ (``"İ".lower()`` adds a combining dot, which is no letter)."""
    text = "\n".join([record["line"] for record in records])
    return [{"word": word.lower()} for word in _WORD.findall(text)]


def revenue(record: dict[str, Any]) -> dict[str, Any]:
    """sales-csv: add ``revenue = units * price`` (rounded to cents) to a typed CSV row."""
    return {**record, "revenue": round(record["units"] * record["price"], 2)}


def checksum(record: dict[str, Any]) -> dict[str, Any]:
    """checksums: replace a ``bytes`` record's data by its SHA-256 hex digest."""
    return {
        "path": record["path"],
        "size": record["size"],
        "sha256": hashlib.sha256(record["data"]).hexdigest(),
    }
