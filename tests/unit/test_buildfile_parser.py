"""The first parsing stage: text → nodes (directives, continuations, heredocs, flags, forms)."""

from __future__ import annotations

import pytest

from layerbuild.buildfile import parse
from layerbuild.buildfile.parser import (
    parse_heredoc_marker,
    parse_json_array,
    split_flags,
)
from layerbuild.errors import BuildfileError


def only(text: str):
    nodes = parse(text).nodes
    assert len(nodes) == 1, nodes
    return nodes[0]


def test_node_fields() -> None:
    node = only("copy --from=a --chown='u g' --link src dst\n")
    assert node.instruction == "COPY"
    assert node.flags == ("--from=a", "--chown=u g", "--link")
    assert node.rest == "src dst"
    assert node.json_args is None and not node.is_json
    assert (node.start_line, node.end_line) == (1, 1)
    assert node.original == "copy --from=a --chown='u g' --link src dst"


def test_exec_form_detection() -> None:
    assert only('CMD ["a", "b c"]').json_args == ("a", "b c")
    assert only("CMD [\"a\", 'b']").json_args is None  # not JSON: shell form
    assert only('ENV A=["x"]').json_args is None  # ENV has no exec form
    assert only('RUN ["a"] && b').json_args is None


def test_json_array_of_non_strings_is_an_error() -> None:
    with pytest.raises(BuildfileError, match="strings only") as caught:
        parse('FROM a\nRUN ["a", ["b"]]\n')
    assert caught.value.line == 2


@pytest.mark.parametrize(("text", "expected"), [
    ('["a"]', ["a"]), (' [ ] ', []), ("[", None), ("a", None), ('{"a": 1}', None),
])
def test_parse_json_array(text: str, expected: list[str] | None) -> None:
    assert parse_json_array(text) == expected


@pytest.mark.parametrize(("text", "rest", "flags"), [
    ("--a=1 --b x y", "x y", ["--a=1", "--b"]),
    ("x --a=1", "x --a=1", []),
    ('--a="1 2" y', "y", ["--a=1 2"]),
    ("--a=x\\ y z", "z", ["--a=x y"]),
    ("--a=1 -- --b=2", "--b=2", ["--a=1"]),
    ("--a=1 --", "", ["--a=1"]),
    ("-a x", "-a x", []),
    ("--a=''", "", ["--a="]),
])
def test_split_flags(text: str, rest: str, flags: list[str]) -> None:
    assert split_flags(text) == (rest, flags)


def test_directives() -> None:
    doc = parse("# syntax = docker/dockerfile:1\n#Escape=`\nFROM a\n")
    assert [(d.name, d.value, d.line) for d in doc.directives] == [
        ("syntax", "docker/dockerfile:1", 1), ("escape", "`", 2)]
    assert doc.escape == "`"


@pytest.mark.parametrize("text", [
    "\n# escape=`\nFROM a\n",            # a blank line ends the directives
    "# hello\n# escape=`\nFROM a\n",     # so does any other comment
    "# foo=bar\n# escape=`\nFROM a\n",   # and an unknown directive
    "FROM a\n# escape=`\n",              # and an instruction
])
def test_late_directives_are_comments(text: str) -> None:
    doc = parse(text)
    assert doc.escape == "\\"
    assert all(d.name != "escape" for d in doc.directives)


def test_backtick_escape_changes_continuations() -> None:
    doc = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  /s\nRUN x \\\n")
    assert [n.rest for n in doc.nodes[1:]] == ["dir c:\\   /s", "x \\"]


def test_continuation_details() -> None:
    doc = parse("FROM a\nRUN a \\\n\n  # c\n\\\n  b \\\\\nRUN \\\\\\\nRUN z\n")
    assert [(n.rest, n.start_line, n.end_line) for n in doc.nodes[1:]] == [
        ("a   b \\\\", 2, 6), ("\\\\\\", 7, 7), ("z", 8, 8)]


def test_dangling_continuation_at_end_of_file() -> None:
    node = parse("FROM a\nRUN x \\").nodes[1]
    assert (node.rest, node.start_line, node.end_line) == ("x", 2, 2)


def test_crlf_and_bom() -> None:
    doc = parse("\ufeffFROM a\r\nRUN x \\\r\n  y\r\nRUN <<EOF\r\nl1\r\nEOF\r\n")
    assert [n.instruction for n in doc.nodes] == ["FROM", "RUN", "RUN"]
    assert doc.nodes[1].rest == "x   y"
    assert doc.nodes[2].heredocs[0].content == "l1\n"


def test_heredoc_basics() -> None:
    node = only("RUN <<EOF\n# not a comment\n\n  indented\nEOF\n")
    (doc,) = node.heredocs
    assert (doc.name, doc.content, doc.expand, doc.chomp) == (
        "EOF", "# not a comment\n\n  indented\n", True, False)
    assert (node.start_line, node.end_line) == (1, 5)


def test_heredoc_chomp_strips_only_tabs() -> None:
    node = only("RUN <<-EOF\n\t\ta\n  b\n\t\tEOF\n")
    assert node.heredocs[0].content == "a\n  b\n"


def test_heredoc_terminator_must_match_exactly() -> None:
    node = only("RUN <<EOF\nEOF \n EOF\nEOF\n")
    assert node.heredocs[0].content == "EOF \n EOF\n"


def test_heredoc_at_end_of_file_without_newline() -> None:
    assert only("RUN <<EOF\nx\nEOF").heredocs[0].content == "x\n"


@pytest.mark.parametrize(("word", "expected"), [
    ("<<EOF", ("EOF", True, False)),
    ("<<-EOF", ("EOF", True, True)),
    ("<<'EOF'", ("EOF", False, False)),
    ('<<-"EOF"', ("EOF", False, True)),
    ('<<E"O"F', ("EOF", False, False)),
    ("3<<EOF", ("EOF", True, False)),
    ("<<", None),
    ("<<<EOF", None),
    ("<<EOF<", None),
    # Blanks after << (BuildKit since 2025): skipped, so a dash after them is the name's.
    ("<<  EOF", ("EOF", True, False)),
    ("<<\t'EOF'", ("EOF", False, False)),
    ("<< -EOF", ("-EOF", True, False)),
    ("<<   ", None),
])
def test_heredoc_markers(word: str, expected: tuple[str, bool, bool] | None) -> None:
    assert parse_heredoc_marker(word) == expected


@pytest.mark.parametrize("line", [
    'RUN echo "<<EOF"', "RUN echo '<<EOF'", 'RUN ["cat", "<<EOF"]', "RUN cat <<- EOF",
    "ENV A=<<EOF", "CMD cat <<EOF", 'RUN echo "unbalanced <<EOF', "RUN cat <<\vEOF",
])
def test_not_heredocs(line: str) -> None:
    doc = parse(f"{line}\nEOF\n")
    assert doc.nodes[0].heredocs == ()
    assert len(doc.nodes) == 2  # the would-be terminator stays an instruction line


@pytest.mark.parametrize(("line", "name", "command"), [
    ("RUN <<  EOF", "EOF", "<<  EOF"),
    ("RUN <<  EOF  > foo", "EOF", "<<  EOF  > foo"),
    ("RUN cat << EOF", "EOF", "cat << EOF"),
    ("RUN python3 <<\t 'EOF'", "EOF", "python3 <<\t 'EOF'"),
])
def test_blanks_after_the_heredoc_operator(line: str, name: str, command: str) -> None:
    # BuildKit's lexer keeps the blanks after << in the word (since 2025), so these are
    # heredocs: their bodies are not read as instructions.
    doc = parse(f"FROM a\n{line}\nbody line\n{name}\nRUN next\n")
    assert [n.instruction for n in doc.nodes] == ["FROM", "RUN", "RUN"]
    node = doc.nodes[1]
    assert node.rest == command
    assert [(h.name, h.content) for h in node.heredocs] == [(name, "body line\n")]
    assert (node.start_line, node.end_line) == (2, 4)


def test_a_dash_after_the_blanks_belongs_to_the_name() -> None:
    doc = parse("FROM a\nRUN << -EOF\n\tkept\nEOF\n-EOF\n")
    (heredoc,) = doc.nodes[1].heredocs
    assert (heredoc.name, heredoc.content, heredoc.chomp) == ("-EOF", "\tkept\nEOF\n", False)


@pytest.mark.parametrize("text", [
    "COPY /foo <<EOF\nEOF\n", "COPY /foo <<EOF", "ADD a <<-'EOF'\nEOF\n",
    'COPY ["/foo", "<<EOF"]', "ONBUILD COPY /foo <<EOF\nEOF\n",
])
def test_a_heredoc_cannot_be_a_destination(text: str) -> None:
    with pytest.raises(BuildfileError) as caught:
        parse("FROM a\n" + text, path="dir/Buildfile")
    error = caught.value
    instruction = text.removeprefix("ONBUILD ").split()[0]
    assert error.reason == f"{instruction} cannot accept a heredoc as a destination"
    assert str(error).startswith(f"dir/Buildfile:2: {instruction}:")


def test_a_heredoc_source_with_a_plain_destination_is_fine() -> None:
    node = only("COPY <<EOF /foo\nx\nEOF\n")
    assert node.heredocs[0].content == "x\n"


def test_several_heredocs_in_order() -> None:
    node = only("COPY <<a <<b /d/\n1\na\n2\nb\n")
    assert [(h.name, h.content) for h in node.heredocs] == [("a", "1\n"), ("b", "2\n")]
    assert node.end_line == 5


def test_onbuild_heredoc_goes_to_the_trigger() -> None:
    node = only("ONBUILD RUN <<EOF\nx\nEOF\n")
    assert node.inner is not None
    assert node.inner.heredocs[0].content == "x\n"
    assert (node.end_line, node.inner.end_line) == (3, 3)


def test_unterminated_heredoc() -> None:
    with pytest.raises(BuildfileError, match="unterminated heredoc <<END") as caught:
        parse("FROM a\nRUN cat <<END\nline\n", path="x/Buildfile")
    assert (caught.value.path, caught.value.line, caught.value.instruction) == (
        "x/Buildfile", 2, "RUN")


def test_lines_after_heredocs_keep_counting() -> None:
    doc = parse("FROM a\nRUN <<A\n1\nA\n\nRUN b\n")
    assert [(n.start_line, n.end_line) for n in doc.nodes] == [(1, 1), (2, 4), (6, 6)]


def test_empty_text_has_no_nodes() -> None:
    assert parse("").nodes == ()
    assert parse("\n\n# c\n").line_count == 3
