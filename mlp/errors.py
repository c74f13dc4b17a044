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
