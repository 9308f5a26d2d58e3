"""The AWS subcommands of ``lambdaexec``: ``deploy``, ``teardown``, ``doctor``, ``emulate``.

A table (:data:`COMMANDS`) that :mod:`lambdaexec.cli` reads; this module does not import the
CLI, and imports the modules doing the work only when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Callable

from lambdaexec.config import load_config


def _one_line(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run``, with a network or credential failure talking to AWS raised as one
    :class:`~lambdaexec.aws.clients.DeployError` line (the CLI prints it) instead of a traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except Exception as err:
            from lambdaexec.aws.clients import DeployError, aws_failure

            failure = aws_failure(err)
            if failure is None:
                raise
            raise DeployError(failure[1]) from None

    wrapped.__doc__ = run.__doc__
    return wrapped


def _deploy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--package-only", metavar="PATH", help="only write the deployment zip to PATH")
    p.add_argument("--build-image", action="store_true",
                   help="build worker/Dockerfile (numpy, scipy) with docker, push it to ECR and deploy it")


@_one_line
def deploy_command(args: argparse.Namespace) -> int:
    """``lambdaexec deploy``."""
    from lambdaexec.aws.package import build_image, build_package
    from lambdaexec.aws.provision import deploy

    if args.package_only:
        sha = build_package(args.package_only)
        print(f"wrote {args.package_only} (CodeSha256 {sha})")
        return 0
    config = load_config()
    if args.build_image:
        config = load_config({"image_uri": build_image(config)})
    deploy(config)
    return 0


@_one_line
def teardown_command(args: argparse.Namespace) -> int:
    """``lambdaexec teardown``."""
    from lambdaexec.aws.provision import teardown

    teardown(load_config(), keep_bucket=args.keep_bucket)
    return 0


@_one_line
def doctor_command(args: argparse.Namespace) -> int:
    """``lambdaexec doctor``."""
    from lambdaexec.aws.doctor import doctor

    return 0 if doctor(load_config(), roundtrip_check=not args.no_roundtrip) else 1


def _emulate_arguments(p: argparse.ArgumentParser) -> None:
    from lambdaexec.aws import emulator

    emulator.add_arguments(p)


def emulate_command(args: argparse.Namespace) -> int:
    """``lambdaexec emulate``."""
    from lambdaexec.aws import emulator

    return emulator.run(args)


#: name -> (help, add_arguments, run), as :data:`lambdaexec.cli.COMMANDS` holds them
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "deploy": ("create or update the S3 bucket, IAM role and Lambda worker function", _deploy_arguments,
               deploy_command),
    "teardown": ("delete what deploy made (function, role, logs, and its bucket)",
                 lambda p: p.add_argument("--keep-bucket", action="store_true",
                                          help="keep the bucket (delete job data only)"), teardown_command),
    "doctor": ("check the AWS setup, one line per check with the fix for each problem",
               lambda p: p.add_argument("--no-roundtrip", action="store_true", help="skip the hello-world invocation"),
               doctor_command),
    "emulate": ("serve the Lambda Invoke API locally; run the deployment package under awslambdaric",
                _emulate_arguments, emulate_command),
}
