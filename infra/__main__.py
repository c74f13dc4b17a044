"""Entry point the Pulumi CLI runs (`main: infra/` in Pulumi.yaml) for the environment stacks."""

import pulumi

from infra.config import load_runtime_config
from infra.environment import build_environment
from mlp.errors import ConfigError

try:
    stack_config = load_runtime_config()
except ConfigError as error:
    # RunError prints the one-line message without a Python traceback.
    raise pulumi.RunError(str(error)) from None

build_environment(stack_config)
