"""Run a converter's per-case (or per-patient) jobs in a pool of worker processes.

Why processes: decoding inputs and compressing outputs is CPU-bound Python/C work that threads do
not spread over cores. What must not change with the number of workers:

* the output: each job writes its own files (atomically, into the staging folder) and returns a
  description; results, warnings and notes are merged in *job order*, not completion order, so
  ``-np 1`` and ``-np N`` give the same bytes;
* the warnings: each worker records into its own log, the main process prints them as jobs finish
  and keeps them all for the manifest;
* the first error: it cancels the jobs not yet started, waits for the running ones (so that no
  worker is still writing when the staging folder is removed) and is raised as the one-line error
  of the job that failed.

With one worker the jobs run in the calling process, with no pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from .errors import ConversionError, ConversionLog

# nnU-Net's own commands (nnUNetv2_plan_and_preprocess, nnUNetv2_predict) default to 8 processes
# unless the environment variable nnUNet_def_n_proc says otherwise (nnunetv2/configuration.py,
# default_num_processes); the converters follow the same rule without importing nnU-Net.
NNUNET_DEFAULT_PROCESSES = 8


def default_num_processes() -> int:
    value = os.environ.get("nnUNet_def_n_proc")
    if value is None:
        return NNUNET_DEFAULT_PROCESSES
    try:
        return max(1, int(value))
    except ValueError as exc:
        raise ConversionError("nnUNet_def_n_proc", f"{value!r} is not an integer") from exc


@dataclass
class JobOutput:
    value: Any
    warnings: list[dict]
    notes: list[dict]


def _run_one(worker: Callable[[Any, ConversionLog], Any], job: Any) -> JobOutput:
    log = ConversionLog(quiet=True)
    value = worker(job, log)
    return JobOutput(value, log.warnings, log.notes)


def _single_threaded_itk() -> None:
    """One ITK thread per worker: the pool already uses the cores, more threads only contend."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def run_jobs(
    worker: Callable[[Any, ConversionLog], Any],
    jobs: Sequence[Any],
    log: ConversionLog,
    num_processes: int,
    *,
    progress: bool,
    desc: str,
    unit: str,
    weights: Sequence[int] | None = None,
) -> list[Any]:
    """``[worker(job, log_of_job) for job in jobs]``, in ``num_processes`` processes.

    ``worker`` must be a module-level function (it is sent to the workers by reference) and
    ``weights`` the number of cases each job makes, so that the progress bar counts cases.
    """
    if num_processes < 1:
        raise ConversionError("-np", f"{num_processes} must be >= 1")
    weights = list(weights) if weights is not None else [1] * len(jobs)
    outputs: list[JobOutput | None] = [None] * len(jobs)
    with tqdm(total=sum(weights), desc=desc, unit=unit, disable=not progress) as bar:
        if num_processes == 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                outputs[i] = _run_one(worker, job)
                log.echo(outputs[i].warnings)
                bar.update(weights[i])
        else:
            _run_in_pool(worker, jobs, weights, min(num_processes, len(jobs)), outputs, log, bar)
    for out in outputs:
        log.absorb(out.warnings, out.notes)
    return [out.value for out in outputs]


def _run_in_pool(worker, jobs, weights, n_workers, outputs, log, bar) -> None:
    pool = ProcessPoolExecutor(max_workers=n_workers, initializer=_single_threaded_itk)
    try:
        index_of = {pool.submit(_run_one, worker, job): i for i, job in enumerate(jobs)}
        pending = set(index_of)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in sorted(done, key=index_of.get):
                error = future.exception()
                if error is not None:
                    raise error
                i = index_of[future]
                outputs[i] = future.result()
                log.echo(outputs[i].warnings)
                bar.update(weights[i])
    finally:
        # on an error or Ctrl-C: drop the jobs not started, wait for the running ones
        pool.shutdown(wait=True, cancel_futures=True)
