"""How every stage command ends when it does not end well, in one place: the training stages'
(:func:`benchmark.stages.cli.stage_main`) and the dense runs' (:func:`benchmark.downstream.mm.runner.main`).
Inside :func:`cli_errors`, a run stopped by a signal (:class:`~benchmark.errors.Preempted`) prints
``[NAME] <message>`` and exits with its code; a second Ctrl-C prints that the run directory keeps its
last checkpoint and exits 130 (:data:`~benchmark.errors.EXIT_INTERRUPTED`); bad input
(:class:`~benchmark.errors.SuiteError`) prints one ``error:`` line, removes the run directory if the
command created it and left it empty, and exits 2 (:data:`~benchmark.errors.EXIT_BAD_INPUT`). All
on stderr. It lives here, below ``stages/`` and ``downstream/`` (and above ``errors``, as it removes
folders with :func:`benchmark.utils.io.remove_if_empty`), so that both use the same one.

SIGTERM or SIGUSR2 outside a training loop (in the set-up: loading data, fitting a tokenizer or a
head; or in the final evaluation) stops the command at once, as a :class:`~benchmark.errors.Preempted`
with code 75, like one inside a loop, where the loop's own handler
(:class:`benchmark.training.stop.StopSignal`) takes over and first finishes its step and writes its
checkpoint. Without this, such a signal killed the process (-15), which the driver took for a failure.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_PREEMPTED, Preempted, SuiteError, error_line
from benchmark.utils.io import remove_if_empty


@dataclass
class Stopped:
    """The exit code of a command whose :func:`cli_errors` block stopped on one of the errors it
    handles; ``None`` while the block ran through."""

    code: int | None = None


# The stop requests of SLURM and submitit (benchmark.training.stop.STOP_SIGNALS without Ctrl-C, which
# raises KeyboardInterrupt by itself)
_STOP_AT_ONCE = (signal.SIGTERM, signal.SIGUSR2)


def _stop_at_once(signum: int, _frame: object) -> None:
    raise Preempted(f"stopped by {signal.Signals(signum).name} outside its training steps (in its set-up or its "
                    "evaluation); the run directory keeps its last checkpoint, if any: run the same command again "
                    "to resume", EXIT_PREEMPTED)


@contextmanager
def cli_errors(name: str, out_dir: str | os.PathLike) -> Iterator[Stopped]:
    """Runs the block of command ``name`` writing into ``out_dir``; on a stop signal, a second Ctrl-C
    or bad input prints its one line on stderr and sets the yielded :class:`Stopped`'s ``code``
    instead of raising (anything else propagates). ``out_dir`` is removed on bad input if it did not
    exist on entry and is empty (a failed run leaves no folder it created behind)::

        with cli_errors("probe", out) as stopped:
            result = run(...)
        if stopped.code is not None:
            return stopped.code
    """
    created = not Path(out_dir).exists()
    stopped = Stopped()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stop_at_once) for sig in _STOP_AT_ONCE}
    try:
        yield stopped
    except Preempted as err:
        print(f"[{name}] {err}", file=sys.stderr)
        stopped.code = err.code
    except KeyboardInterrupt:
        print(f"[{name}] interrupted at once (a second Ctrl-C); {out_dir} keeps its last checkpoint: run the same "
              "command again to resume from it", file=sys.stderr)
        stopped.code = EXIT_INTERRUPTED
    except SuiteError as err:
        if created:
            remove_if_empty(out_dir)
        print(f"error: {error_line(err)}", file=sys.stderr)
        stopped.code = EXIT_BAD_INPUT
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
