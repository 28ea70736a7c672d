"""Running a study's runs: a pool of local worker processes, or SLURM array jobs through submitit.

Each run is a plain call of its command's run function in a fresh process: the function resumes an
interrupted run from its checkpoint and returns at once for a finished one, so the executors need no
bookkeeping of their own beyond the study record (`ticketlab.sweep.record`), which lets a rerun skip
finished runs without starting a process for them.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ticketlab.errors import ConfigError, TicketlabError
from ticketlab.extras import require

EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass(frozen=True)
class Job:
    """What a worker needs to run one planned run (plain data: it is pickled to other processes)."""

    key: str
    command: str
    config: Dict[str, Any]
    options: Dict[str, Any]
    runs_dir: str
    device: str
    threads: int
    imports: Tuple[str, ...] = ()  # --import modules (or .py files, absolute) the run's registries need


def run_job(job: Job) -> Dict[str, Any]:
    """Run one job in this process: ``{"key", "path", "seconds"}``, or ``{"key", "error"}`` (a bad run
    is reported, the others go on)."""
    import torch

    import ticketlab.methods  # noqa: F401  (registers the built-in methods)
    from ticketlab.method import METHODS
    from ticketlab.methods import RunContext

    torch.set_num_threads(job.threads)
    began = time.perf_counter()
    try:
        if job.imports:  # a spawned worker or a SLURM job starts without the sweep's imports
            from ticketlab.user_modules import import_user_module

            for module in job.imports:
                import_user_module(module)
        method = METHODS.get(job.command)
        ctx = RunContext(job.runs_dir, job.device, job.threads, progress=False,
                         argv=["ticketlab", "sweep", job.command])
        # a run another sweep (or command) is training fails here, with its holder; its lock goes with the return
        path = method.run(method.config.from_dict(job.config), dict(job.options), ctx)
    except TicketlabError as exc:
        return {"key": job.key, "error": str(exc)}
    except Exception:  # noqa: BLE001  (one broken run must not take the sweep down; its traceback is kept)
        return {"key": job.key, "error": traceback.format_exc(limit=8)}
    return {"key": job.key, "path": str(path), "seconds": round(time.perf_counter() - began, 3)}


def in_process(jobs: List[Job]) -> Iterator[Dict[str, Any]]:
    """The jobs one after another in this process (``--workers 1``), its thread count restored after."""
    import torch

    threads = torch.get_num_threads()
    try:
        for job in jobs:
            yield run_job(job)
    finally:
        torch.set_num_threads(threads)


def local_pool(jobs: List[Job], workers: int) -> Iterator[Dict[str, Any]]:
    """Results as runs finish, from ``workers`` spawned processes. A worker that dies (killed, out of
    memory) fails the runs not yet finished, which the next sweep resumes, instead of hanging."""
    if not jobs:
        return iter(())
    if workers == 1:
        return in_process(jobs)

    def results() -> Iterator[Dict[str, Any]]:
        pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = {pool.submit(run_job, job): job for job in jobs}
            for future in as_completed(futures):
                try:
                    yield future.result()
                except BrokenProcessPool:
                    yield {"key": futures[future].key, "error": "a worker process died (killed, or out of memory?); "
                           "run the sweep again to resume"}
        except BaseException:  # interrupted: stop the running runs too (they resume from their checkpoints)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    return results()


def submitit_jobs(jobs: List[Job], folder: Path, cluster: str, partition: Optional[str], gpus: int,
                  minutes: int, parallel: int) -> Iterator[Dict[str, Any]]:
    """Results of an array job through submitit (``cluster`` "slurm", or "local": submitit's local
    executor, the same path on this machine). Logs go to ``folder``."""
    submitit = require("submitit", f"--executor {'slurm' if cluster == 'slurm' else 'submitit-local'}")
    if not jobs:
        return iter(())
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: Dict[str, Any] = {"timeout_min": minutes, "gpus_per_node": gpus, "tasks_per_node": 1,
                              "slurm_array_parallelism": parallel}
    if partition:
        params["slurm_partition"] = partition
    if cluster == "slurm":
        params["cpus_per_task"] = max(jobs[0].threads, 1)
    executor.update_parameters(**params)
    submitted = executor.map_array(run_job, jobs)
    print(f"ticketlab: submitted {len(submitted)} jobs ({submitted[0].job_id.split('_')[0]}); logs in {folder}",
          flush=True)

    def results() -> Iterator[Dict[str, Any]]:
        pending = dict(zip(submitted, jobs))
        while pending:
            done = [j for j in pending if j.done()]
            for handle in done:
                job = pending.pop(handle)
                try:
                    yield handle.result()
                except Exception as exc:  # noqa: BLE001  (a job killed by the scheduler, a node failure)
                    yield {"key": job.key, "error": f"job {handle.job_id} failed: {str(exc).strip()[-400:]}"}
            if pending and not done:
                time.sleep(1.0)

    return results()


def executor_for(name: str, workers: int, folder: Path, partition: Optional[str], gpus: int, minutes: int
                 ) -> Callable[[List[Job]], Iterator[Dict[str, Any]]]:
    if name == "local":
        return lambda jobs: local_pool(jobs, workers)
    if name in ("slurm", "submitit-local"):
        cluster = "slurm" if name == "slurm" else "local"
        return lambda jobs: submitit_jobs(jobs, folder, cluster, partition, gpus, minutes, max(workers, 1))
    raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "Job", "run_job", "in_process", "local_pool", "submitit_jobs", "executor_for"]
