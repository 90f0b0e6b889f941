"""The ``smpq-onnx`` command: one-line errors with exit codes, subcommands registered here."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from smpq_onnx._version import __version__
from smpq_onnx.cli.apply_cmd import apply_command
from smpq_onnx.cli.eval_cmd import eval_command
from smpq_onnx.cli.hw import hw
from smpq_onnx.cli.profile_cmd import profile
from smpq_onnx.cli.search_cmd import search_command
from smpq_onnx.errors import SmpqError

INTERNAL_ERROR_EXIT = 1


class _ErrorReportingGroup(click.Group):
    """Turns SmpqError into one line on stderr and its exit code; never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SmpqError as e:
            click.echo(f"smpq-onnx: error: {e}", err=True)
            sys.exit(e.exit_code)
        except click.UsageError as e:  # a bad option or argument: one line, not the usage block
            command = e.ctx.command_path if e.ctx is not None else "smpq-onnx"
            click.echo(f"smpq-onnx: error: {e.format_message()} (see '{command} --help')",
                       err=True)
            sys.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # stdout closed early (e.g. piped into head): not an error
            sys.stderr.close()
            sys.exit(0)
        except Exception as e:
            if os.environ.get("SMPQ_DEBUG"):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            click.echo(f"smpq-onnx: internal error: {type(e).__name__}: {first} "
                       "(rerun with SMPQ_DEBUG=1 for the traceback and report it)", err=True)
            sys.exit(INTERNAL_ERROR_EXIT)


@click.group(cls=_ErrorReportingGroup,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smpq-onnx")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Hardware-aware mixed-precision quantization of ONNX models (SMPQ)."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


cli.add_command(hw)
cli.add_command(profile)
cli.add_command(eval_command)
cli.add_command(apply_command)
cli.add_command(search_command)


def main() -> None:
    cli(prog_name="smpq-onnx")
