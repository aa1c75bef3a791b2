"""Fault-injection step plugin for the dask executor's tests, shipped to the workers.

A test copies this folder into its config's folder and writes ``fault_settings.py`` beside
it (a sibling module: the workers get it only if the config folder's modules are shipped;
the ``faultkit`` package proves packages are shipped too). Editing ``fault_settings.py``
between runs is how a test removes a fault: the next run ships the new version, and the
workers must forget the old one.

``fault_settings``: ``MODE`` (None, ``kill``, ``kill_once``, ``hang``, ``raise``),
``MATCH`` (substrings: a record whose ``line`` holds one matches), ``SLOW_S`` (seconds to
sleep per record), ``FAULT_DIR`` (bookkeeping, in a folder the workers can see) and
``CONFIG_DIR`` (the config's folder, which the workers must not see).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import fault_settings as settings
from faultkit import marks

marks.note_import(settings.FAULT_DIR, settings.CONFIG_DIR)


def inject(record: dict[str, Any]) -> dict[str, Any]:
    """The step: the record unchanged, unless it matches and a mode is set."""
    marks.first_record(settings.FAULT_DIR)
    if settings.SLOW_S:
        time.sleep(settings.SLOW_S)
    line = record.get("line", "")
    if not settings.MODE or not any(m in line for m in settings.MATCH):
        return record
    marks.hit(settings.FAULT_DIR)
    if settings.MODE == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif settings.MODE == "kill_once":
        if marks.first_time(settings.FAULT_DIR, "kill"):
            os.kill(os.getpid(), signal.SIGKILL)
    elif settings.MODE == "hang":
        time.sleep(3600)
    elif settings.MODE == "raise":
        raise ValueError("injected failure")
    return record
