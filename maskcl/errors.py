"""The one exception type that maskcl raises for bad input.

Every problem a user can cause (unknown option, malformed data file, task id out of range, an input the
model cannot take, a diverging loss) raises :class:`MaskclError` with a one-line message naming the
problem; the command line prints that line and exits non-zero instead of showing a traceback.
"""


class MaskclError(ValueError):
    """Bad input or a failed run, described in one line."""
