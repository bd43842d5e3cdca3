"""Directory <-> layer tar: overlay and OCI whiteouts, normalised headers, compression."""

from layerbuild.layer.compression import Compression, compress_writer, open_decompressed, sniff
from layerbuild.layer.export import LayerInfo, write_layer
from layerbuild.layer.extract import ExtractInfo, extract_layer
from layerbuild.layer.probe import is_tar_archive

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
