"""The CLI's argparse, refusing a bad argument in one line (exit code 2) instead of usage + message."""

from __future__ import annotations

import argparse

from prismlab.errors import PrismlabError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage + message."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class UsageError(PrismlabError):
    exit_code = 2
