"""The one exception type that maskcl raises for bad input.

Every problem a user can cause (unknown option, malformed data file, task id out of range, an input the
model cannot take, a diverging loss) raises :class:`MaskclError` with a one-line message naming the
problem; the command line prints that line and exits non-zero instead of showing a traceback.
"""


class MaskclError(ValueError):
    """Bad input or a failed run, described in one line."""


def one_line(error: BaseException) -> str:
    """The informative line of an exception's message (torch's load_state_dict puts it second)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading"):
        return lines[1]
    return lines[0] if lines else type(error).__name__


class MaskclWarning(UserWarning):
    """Something the user should know that does not stop the run (the command line prints it in one line,
    ``maskcl: warning: ...``)."""
