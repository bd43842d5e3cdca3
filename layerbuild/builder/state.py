"""A stage as the engine has built it so far (shared by the engine and its steps)."""

from __future__ import annotations

from dataclasses import dataclass

from layerbuild.buildfile import Scope
from layerbuild.digest import Digest
from layerbuild.image import ImageConfig


@dataclass
class StageState:
    """A stage as built so far: its config, its top layer and the variables in force."""

    config: ImageConfig
    top: Digest | None
    scope: Scope
    cmd_set: bool = False
    key: str = ""
    missed: bool = False
