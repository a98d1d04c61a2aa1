"""Atomic file replacement: a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_replace(tmp: Path, final: Path) -> None:
    """Flush ``tmp`` to disk, rename it over ``final``, then flush the directory entry too."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    try:
        dfd = os.open(final.parent, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
