"""Built-in methods."""

from cotkit import hookimpl


@hookimpl
def register_methods(register):
    """Register the built-in methods."""
    from .star import Star

    register(Star)

    from .pad import Pad

    register(Pad)

    from .finetune_cot import FinetuneCoT
    from .irpo import IterativeRPO

    register(FinetuneCoT)
    register(IterativeRPO)

    from .sft import SFTBaseline

    register(SFTBaseline)

    from .trice import Trice

    register(Trice)

    from .quiet_star import QuietStar

    register(QuietStar)

    from .grpo import Grpo

    register(Grpo)


@hookimpl
def register_backends(register):
    """Backends that come with a method: decoding with Quiet-STaR's thoughts."""
    from .quiet_star_decode import QuietStarBackend

    register(QuietStarBackend)
