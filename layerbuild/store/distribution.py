"""Where each layer's blobs are known to be in registries, as Docker keeps it:

    image/overlay2/distribution/v2metadata-by-diffid/sha256/<diff-id>
        [{"Digest": "sha256:…", "SourceRepository": "registry/path", "HMAC": ""}, …]

A pull or push adds what it saw; a push reads it to mount a blob from another repository of
the same registry instead of uploading it again. It is a hint: a stale entry costs one
refused mount. Written without the store lock (a lost update only loses a hint).
"""

from __future__ import annotations

import json
from pathlib import Path

from layerbuild.digest import Digest
from layerbuild.errors import FormatError
from layerbuild.fsutil import write_atomic
from layerbuild.store import private

KEEP = 16
"""Sources kept per layer (the newest)."""


class Distribution:
    """The blob-source hints of a store."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def sources(self, diff_id: Digest) -> list[tuple[Digest, str]]:
        """(blob digest, repository) pairs known for a layer, newest first."""
        try:
            data = json.loads((self.directory / diff_id.hex).read_bytes())
            return [(Digest.parse(str(e["Digest"])), str(e["SourceRepository"]))
                    for e in data if isinstance(e, dict)]
        except (OSError, ValueError, KeyError, TypeError, FormatError):
            return []

    def add(self, diff_id: Digest, digest: Digest, repository: str) -> None:
        """Remember that `repository` has the layer's blob `digest`."""
        known = [(d, r) for d, r in self.sources(diff_id) if (d, r) != (digest, repository)]
        known = [(digest, repository), *known][:KEEP]
        private.make_dirs(self.directory)
        entries = [{"Digest": str(d), "SourceRepository": r, "HMAC": ""} for d, r in known]
        write_atomic(self.directory / diff_id.hex, json.dumps(entries).encode(),
                     durable=False)
