"""The one exception type users see: a one-line message saying what is wrong and how to fix it."""


class PrismlabError(Exception):
    """A user-facing error. The CLI prints `prismlab: error: <message>` and exits with `exit_code`."""

    exit_code = 1


class ConfigError(PrismlabError):
    """A bad config file, key or value (exit code 2, like a bad command-line argument)."""

    exit_code = 2
