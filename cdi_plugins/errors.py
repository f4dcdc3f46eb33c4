"""The one exception type a user can cause.

Every error that comes from user input (a bad file, a bad recipe, a wrong
shape, NaN, a GPU asked for but absent, a diverging support) is raised as
:class:`CDIError`.  It carries the *location* (a file name, a recipe path such
as ``recipe.yaml:12: steps[2].beta``) so the CLI can print one line and exit
with status 2 without a traceback.
"""

from __future__ import annotations


class CDIError(Exception):
    """A problem the user can fix; the message names where it is.

    Parameters
    ----------
    message : str
        What is wrong and, where possible, what to do about it.
    location : str, optional
        The file, recipe key or step the problem belongs to.  Prefixed to the
        message when the error is printed.
    """

    def __init__(self, message: str, location: str | None = None):
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)

    def at(self, location: str) -> "CDIError":
        """Return a copy of this error with *location* prefixed to the current one."""
        loc = f"{location}: {self.location}" if self.location else location
        return CDIError(self.message, loc)
