"""``smpq-onnx hw list`` and ``smpq-onnx hw show NAME``."""

from __future__ import annotations

import click
import yaml

from smpq_onnx.cli.render import human, table
from smpq_onnx.hardware.profile import builtin_profile_names, load_profile


@click.group()
def hw() -> None:
    """Device profiles."""


@hw.command("list")
def list_profiles() -> None:
    """List the built-in device profiles."""
    rows = []
    for name in builtin_profile_names():
        profile = load_profile(name)
        options = [str(o) for o in profile.options]
        shown = ", ".join(options) if len(options) <= 5 else f"{len(options)} options"
        rows.append([name, shown, human(profile.memory.flash_bytes, "B"),
                     human(profile.memory.sram_bytes, "B"), profile.description[:60]])
    click.echo(table(["name", "options", "flash", "sram", "description"], rows))


@hw.command("show")
@click.argument("name")
def show_profile(name: str) -> None:
    """Show one profile (a built-in NAME or a path to a .yaml file), validated."""
    profile = load_profile(name)
    data = profile.model_dump(mode="json", exclude_none=True)
    data["legal_options"] = [str(o) for o in profile.options]
    click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
