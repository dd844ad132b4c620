"""The one exception type users see.

A :class:`VaelabError` carries a single line naming the file or flag at fault
and what was expected. The CLI prints it as ``vaelab: error: <message>`` and
exits with status 2, without a traceback; anything else is a bug.
"""


class VaelabError(Exception):
    """A user-facing error: bad input, a missing file, an invalid option."""
