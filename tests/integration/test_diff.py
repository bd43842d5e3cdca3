"""`layerbuild diff`: two images from the store, compared field by field and path by path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

T0 = 1_600_000_000
EPOCH = "1700000000"
REFERENCE = "echo a > /out/a && ln -s a /out/link"


def _build(lb, tmp_path: Path, tag: str, run: str, *extra: str, no_cache: bool = False,
           stamp: int = T0) -> None:
    """Build `FROM base`, one RUN and `extra` lines, with every time fixed.

    The RUN ends by setting the mtimes of what it made, and --source-date-epoch fixes the
    created times, so two builds differ only where a test makes them differ.
    """
    ctx = tmp_path / tag.replace(":", "-")
    ctx.mkdir()
    lines = ["FROM base", f"RUN mkdir /out && {run} && touch -h -d @{stamp} /out /out/*",
             *extra]
    (ctx / "Buildfile").write_text("\n".join(lines) + "\n")
    lb("build", "--source-date-epoch", EPOCH, *(["--no-cache"] if no_cache else []),
       "-t", tag, str(ctx))


def _diff(lb, left: str, right: str) -> tuple[int, list[tuple[str, ...]]]:
    """The exit code and the (where, what, how) of each line after the header."""
    proc = lb("diff", left, right, check=False)
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    if proc.returncode == 0:
        assert lines == []
        return 0, []
    assert lines[0].startswith(f"{left} (") and f" != {right} (" in lines[0]
    return proc.returncode, [tuple(line.split(": ", 2)) for line in lines[1:]]


RUN_CHANGED = [("config", "rootfs.diff_ids[1]"), ("history[1]", "created_by")]


@pytest.mark.parametrize(("run", "paths", "how"), [
    pytest.param("echo b > /out/a && ln -s a /out/link", ["/out/a"], "content sha256:",
                 id="content"),
    pytest.param(REFERENCE + " && chmod 600 /out/a", ["/out/a"], "mode 0644 != 0600",
                 id="mode"),
    pytest.param(REFERENCE + " && chown 1000:1000 /out/a", ["/out/a"],
                 "uid 0 != 1000, gid 0 != 1000", id="owner"),
    pytest.param("echo a > /out/a && ln -s b /out/link", ["/out/link"],
                 'link target "a" != "b"', id="symlink"),
    # Removing a file copies its dir up too: the layer tar holds both.
    pytest.param(REFERENCE + " && rm /data/b", ["/data", "/data/b"], "(absent) != deletion",
                 id="whiteout"),
    pytest.param(REFERENCE + " && rm -rf /data && mkdir /data", ["/data"],
                 "(absent) != opaque directory", id="opaque"),
])
def test_a_differing_run_names_exactly_the_paths_it_changed(
        lb, base: str, tmp_path: Path, run: str, paths: list[str], how: str) -> None:
    _build(lb, tmp_path, "ref:1", REFERENCE)
    _build(lb, tmp_path, "other:1", run)
    code, found = _diff(lb, "ref:1", "other:1")
    assert code == 1
    assert [(where, what) for where, what, _ in found] == [
        *RUN_CHANGED, *(("layer 1", path) for path in paths)]
    assert how in found[-1][2]
    assert "mtime" not in found[-1][2]


def test_differing_content_shows_both_digests(lb, base: str, tmp_path: Path,
                                              ) -> None:
    _build(lb, tmp_path, "ref:1", REFERENCE)
    _build(lb, tmp_path, "other:1", "echo bb > /out/a && ln -s a /out/link")
    _, found = _diff(lb, "ref:1", "other:1")
    old, new = (hashlib.sha256(text).hexdigest() for text in (b"a\n", b"bb\n"))
    assert found[-1] == ("layer 1", "/out/a", f"content sha256:{old} != sha256:{new}, "
                         "size 2 != 3")


def test_an_extra_layer_is_counted_not_walked(lb, base: str, tmp_path: Path) -> None:
    _build(lb, tmp_path, "ref:1", REFERENCE)
    _build(lb, tmp_path, "more:1", REFERENCE, "RUN echo more > /more")
    code, found = _diff(lb, "ref:1", "more:1")
    assert code == 1
    assert [(where, what) for where, what, _ in found] == [
        ("config", "rootfs.diff_ids[2]"), ("history", "entries"), ("history[2]", "entry"),
        ("layers", "count")]
    assert found[-1][2] == "2 != 3"
    assert '"created_by": "RUN /bin/sh -c echo more > /more' in found[2][2]


def test_labels_and_env_differ_in_the_config_alone(lb, base: str, tmp_path: Path) -> None:
    _build(lb, tmp_path, "one:1", REFERENCE, "LABEL version=1", "ENV MODE=a")
    _build(lb, tmp_path, "two:1", REFERENCE, "LABEL version=2", "ENV MODE=b")
    code, found = _diff(lb, "one:1", "two:1")
    assert code == 1
    assert [(where, what) for where, what, _ in found] == [
        ("config", "config.Env"), ("config", "config.Labels.version"),
        ("history[2]", "created_by"), ("history[3]", "created_by")]
    assert found[1][2] == '"1" != "2"'
    assert '"MODE=a"]' in found[0][2] and '"MODE=b"]' in found[0][2]


def test_mtimes_are_clamped_to_the_epoch_as_the_build_clamped_them(lb, base: str,
                                                                  tmp_path: Path) -> None:
    # Both stamps are after EPOCH: the store keeps the files as their tars hold them.
    _build(lb, tmp_path, "one:1", "echo a > /out/a", stamp=int(EPOCH) + 100)
    _build(lb, tmp_path, "two:1", "echo b > /out/a", stamp=int(EPOCH) + 200)
    _, found = _diff(lb, "one:1", "two:1")
    layer = [(where, what, how) for where, what, how in found if where.startswith("layer ")]
    assert len(layer) == 1 and layer[0][:2] == ("layer 1", "/out/a")
    assert layer[0][2].startswith("content ") and "mtime" not in layer[0][2]


def test_identical_images_print_nothing(lb, base: str, tmp_path: Path) -> None:
    _build(lb, tmp_path, "ref:1", REFERENCE)
    lb("tag", "ref:1", "same:1")
    assert _diff(lb, "ref:1", "same:1") == (0, [])
    # Times fixed, a rebuild from scratch is the same image again.
    _build(lb, tmp_path, "rebuilt:1", REFERENCE, no_cache=True)
    assert _diff(lb, "ref:1", "rebuilt:1") == (0, [])


def test_an_unknown_image_is_an_error(lb, base: str) -> None:
    proc = lb("diff", "base", "nope:1", check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip() == "layerbuild: error: no such image: nope:1"
