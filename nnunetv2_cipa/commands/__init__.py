"""Subcommand modules of ``nnunetv2_cipa`` whose work lives in a library package.

Each exposes ``main(argv, prog) -> int`` (registered in ``nnunetv2_cipa/cli.py``) and only parses
arguments, calls the library and reports: ``params`` (``architectures.counting``), ``fixed-window``
(``plans.fixed_window``).
"""
