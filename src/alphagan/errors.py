"""The one base class for errors a user can act on.

Stages print these as a single ``<stage>: error: <message>`` line and exit 1, with no
traceback; anything else is a bug and keeps its traceback.
"""


class AlphaGanError(Exception):
    """A problem with the input, params or environment that the message explains."""
