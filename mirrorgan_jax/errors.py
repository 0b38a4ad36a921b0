"""The project's own errors, as opposed to bugs.

An `Error` is an input a run cannot go on with: a config value, a data layout, a corrupt or
unsafe file, a mismatch with what a workdir holds, a sampling input, a checkpoint. `main` prints
one as a single line, `error: <what> (<file/key/value>): <what to do>`, and exits with status 2;
`--verbose` (or MIRRORGAN_VERBOSE=1) adds its traceback. Anything else is a bug and keeps its
traceback. The modules raise subclasses named for their domain (`ConfigError`,
`DataLayoutError`, `UnsafeFileError`, ...), which also subclass the built-in error that callers
caught before (mostly ValueError).
"""

from __future__ import annotations


class Error(Exception):
    """what: what is wrong; subject: the file, key or value it is about; action: what to do.

    Raised with one argument, that argument is the whole message (older call sites)."""

    label = "error"  # the word the printed line starts with
    exit_status = 2

    def __init__(self, what: str, subject: str = "", action: str = ""):
        self.what, self.subject, self.action = what, subject, action
        super().__init__(what, subject, action)

    def __str__(self) -> str:
        text = self.what
        if self.subject:
            text += f" ({self.subject})"
        if self.action:
            text += f": {self.action}"
        return text


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines of listed items too) as one space."""
    return " ".join(str(text).split())
