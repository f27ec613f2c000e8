"""What the in-nnunetv2 re-export (the fallback ``nnunetv2_cipa setup`` writes) answers beyond our variants.

That re-export exists where nnU-Net's own trainer walk crashes inside its subpackages (``primus/``
imports ``timm``, which imports ``torchvision``; a CUDA torchvision on a CPU torch raises there) before
it reaches ``nnUNet_extTrainer`` (nnU-Net source ``nnunetv2/utilities/find_objects.py``). Where that
happens, no trainer in an ``nnUNet_extTrainer`` folder can be found either: not a user's own subclass
of ``nnUNetTrainerCIPA``, not the tests' trainers. So the re-export's ``__getattr__`` also answers

* the short-schedule family ``<trainer>_<E>epochs_<I>iters`` (:mod:`.short_schedules`), and
* any ``nnUNetTrainer*`` class of the folders in ``nnUNet_extTrainer`` (other than our own re-export
  folder), searched with nnU-Net's own ``recursive_find_python_class`` exactly as nnU-Net searches
  them, only earlier: before the walk enters the subpackage that crashes.
"""

from __future__ import annotations

import os
from pathlib import Path

from nnunetv2_cipa.trainers.short_schedules import module_getattr, schedule_trainer


def find_trainer(name: str) -> type | None:
    """The trainer class ``name`` from the short schedules or the ``nnUNet_extTrainer`` folders."""
    trainer = schedule_trainer(name)
    if trainer is not None or not name.startswith("nnUNetTrainer"):
        return trainer
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunetv2_cipa.trainers.discovery import ext_folder

    own = ext_folder()
    for folder in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep):
        if not folder.strip() or not os.path.isdir(folder) or Path(folder).resolve() == own:
            continue
        trainer = recursive_find_python_class(
            folder, name, None, base_folder=folder, cleanup_imports_from_base_folder=True
        )
        if trainer is not None:
            return trainer
    return None


__getattr__ = module_getattr(find_trainer, __name__)
