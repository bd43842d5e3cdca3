""".dockerignore rules, table-driven: (patterns, path, excluded?)."""

from __future__ import annotations

import pytest

from layerbuild.buildfile import IgnoreRules
from layerbuild.buildfile.ignore import clean_path
from layerbuild.errors import BuildfileError

CASES = [
    # ** spans directories
    (["**"], "file", True),
    (["**"], "dir/file", True),
    (["**/"], "dir/file", True),
    (["dir/**"], "dir/file", True),
    (["dir/**"], "dir/dir2/file", True),
    (["dir/**"], "other/file", False),
    (["**/dir2/*"], "dir/dir2/file", True),
    (["**/dir2/*"], "dir/dir3/file", False),
    (["**/file"], "file", True),
    (["**/file"], "dir/dir/file", True),
    (["**/file*.txt"], "dir/dir/file.txt", True),
    (["**/**/*.txt"], "dir/dir/file.txt", True),
    (["**/*.txt"], "file.txt", True),
    (["**/*.txt2"], "dir/file.txt", False),
    (["**/node_modules"], "a/b/node_modules/x/y", True),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    # * and ? stay inside one path segment; patterns are anchored at the context root
    (["*.go"], "main.go", True),
    (["*.go"], "cmd/main.go", False),
    (["*/*.go"], "cmd/main.go", True),
    (["*"], "a/b", True),
    (["*/temp*"], "somedir/temporary.txt", True),
    (["*/temp*"], "somedir/sub/temp", False),
    (["temp?"], "temp1", True),
    (["temp?"], "temp1/x", True),
    (["temp?"], "temp/x", False),
    (["temp?"], "temp12", False),
    (["a?c"], "a/c", False),
    # character classes and escapes
    (["[a-c]x"], "bx", True),
    (["[a-c]x"], "dx", False),
    (["[^a]x"], "bx", True),
    (["[^a]x"], "ax", False),
    (["\\*"], "*", True),
    (["\\*"], "x", False),
    (["a.b"], "axb", False),
    (["a+(b)"], "a+(b)", True),
    # a matching directory excludes what is under it; names are not prefixes
    (["foo/bar"], "foo/bar/baz", True),
    (["foo"], "foobar", False),
    ([".git"], ".git/objects/ab/cd", True),
    # cleaning: leading / and ./, trailing /, .., doubled slashes
    (["/abs"], "abs", True),
    (["./rel/"], "rel/x", True),
    (["a/../b"], "b", True),
    (["a//b/"], "a/b/c", True),
    (["  spaced  "], "spaced", True),
    # exceptions: the last matching pattern wins
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md"], "CHANGES.md", True),
    (["!README.md", "*.md"], "README.md", True),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/other.md", True),
    (["a", "!a/b", "a/b/c"], "a/b/c/d", True),
    (["a", "!a/b", "a/b/c"], "a/b/x", False),
    (["a", "!a/b", "a/b/c"], "a/x", True),
    (["a/b", "!a"], "a/b/c", False),
    # paths given in other spellings
    (["dir"], "./dir/file", True),
    (["dir"], "/dir/file", True),
    (["dir"], ".", False),
    ([], "anything", False),
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), CASES)
def test_excluded(patterns: list[str], path: str, excluded: bool) -> None:
    rules = IgnoreRules.from_patterns(patterns)
    assert rules.excluded(path) is excluded
    assert rules.excluded(path, is_dir=True) is excluded


def test_enough_cases() -> None:
    assert len(CASES) >= 25


SKIP_CASES = [
    (["dir"], "dir", True),
    (["dir"], "other", False),
    (["dir", "!other"], "dir", True),
    (["dir", "!dir/keep"], "dir", False),
    (["dir", "!*/keep"], "dir", False),
    (["dir", "!**/keep"], "dir", False),
    (["dir", "!x/*/keep"], "dir", True),
    (["dir/sub", "!dir"], "dir/sub", False),
    (["dir", "!di?/deep/keep"], "dir", False),
    (["dir", "![e-z]ir/keep"], "dir", True),
    (["a/b", "!a/c/keep"], "a/b", True),
]


@pytest.mark.parametrize(("patterns", "path", "skip"), SKIP_CASES)
def test_can_skip_dir(patterns: list[str], path: str, skip: bool) -> None:
    assert IgnoreRules.from_patterns(patterns).can_skip_dir(path) is skip


def test_skipping_never_hides_an_included_file() -> None:
    # Whenever a walk may skip a directory, every path under it must be excluded.
    patterns = ["build", "!build/keep", "*.log", "!important.log", "cache/**", "!x/*/y"]
    rules = IgnoreRules.from_patterns(patterns)
    below = ["a", "keep", "keep/x", "important.log", "x/y", "deep/er/file.log"]
    for directory in ["build", "cache", "cache/sub", "x", "x/z", "other"]:
        if rules.can_skip_dir(directory):
            assert all(rules.excluded(f"{directory}/{rest}") for rest in below), directory


def test_parse_comments_blank_lines_and_bom() -> None:
    rules = IgnoreRules.parse("\ufeff# comment\n\n*.tmp\n #not-a-comment\n!keep.tmp\r\n")
    assert [p.text for p in rules.patterns] == ["*.tmp", "#not-a-comment", "keep.tmp"]
    assert rules.excluded("a.tmp")
    assert not rules.excluded("keep.tmp")
    assert rules.excluded("#not-a-comment")
    assert rules.has_exclusions


@pytest.mark.parametrize(("text", "line"), [("ok\n!\n", 2), ("[\n", 1), ("a\\\n", 1),
                                             ("x\n[]a\n", 2), ("! \n", 1)])
def test_bad_patterns(text: str, line: int) -> None:
    with pytest.raises(BuildfileError) as caught:
        IgnoreRules.parse(text)
    assert caught.value.line == line
    assert caught.value.path == ".dockerignore"


@pytest.mark.parametrize(("path", "cleaned"), [
    ("", "."), ("a/./b/", "a/b"), ("/../a", "/a"), ("../a", "../a"), ("a/b/../../..", ".."),
    ("//a//b", "/a/b"),
])
def test_clean_path(path: str, cleaned: str) -> None:
    assert clean_path(path) == cleaned
