"""ml-platform: cheap, safe, fully tagged GPU infrastructure on AWS, and the FinOps loop around it."""

__version__ = "0.1.0"
