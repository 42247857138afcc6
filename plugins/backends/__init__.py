"""Built-in backends."""

from cotkit import hookimpl


@hookimpl
def register_backends(register):
    """Register the built-in backends."""
    from .hf import HFBackend
    from .openai_http import OpenAIHTTPBackend
    from .vllm import VLLMBackend

    register(HFBackend)
    register(VLLMBackend)
    register(OpenAIHTTPBackend)
