"""Images that share a base layer keep it once; removing one leaves the other intact."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from treeutil import need_root

from layerbuild.archive.sources import TarSource
from layerbuild.validate import validate_archive

DOCKERFILE = "FROM {base}\nRUN echo {word} > /{word}\nCMD [\"cat\", \"/{word}\"]\n"


def test_shared_base_layer_is_stored_once(lb, docker, busybox_tar: Path, tmp_path: Path,
                                          store_root: Path) -> None:
    need_root()
    base = docker.name("base")
    docker("import", str(busybox_tar), base)
    names = {}
    for word in ("one", "two"):
        ctx = tmp_path / word
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base, word=word))
        names[word] = docker.name(word)
        docker("build", "--network", "host", "-t", names[word], str(ctx), timeout=600)
        docker("save", "-o", str(tmp_path / f"{word}.tar"), names[word])

    first = lb("load", "-i", str(tmp_path / "one.tar")).stdout
    assert "Already exists" not in first
    second = lb("load", "-i", str(tmp_path / "two.tar")).stdout
    base_diff = json.loads(lb("inspect", names["one"]).stdout)[0]["RootFS"]["Layers"][0]
    assert f"{base_diff[7:19]}: Already exists" in second

    layerdb = store_root / "image/overlay2/layerdb/sha256"
    assert len(list(layerdb.iterdir())) == 3
    assert len(list((store_root / "overlay2").iterdir())) == 3
    du = lb("du").stdout.splitlines()
    base_row = next(line for line in du if line.startswith(base_diff[7:19]))
    assert base_row.split()[-1] == "2"

    both = tmp_path / "both.tar"
    lb("save", names["one"], names["two"], "-o", str(both))
    images = validate_archive(TarSource(both))
    assert len(images) == 2
    with tarfile.open(both) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    layers = [path for entry in manifest for path in entry["Layers"]]
    assert len(layers) == 4 and len(set(layers)) == 3  # the base layer is in the archive once
    docker("rmi", names["one"], names["two"])
    loaded = docker("load", "-i", str(both)).stdout
    assert names["one"] in loaded and names["two"] in loaded
    assert docker("run", "--rm", "--network", "none", names["one"]).stdout == "one\n"

    lb("rmi", names["one"])
    assert len(list(layerdb.iterdir())) == 2
    out = tmp_path / "two-again.tar"
    lb("save", names["two"], "-o", str(out))
    docker("rmi", names["two"])
    docker("load", "-i", str(out))
    assert docker("run", "--rm", "--network", "none", names["two"]).stdout == "two\n"
