"""User-facing errors.

Every problem with user input (a scenario file, a trace, a command-line argument, an impossible deployment)
raises a :class:`FleetsimError` whose message is one line naming the file, the field or line, and what is
allowed. The CLI prints that line and exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations

import difflib

#: The characters that end a line (``str.splitlines``), written as escapes in a message.
_LINE_BREAKS = str.maketrans({c: ascii(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


class FleetsimError(Exception):
    """Base class of errors caused by user input; ``str(err)`` is the one-line message (a line break in a name the
    user gave, a pool name or a ``--set`` key, is shown escaped)."""

    def __str__(self) -> str:
        return super().__str__().translate(_LINE_BREAKS)


class ScenarioError(FleetsimError):
    """A scenario file (or an override) is invalid.

    Parameters
    ----------
    source
        The file (or ``--set`` override) the problem is in.
    field
        Dotted path of the offending field, e.g. ``pools.l4.gpu``; empty for the whole file.
    message
        What is wrong and what is allowed.
    """

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


class DeploymentError(ScenarioError):
    """A deployment that cannot run: weights larger than memory, KV cache too small, and so on."""


class TraceError(FleetsimError):
    """A trace or length file is malformed.

    Parameters
    ----------
    path
        The file.
    line
        1-based line number of the bad row (0 when the problem is the whole file).
    message
        What is wrong.
    """

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


class CatalogError(FleetsimError):
    """A catalog file (GPUs, models, prices) is malformed or a name is not in it."""


class InternalError(RuntimeError):
    """A simulator invariant was violated: a bug in fleetsim, not a user error."""


def unknown_name(kind: str, name: str, choices) -> str:
    """'unknown X 'name'; did you mean ...; allowed: ...' for a bad registry or catalog key."""
    choices = sorted(choices)
    # Case does not matter for the hint: 'L4' and 'L4x' both suggest 'l4'.
    folded = {str(c).casefold(): c for c in choices}
    close = difflib.get_close_matches(str(name).casefold(), list(folded), n=1)
    close = [folded[close[0]]] if close else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; allowed: {', '.join(choices)}"


def as_written(value) -> str:
    """``value`` as a YAML user would write it (``true``, ``null``, ``'two'``, ``1.5``), for "got ..." in a message."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def with_input(msg: str, value) -> str:
    """A pydantic message ``msg`` ending in ", got VALUE" (pydantic's own "got a number with a fractional part" and
    the like give way to the value itself); a mapping or list is not repeated back."""
    msg = msg.removeprefix("Value error, ")
    if isinstance(value, dict | list):
        return msg
    msg = msg.split(", got ")[0].removesuffix(", unable to parse string as a number")
    return f"{msg}, got {as_written(value)}"
