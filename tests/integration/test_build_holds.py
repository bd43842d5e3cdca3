"""A build holds every layer it stands on: removing its base, or an image it copies from or
mounts, while a step runs removes the name and leaves the layers to a later prune."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Run
from treeutil import make_tar

# The RUN says it runs, then waits (at most 30 s) for the test to let it go; the cache mount
# is the one place both can see.
BUILDFILE = """\
FROM base
COPY --from=extra /extra.txt /copied.txt
RUN --mount=type=bind,from=extra,target=/x --mount=type=cache,target=/sync,id=sync \
touch /sync/started && echo running && i=0; while [ ! -e /sync/go ]; do i=$((i+1)); \
[ $i -gt 300 ] && exit 9; sleep 0.1; done; ls /bin; cat /x/extra.txt /copied.txt
"""


def _layers(store_root: Path) -> set[str]:
    return {p.name for p in (store_root / "image/overlay2/layerdb/sha256").iterdir()}


def test_removing_the_images_a_build_stands_on_leaves_its_layers(
        lb: Run, base: str, store_root: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    (small / "extra.txt").write_text("from the extra image\n")
    lb("import", str(make_tar(small, tmp_path / "small.tar")), "extra")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text(BUILDFILE)
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root", str(store_root),
                             "build", "--progress", "plain", "-t", "held:1", str(ctx)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.strip() == "| running":
            break
    else:
        raise AssertionError("the RUN did not start:\n" + "".join(seen))
    try:
        stored = _layers(store_root)
        removed = lb("rmi", "base", "extra").stdout
        assert removed.count("Deleted: sha256:") == 2
        assert "Deleted layer" not in lb("prune").stdout
        assert _layers(store_root) == stored  # the names are gone, the layers are not
        assert "base" not in lb("images").stdout
    finally:  # let the RUN go on, and wait for the build, whatever happened meanwhile
        go = next(store_root.glob("cachemounts/*/started")).parent / "go"
        go.touch()
        out, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(seen) + rest
    shown = [line.strip().removeprefix("| ") for line in rest.splitlines()]
    # The RUN's files were all there after the rmi: busybox's applets, the mount, the copy.
    assert {"busybox", "sh", "ls", "cat"} <= set(shown)
    assert shown.count("from the extra image") == 2
    assert "Successfully tagged held:1" in out
    # Once the build is over, nothing holds extra's layer: the next prune frees it.
    extra_layer = stored - {p.name for p in (store_root / "image/overlay2/layerdb/sha256")
                            .iterdir() if _stacked_under(store_root, "held:1", p.name)}
    freed = lb("prune").stdout
    assert [f"Deleted layer: sha256:{c}" for c in sorted(extra_layer)] == sorted(
        line for line in freed.splitlines() if line.startswith("Deleted layer"))
    assert extra_layer and not extra_layer & _layers(store_root)
    lb("rmi", "held:1")
    lb("prune", "--all")
    assert _layers(store_root) == set()


def _stacked_under(store_root: Path, ref: str, chain: str) -> bool:
    """Whether layer `chain` is in the stack of the image `ref` names."""
    from layerbuild.store import Store

    store = Store(store_root)
    return any(layer.chain_id.hex == chain for layer in store.image_layers(store.get_image(ref)))
