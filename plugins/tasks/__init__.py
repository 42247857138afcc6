"""Built-in tasks."""

from cotkit import hookimpl


@hookimpl
def register_tasks(register):
    """Register the built-in tasks."""
