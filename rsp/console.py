"""Shared CLI helpers: one-line errors, exit codes, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

EXIT_OK = 0
EXIT_PROBLEM = 1  # the command ran and found something wrong (invalid policy, halt in force, loosening)
EXIT_USAGE = 2  # bad arguments or unreadable input


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def die(command: str, message: object, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr naming the command (`rsp halt list: ...`), whitespace folded, then exit `code`."""
    typer.echo(f"rsp {command}: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


POLICY_HELP = "Bundled framework id or policy file (default: RSP_POLICY or the config's `policy`, else anthropic-rsp)."


def configured_policy(policy: str | None) -> str:
    """`--policy` as given, else the configured one: the policy the scaling gate reads (RSP_POLICY, the
    config's `policy`) is the one the pipeline evaluates under, never a bundled default beside it."""
    if policy:
        return policy
    from tasks.settings import get_settings

    return get_settings().policy
