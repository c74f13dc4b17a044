"""The one error type the CLI turns into a single line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input from the user (flag, config value, credentials, endpoint).

    The message must name what is wrong and how to fix it, in one line.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(UserError):
    """A stack configuration value is missing or invalid; the message names the full config key."""


def describe(error: BaseException) -> str:
    """An error as one line: its type and message, for records that must not stop a batch."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
