"""How a saved archive names its images: index.json annotated as Docker 25+'s `docker save`
writes it (moby's image/tarexport/save.go: `io.containerd.image.name` is the full reference,
`org.opencontainers.image.ref.name` the tag alone, one entry per tag), and a notice when
several images share a tag, which a reader going by `ref.name` alone cannot tell apart."""

from __future__ import annotations

import json
from pathlib import Path

from enginetools import new_bench

from layerbuild.archive.save import plan_archive, shared_ref_notes


def _entries(files: dict[str, bytes]) -> list[tuple[str, dict[str, str]]]:
    index = json.loads(files["index.json"])
    return [(m["digest"], m.get("annotations", {})) for m in index["manifests"]]


def test_each_tag_is_an_index_entry_annotated_as_docker_save_does(tmp_path: Path) -> None:
    bench = new_bench(tmp_path)
    bench.base({"etc/b": "b\n"}, tag="registry.example:5000/team/b:latest")
    bench.store.tag("base", "base:1")
    plan = plan_archive(bench.store, ["base:latest", "base:1",
                                      "registry.example:5000/team/b:latest"])
    entries = _entries(plan.files)
    assert [a for _, a in entries] == [
        {"io.containerd.image.name": "docker.io/library/base:latest",
         "org.opencontainers.image.ref.name": "latest"},
        {"io.containerd.image.name": "docker.io/library/base:1",
         "org.opencontainers.image.ref.name": "1"},
        {"io.containerd.image.name": "registry.example:5000/team/b:latest",
         "org.opencontainers.image.ref.name": "latest"}]
    assert entries[0][0] == entries[1][0] != entries[2][0]  # one manifest per image
    manifest = json.loads(plan.files["manifest.json"])
    assert [m["RepoTags"] for m in manifest] == [["base:latest", "base:1"],
                                                 ["registry.example:5000/team/b:latest"]]
    assert plan.shared == {"latest": ["docker.io/library/base:latest",
                                      "registry.example:5000/team/b:latest"]}
    assert shared_ref_notes(plan, "multi.tar") == [
        "base:latest, registry.example:5000/team/b:latest share the OCI ref.name 'latest' "
        "(the tag, as docker save writes it): oci-archive:multi.tar:latest takes the first; "
        "docker-archive:multi.tar:base:latest names each"]


def test_images_with_their_own_tags_need_no_notice(tmp_path: Path) -> None:
    bench = new_bench(tmp_path)
    bench.base({"etc/b": "b\n"}, tag="b:2")
    plan = plan_archive(bench.store, ["base", "b:2"])
    assert plan.shared == {} and shared_ref_notes(plan, "-") == []
