"""The user-facing error: names the input, what was wrong and what to do, in one line.

``affectrt`` prints it as ``affectrt: <input>: <what is wrong>; <what to do>`` and exits 2, without a
traceback (``--debug`` or ``AFFECTRT_DEBUG=1`` shows one). Library code raises it for mistakes a user can fix
(a wrong path, a value out of range); a bug stays an ordinary exception with its traceback.
"""

from __future__ import annotations

import os


class UsageError(ValueError):
    """``subject``: the input (an option, a file); ``problem``: what is wrong; ``fix``: what to do."""

    def __init__(self, subject: str | os.PathLike, problem: str, fix: str = "") -> None:
        self.subject, self.problem, self.fix = os.fspath(subject), problem, fix
        super().__init__(f"{self.subject}: {problem}" + (f"; {fix}" if fix else ""))
