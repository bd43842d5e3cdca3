"""The build cache: step keys, the index of cached step results, build records.

A step's key covers its parent's key (for the first step of a stage: the base image's ID),
the instruction as written minus its line numbers, the variables it can see, and for COPY/ADD
a checksum of every selected source (paths, types, modes, link targets, xattrs, content;
never owners or mtimes). A hit gives back the step's history entry and layer exactly.

- :mod:`.keys` (pure): what a step's key covers and its canonical encoding, why a step missed.
- :mod:`.stat`: digests of context entries, re-read only when their stat changes.
- :mod:`.index`: the entries under the store's ``buildcache/``, and what they hold on to.
- :mod:`.records`: build records, which answer an unchanged rebuild without keying anything.

- :mod:`.exchange` (pure): the shared cache's format (records of steps, the layers they name).
- :mod:`.options` (pure): `--cache-to` / `--cache-from` values.
- :mod:`.layout`: a shared cache in a folder (an OCI layout).

Nothing is imported here, so that a fully cached build loads only what `records` needs.
"""
