"""Why a file gives no page: one kind per line of the report and per count."""

from __future__ import annotations

# The kinds, in the order the summary lists them.
KINDS = ("not a PDF", "unreadable", "encrypted", "corrupt", "no pages", "too many pages",
         "page too large", "timeout", "render failed", "renderer missing")


class PageProblem(Exception):
    """A file that yields no page image; str() is the one line a user reads."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message

    def __reduce__(self):   # crosses the worker-process boundary intact
        return PageProblem, (self.kind, self.message)
