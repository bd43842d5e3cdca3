"""The copy's view of the step's previous layer: real directories only, never a symlink."""

from __future__ import annotations

import os
from pathlib import Path

from layerbuild.sandbox.copy import Reuse


def test_a_layer_dir_is_reached_through_real_directories_only(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "app/sub").mkdir(parents=True)
    (layer / "app/sub/f").write_text("f")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("secret")
    os.symlink(outside, layer / "app/abs")
    os.symlink("sub", layer / "app/rel")
    fd = os.open(layer, os.O_PATH | os.O_DIRECTORY)
    reuse = Reuse(fd, set())
    try:
        found = reuse.dir_fd("app/sub")
        assert found != -1 and os.stat("f", dir_fd=found).st_size == 1
        assert reuse.dir_fd("app/sub") == found  # kept open for the next file there
        for path in ("app/abs", "app/rel", "app/sub/../../..", "app/missing", "app/sub/f"):
            assert reuse.dir_fd(path) == -1, path
    finally:
        reuse.close()
        os.close(fd)
