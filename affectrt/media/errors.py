"""The one error the media layer raises: names the file, what was wrong and what to do."""

from __future__ import annotations

import os


class MediaError(RuntimeError):
    """A media file could not be turned into model input.

    `path` is the offending file, `reason` says what was wrong, `hint` what to do about it. The message reads
    "video.mp4: no video stream (the file holds only audio); pass a file with a video track".
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, hint: str = "") -> None:
        self.path = os.fspath(path) if path is not None else "<memory>"
        self.reason = reason
        self.hint = hint
        super().__init__(f"{self.path}: {reason}" + (f"; {hint}" if hint else ""))
