"""The one exception type a user's mistake raises.

Every error a user can cause (a bad preset, a missing file, an ill-typed key) is a
`UserError` whose message is one line and says how to fix it. `cli.py` turns it into
a `click.ClickException`, so the user never sees a traceback for their own mistake.
"""


class UserError(Exception):
    """A mistake in what the user asked for; the message names the fix."""
