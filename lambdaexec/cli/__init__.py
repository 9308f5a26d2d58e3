"""The ``lambdaexec`` command: ``hello``, ``demo``, the job record (``jobs``, ``logs``, ``plot``,
``clean``) and the AWS subcommands where installed. Each is a thin shell over library functions."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

# subcommands added by other modules: name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register ``fn(args) -> exit status`` as ``lambdaexec <name>``."""

    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = (help, add_arguments, fn)
        return fn

    return wrap


def _greet(name: str) -> str:
    return f"Hello {name}"


@command("hello", "run one call on the configured backend and print what it returned")
def hello(args: argparse.Namespace) -> int:
    from lambdaexec.executor import LambdaExecutor

    with LambdaExecutor() as ex:
        print("function returned:", ex.submit(_greet, "world").result())
    return 0


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calls", type=int, default=16, help="number of DGEMM calls (default 16)")
    p.add_argument("--size", type=int, default=1024, help="matrix side n (default 1024)")
    p.add_argument("--loops", type=int, default=4, help="multiplications per call (default 4)")
    p.add_argument("--plot", metavar="FILE", help="write the calls' timeline with aggregate GFLOPS "
                   "(.png, .svg; needs the [plot] extra)")


@command("demo", "many single-threaded DGEMM calls: aggregate GFLOPS and a call timeline", _demo_arguments)
def demo(args: argparse.Namespace) -> int:
    from lambdaexec.cli import dgemm
    from lambdaexec.executor import LambdaExecutor

    with LambdaExecutor() as ex:
        print(f"backend {ex.config.backend}, storage {ex.config.storage}, "
              f"{ex.config.resolved_workers()} workers")
        summary = dgemm.run(ex, args.calls, args.size, args.loops)
        print(dgemm.report(summary))
    if args.plot:
        from lambdaexec.observe.timeline import plot_timeline

        plot_timeline(summary["futures"], args.plot, flops=summary["flops"],
                      title=f"{args.calls} DGEMM calls ({args.size}x{args.size} x {args.loops}): "
                            f"{summary['gflops']:.1f} GFLOPS aggregate")
        print(f"wrote {args.plot}")
    return 0


# --- the job record -----------------------------------------------------------------------
def _record_store() -> tuple[object, str]:
    from lambdaexec.config import load_config
    from lambdaexec.storage import open_storage

    cfg = load_config()
    return open_storage(cfg.storage_spec()), cfg.prefix


def _age(text: str) -> float:
    """Seconds in ``7d``, ``12h``, ``30m`` or ``90s`` (a bare number is days)."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    try:
        if text[-1:].lower() in units:
            return float(text[:-1]) * units[text[-1].lower()]
        return float(text) * 86400
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 7d, 12h, 30m or 90s") from None


def _when(t: float | None) -> str:
    import time

    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


_FUNCTION_WIDTH = 48  # the widest the jobs table's FUNCTION column grows


def function_cell(name: str, width: int = _FUNCTION_WIDTH) -> str:
    """A function's ``module.qualname`` in at most ``width`` characters: whole if it fits, else
    without as many leading dotted parts as needed (``Class.method``), else the right end of its
    last part after ``...``: the function's own name is at the right, so the right is kept."""
    parts = name.split(".")
    for i in range(len(parts)):
        text = ".".join(parts[i:])
        if len(text) <= width:
            return text
    return "..." + parts[-1][len(parts[-1]) - width + 3:]


@command("jobs", "recent jobs: state (running, finished, failed, lost), calls done/failed/queued/running, "
                 "duration, cost",
         lambda p: p.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)"))
def jobs(args: argparse.Namespace) -> int:
    from lambdaexec.observe import jobs as records
    from lambdaexec.observe.clients import jobs_prefix

    store, root = _record_store()
    found = records.list_jobs(store, root, args.limit)
    if not found:
        print(f"no job records under {jobs_prefix(root)}")
        return 0
    names = [function_cell(job.manifest["function"]) for job in found]
    w = max(8, *map(len, names))
    print(f"{'JOB':<40} {'CREATED (UTC)':<19}  {'FUNCTION':<{w}} {'STATE':<9} {'CALLS':>6} {'DONE':>6} "
          f"{'FAILED':>6} {'QUEUED':>6} {'RUNNING':>7} {'SECONDS':>8} {'COST $':>10} {'PEAK MB':>8}")
    for job, name in zip(found, names):
        m, n = job.manifest, job.counts()
        seconds = "-" if job.duration is None else f"{job.duration:.1f}"
        dollars = "-" if job.calls is None else f"{job.cost().total:.6f}"
        print(f"{job.job_id:<40} {_when(m['created']):<19}  {name:<{w}} {job.state:<9} "
              f"{m['calls']:>6} {n['done']:>6} {n['failed'] + n['cancelled']:>6} {n['queued']:>6} {n['running']:>7} "
              f"{seconds:>8} {dollars:>10} {_peak_mb(job.peak_memory):>8}")
    if any(job.state == "lost" for job in found):
        print("lost: the job's client process is gone (killed, or it exited without waiting); its calls that had "
              "not finished will not be collected. `lambdaexec clean` deletes what it left.")
    return 0


def _peak_mb(peak: int) -> str:
    return f"{peak / 2**20:.0f}" if peak else "-"


def _logs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job id (or a unique part of one), from `lambdaexec jobs`")
    p.add_argument("call", nargs="?", type=int, help="call number (default: every failed call)")


@command("logs", "what one call of a job printed, or the failed calls' output and errors", _logs_arguments)
def logs(args: argparse.Namespace) -> int:
    from lambdaexec.observe import jobs as records

    store, root = _record_store()
    job = records.read_job(store, root, records.resolve(store, root, args.job))
    for text in records.call_logs(store, job, args.call):
        print(text)
    return 0


def _plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job id (or a unique part of one), from `lambdaexec jobs`")
    p.add_argument("-o", "--output", required=True, help="image file to write (.png, .svg, .pdf)")


@command("plot", "draw a finished job's timeline into an image file", _plot_arguments)
def plot(args: argparse.Namespace) -> int:
    from lambdaexec.errors import LambdaExecError
    from lambdaexec.observe import jobs as records
    from lambdaexec.observe.timeline import plot_timeline

    store, root = _record_store()
    job = records.read_job(store, root, records.resolve(store, root, args.job))
    if job.calls is None:
        raise LambdaExecError(f"job {job.job_id} has not finished: its timeline is drawn from the calls "
                              "record written when its last call ends")
    plot_timeline(job.futures(), args.output, title=f"job {job.job_id}: {job.manifest['function']}")
    print(f"wrote {args.output}")
    return 0


def _clean_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--older-than", type=_age, default=None, metavar="AGE",
                   help="delete records older than AGE (7d, 12h, 30m, 90s; default: job_retention_days)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.add_argument("--cache", action="store_true", help="also delete the result cache (cache=True)")


@command("clean", "delete old job records, any data their jobs left behind, and the objects of "
                  "executors whose client was killed", _clean_arguments)
def clean(args: argparse.Namespace) -> int:
    from lambdaexec.config import load_config
    from lambdaexec.observe import clean as cleaner

    store, root = _record_store()
    older = args.older_than if args.older_than is not None else load_config().job_retention_days * 86400.0
    gone = cleaner.clean(store, root, older, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for job_id in gone:
        print(f"{verb} {job_id}")
    print(f"{verb} {len(gone)} job record(s) older than {older / 86400:g} days")
    for executor in cleaner.clean_gone_clients(store, root, dry_run=args.dry_run):
        print(f"{verb} the objects of executor {executor} (its client process is gone)")
    from lambdaexec.runtime import cache

    if args.cache and not args.dry_run:
        results, objects = cache.clear(store, root)
        print(f"deleted the result cache: {results} result(s) in {objects} object(s) under {cache.cache_prefix(root)}")
    else:
        results, objects = cache.size(store, root)
        print(f"the result cache holds {results} result(s) in {objects} object(s) under {cache.cache_prefix(root)} "
              f"({'would delete them' if args.cache else '`lambdaexec clean --cache` deletes them'})")
    return 0


def _replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("call_id", metavar="CALL_ID", help="a failed call's id (future.call_id; `lambdaexec logs JOB` "
                                                      "lists them), like 3f2a9c0d1b2e-000000/7")
    p.add_argument("--pdb", action="store_true", help="open the post-mortem debugger where the call raises")


@command("replay", "run a failed call again here, with the same function and inputs (--pdb: debug it)",
         _replay_arguments)
def replay(args: argparse.Namespace) -> int:
    import traceback

    from lambdaexec.runtime import replay as replays

    store, root = _record_store()
    try:
        blob, inputs, info = replays.load(store, root, args.call_id)
    finally:
        store.close()
    print(f"replaying call {args.call_id} ({info.get('function') or '?'}), which failed with {info.get('error')}",
          file=sys.stderr)
    try:
        value = replays.run(blob, inputs)
    except BaseException as exc:  # the call's own exception, with a local traceback
        if isinstance(exc, KeyboardInterrupt):
            raise
        tb = exc.__traceback__  # from the call's own first frame: lambdaexec's frames above it are noise
        ours = (__file__, replays.__file__)
        while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename in ours:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
        if args.pdb:
            import pdb

            pdb.post_mortem(exc.__traceback__)
        return 1
    print(f"the call returned {value!r} this time (it failed remotely)")
    return 0


def _version() -> str:
    """This lambdaexec's version (``lambdaexec.__version__``, which setup.cfg also reads)."""
    from lambdaexec.version import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lambdaexec`` console script."""
    from lambdaexec.aws.commands import COMMANDS as AWS_COMMANDS  # deploy, teardown, doctor, emulate

    for name, spec in AWS_COMMANDS.items():
        COMMANDS.setdefault(name, spec)
    parser = argparse.ArgumentParser(
        prog="lambdaexec", description="Run Python calls on local worker processes or AWS Lambda.",
        epilog="Settings come from LAMBDAEXEC_* variables and ~/.config/lambdaexec/config.ini.")
    parser.add_argument("--version", action="version", version=f"lambdaexec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except Exception as err:  # a clear one-line message, not a traceback, for setup errors
        from lambdaexec.errors import LambdaExecError

        if isinstance(err, LambdaExecError):
            print(f"lambdaexec {args.command}: {err}", file=sys.stderr)
            return 1
        raise

