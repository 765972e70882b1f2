"""Launchers: how the driver runs one step of a plan (in this process, under torchrun, on SLURM).

    launcher = Torchrun(nproc_per_node=8)
    data = launcher.submit("synthetic", "data", lambda: make_all(...), run_dir)
    args = run_kind("pretrain").command_args(config, run_dir)
    pre = launcher.submit("pretrain-x", "pretrain", args, run_dir, after=[data])
    handles = launcher.wait()          # every handle, finished; handle.ok / handle.error / handle.log

A step's *target* is either a Python callable (run as is) or the argument list of its kind's
command (the kind's ``command`` and ``command_args`` in :mod:`benchmark.stages.kinds`: ``--config
CFG.json --out RUN`` for pretrain/finetune/probe, ``--ckpt --config --data-root --work-dir --seed
--cfg-options`` for detect/segment). A step whose dependencies (``after``) failed is not run: its
handle is "blocked".

- :class:`InProcess` runs now, in this process (a command target through its ``main``).
- :class:`Torchrun` runs command targets now as ``python -m torch.distributed.run --standalone
  --nproc_per_node N -m <command> ARGS``, output to ``RUN/launch.log``; callables (the ``data``
  step) in-process.
- :class:`Slurm` submits every step as one SLURM job through submitit, with ``afterok``
  dependencies on the jobs it needs. Scheme: one task per node (``ntasks_per_node=1``), each
  starting ``torchrun --nproc_per_node GPUS`` on its node; with several nodes the task passes
  ``--nnodes $SLURM_NNODES --node_rank $SLURM_NODEID`` and a c10d rendezvous at the first host of
  the allocation (``--rdzv_id`` = the job id), so torchrun, not srun, owns the per-GPU processes.
  Pre-emption and time-outs: submitit's signal (USR2) calls :meth:`TorchrunJob.checkpoint`, which
  sends SIGTERM to torchrun (the trainers write their checkpoint and exit), then the job is
  requeued; the requeued job runs the same command, which resumes (docs/faults.md).
"""

from __future__ import annotations

import importlib
import os
import shlex
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark import REPO
from benchmark.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, LaunchError, Preempted
from benchmark.stages.catalogue import run_kind

Target = Sequence[str] | Callable[[], Any]
LOG_FILE = "launch.log"
RDZV_PORT = 29500


@dataclass
class Handle:
    """One submitted step. ``status``: pending | done | failed | blocked | stopped (by a signal)."""

    run_name: str
    kind: str
    run_dir: Path
    status: str = "pending"
    error: str | None = None
    log: Path | None = None
    job: Any = None                         # submitit job (Slurm)
    parameters: dict[str, Any] = field(default_factory=dict)  # executor parameters (Slurm)

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def job_id(self) -> str | None:
        return None if self.job is None else str(self.job.job_id)

    def check(self) -> None:
        """Raises :class:`LaunchError` unless the step finished."""
        if self.status != "done":
            raise LaunchError(f"{self.kind} {self.run_name}: {self.status}: {self.error}")


def _blocked(after: Sequence[Handle]) -> list[str]:
    return [h.run_name for h in after if h.status in ("failed", "blocked")]


def _call(handle: Handle, fn: Callable[[], Any]) -> Handle:
    """Runs ``fn``; a raised exception marks the handle failed, traceback in ``RUN/error.log``.
    :class:`~benchmark.errors.Preempted` (SIGTERM: the run wrote its checkpoint) goes on up:
    the whole driver was asked to stop."""
    try:
        result = fn()
    except Preempted:
        handle.status, handle.error = "stopped", "stopped by a signal; its checkpoint resumes it"
        raise
    except Exception as err:  # one failed run must not stop the others
        handle.run_dir.mkdir(parents=True, exist_ok=True)
        handle.log = handle.run_dir / "error.log"
        handle.log.write_text(traceback.format_exc())
        handle.status, handle.error = "failed", f"{type(err).__name__}: {err}; traceback in {handle.log}"
        return handle
    if result in (EXIT_PREEMPTED, EXIT_INTERRUPTED) and not isinstance(result, bool):  # a CLI main stopped by a signal
        handle.status, handle.error = "stopped", "stopped by a signal; its checkpoint resumes it"
        raise Preempted(f"{handle.kind} {handle.run_name} stopped by a signal; run the same command again to resume",
                        result)
    if isinstance(result, int) and not isinstance(result, bool) and result != 0:  # a CLI main's exit code
        handle.status, handle.error = "failed", f"exit code {result}"
    else:
        handle.status = "done"
    return handle


class Launcher:
    """Runs or submits steps; ``wait()`` returns every handle once finished."""

    def __init__(self) -> None:
        self.handles: list[Handle] = []

    def submit(self, run_name: str, kind: str, target: Target, run_dir: str | Path,
               after: Sequence[Handle] = ()) -> Handle:
        handle = Handle(run_name, kind, Path(run_dir))
        self.handles.append(handle)
        blocked = _blocked(after)
        if blocked:
            handle.status, handle.error = "blocked", f"blocked by {', '.join(blocked)}"
            return handle
        return self._start(handle, target, list(after))

    def _start(self, handle: Handle, target: Target, after: list[Handle]) -> Handle:
        raise NotImplementedError

    def wait(self) -> list[Handle]:
        return list(self.handles)


class InProcess(Launcher):
    """Runs each step now in this process: a callable as is, command arguments through the kind's
    command's ``main(args)`` (a non-zero return is a failure)."""

    def _start(self, handle: Handle, target: Target, after: list[Handle]) -> Handle:
        if callable(target):
            return _call(handle, target)
        main = importlib.import_module(_command(handle.kind)).main
        return _call(handle, lambda: main(list(target)))


def _command(kind: str) -> str:
    """The module a step of ``kind`` runs as a command (``python -m ...``)."""
    command = run_kind(kind).command
    if command is None:
        raise ValueError(f"run kind {kind!r} has no command line; pass a callable")
    return command


def _multi_process_command(kind: str) -> str:
    if not run_kind(kind).multi_process:
        raise ValueError(f"run kind {kind!r} does not run under torchrun; pass a callable")
    return _command(kind)


class Torchrun(Launcher):
    """Runs CLI steps of the multi-process kinds now under torchrun on this machine (blocking),
    their output in ``RUN/launch.log`` (and echoed with ``echo=True``); callables in-process."""

    def __init__(self, nproc_per_node: int = 1, python: str = sys.executable, env: dict[str, str] | None = None,
                 echo: bool = False, module: str | None = None) -> None:
        super().__init__()
        self.nproc_per_node, self.python, self.env, self.echo = int(nproc_per_node), python, env, echo
        self.module = module  # a template "...{kind}..." in place of each kind's command (tests run a fake one)

    def command(self, kind: str, args: Sequence[str]) -> list[str]:
        """The torchrun command line of step ``kind`` with command arguments ``args``."""
        module = self.module.format(kind=kind) if self.module else _multi_process_command(kind)
        return [self.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(self.nproc_per_node),
                "-m", module, *map(str, args)]

    def _start(self, handle: Handle, target: Target, after: list[Handle]) -> Handle:
        if callable(target):
            return _call(handle, target)
        return run_logged(handle, self.command(handle.kind, target), env=self.env, echo=self.echo)


def run_logged(handle: Handle, cmd: Sequence[str], env: dict[str, str] | None = None, echo: bool = False) -> Handle:
    """Runs ``cmd`` (blocking) with stdout and stderr into ``RUN/launch.log``; a non-zero exit
    marks ``handle`` failed, naming the log."""
    handle.run_dir.mkdir(parents=True, exist_ok=True)
    handle.log = handle.run_dir / LOG_FILE
    repo = str(REPO)
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, full_env.get("PYTHONPATH", "")) if p)
    with open(handle.log, "a", buffering=1) as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
                                cwd=repo)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if echo:
                print(f"[{handle.run_name}] {line}", end="", flush=True)
        code = proc.wait()
        log.write(f"# exit code {code}\n")
    if code == 0:
        handle.status = "done"
    else:
        handle.status, handle.error = "failed", f"exit code {code}; log in {handle.log}"
    return handle


# ----------------------------------------------------------------------------------- SLURM

@dataclass
class TorchrunJob:
    """What a SLURM job runs, on each node of its allocation (one task per node): torchrun over
    this node's GPUs, joined to the other nodes by a c10d rendezvous at the allocation's first host."""

    kind: str
    args: list[str]
    gpus_per_node: int
    python: str = sys.executable
    stop_timeout_s: float = 75.0  # how long checkpoint() waits for the trainers (submitit warns 90 s ahead)
    _proc: Any = field(default=None, init=False, repr=False, compare=False)  # the running torchrun

    def command(self, nodes: int = 1, node_rank: int = 0, master: str = "localhost", job_id: str = "0") -> list[str]:
        """The torchrun command of this node."""
        launch = ["--standalone"] if nodes == 1 else [
            "--nnodes", str(nodes), "--node_rank", str(node_rank), "--rdzv_backend", "c10d",
            "--rdzv_endpoint", f"{master}:{RDZV_PORT}", "--rdzv_id", job_id]
        return [self.python, "-m", "torch.distributed.run", *launch, "--nproc_per_node", str(max(1, self.gpus_per_node)),
                "-m", _multi_process_command(self.kind), *self.args]

    def __call__(self) -> int:
        import submitit

        try:
            env = submitit.JobEnvironment()
            nodes, rank, hosts, job_id = env.num_nodes, env.node, list(env.hostnames), str(env.job_id)
        except RuntimeError:  # not inside a submitit job (a debug executor): one node, here
            nodes, rank, hosts, job_id = 1, 0, ["localhost"], "0"
        cmd = self.command(nodes, rank, hosts[0], job_id)
        print(f"$ {shlex.join(cmd)}", flush=True)
        # torchrun ignores USR2 (which SLURM may send to every process of the job, and which would
        # kill it); the trainers install their own handler for it (benchmark.training.stop.StopSignal).
        self._proc = subprocess.Popen(cmd, cwd=str(REPO),
                                      preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
        code = self._proc.wait()
        self._proc = None
        if code != 0:
            raise LaunchError(f"{_command(self.kind)} exited with {code}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit calls on pre-emption or time-out, before it requeues the job: SIGTERM to
        the running torchrun, which passes it to the trainers; they finish their step, write their
        checkpoint and exit (waited for up to ``stop_timeout_s``). The requeued job is this one
        again: the same command, which resumes from that checkpoint."""
        from submitit.helpers import DelayedSubmission

        proc = self._proc
        if proc is not None and proc.poll() is None:
            print(f"[launch] stopping {_command(self.kind)} (SIGTERM) for a checkpoint before the requeue", flush=True)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                print(f"[launch] {_command(self.kind)} still running after {self.stop_timeout_s:.0f}s; "
                      "it resumes from its previous checkpoint", flush=True)
        return DelayedSubmission(self, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:  # pickled by submitit; a process handle is not
        return {**self.__dict__, "_proc": None}


class Slurm(Launcher):
    """Submits each step as one SLURM job (submitit), ``afterok`` on the jobs in ``after``.

    ``options``: ``partition``, ``gpus_per_node`` (default 8), ``nodes`` (1), ``cpus_per_task``
    (10 per GPU), ``mem_gb``, ``timeout_min`` (an int, or per kind; the kind's own
    ``timeout_min`` otherwise), ``account``, ``qos``, ``constraint``. ``data`` steps get one node, no GPU.
    ``cluster=None`` is SLURM; ``"debug"`` runs the jobs in this process at ``wait()`` (tests).
    """

    def __init__(self, options: dict[str, Any] | None = None, cluster: str | None = None,
                 python: str = sys.executable) -> None:
        super().__init__()
        self.options = dict(options or {})
        self.cluster, self.python = cluster, python
        self._after: dict[int, list[Handle]] = {}

    def parameters(self, run_name: str, kind: str, after: Sequence[Handle] = ()) -> dict[str, Any]:
        """The ``AutoExecutor.update_parameters`` arguments of a step."""
        opts = self.options
        gpus = 0 if kind == "data" else int(opts.get("gpus_per_node", 8))
        nodes = 1 if kind == "data" else int(opts.get("nodes", 1))
        timeout = opts.get("timeout_min", {})
        timeout = int(timeout.get(kind, run_kind(kind).timeout_min) if isinstance(timeout, dict) else timeout)
        params: dict[str, Any] = {
            "name": run_name, "nodes": nodes, "tasks_per_node": 1, "gpus_per_node": gpus,
            "cpus_per_task": int(opts.get("cpus_per_task", 10 * max(1, gpus))), "timeout_min": timeout,
        }
        if opts.get("mem_gb"):
            params["mem_gb"] = int(opts["mem_gb"])
        for key in ("partition", "account", "qos", "constraint"):
            if opts.get(key):
                params[f"slurm_{key}"] = opts[key]
        extra: dict[str, Any] = {}
        ids = [h.job_id for h in after if h.job_id is not None]
        if ids:
            extra["dependency"] = "afterok:" + ":".join(ids)
            extra["kill-on-invalid-dep"] = "yes"  # a failed dependency cancels the job instead of leaving it pending
        params["slurm_additional_parameters"] = extra
        return params

    def job_function(self, kind: str, target: Target) -> Callable[[], Any]:
        """What the job runs: a callable as is, CLI arguments as a :class:`TorchrunJob`."""
        if callable(target):
            return target
        _multi_process_command(kind)  # refuses a kind that does not run under torchrun
        return TorchrunJob(kind, [str(a) for a in target], int(self.options.get("gpus_per_node", 8)), self.python)

    def executor(self, run_dir: Path) -> Any:
        import submitit

        return submitit.AutoExecutor(folder=run_dir / "slurm", cluster=self.cluster)

    def sbatch_text(self, run_name: str, kind: str, run_dir: str | Path, after: Sequence[Handle] = ()) -> str:
        """The sbatch script SLURM would get for this step (for inspection and tests; needs no SLURM)."""
        from submitit.slurm.slurm import SlurmExecutor

        class _Offline(SlurmExecutor):  # SlurmExecutor refuses to start where srun is missing
            @classmethod
            def affinity(cls) -> int:
                return 1

        executor = _Offline(folder=Path(run_dir) / "slurm", python=self.python)
        params = self.parameters(run_name, kind, after)
        generic = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        specific = {k[len("slurm_"):]: v for k, v in params.items() if k.startswith("slurm_")}
        executor._internal_update_parameters(**executor._convert_parameters(generic), **specific)
        return executor._make_submission_file_text(executor._submitit_command_str, "uid")

    def _start(self, handle: Handle, target: Target, after: list[Handle]) -> Handle:
        executor = self.executor(handle.run_dir)
        handle.parameters = self.parameters(handle.run_name, handle.kind, after)
        executor.update_parameters(**handle.parameters)
        handle.job = executor.submit(self.job_function(handle.kind, target))
        self._after[id(handle)] = after
        handle.log = Path(str(handle.job.paths.stdout)) if hasattr(handle.job, "paths") else None
        return handle

    def wait(self) -> list[Handle]:
        for handle in self.handles:
            if handle.status != "pending" or handle.job is None:
                continue
            blocked = _blocked(self._after.get(id(handle), []))
            if blocked:  # SLURM cancels such a job itself (kill-on-invalid-dep); a local/debug one is cancelled here
                try:
                    handle.job.cancel(check=False)
                except Exception:
                    pass
                handle.status, handle.error = "blocked", f"blocked by {', '.join(blocked)}"
                continue
            try:
                handle.job.result()
                handle.status = "done"
            except Exception as err:  # the job's exception, or a cancelled / failed job
                handle.status = "failed"
                handle.error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
                if handle.log is not None:
                    handle.error += f"; log in {handle.log}"
        return list(self.handles)
