"""Ask a training run to stop and keep its work (a resumable state saved, then exit status 130).

Every rank saves at its next chunk boundary and the run exits with status 130; `--resume auto` continues it.

    python -m mindcv.stop RUN_DIR        # RUN_DIR: the run's ckpt_save_dir

It writes the file STOP into RUN_DIR, which every rank of the run looks for at its chunk boundaries (under msrun a
rank that sees it tells the others). The run removes the file once its state is saved. On several servers without
a shared file system, give the run folder of any one server: that server's ranks tell the others.
"""
import argparse
import datetime
import getpass
import os
import socket
import sys

from .io.files import write_text_atomic
from .io.names import RUN_RECIPE, STOP_FILE, WRITTEN_FILES


def request_stop(run_dir: str) -> str:
    """Write `run_dir`/STOP (atomically; who asked, and when). Returns its path. Raises FileNotFoundError when
    `run_dir` is not a run folder (no config.yaml or written_files.json: a mistyped path would otherwise leave a
    STOP file that no run reads)."""
    if not any(os.path.isfile(os.path.join(run_dir, name)) for name in (RUN_RECIPE, WRITTEN_FILES)):
        raise FileNotFoundError(f"{run_dir} is not the folder of a training run (no {RUN_RECIPE} there); give the "
                                "run's ckpt_save_dir")
    path = os.path.join(run_dir, STOP_FILE)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_text_atomic(path, f"stop requested by {getpass.getuser()}@{socket.gethostname()} at {stamp}\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mindcv.stop", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="the run's ckpt_save_dir")
    args = parser.parse_args(argv)
    try:
        path = request_stop(args.run_dir)
    except (FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}: the run saves a resumable state at its next chunk boundary (sink_size, or log_interval "
          "steps when fed from the host, or an epoch's end) and exits with status 130; continue it with --resume auto")
    return 0


if __name__ == "__main__":
    sys.exit(main())
