"""The `hf` backend: batched sampling with transformers on CPU or GPU.

How a batch is decoded (`_decode_batch`): requests are sorted by prompt length and cut into
batches; each batch is left-padded, prefilled once into a KV cache, then decoded one token per
step. A row that produces end-of-sequence, completes a stop string or reaches `max_new_tokens`
leaves the batch at once: its rows are dropped from the cache, so finished samples cost nothing.

Reproducible sampling: every request (prompt i, sample j) owns a `torch.Generator` seeded with
`seeds[i] + j` and draws exactly one uniform number from it per generated token (inverse-CDF
sampling over the temperature/top-p distribution). A sample therefore depends only on its prompt,
its seed and the model, never on which other prompts share its batch or where it sits in it (up
to floating-point differences between batch shapes, which move a draw only when it lies within
about 1e-6 of a boundary between two tokens).

Greedy decoding (temperature 0) is deterministic, so identical prompts are decoded once and the
result is repeated for every copy and every one of the `n` samples.

Encoder-decoder models (T5, Flan-T5, CodeT5; `is_encoder_decoder` in their config) go through the
same loop: the prompts are encoded once and the decoder starts from its start token, caching its
self- and cross-attention, so nothing is padded on the left and the prompt is never echoed.
Log-likelihoods feed the context to the encoder and score the continuation as decoder labels.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cotkit import (
    Backend,
    ConfigError,
    Generation,
    ModelError,
    Prompt,
    SamplingParams,
    cache_kwarg,
    option,
    sample_seed,
    with_soft_prompt,
)

from .common import check_params, cut_at_stop, encode_prompt, is_oom, pair_ids, prompt_seed, render_prompt

#: Rows decoded together when `batch_size="auto"`. On a few CPU cores a 32-row decode step of a
#: ~100M-parameter model is compute-bound already, so more rows only add padding and memory;
#: a GPU has room for far more.
AUTO_BATCH_CPU = 32
AUTO_BATCH_GPU = 128


@dataclass
class _Request:
    ids: list[int]
    seed: int
    #: (prompt index, sample index) pairs that receive this request's generation.
    targets: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class _Row:
    """One request's decoding state inside a batch."""

    request: int
    tokens: list[int] = field(default_factory=list)
    generator: Any = None
    finish: str | None = None


@dataclass
class HFConfig:
    """Options of the `hf` backend (`-B KEY=VALUE`, `backend_options:` in a run config)."""

    device: str = option("auto", help="auto (cuda when a GPU is there, else cpu), cpu, cuda, cuda:1, ...")
    dtype: str = option(
        "auto",
        help="auto (float32 on CPU; bfloat16 on GPU, float16 where it lacks bf16), float32 (fp32), bfloat16 (bf16) or float16 (fp16)",
    )
    batch_size: int | str = option(
        "auto", help=f"rows decoded together, or auto ({AUTO_BATCH_CPU} on CPU, {AUTO_BATCH_GPU} on GPU)"
    )
    trust_remote_code: bool = option(False, help="run the model repository's own Python code (needed by a few models)")

    def __post_init__(self) -> None:
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"backend hf option batch_size={self.batch_size!r}: expected a positive integer or auto")


class _CausalDecoding:
    """A batch of prompts prefilled into one KV cache, then decoded one token per row per step.

    The prompts' longest common token prefix (a few-shot prompt's exemplars, a shared instruction)
    is prefilled once for the whole batch and its cache copied to every row; only the rest of each
    prompt is left-padded and prefilled per row, after it (the mask hides the padding between the
    two and positions count real tokens only). It saves each row's prefill of the exemplars; on 2
    CPU cores, where decoding dominates, 16 rows of GSM8K's 798-token 8-shot prompt sampled 64
    tokens 1.05x faster (benchmarks/prefix_sharing.py).
    """

    def __init__(self, model: Any, prompts: list[list[int]], pad: int, device: Any):
        import torch
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.cache_arg = {cache_kwarg(model): self.cache}
        shared = shared_prefix_length(prompts, virtual=int(getattr(model, "virtual_tokens", 0)))
        if shared:
            prefix = torch.tensor([prompts[0][:shared]], dtype=torch.long, device=device)
            with torch.inference_mode():
                self.model(input_ids=prefix, position_ids=torch.arange(shared, device=device)[None], **self.cache_arg, use_cache=True, logits_to_keep=1)
            self.cache.batch_repeat_interleave(len(prompts))
        rests = [p[shared:] for p in prompts]
        width = max(len(r) for r in rests)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, r in enumerate(rests):
            input_ids[b, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[b, width - len(r) :] = 1
        self.input_ids, rest_mask = input_ids.to(device), mask.to(device)
        self.positions = shared + (rest_mask.cumsum(-1) - 1).clamp(min=0)
        self.mask = torch.cat([rest_mask.new_ones((len(prompts), shared)), rest_mask], dim=1)
        self.next_pos = self.positions[:, -1] + 1

    def first_logits(self) -> Any:
        """Next-token logits of every prompt (the prefill of what follows the shared prefix)."""
        return self.model(
            input_ids=self.input_ids, attention_mask=self.mask, position_ids=self.positions,
            **self.cache_arg, use_cache=True, logits_to_keep=1,
        ).logits[:, -1, :]  # fmt: skip

    def keep_rows(self, index: Any) -> None:
        """Drop the rows that finished: only `index` stays in the batch."""
        self.cache.batch_select_indices(index)
        self.mask, self.next_pos = self.mask[index], self.next_pos[index]

    def next_logits(self, chosen: Any) -> Any:
        """Logits after appending each row's chosen token."""
        import torch

        self.mask = torch.cat([self.mask, self.mask.new_ones((len(chosen), 1))], dim=1)
        logits = self.model(
            input_ids=chosen[:, None], attention_mask=self.mask, position_ids=self.next_pos[:, None],
            **self.cache_arg, use_cache=True,
        ).logits[:, -1, :]  # fmt: skip
        self.next_pos = self.next_pos + 1
        return logits


class _Seq2SeqDecoding:
    """A batch of prompts encoded once; the decoder starts from its start token and caches self- and cross-attention."""

    def __init__(self, model: Any, prompts: list[list[int]], pad: int, device: Any):
        from transformers import DynamicCache, EncoderDecoderCache

        self.model = model
        self.input_ids, self.mask = _right_padded(prompts, pad, device)
        self.start = decoder_start_id(model, pad)
        decoder_config = model.config.get_text_config(decoder=True)
        self.cache = EncoderDecoderCache(DynamicCache(config=decoder_config), DynamicCache(config=decoder_config))
        self.cache_arg = {cache_kwarg(model): self.cache}
        self.encoded: Any = None

    def first_logits(self) -> Any:
        """Logits of each decoder's first token, after encoding the prompts."""
        from transformers.modeling_outputs import BaseModelOutput

        hidden = self.model.get_encoder()(input_ids=self.input_ids, attention_mask=self.mask).last_hidden_state
        self.encoded = BaseModelOutput(last_hidden_state=hidden)
        return self._decode(self.input_ids.new_full((len(self.input_ids), 1), self.start))

    def keep_rows(self, index: Any) -> None:
        """Drop the rows that finished: only `index` stays in the batch."""
        from transformers.modeling_outputs import BaseModelOutput

        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.encoded = BaseModelOutput(last_hidden_state=self.encoded.last_hidden_state[index])

    def next_logits(self, chosen: Any) -> Any:
        """Logits after feeding each row's chosen token to the decoder."""
        return self._decode(chosen[:, None])

    def _decode(self, tokens: Any) -> Any:
        return self.model(
            encoder_outputs=self.encoded, attention_mask=self.mask, decoder_input_ids=tokens,
            **self.cache_arg, use_cache=True,
        ).logits[:, -1, :]  # fmt: skip


#: A common prefix shorter than this is prefilled with each row: one more forward call would cost more than it saves.
MIN_SHARED_PREFIX = 16


def shared_prefix_length(prompts: list[list[int]], virtual: int = 0) -> int:
    """Tokens at the start of every prompt in the batch, leaving each at least one of its own.

    0 for one row, or when the prefix with the model's `virtual` soft-prompt tokens (which a soft
    prompt's prefill puts before it) is below MIN_SHARED_PREFIX.
    """
    if len(prompts) < 2:
        return 0
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n if n and n + virtual >= MIN_SHARED_PREFIX else 0


def _right_padded(rows: list[list[int]], pad: int, device: Any) -> tuple[Any, Any]:
    """Token rows right-padded into one tensor, and its attention mask (an encoder reads both ways, so
    the side padding goes on does not matter)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[b, : len(r)] = 1
    return ids.to(device), mask.to(device)


def decoder_start_id(model: Any, pad: int) -> int:
    """The token an encoder-decoder model's decoder starts from (T5: the pad token)."""
    for source in (model.config, model.generation_config):
        start = getattr(source, "decoder_start_token_id", None)
        if isinstance(start, int):
            return start
    return pad


class HFBackend(Backend):
    """Transformers: batched sampling with a KV cache, fp32 on CPU and bf16 on GPU (the default)."""

    name = "hf"
    Config = HFConfig

    def __init__(self, model: str, **options: Any):
        super().__init__(model, **options)
        from cotkit import resolve_model

        self.path = resolve_model(model)
        import torch

        cfg: HFConfig = self.config
        self.device = self._pick_device(cfg.device, torch)
        self.dtype = self._pick_dtype(cfg.dtype, self.device, torch)
        self._load(cfg.trust_remote_code)
        self.batch_size = self._batch_rows(cfg.batch_size)

    @classmethod
    def from_objects(cls, model: Any, tokenizer: Any, name: str = "in-memory", batch_size: int | str = "auto") -> HFBackend:
        """A backend around an already loaded transformers model and tokenizer (e.g. mid-training)."""
        self = cls.__new__(cls)
        Backend.__init__(self, name, batch_size=batch_size)
        self.path = name
        self.model = model
        self.device = model.device
        self.dtype = model.dtype
        self.tokenizer = tokenizer
        self._prepare_tokenizer()
        self.batch_size = self._batch_rows(self.config.batch_size)
        return self

    # -- loading -----------------------------------------------------------------------------

    @staticmethod
    def _pick_device(device: str, torch: Any) -> Any:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise ConfigError(f"backend hf option device={device!r}: {e}") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("backend hf option device=cuda: no CUDA GPU is available (use device=cpu)")
        return dev

    @staticmethod
    def _pick_dtype(dtype: str, device: Any, torch: Any) -> Any:
        if dtype == "auto":
            if device.type == "cuda":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.float32  # CPUs without bf16 instructions run bf16 ~2.5x slower
        known = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}  # fmt: skip
        if dtype not in known:
            raise ConfigError(f"backend hf option dtype={dtype!r}: expected auto, float32, bfloat16 or float16")
        return known[dtype]

    def _batch_rows(self, batch_size: int | str) -> int:
        """The `batch_size` option as a number of rows: `auto` depends on the device."""
        if batch_size == "auto":
            return AUTO_BATCH_GPU if self.device.type == "cuda" else AUTO_BATCH_CPU
        return int(batch_size)

    def _load(self, trust_remote_code: bool) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from cotkit import quiet_transformers

        quiet_transformers()  # a "Loading weights" bar per load drowns the run's own display
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust_remote_code)
            config = AutoConfig.from_pretrained(self.path, trust_remote_code=trust_remote_code)
            auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
            model = auto.from_pretrained(self.path, dtype=self.dtype, trust_remote_code=trust_remote_code)
            self.model = with_soft_prompt(model.to(self.device).eval(), self.path)  # a prompt-tuned checkpoint samples with its prompt
        except Exception as e:
            if is_oom(e):
                raise ModelError(
                    f"out of memory loading {self.model_name} on {self.device} in {self.dtype}: "
                    "use a smaller model, dtype=bfloat16, or a machine with more memory"
                ) from e
            from cotkit import first_line

            raise ModelError(f"cannot load model {self.model_name} from {self.path}: {type(e).__name__}: {first_line(e)}") from e
        self._prepare_tokenizer()

    def _prepare_tokenizer(self) -> None:
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
        eos: set[int] = set()
        for source in (getattr(self.model.generation_config, "eos_token_id", None), tok.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif source:
                eos.update(int(x) for x in source)
        self.eos_ids = eos
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        self.encoder_decoder = bool(getattr(self.model.config, "is_encoder_decoder", False))

    def _check_open(self) -> None:
        if getattr(self, "model", None) is None:
            raise ModelError(f"backend hf for {self.model_name} is closed: load it again with load_backend")

    # -- prompts -----------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The text a prompt becomes: a string as-is, chat messages through the tokenizer's chat template."""
        return render_prompt(self.tokenizer, prompt, self.model_name)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt (a chat template writes its own special tokens, so none are added)."""
        return encode_prompt(self.tokenizer, prompt, self.model_name)

    # -- generation --------------------------------------------------------------------------

    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        progress: bool = True,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Generation]]:
        """`params.n` generations per prompt, in prompt order; sample j of prompt i is seeded with `seeds[i] + j`.

        Without `seeds`, a prompt's seed comes from `params.seed` and its text, so it does not
        depend on the other prompts in the call.
        """
        self._check_open()
        check_params(params)
        if seeds is not None and len(seeds) != len(prompts):
            raise ConfigError(f"generate: {len(seeds)} seeds for {len(prompts)} prompts")
        stops = [s for s in (params.stop or []) if s]
        ids = [self._fit(self.encode(p), params.max_new_tokens) for p in prompts]
        if seeds is None:
            seeds = [prompt_seed(params.seed, self.render(p)) for p in prompts]
        requests = self._requests(ids, seeds, params)
        results: list[Generation | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda k: -len(requests[k].ids))
        with _Progress(progress, len(requests), self.model_name) as bar:
            start, size = 0, self.batch_size
            while start < len(order):
                batch = order[start : start + size]
                try:
                    outs = self._decode_batch([requests[k] for k in batch], params, stops, bar.advance_tokens)
                except Exception as e:
                    if not is_oom(e):
                        raise
                    self._free_cuda()
                    if size == 1:
                        raise ModelError(
                            f"out of memory generating with {self.model_name} on {self.device} even one prompt at a "
                            f"time ({len(requests[batch[0]].ids)} prompt tokens + {params.max_new_tokens} new): "
                            "lower --max-new-tokens, use shorter prompts, or a smaller model"
                        ) from e
                    size = max(1, size // 2)
                    bar.note(f"out of memory: batch size lowered to {size}")
                    continue
                for k, out in zip(batch, outs):
                    results[k] = out
                bar.advance_requests(len(batch))
                start += len(batch)
        grid: list[list[Generation]] = [[Generation("") for _ in range(params.n)] for _ in prompts]
        for request, out in zip(requests, results):
            for i, j in request.targets:
                grid[i][j] = Generation(out.text, out.n_tokens, out.finish_reason)
        return grid

    def _fit(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Keep the last tokens of a prompt that would overflow the model's context (as lm-eval does).

        An encoder-decoder model's prompt has the encoder to itself: only its own length counts.
        """
        new_tokens = 0 if self.encoder_decoder else max_new_tokens
        if self.max_length and len(ids) + new_tokens > self.max_length:
            keep = max(1, self.max_length - new_tokens)
            if len(ids) > keep:
                from cotkit import err

                err.print(f"[yellow]warning: a prompt of {len(ids)} tokens was cut to its last {keep} to fit the context[/yellow]")
                return ids[-keep:]
        return ids

    @staticmethod
    def _requests(ids: list[list[int]], seeds: Sequence[int], params: SamplingParams) -> list[_Request]:
        if params.temperature == 0:  # deterministic: one decode per distinct prompt
            unique: dict[tuple[int, ...], _Request] = {}
            for i, prompt_ids in enumerate(ids):
                req = unique.setdefault(tuple(prompt_ids), _Request(prompt_ids, 0))
                req.targets.extend((i, j) for j in range(params.n))
            return list(unique.values())
        return [
            _Request(prompt_ids, sample_seed(int(seeds[i]), j), [(i, j)])
            for i, prompt_ids in enumerate(ids)
            for j in range(params.n)
        ]

    def _decode_batch(
        self,
        requests: list[_Request],
        params: SamplingParams,
        stops: list[str],
        on_tokens: Callable[[int], None],
    ) -> list[Generation]:
        import torch

        sampling = params.temperature > 0
        rows = [
            _Row(b, generator=torch.Generator().manual_seed(r.seed) if sampling else None) for b, r in enumerate(requests)
        ]
        window = max((len(s) for s in stops), default=0) + 2  # tokens that can hold a fresh stop string
        state_class = _Seq2SeqDecoding if self.encoder_decoder else _CausalDecoding
        state = state_class(self.model, [r.ids for r in requests], self.tokenizer.pad_token_id, self.device)
        active = list(range(len(rows)))

        with torch.inference_mode():
            logits = state.first_logits()
            while True:
                chosen = self._choose(logits.float(), params, [rows[a].generator for a in active])
                keep: list[int] = []
                for k, token in enumerate(chosen.tolist()):
                    row = rows[active[k]]
                    row.tokens.append(token)
                    if token in self.eos_ids:
                        row.finish = "stop"
                    elif stops and self._hit_stop(row.tokens[-window:], stops):
                        row.finish = "stop"
                    elif len(row.tokens) >= params.max_new_tokens:
                        row.finish = "length"
                    else:
                        keep.append(k)
                on_tokens(len(active))
                if not keep:
                    break
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=self.device)
                    state.keep_rows(index)
                    chosen = chosen[index]
                    active = [active[k] for k in keep]
                logits = state.next_logits(chosen)
        del state  # its KV cache
        return [self._finish(row, stops) for row in rows]

    def _choose(self, logits: Any, params: SamplingParams, generators: list[Any]) -> Any:
        """The next token of each row: argmax at temperature 0, else inverse-CDF sampling with each row's generator."""
        import torch

        if params.temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest head of the sorted distribution whose mass reaches top_p.
            probs = probs.masked_fill(probs.cumsum(-1) - probs > params.top_p, 0.0)
        else:
            order = None
        cdf = probs.double().cumsum(dim=-1)
        draws = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators]).to(cdf.device)
        picked = torch.searchsorted(cdf, (draws * cdf[:, -1]).unsqueeze(-1), right=True)
        # Rounding can put a draw at the very top of the CDF: take the last token with probability.
        last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(-1, keepdim=True)
        picked = torch.minimum(picked, last)
        picked = picked.squeeze(-1)
        return order.gather(-1, picked.unsqueeze(-1)).squeeze(-1) if order is not None else picked

    def _hit_stop(self, tail: list[int], stops: list[str]) -> bool:
        text = self.tokenizer.decode(tail, skip_special_tokens=True)
        return any(s in text for s in stops)

    def _finish(self, row: _Row, stops: list[str]) -> Generation:
        tokens = row.tokens[:-1] if row.tokens and row.tokens[-1] in self.eos_ids else row.tokens
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = cut_at_stop(text, stops)
        if cut is not None:
            return Generation(cut, len(row.tokens), "stop")
        return Generation(text, len(row.tokens), row.finish or "length")

    # -- scoring -----------------------------------------------------------------------------

    def loglikelihood(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """Sum of log-probabilities of each continuation given its context."""
        return [lp for lp, _ in self.loglikelihood_greedy(pairs)]

    def loglikelihood_greedy(self, pairs: list[tuple[Prompt, str]]) -> list[tuple[float, bool]]:
        """(sum log-prob of the continuation, whether greedy decoding would produce it) per pair (lm-eval's shape).

        Context and continuation are tokenized together and split where the context's tokens end,
        with the context's trailing whitespace moved to the continuation (as lm-eval does), so
        the continuation is scored in the tokenization the model would actually see. An
        encoder-decoder model reads the context in its encoder and the continuation, tokenized on
        its own, as decoder labels (as lm-eval's seq2seq models do).
        """
        self._check_open()
        if self.encoder_decoder:
            items = [self._seq2seq_score_ids(ctx, cont) for ctx, cont in pairs]
            score = self._score_seq2seq
        else:
            items = [self._score_ids(ctx, cont) for ctx, cont in pairs]
            score = self._score_causal
        out: list[tuple[float, bool] | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda k: -len(items[k][0]))
        size = self.batch_size
        start = 0
        while start < len(order):
            batch = order[start : start + size]
            try:
                scores = score([items[k] for k in batch])
            except Exception as e:
                if not is_oom(e):
                    raise
                self._free_cuda()
                if size == 1:
                    raise ModelError(f"out of memory scoring with {self.model_name}: use shorter contexts or a smaller model") from e
                size = max(1, size // 2)
                continue
            for k, got in zip(batch, scores):
                out[k] = got
            start += len(batch)
        return out  # type: ignore[return-value]

    def _score_causal(self, items: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """(log-prob, greedy) of each (context + continuation ids, continuation length), in one left-padded forward."""
        import torch

        width = max(len(seq) for seq, _ in items)
        keep = max(n_cont for _, n_cont in items) + 1
        ids = torch.full((len(items), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for b, (seq, _) in enumerate(items):
            ids[b, width - len(seq) :] = torch.tensor(seq)
            mask[b, width - len(seq) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=False, logits_to_keep=keep,
            ).logits.float()  # fmt: skip
        logprobs = torch.log_softmax(logits, dim=-1)
        out = []
        for b, (seq, n_cont) in enumerate(items):
            if n_cont == 0:
                out.append((0.0, True))
                continue
            target = torch.tensor(seq[-n_cont:], device=self.device)
            # Position t of the kept logits predicts token t+1; the last kept one predicts nothing.
            rows = logprobs[b, keep - 1 - n_cont : keep - 1]
            out.append((rows.gather(-1, target[:, None]).sum().item(), bool((rows.argmax(-1) == target).all().item())))
        return out

    def _score_seq2seq(self, items: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(log-prob, greedy) of each (context ids, continuation ids): the context encoded, the continuation as labels."""
        import torch

        ids, mask = _right_padded([ctx for ctx, _ in items], self.tokenizer.pad_token_id, self.device)
        labels = torch.full((len(items), max(1, *(len(cont) for _, cont in items))), -100, dtype=torch.long)
        for b, (_, cont) in enumerate(items):
            labels[b, : len(cont)] = torch.tensor(cont, dtype=torch.long)
        labels = labels.to(self.device)
        with torch.inference_mode():
            # Given labels, the model builds its decoder inputs (labels shifted right after its start token).
            logits = self.model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        out = []
        for b, (_, cont) in enumerate(items):
            rows, target = logprobs[b, : len(cont)], labels[b, : len(cont)]
            out.append((rows.gather(-1, target[:, None]).sum().item(), bool((rows.argmax(-1) == target).all().item())))
        return out

    def _score_ids(self, context: Prompt, continuation: str) -> tuple[list[int], int]:
        """Token ids and continuation length of a pair, cut on the left to fit the context window."""
        whole, n_cont = pair_ids(self.tokenizer, context, continuation, self.model_name)
        if self.max_length and len(whole) > self.max_length:
            whole = whole[-self.max_length :]
            n_cont = min(n_cont, len(whole) - 1)
        return whole, n_cont

    def _seq2seq_score_ids(self, context: Prompt, continuation: str) -> tuple[list[int], list[int]]:
        """Encoder ids of the context and label ids of the continuation (the context's trailing whitespace moved to it)."""
        ctx = self.render(context)
        trailing = len(ctx) - len(ctx.rstrip())
        if trailing:
            ctx, continuation = ctx[:-trailing], ctx[-trailing:] + continuation
        ctx_ids = list(self.tokenizer(ctx, add_special_tokens=isinstance(context, str)).input_ids)
        cont_ids = list(self.tokenizer(continuation, add_special_tokens=False).input_ids)
        return ctx_ids or [self.tokenizer.eos_token_id], cont_ids

    # -- memory ------------------------------------------------------------------------------

    def _free_cuda(self) -> None:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def close(self) -> None:
        """Drop the model and tokenizer and return their memory (GPU memory too)."""
        self.model = None
        self.tokenizer = None
        self._free_cuda()


class _Progress:
    """A rich progress bar on stderr: requests done and generated tokens per second."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled, total, label
        self.tokens = 0
        self.started = time.perf_counter()

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            from cotkit import err

            self.bar = Progress(
                TextColumn("[bold]sampling[/bold] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[tps]:>7.1f} tok/s"),
                TimeElapsedColumn(),
                console=err,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total, tps=0.0)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)

    def advance_tokens(self, count: int) -> None:
        self.tokens += count
        if self.enabled:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.bar.update(self.task, tps=self.tokens / elapsed)

    def advance_requests(self, count: int) -> None:
        if self.enabled:
            self.bar.advance(self.task, count)

    def note(self, text: str) -> None:
        from cotkit import err

        (self.bar.console if self.enabled else err).print(f"[yellow]{text}[/yellow]")
