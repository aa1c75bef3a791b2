"""Plugin functions for the example configs, used as ``call: example_plugins:<function>``.

The config file's folder is importable in every worker, so this module needs no install.
Each plugin is a plain top-level function (it must pickle under the ``spawn`` start
method): it gets one record and returns a mapping (one record), ``None`` (drop the record)
or a list / generator (fan out into several records).
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
