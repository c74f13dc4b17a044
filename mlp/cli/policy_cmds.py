"""Commands of this area register on `mlp.cli.app` here."""

from mlp.cli import app  # noqa: F401
