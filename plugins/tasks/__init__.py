"""Built-in tasks: GSM8K, BIG-Bench Hard, MATH and MATH-500, ARC, SVAMP."""

from cotkit import hookimpl


@hookimpl
def register_tasks(register):
    """Register the built-in tasks."""
    from .bbh import BBH
    from .gsm8k import GSM8K

    for cls in (GSM8K, BBH):
        register(cls)
