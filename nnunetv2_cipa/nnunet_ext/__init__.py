"""The folder ``nnUNet_extTrainer`` points at: only uniquely named re-export modules live here.

nnU-Net (>= 2.8) imports every module of this folder as a *top-level* module while it looks for a
trainer class by name. Hence one uniquely named module, ``nnunetv2_cipa_trainers``, that re-exports
the trainers with an absolute import: the classes keep ``__module__ == "nnunetv2_cipa.trainers..."``,
so checkpoints pickle and a second copy of a class is never created. No generic names (``utils``,
``trainer``) that could shadow other modules while the folder sits at the front of ``sys.path``.
This ``__init__`` only exists so that the folder ships with the package; nnU-Net ignores it.
"""
