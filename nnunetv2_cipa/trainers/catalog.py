"""Every trainer class of the plugin, in one module: what nnU-Net's trainer search and the shim import.

2D trainers live in :mod:`.variants`, the 2.5D ones in :mod:`.slice_trainers`, fine-tuning in
:mod:`.finetune`; this module only gathers them (so that nnU-Net finds a class by name whichever
module defines it).
"""

from __future__ import annotations

from . import finetune, slice_trainers, variants
from .finetune import *  # noqa: F401,F403
from .slice_trainers import *  # noqa: F401,F403
from .variants import *  # noqa: F401,F403

__all__ = [
    name
    for module in (variants, slice_trainers, finetune)
    for name in module.__all__
    if name.startswith("nnUNetTrainerCIPA")
]
