"""Comparing two images: config fields, history entries and layer contents, path by path.

Every difference reads "IMAGE1's value != IMAGE2's value". Comparing configs and history is
pure; only `diff_images` reads the store, and layers only where their diff_ids differ (through
`layer.contents`, which reads each diff dir in place, extracting nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from layerbuild.digest import Digest
from layerbuild.image import Image, parse_json_object
from layerbuild.layer.contents import compare_listings, scan_layer, with_contents
from layerbuild.store import Store


class _Absent:
    """Stands for a field or entry one image lacks (unlike JSON null, which it may hold)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()

_TOP_ORDER = ("architecture", "os", "variant", "os.version", "created", "author", "rootfs",
              "config")
_HISTORY_ORDER = ("created", "created_by", "author", "comment", "empty_layer")


@dataclass(frozen=True)
class Difference:
    """One way two images differ: where (config, history[3], layer 2), what (field or path), how."""

    where: str
    what: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}: {self.text}"


@dataclass(frozen=True)
class ImageDiff:
    """Every difference between two images in a stable order; none when they are identical."""

    left: Digest
    right: Digest
    differences: tuple[Difference, ...] = ()

    @property
    def identical(self) -> bool:
        """Whether the two images are the same (same ID)."""
        return not self.differences


# --- config and history (pure) -------------------------------------------------------------


def compare_configs(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[Difference]:
    """Field-by-field differences of two config JSON objects, leaving out their history."""
    out: list[Difference] = []
    for key in _ordered((left.keys() | right.keys()) - {"history"}, _TOP_ORDER):
        a, b = left.get(key, ABSENT), right.get(key, ABSENT)
        pairs = _rootfs(a, b) if key == "rootfs" else _values(key, a, b)
        out.extend(Difference("config", what, text) for what, text in pairs)
    return out


def compare_history(left: Sequence[Any], right: Sequence[Any]) -> list[Difference]:
    """Entry-by-entry differences of two config `history` lists."""
    out = []
    if len(left) != len(right):
        out.append(Difference("history", "entries", f"{len(left)} != {len(right)}"))
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ABSENT
        b = right[i] if i < len(right) else ABSENT
        if isinstance(a, dict) and isinstance(b, dict):
            pairs: Iterator[tuple[str, str]] = (
                pair for key in _ordered(a.keys() | b.keys(), _HISTORY_ORDER)
                for pair in _values(key, a.get(key, ABSENT), b.get(key, ABSENT)))
        else:  # an entry only one image has is one line, not one per field
            pairs = _values("entry", a, b)
        out.extend(Difference(f"history[{i}]", what, text) for what, text in pairs)
    return out


def _ordered(keys: set[str], first: Sequence[str]) -> list[str]:
    """The well-known keys in their usual order, then the others sorted."""
    return [k for k in first if k in keys] + sorted(keys - set(first))


def _values(path: str, a: Any, b: Any) -> Iterator[tuple[str, str]]:
    """(field, "a != b") for each leaf that differs; objects are compared key by key."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            yield from _values(_member(path, key), a.get(key, ABSENT), b.get(key, ABSENT))
    elif _json(a) != _json(b):  # through JSON, since True == 1 in Python but not in a config
        yield path, f"{_json(a)} != {_json(b)}"


def _rootfs(a: Any, b: Any) -> Iterator[tuple[str, str]]:
    """rootfs with its diff_ids compared index by index, to name the layers that differ."""
    if not (isinstance(a, dict) and isinstance(b, dict)
            and isinstance(a.get("diff_ids"), list) and isinstance(b.get("diff_ids"), list)):
        yield from _values("rootfs", a, b)
        return
    left, right = a["diff_ids"], b["diff_ids"]
    yield from _values("rootfs", {**a, "diff_ids": None}, {**b, "diff_ids": None})
    for i in range(max(len(left), len(right))):
        yield from _values(f"rootfs.diff_ids[{i}]", left[i] if i < len(left) else ABSENT,
                           right[i] if i < len(right) else ABSENT)


def _member(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"


def _json(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").decode()  # lone surrogates must print too


# --- reading the store ---------------------------------------------------------------------


def diff_images(store: Store, left: Image, right: Image) -> ImageDiff:
    """Every difference between two stored images; images with one ID are identical at once."""
    if left.id == right.id:
        return ImageDiff(left.id, right.id)
    a = parse_json_object(left.config_bytes, f"image config {left.id}")
    b = parse_json_object(right.config_bytes, f"image config {right.id}")
    found = [*compare_configs(a, b), *compare_history(a.get("history") or [],
                                                      b.get("history") or []),
             *_layer_differences(store, left, right)]
    if not found:  # other bytes for the same JSON, e.g. a config written by another tool
        found.append(Difference("config", "encoding",
                                "same fields, different bytes (key order, spacing or escapes)"))
    return ImageDiff(left.id, right.id, tuple(found))


def _layer_differences(store: Store, left: Image, right: Image) -> Iterator[Difference]:
    layers_a, layers_b = store.image_layers(left), store.image_layers(right)
    if len(layers_a) != len(layers_b):
        yield Difference("layers", "count", f"{len(layers_a)} != {len(layers_b)}")
    for i, (a, b) in enumerate(zip(layers_a, layers_b, strict=False)):
        diff_a, diff_b = a.diff_id, b.diff_id
        if diff_a == diff_b:
            continue  # same tar, same files: nothing to walk
        listings = with_contents(scan_layer(a.diff_dir), scan_layer(b.diff_dir))
        found = compare_listings(*listings)
        for path, text in found:
            yield Difference(f"layer {i}", path, text)
        if not found:  # e.g. another tool's tar of the same files
            yield Difference(f"layer {i}", "tar", "same files, different tar bytes "
                             f"(diff_id {diff_a} != {diff_b})")


def render(diff: ImageDiff, left_name: str, right_name: str) -> list[str]:
    """The lines `layerbuild diff` prints: which images, then one line per difference."""
    if diff.identical:
        return []
    return [f"{left_name} ({diff.left.short}) != {right_name} ({diff.right.short})",
            *(str(d) for d in diff.differences)]
