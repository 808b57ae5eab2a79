"""The one exception type a user's mistake raises, and the messages shared across layers.

Every error a user can cause (a bad preset, a missing file, an ill-typed key) is a
`UserError` whose message is one line and says how to fix it. `cli.py` turns it into
a `click.ClickException`, so the user never sees a traceback for their own mistake.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path


class UserError(Exception):
    """A mistake in what the user asked for; the message names the fix."""


class StopRequested(Exception):
    """The user stopped a run (Ctrl-C, SIGTERM); the message says what was kept and how to go on.

    Not an error: the command prints the message and exits 130, the shell's code for Ctrl-C.
    """


def cache_home_error(path: Path, error: OSError) -> Exception:
    """The one-line error for a cache folder vrft-lite cannot write (also for other caches)."""
    reason = error.strerror or type(error).__name__
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
    return UserError(f"cannot write the vrft-lite cache at {path}: {reason}{where}; set VRFT_LITE_HOME to a "
                     f"writable folder (default ~/.cache/vrft-lite)")


def did_you_mean(word: str, choices: Sequence[str], *, n: int = 1, otherwise: str = "") -> str:
    """"; did you mean 'x'?" for the closest of `choices`, else `otherwise` (e.g. " (known: a, b)").

    >>> did_you_mean("flowers-1shoot", ["flowers-1shot", "pets-1shot"])
    "; did you mean 'flowers-1shot'?"
    """
    near = difflib.get_close_matches(str(word), list(choices), n=n, cutoff=0.6)
    return f"; did you mean {', '.join(repr(x) for x in near)}?" if near else otherwise
