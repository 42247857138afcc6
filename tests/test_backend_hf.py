"""The hf backend on the tiny model: batching, padding, n, seeds, stops, lengths, chat, log-likelihoods, close."""

from __future__ import annotations

import gc
import weakref

import pytest

from cotkit.contracts import SamplingParams
from cotkit.errors import ConfigError, ModelError

PROMPTS = [
    "Q: Natalia sold 48 clips in April and 12 more in May. How many clips did Natalia sell?\nA:",
    "Q: Ken",
    "Q: Betty baked 7 cookies. How many",
    "True or False?",
]


@pytest.fixture(scope="module")
def backend(tiny_model):
    from cotkit.models import load_backend

    be = load_backend("hf", model=str(tiny_model), batch_size=3)
    yield be
    be.close()


def reference_greedy(backend, prompt: str, max_new_tokens: int) -> str:
    """transformers' own generate() on one unpadded prompt."""
    tok, model = backend.tokenizer, backend.model
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)


def test_greedy_batches_match_transformers_generate_one_prompt_at_a_time(backend):
    got = backend.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=10), progress=False)
    assert len(got) == len(PROMPTS)
    for prompt, gens in zip(PROMPTS, got):
        assert len(gens) == 2 and gens[0] == gens[1]
        assert gens[0].text == reference_greedy(backend, prompt, 10)
        assert (gens[0].n_tokens, gens[0].finish_reason) == (10, "length")


def test_results_keep_prompt_order_whatever_the_length_sorting(backend):
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=5)
    forward = backend.generate(PROMPTS, params, progress=False)
    backward = backend.generate(PROMPTS[::-1], params, progress=False)
    assert [g[0].text for g in forward] == [g[0].text for g in backward][::-1]


def test_a_seeded_sample_is_the_same_alone_and_inside_any_batch(backend):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=12)
    alone = backend.generate([PROMPTS[1]], params, progress=False, seeds=[1234])[0]
    mixed = backend.generate(PROMPTS, params, progress=False, seeds=[7, 1234, 8, 9])[1]
    assert [g.text for g in alone] == [g.text for g in mixed]
    assert len({g.text for g in alone}) == 3, "the n samples of one prompt must differ"
    # Sample j is seeded with seeds[i] + j: sample 2 re-drawn alone with seed 1236.
    [[third]] = backend.generate([PROMPTS[1]], SamplingParams(temperature=1.0, max_new_tokens=12), progress=False, seeds=[1236])
    assert third.text == alone[2].text
    other = backend.generate([PROMPTS[1]], params, progress=False, seeds=[99])[0]
    assert [g.text for g in other] != [g.text for g in alone]


def test_top_p_keeps_only_the_head_of_the_distribution(backend):
    greedy = backend.generate([PROMPTS[0]], SamplingParams(max_new_tokens=8), progress=False)[0][0].text
    tiny_p = backend.generate([PROMPTS[0]], SamplingParams(n=3, temperature=1.0, top_p=1e-6, max_new_tokens=8), progress=False)[0]
    assert [g.text for g in tiny_p] == [greedy] * 3


def test_stop_strings_cut_the_completion_and_end_generation_early(backend):
    params = SamplingParams(temperature=1.0, max_new_tokens=40, seed=3)
    [[full]] = backend.generate([PROMPTS[0]], params, progress=False, seeds=[42])
    assert full.n_tokens == 40 and len(full.text) > 12
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    expected = full.text[: full.text.find(stop)]
    stopped_params = SamplingParams(temperature=1.0, max_new_tokens=40, seed=3, stop=["never appears", stop])
    [[cut]] = backend.generate([PROMPTS[0]], stopped_params, progress=False, seeds=[42])
    assert cut.text == expected
    assert cut.finish_reason == "stop" and cut.n_tokens < full.n_tokens


def test_end_of_sequence_finishes_a_sample_and_is_not_in_its_text(backend):
    [[first]] = backend.generate([PROMPTS[1]], SamplingParams(max_new_tokens=3), progress=False)
    repeated = backend.tokenizer(first.text).input_ids[0]
    saved = set(backend.eos_ids)
    backend.eos_ids = saved | {repeated}  # make the token greedy decoding emits first an end-of-sequence
    try:
        [[g]] = backend.generate([PROMPTS[1]], SamplingParams(max_new_tokens=3), progress=False)
    finally:
        backend.eos_ids = saved
    assert (g.text, g.n_tokens, g.finish_reason) == ("", 1, "stop")


def test_max_new_tokens_bounds_every_sample(backend):
    got = backend.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=5, seed=1), progress=False)
    for gens in got:
        for g in gens:
            assert g.n_tokens <= 5
            assert g.finish_reason == ("length" if g.n_tokens == 5 else "stop")


def test_chat_prompts_are_rendered_with_the_chat_template(backend):
    messages = [{"role": "user", "content": "How many clips did Natalia sell?"}]
    rendered = backend.render(messages)
    assert rendered.endswith("<|im_start|>assistant\n") and "How many clips" in rendered
    assert backend.encode(messages) == backend.tokenizer(rendered, add_special_tokens=False).input_ids
    chat, text = backend.generate([messages, rendered], SamplingParams(max_new_tokens=8), progress=False)
    assert chat[0].text == text[0].text


def test_a_chat_prompt_without_a_chat_template_is_a_clear_error(backend):
    saved = backend.tokenizer.chat_template
    backend.tokenizer.chat_template = None
    try:
        with pytest.raises(ModelError, match="has no chat template"):
            backend.generate([[{"role": "user", "content": "hi"}]], SamplingParams(), progress=False)
    finally:
        backend.tokenizer.chat_template = saved


def manual_loglikelihood(backend, context: str, continuation: str) -> float:
    import torch

    tok = backend.tokenizer
    ctx = tok(context).input_ids
    cont = tok(context + continuation).input_ids[len(ctx) :]
    with torch.no_grad():
        logits = backend.model(torch.tensor([ctx + cont])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return sum(logprobs[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))


def test_loglikelihood_matches_a_manual_computation(backend):
    pairs = [
        ("Q: Natalia sold 48 clips", " in April."),
        ("Q: Ken", " baked 7 cookies and 3 more. The answer is 10."),
        ("True or", " False"),
        ("Q: Betty", " read"),
    ]
    got = backend.loglikelihood(pairs)
    for (ctx, cont), lp in zip(pairs, got):
        assert lp == pytest.approx(manual_loglikelihood(backend, ctx, cont), abs=1e-4)
    # Trailing whitespace of the context belongs to the continuation (lm-eval's convention).
    assert backend.loglikelihood([("Q: Natalia sold 48 ", "clips in April.")])[0] == pytest.approx(
        manual_loglikelihood(backend, "Q: Natalia sold 48", " clips in April."), abs=1e-4
    )


def test_loglikelihood_greedy_flags_the_greedy_continuation(backend):
    [[greedy]] = backend.generate([PROMPTS[1]], SamplingParams(max_new_tokens=4), progress=False)
    [(lp, is_greedy), (_, other)] = backend.loglikelihood_greedy([(PROMPTS[1], greedy.text), (PROMPTS[1], " 77 apples")])
    assert is_greedy and not other and lp < 0


def test_progress_bar_reports_tokens_per_second(backend, capsys):
    backend.generate(PROMPTS[:2], SamplingParams(max_new_tokens=3), progress=True)
    err = capsys.readouterr().err
    assert "tok/s" in err and "2/2" in err


def test_out_of_memory_halves_the_batch_then_says_what_to_do(backend, monkeypatch):
    real = type(backend)._decode_batch
    sizes = []

    def flaky(self, requests, *args):
        sizes.append(len(requests))
        if len(requests) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, requests, *args)

    monkeypatch.setattr(type(backend), "_decode_batch", flaky)
    got = backend.generate(PROMPTS[:3], SamplingParams(max_new_tokens=2), progress=False)
    assert len(got) == 3 and sizes[:2] == [3, 1]

    def always(self, requests, *args):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")

    monkeypatch.setattr(type(backend), "_decode_batch", always)
    with pytest.raises(ModelError, match="out of memory .* lower --max-new-tokens"):
        backend.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2), progress=False)


def test_bad_parameters_and_options_are_config_errors(backend, tiny_model):
    from cotkit.models import load_backend

    for bad in (SamplingParams(n=0), SamplingParams(temperature=-1), SamplingParams(top_p=0), SamplingParams(max_new_tokens=0)):
        with pytest.raises(ConfigError):
            backend.generate(PROMPTS[:1], bad, progress=False)
    with pytest.raises(ConfigError, match="2 seeds for 1 prompts"):
        backend.generate(PROMPTS[:1], SamplingParams(), progress=False, seeds=[1, 2])
    with pytest.raises(ConfigError, match="batch_size='lots'"):
        load_backend("hf", model=str(tiny_model), batch_size="lots")
    with pytest.raises(ConfigError, match="unknown option 'temprature'"):
        load_backend("hf", model=str(tiny_model), temprature=1)
    with pytest.raises(ConfigError, match="dtype='float8'"):
        load_backend("hf", model=str(tiny_model), dtype="float8")


def test_cpu_defaults_to_fp32(backend):
    import torch

    assert backend.device.type == "cpu" and backend.model.dtype == torch.float32


def test_close_frees_the_model(tiny_model):
    from cotkit.models import load_backend

    be = load_backend("hf", model=str(tiny_model))
    ref = weakref.ref(be.model)
    be.close()
    gc.collect()
    assert ref() is None
    with pytest.raises(ModelError, match="closed"):
        be.generate(PROMPTS[:1], SamplingParams(), progress=False)


def test_a_backend_around_a_loaded_model(backend):
    from cotkit_plugins.backends.hf import HFBackend

    wrapped = HFBackend.from_objects(backend.model, backend.tokenizer, name="mid-training")
    params = SamplingParams(max_new_tokens=5)
    assert wrapped.generate(PROMPTS, params, progress=False) == backend.generate(PROMPTS, params, progress=False)


def test_sampling_raises_no_deprecation_warning_from_transformers(backend):
    # transformers 5.25 renamed forward's past_key_values to cache and warns on the old name
    # on every call; the backend passes the KV cache under whichever name the model takes.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        got = backend.generate(PROMPTS[:2], SamplingParams(n=2, temperature=1.0, max_new_tokens=6), progress=False)
    assert [len(g) for g in got] == [2, 2]


FEW_SHOT = "".join(f"Q: What is {a} plus {b}?\nA: {a} plus {b} is {a + b}. The answer is {a + b}.\n\n" for a, b in ((2, 3), (4, 1), (6, 2)))


def test_a_prefix_shared_by_the_batch_is_prefilled_once_with_the_same_completions(backend):
    from plugins.backends.hf import shared_prefix_length

    prompts = [FEW_SHOT + q for q in ("Q: What is 5 plus 1?\nA:", "Q: What is 12 plus 30?\nA:", "Q: Ken has 3 apples and eats one. How many are left?\nA:")]
    ids = [backend.encode(p) for p in prompts]
    assert shared_prefix_length(ids) >= 40  # the exemplars are shared, so the batch takes the shared path
    got = backend.generate(prompts, SamplingParams(max_new_tokens=10), progress=False)
    for prompt, gens in zip(prompts, got):
        assert gens[0].text == reference_greedy(backend, prompt, 10)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=12)
    together = backend.generate(prompts, params, progress=False, seeds=[1, 2, 3])
    alone = [backend.generate([p], params, progress=False, seeds=[s])[0] for p, s in zip(prompts, (1, 2, 3))]
    assert [[g.text for g in row] for row in together] == [[g.text for g in row] for row in alone]


def test_shared_prefix_length_leaves_every_prompt_a_token_and_skips_short_prefixes():
    from plugins.backends.hf import MIN_SHARED_PREFIX, shared_prefix_length

    long = list(range(100, 100 + MIN_SHARED_PREFIX + 4))
    assert shared_prefix_length([long, long]) == len(long) - 1  # identical prompts: the last token is each row's own
    assert shared_prefix_length([long + [1], long + [2, 3]]) == len(long)
    assert shared_prefix_length([long[:5] + [1], long[:5] + [2]]) == 0  # too short to be worth a call
    assert shared_prefix_length([long[:5] + [1], long[:5] + [2]], virtual=20) == 5  # a soft prompt's tokens make it worth it
    assert shared_prefix_length([long]) == 0


def test_a_soft_prompted_model_shares_the_prefix_after_its_virtual_tokens(backend, tiny_model):
    import torch

    from cotkit.harness.softprompt import add_soft_prompt
    from plugins.backends.hf import HFBackend, shared_prefix_length

    model = add_soft_prompt(backend.model, 6, "Answer with a number.", str(tiny_model))
    with torch.no_grad():
        model.prompt.add_(torch.randn_like(model.prompt))  # a trained prompt, not the text's embeddings
    prompted = HFBackend.from_objects(model, backend.tokenizer)
    prompts = ["Q: Ken has 3 apples and eats one. How many" + tail for tail in ("?\nA:", " are left?\nA:", " does he have?\nA:")]
    assert shared_prefix_length([prompted.encode(p) for p in prompts], virtual=6) > 0
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=10)
    together = prompted.generate(prompts, params, progress=False, seeds=[4, 5, 6])
    alone = [prompted.generate([p], params, progress=False, seeds=[s])[0] for p, s in zip(prompts, (4, 5, 6))]
    plain = backend.generate(prompts, params, progress=False, seeds=[4, 5, 6])
    assert [r[0].text for r in together] == [r[0].text for r in alone] != [r[0].text for r in plain]
