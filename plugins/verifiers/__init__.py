"""Built-in verifiers."""

from cotkit import hookimpl


@hookimpl
def register_verifiers(register):
    """Register the built-in verifiers."""
