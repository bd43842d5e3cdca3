"""Jinja2 rendering of templated Buildfiles (``Buildfile.j2``), and variable files for it.

Rendering is strict: an undefined variable is an error naming it and its template line, never
an empty string. Templates run sandboxed (no attribute access to Python internals), since a
Buildfile may come from anyone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from layerbuild.errors import BuildfileError

__all__ = ["is_template", "parse_var_file", "render_template"]

_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def is_template(path: str) -> bool:
    """Whether a Buildfile path names a Jinja2 template (its name ends in ``.j2``)."""
    return path.endswith(".j2")


def render_template(text: str, variables: Mapping[str, str], path: str = "Buildfile.j2") -> str:
    """Render ``text`` with ``variables``.

    Raises BuildfileError with the template line for an undefined variable, a syntax error
    or any other failure while rendering.
    """
    import jinja2  # only templated builds pay for loading Jinja2
    import jinja2.sandbox

    env = jinja2.sandbox.SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    try:
        template = env.from_string(text)
    except jinja2.TemplateSyntaxError as err:
        raise BuildfileError(f"template syntax error: {err.message}", path, err.lineno) from None
    try:
        return template.render(dict(variables))
    except jinja2.UndefinedError as err:
        line = _template_line(err)
        match = _UNDEFINED_NAME.match(str(err))
        if match:
            message = f"undefined template variable {match.group(1)!r}"
        else:
            message = f"undefined template value: {err}"
        raise BuildfileError(message, path, line) from None
    except jinja2.TemplateError as err:
        raise BuildfileError(f"template error: {err}", path, _template_line(err)) from None


def _template_line(err: BaseException) -> int | None:
    """The template line where rendering failed, from the frames Jinja2 maps to the template."""
    import traceback  # only on this error path: it costs ~5 ms to import

    line = None
    for frame in traceback.extract_tb(err.__traceback__):
        if frame.filename == "<template>":
            line = frame.lineno
    return line


def parse_var_file(text: str, path: str = "vars") -> dict[str, str]:
    """Template variables from a file: a JSON object, or ``KEY=VALUE`` lines.

    In the line form, blank lines and lines starting with ``#`` are skipped and the value is
    taken verbatim after the first ``=``. JSON numbers and booleans become their JSON text.
    Raises BuildfileError naming the file and line.
    """
    text = text.removeprefix("\ufeff")
    if text.lstrip().startswith("{"):
        return _json_vars(text, path)
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, has_value, value = raw.lstrip().partition("=")
        name = name.strip()
        if not has_value:
            raise BuildfileError(f"expected KEY=VALUE, got {line!r}", path, number)
        if not _VAR_NAME.fullmatch(name):
            raise BuildfileError(f"invalid variable name {name!r}", path, number)
        values[name] = value
    return values


def _json_vars(text: str, path: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise BuildfileError(f"invalid JSON: {err.msg}", path, err.lineno) from None
    if not isinstance(data, dict):
        raise BuildfileError("a JSON variable file must hold an object", path, 1)
    values: dict[str, str] = {}
    for name, value in data.items():
        if isinstance(value, str):
            values[name] = value
        elif isinstance(value, (bool, int, float)) and value is not None:
            values[name] = json.dumps(value)
        else:
            raise BuildfileError(f"variable {name!r} must be a string, number or boolean",
                                 path, 1)
    return values
