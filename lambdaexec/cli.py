"""The ``lambdaexec`` command: ``hello``, ``demo`` (and the AWS subcommands where installed)."""

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
    from lambdaexec import LambdaExecutor

    with LambdaExecutor() as ex:
        print("function returned:", ex.submit(_greet, "world").result())
    return 0


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calls", type=int, default=16, help="number of DGEMM calls (default 16)")
    p.add_argument("--size", type=int, default=1024, help="matrix side n (default 1024)")
    p.add_argument("--loops", type=int, default=4, help="multiplications per call (default 4)")


@command("demo", "many single-threaded DGEMM calls: aggregate GFLOPS and a call timeline", _demo_arguments)
def demo(args: argparse.Namespace) -> int:
    from lambdaexec import LambdaExecutor, demo

    with LambdaExecutor() as ex:
        print(f"backend {ex.config.backend}, storage {ex.config.storage}, "
              f"{ex.config.resolved_workers()} workers")
        print(demo.report(demo.run(ex, args.calls, args.size, args.loops)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lambdaexec`` console script."""
    from lambdaexec.aws.commands import COMMANDS as AWS_COMMANDS  # deploy, teardown, doctor, emulate

    for name, spec in AWS_COMMANDS.items():
        COMMANDS.setdefault(name, spec)
    parser = argparse.ArgumentParser(
        prog="lambdaexec", description="Run Python calls on local worker processes or AWS Lambda.",
        epilog="Settings come from LAMBDAEXEC_* variables and ~/.config/lambdaexec/config.ini.")
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


if __name__ == "__main__":
    sys.exit(main())
