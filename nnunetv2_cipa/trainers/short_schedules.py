"""Short-schedule trainers named after their schedule: ``<trainer>_<E>epochs_<I>iters``.

Why: the demo and the learning benchmark train a few epochs of a few iterations, chosen on their
command line. What is trained must be part of the trainer, not of environment variables that a later
``--c``, ``--val`` or ``nnUNetv2_predict`` may not see: nnU-Net writes the trainer name into the results
folder name and the checkpoint, so ``nnUNetTrainerCIPA_small_12epochs_20iters`` (the small trainer, 12
epochs of 20 iterations) says what it trained wherever it appears. Short schedules validate
:data:`VALIDATION_ITERATIONS` batches per epoch instead of nnU-Net's 50: enough for a progress curve,
cheap next to a few dozen training iterations.

The classes are made on first request by name and cached: this module's ``__getattr__`` (PEP 562)
answers ``hasattr(module, name)``, which is how nnU-Net's trainer lookup
(``nnunetv2/utilities/find_class_by_name.py``) tests the modules it walks, and the classes'
``__module__`` is this module, so pickling and a plain import give the same class object. The base is
any trainer of :mod:`.catalog` (2D, 2.5D, fine-tuning) that is not already a short schedule.
"""

from __future__ import annotations

import re
from collections.abc import Callable

VALIDATION_ITERATIONS = 5
NAME_PATTERN = re.compile(
    r"^(?P<base>nnUNetTrainerCIPA\w*?)_(?P<epochs>[1-9]\d*)epochs_(?P<iterations>[1-9]\d*)iters$"
)
_FIXED_SCHEDULE = re.compile(r"_\d+epochs$")
_made: dict[str, type] = {}


def schedule_trainer_name(base: str, epochs: int, iterations: int) -> str:
    """``base`` trained ``epochs`` x ``iterations``: the name nnU-Net's ``-tr`` takes."""
    if epochs < 1 or iterations < 1:
        raise ValueError(f"schedule {epochs} epochs x {iterations} iterations: both must be positive")
    name = f"{base}_{epochs}epochs_{iterations}iters"
    if schedule_trainer(name) is None:
        raise ValueError(f"{base!r} is not a CIPA trainer that takes a short schedule")
    return name


def schedule_trainer(name: str) -> type | None:
    """The trainer class called ``name``, made on first use; None if ``name`` is not of this family."""
    if name in _made:
        return _made[name]
    match = NAME_PATTERN.match(name)
    if match is None:
        return None
    from nnunetv2_cipa.trainers import catalog

    base = match["base"]
    if base not in catalog.__all__ or _FIXED_SCHEDULE.search(base):
        return None
    epochs, iterations = int(match["epochs"]), int(match["iterations"])
    trainer = type(
        name,
        (getattr(catalog, base),),
        {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"{base} trained {epochs} epochs x {iterations} iterations "
            f"({VALIDATION_ITERATIONS} validation iterations per epoch).",
            "cipa_num_epochs": epochs,
            "cipa_iterations_per_epoch": iterations,
            "cipa_val_iterations_per_epoch": VALIDATION_ITERATIONS,
        },
    )
    _made[name] = trainer
    return trainer


def module_getattr(find: Callable[[str], type | None], module: str) -> Callable[[str], type]:
    """A PEP 562 module ``__getattr__`` that answers trainer names with ``find(name)``."""

    def __getattr__(name: str) -> type:
        trainer = find(name)
        if trainer is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return trainer

    return __getattr__


__getattr__ = module_getattr(schedule_trainer, __name__)
