"""fence: a PaaS node agent that stages and runs apps in unprivileged containers."""

__version__ = "0.1.0"
