"""One error type for known failures, printed by the CLI as one line:

    error: <file or key>: <what> (<what to do>)

Library code raises `RestorebenchError` (or a subclass) for failures a user can act on: a bad value in
params.yaml, a truncated file, a refused archive member. The CLI prints `str(err)` and exits 1 with no
traceback (`--debug` or RESTOREBENCH_DEBUG=1 shows it). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RestorebenchError(Exception):
    """A known failure. `where`: the file path or params key it concerns; `what`: what is wrong;
    `hint`: what to do about it (optional). `exit_code`: the CLI's exit status (1; a subclass may differ)."""

    exit_code = 1

    def __init__(self, where: object, what: str, hint: str | None = None) -> None:
        self.where = str(where) if where is not None else ""
        self.what = what
        self.hint = hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return f"{text} ({self.hint})" if self.hint else text

    def __str__(self) -> str:
        return self.message
