"""Directory <-> layer tar: overlay and OCI whiteouts, normalised headers, compression.

The names below come from their modules on first use, so that what needs one part (say,
`.compression` to read a stored tar) loads only that part.
"""

from __future__ import annotations

from layerbuild.lazy import lazy_names

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from layerbuild.layer.compression import (
        Compression,
        compress_writer,
        open_decompressed,
        sniff,
    )
    from layerbuild.layer.export import LayerInfo, write_layer
    from layerbuild.layer.extract import ExtractInfo, extract_layer
    from layerbuild.layer.probe import is_tar_archive

_HOMES = {
    "Compression": "compression",
    "compress_writer": "compression",
    "open_decompressed": "compression",
    "sniff": "compression",
    "LayerInfo": "export",
    "write_layer": "export",
    "ExtractInfo": "extract",
    "extract_layer": "extract",
    "is_tar_archive": "probe",
}

__all__ = [
    "Compression",
    "ExtractInfo",
    "LayerInfo",
    "compress_writer",
    "extract_layer",
    "is_tar_archive",
    "open_decompressed",
    "sniff",
    "write_layer",
]


__getattr__ = lazy_names(__name__, _HOMES, globals())
