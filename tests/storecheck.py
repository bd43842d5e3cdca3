"""What a store holds, read straight from its files, and the checks that it is consistent: for
the tests that break commands on purpose (faults, kills) and then look at what is left."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.digest import Digest, chain_ids


@dataclass(frozen=True)
class Contents:
    """A store's images, tags, layers, blobs and layer dirs, as names."""

    images: frozenset[str]
    tags: dict[str, str]  # name:tag or name@digest -> image ID
    layers: frozenset[str]  # chain IDs
    blobs: frozenset[str]
    """Blob files, less the later forms below."""
    dirs: frozenset[str]  # overlay2/<cache-id>
    forms: frozenset[str] = field(default=frozenset(), compare=False)
    """Blobs a layer keeps beside its original one (a gzip or zstd form made when it first
    left compressed, by a push, even one that failed after): a cache, not part of what a
    store is said to hold."""

    def without_pins(self) -> Contents:
        """The same, less the `name@sha256:…` names (a push adds one)."""
        tags = {t: i for t, i in self.tags.items() if "@" not in t}
        return Contents(self.images, tags, self.layers, self.blobs, self.dirs, self.forms)


def contents(root: Path) -> Contents:
    """What the store at `root` holds (after the next command cleaned its debris)."""
    imagedb = root / "image/overlay2/imagedb/content/sha256"
    layerdb = root / "image/overlay2/layerdb/sha256"
    repos = root / "image/overlay2/repositories.json"
    tags = {}
    if repos.exists():
        tags = {t: i for per in json.loads(repos.read_text())["Repositories"].values()
                for t, i in per.items()}
    originals, later = set(), set()
    for entry in _listed(layerdb):
        with open(entry / "blobs.json") as f:
            named = [b["digest"].removeprefix("sha256:") for b in json.load(f)["blobs"]]
        originals.update(named[:1])
        later.update(named[1:])
    files = {p.name for p in _listed(root / "blobs/sha256")}
    forms = files & later - originals
    return Contents(frozenset(f"sha256:{p.name}" for p in _listed(imagedb)), tags,
                    frozenset(f"sha256:{p.name}" for p in _listed(layerdb)),
                    frozenset(files - forms),
                    frozenset(p.name for p in _listed(root / "overlay2")), frozenset(forms))


def check_consistent(root: Path) -> Contents:
    """Every layerdb entry has its files, its diff dir and its blobs; every image's layers are
    stored; every tag names a stored config; nothing is left under tmp/ or unnamed. Returns
    what the store holds."""
    found = contents(root)
    layerdb = root / "image/overlay2/layerdb/sha256"
    cache_ids, named_blobs = set(), set()
    for chain in found.layers:
        entry = layerdb / chain[7:]
        for name in ("diff", "cache-id", "size", "blobs.json"):
            assert (entry / name).is_file(), f"layer {chain} lacks {name}"
        cache_id = (entry / "cache-id").read_text().strip()
        cache_ids.add(cache_id)
        assert (root / "overlay2" / cache_id / "diff").is_dir(), f"layer {chain}: no diff dir"
        blobs = json.loads((entry / "blobs.json").read_text())["blobs"]
        assert blobs, f"layer {chain} names no blob"
        for blob in blobs:
            hex_ = blob["digest"].removeprefix("sha256:")
            assert (root / "blobs/sha256" / hex_).is_file(), f"layer {chain}: blob {hex_} missing"
            named_blobs.add(hex_)
        parent = entry / "parent"
        if parent.exists():
            assert parent.read_text().strip() in found.layers, f"layer {chain}: no parent"
    assert found.dirs == cache_ids, "overlay2 holds dirs no layer names (or lacks some)"
    assert found.blobs | found.forms <= named_blobs, "blobs no layer names are left"
    for image_id in found.images:
        config = json.loads((root / "image/overlay2/imagedb/content/sha256" / image_id[7:])
                            .read_bytes())
        diff_ids = [Digest.parse(d) for d in config["rootfs"]["diff_ids"]]
        missing = {str(c) for c in chain_ids(diff_ids)} - found.layers
        assert not missing, f"image {image_id} lacks layers {sorted(missing)}"
    for tag, image_id in found.tags.items():
        assert image_id in found.images, f"tag {tag} names {image_id}, which is not stored"
    assert _listed(root / "tmp") == [], f"left under tmp/: {_listed(root / 'tmp')}"
    return found


def _listed(path: Path) -> list[Path]:
    return sorted(path.iterdir()) if path.is_dir() else []
