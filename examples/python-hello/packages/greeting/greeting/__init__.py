"""The greeting python-hello answers with."""

__version__ = "0.1.0"


def greet(instance_index: str | None = None) -> str:
    """Returns ``Hello from fence``, naming the instance when its index is known."""
    if instance_index:
        return f"Hello from fence (instance {instance_index})"
    return "Hello from fence"
