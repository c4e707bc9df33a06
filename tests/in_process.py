"""Run `main.py` or `eval_online.py` inside the test process, for calls that stop at a usage
error before any training: each such subprocess spent about six seconds importing torch and
Lightning, the bulk of the suite's time. Calls that train stay subprocesses (tests/test_faults.py
`run`), so signal handlers and logging set up by a run cannot leak into the test process."""

import contextlib
import importlib
import io
import os
from pathlib import Path


@contextlib.contextmanager
def environment(env: dict, cwd: Path):
    """os.environ replaced by `env` and the working directory set to `cwd`, both restored."""
    env, saved_env, saved_cwd = dict(env), dict(os.environ), os.getcwd()   # env may be os.environ
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)


def run_here(args: list[str], env: dict, cwd: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python <script> <args...>`, run in this process.

    `args[0]` is the path of main.py or eval_online.py, as the subprocess helpers take it. An
    exception the script does not turn into an exit code propagates, failing the test with its
    traceback, where a subprocess would have printed one."""
    module = importlib.import_module(Path(args[0]).stem)
    out, err = io.StringIO(), io.StringIO()
    with environment(env, cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = module.main(args[1:])
        except SystemExit as exit_:                      # argparse's own usage errors
            code = exit_.code
    return int(code or 0), out.getvalue(), err.getvalue()
