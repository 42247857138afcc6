"""Built-in step scorers."""

from cotkit import hookimpl


@hookimpl
def register_step_scorers(register):
    """Register the built-in step scorers."""
    from .arith import ArithScorer

    register(ArithScorer)
    from .exec import ExecScorer

    register(ExecScorer)
    from .faithfulness import FaithfulnessScorer

    register(FaithfulnessScorer)
    from .prm import PRMScorer

    register(PRMScorer)
