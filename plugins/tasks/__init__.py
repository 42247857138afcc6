"""Built-in tasks: GSM8K, BIG-Bench Hard, MATH and MATH-500, ARC, SVAMP."""

from cotkit import hookimpl


@hookimpl
def register_tasks(register):
    """Register the built-in tasks."""
    from .arc import ARC
    from .bbh import BBH
    from .gsm8k import GSM8K
    from .math import MATH, MATH500
    from .svamp import SVAMP

    for cls in (GSM8K, BBH, MATH, MATH500, ARC, SVAMP):
        register(cls)
