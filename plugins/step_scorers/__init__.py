"""Built-in step scorers."""

from cotkit import hookimpl


@hookimpl
def register_step_scorers(register):
    """Register the built-in step scorers."""
