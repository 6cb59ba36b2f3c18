"""Stop requests that keep the work: Ctrl-C or SIGTERM to a training process, a STOP file in its run folder
(`python -m mindcv.stop RUN_DIR` writes it), and, under `msrun --join True`, the launcher's death (a cluster
preempting the job sends SIGTERM to msrun, which does not forward it: its workers run in sessions of their own).
The loop reads the request at chunk boundaries, agrees on it across ranks, saves a resumable state and exits with
`STOPPED_STATUS`.

Two parts of MindSpore 2.10 take the process's signal handlers (C `sigaction`, which Python's `signal` module
does not see):
- `mindspore/dataset/engine/datasets_user_defined.py`, `_generator_worker_loop`: every GeneratorDataset worker
  THREAD (num_parallel_workers > 1 without python_multiprocessing) calls `_c_dataengine.register_worker_handlers()`
  when an iterator starts it (the training pipeline, then every validation pass). Meant for worker processes, it
  gives the whole process the data engine's `SIGTERMHandler`, which exits with status 0 when the parent process sent
  the signal and otherwise dies of it. `StopRequest` makes that call a no-op in threads of the training process
  (worker processes still make it);
- the graph runtime (`GraphScheduler::Run`, on every graph run) installs `DefaultIntHandler` for SIGINT, which sends
  SIGTERM to the process itself: a Ctrl-C reaches the loop as SIGTERM, so both signals are handled alike.
"""
import ctypes
import os
import signal
import sys
import threading

from ..io.names import STOP_FILE

STOPPED_STATUS = 130  # the exit status of a run that stopped on request with its state saved

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _read_command_line(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [arg.decode(errors="replace") for arg in f.read().split(b"\0")]
    except OSError:
        return []


def _launcher_waits(command_line: list) -> bool:
    """Whether `command_line` is msrun's with `--join True`: that msrun lives as long as its workers. Without it
    (msrun's default), msrun exits once the workers are started, so its death says nothing."""
    for index, arg in enumerate(command_line):
        if arg == "--join=True" or (arg == "--join" and command_line[index + 1:index + 2] == ["True"]):
            return True
    return False


# the process that started this one, read when mindcv.engine is imported (train.py's first second): a launcher that
# dies later is noticed even when it died before the loop started
_LAUNCHER = os.getppid()
_LAUNCHER_WAITS = os.environ.get("MS_ROLE") == "MS_WORKER" and _launcher_waits(_read_command_line(_LAUNCHER))


def follow_launcher() -> bool:
    """Under `msrun --join True`, ask the kernel to send this worker SIGTERM when msrun dies
    (`prctl(PR_SET_PDEATHSIG)`, Linux). Returns whether the launcher is already gone."""
    if not (_LAUNCHER_WAITS and sys.platform.startswith("linux")):
        return False
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() != _LAUNCHER  # the launcher died before prctl: no signal will come


def _keep_process_handlers_in_dataset_threads() -> None:
    """Make `_c_dataengine.register_worker_handlers` a no-op in this process, where only worker threads call it
    (see the module's docstring); forked worker processes (another pid) still install their handlers."""
    from mindspore import _c_dataengine

    register = _c_dataengine.register_worker_handlers
    if getattr(register, "training_pid", None) is not None:
        return
    training_pid = os.getpid()

    def register_in_worker_processes(*args, **kwargs):
        if os.getpid() != training_pid:
            register(*args, **kwargs)

    register_in_worker_processes.training_pid = training_pid
    _c_dataengine.register_worker_handlers = register_in_worker_processes


class StopRequest:
    """Whether the run was asked to stop: Ctrl-C / SIGTERM (a second one stops at once: KeyboardInterrupt, the last
    saved checkpoint intact), the launcher's death (msrun --join True), or a STOP file in `run_directory`.
    `boundary` describes where the loop honours it, for the message printed when a signal arrives. The previous
    handlers come back with `restore()`.

    Create it in the main thread, before the loop's pipelines (their iterators start the worker threads)."""

    def __init__(self, run_directory: str, boundary: str = "the next chunk boundary"):
        self.stop_file = os.path.join(run_directory, STOP_FILE)
        self.boundary = boundary
        self.signalled = False
        _keep_process_handlers_in_dataset_threads()
        self.previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        self.arm()
        if follow_launcher():
            self._handle(signal.SIGTERM, None)

    def arm(self) -> None:
        """(Re)install the handlers. Called at every chunk boundary as well: a handler that some other part of the
        stack installs then holds the signals for one chunk at most."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.previous:
                signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if self.signalled:
            print("stopping now, without saving; the last saved checkpoint is intact", file=sys.stderr, flush=True)
            raise KeyboardInterrupt
        self.signalled = True
        print(f"{signal.Signals(signum).name}: stopping at {self.boundary} with a resumable state saved; Ctrl-C "
              "again to stop now", file=sys.stderr, flush=True)

    def reason(self) -> str:
        """What asked this process to stop ("" when nothing did)."""
        if self.signalled:
            return "a signal (Ctrl-C, SIGTERM or the launcher's end)"
        if os.path.exists(self.stop_file):
            return f"{self.stop_file}"
        return ""

    def consume_file(self) -> None:
        """Remove the STOP file once the state is saved, so that the resumed run does not stop at once."""
        try:
            os.remove(self.stop_file)
        except FileNotFoundError:  # never written, or another node's process removed it from a shared folder
            pass

    def restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self.previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
