"""Built-in verifiers."""

from cotkit import hookimpl


@hookimpl
def register_verifiers(register):
    """Register the built-in verifiers."""
    from .exact_match import ExactMatch

    register(ExactMatch)
    from .math_equiv import MathEquiv

    register(MathEquiv)
    from .program import ProgramVerifier

    register(ProgramVerifier)
