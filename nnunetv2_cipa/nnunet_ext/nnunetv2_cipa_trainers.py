"""Re-export of nnunetv2_cipa's trainer classes for nnU-Net's trainer search (see ``__init__``).

It must import without raising whatever the environment: nnU-Net's search aborts the whole lookup
on any import error in a module it walks, including lookups for nnU-Net's own trainers.
"""

try:
    from nnunetv2_cipa.trainers.catalog import *  # noqa: F401,F403
    from nnunetv2_cipa.trainers.catalog import __all__  # noqa: F401

    # answers nnU-Net's hasattr() for the short-schedule family <trainer>_<E>epochs_<I>iters
    from nnunetv2_cipa.trainers.short_schedules import __getattr__  # noqa: F401
except Exception as _error:  # never break nnU-Net's lookup of other trainers
    import warnings as _warnings

    _warnings.warn(f"nnunetv2_cipa trainers are unavailable: {_error!r}", RuntimeWarning, stacklevel=1)
