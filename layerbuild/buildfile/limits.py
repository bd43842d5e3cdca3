"""The bounds a Buildfile must keep, so that no input makes parsing slow, deep or huge.

- A line holds at most :data:`MAX_LINE_BYTES` bytes of UTF-8, BuildKit's own limit (its line
  scanner's 64 KiB buffer, the newline included).
- A whole Buildfile holds at most :data:`MAX_BUILDFILE_BYTES` bytes; a reader takes one byte
  more than that and no further, so an endless stream (``-f /dev/zero``) ends at once.
- ``${...}`` expansions nest at most :data:`MAX_NESTING` deep (Docker builds files nesting
  5,000 deep), exec-form JSON at most :data:`MAX_JSON_NESTING` (``json.loads`` recurses; an
  exec form nesting at all is refused anyway: it must be an array of strings).
- A Buildfile is UTF-8 text, as BuildKit reads it.
"""

from __future__ import annotations

from layerbuild.errors import BuildfileError

__all__ = [
    "MAX_BUILDFILE_BYTES",
    "MAX_JSON_NESTING",
    "MAX_LINE_BYTES",
    "MAX_NESTING",
    "check_line_length",
    "decode_buildfile",
    "json_depth",
]

MAX_LINE_BYTES = 64 * 1024 - 1
MAX_BUILDFILE_BYTES = 16 * 1024 * 1024
MAX_NESTING = 10_000
MAX_JSON_NESTING = 500


def decode_buildfile(data: bytes, path: str = "Buildfile") -> str:
    """The text of a Buildfile read as ``data`` (at most one byte over the size limit).

    Raises BuildfileError for a file over :data:`MAX_BUILDFILE_BYTES` or not UTF-8.
    """
    if len(data) > MAX_BUILDFILE_BYTES:
        raise BuildfileError(f"the Buildfile is larger than the maximum of "
                             f"{MAX_BUILDFILE_BYTES} bytes", path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise BuildfileError(f"not UTF-8 text at byte {err.start}", path, line) from None


def check_line_length(line: str, number: int, path: str = "Buildfile") -> None:
    """Refuse a line longer than BuildKit allows, with BuildKit's wording."""
    # Counting characters first spares encoding the lines that cannot be too long.
    if len(line) * 4 > MAX_LINE_BYTES and len(line.encode("utf-8", "surrogatepass")) > \
            MAX_LINE_BYTES:
        raise BuildfileError(f"dockerfile line greater than max allowed size of "
                             f"{MAX_LINE_BYTES}", path, number)


def json_depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest, counting outside strings.

    A cheap scan that needs no valid JSON: it lets a caller refuse a nesting too deep for
    ``json.loads`` (which recurses) before calling it.
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest
