"""The `rsp` command line: a thin shell over the core and the adapters.

Start-up must stay fast: command modules import Prefect, great-expectations,
Inspect or boto3 inside the command that needs them, never at module level.
Exit codes: 0 ok; 1 the command ran and found a problem (invalid policy,
loosening diff with --fail-on-loosening, halt in force for `gate check`);
2 bad usage or unreadable input.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

import rsp.commands

app = typer.Typer(
    name="rsp",
    help="Scaling gate: turn a Responsible Scaling Policy into checks that can stop a training run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Each module under rsp/commands defines `register(app)`; adding a command is adding a file.
    for info in sorted(pkgutil.iter_modules(rsp.commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"rsp.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
