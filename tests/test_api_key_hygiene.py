"""The openai backend's API key appears nowhere: not in error messages, not in options, not in run files."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from cotkit.apikeys import MIN_FRAGMENT, looks_like_key, scrub_and_shorten
from cotkit.contracts import SamplingParams
from cotkit.errors import ConfigError, ModelError

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "fixtures" / "run_methods.py"
KEY_ENV = "COTKIT_TEST_HYGIENE_KEY"
DETAIL_CHARS = 500  # how much of a server's error body the backend shows


def leaked_piece(key: str, text: str) -> str | None:
    """The longest piece of `key` of MIN_FRAGMENT characters or more found in `text`, if any."""
    for size in range(len(key), MIN_FRAGMENT - 1, -1):
        for start in range(len(key) - size + 1):
            if key[start : start + size] in text:
                return key[start : start + size]
    return None


def new_key() -> str:
    return "sk-proj-" + secrets.token_urlsafe(24)[:32]  # 40 characters, like a real project key


# ------------------------------------------------------------------------------ error messages


@pytest.fixture(scope="module")
def padded_server(tiny_model, openai_server):
    """The test server (requires $KEY_ENV's key) whose 401 body puts the echoed key across character 500."""
    # Body: '{"error": {"message": "' (23) + padding + "Incorrect API key provided: 'Bearer " (36) + key:
    # the key starts at 480, so a 40-character key is cut after 20 characters by a 500-character limit.
    padding = 480 - 23 - 36
    with openai_server(tiny_model, "--api-key-env", KEY_ENV, "--error-padding", str(padding), env={KEY_ENV: new_key()}) as base:
        yield base


def test_a_server_error_cut_through_the_key_shows_no_piece_of_it(padded_server, monkeypatch):
    from cotkit.models import load_backend

    wrong = new_key()
    monkeypatch.setenv(KEY_ENV, wrong)
    be = load_backend("openai", model="tiny", base_url=padded_server, api_key_env=KEY_ENV, max_retries=0)
    with pytest.raises(ModelError) as e:
        be.generate(["Q: 1 + 1?\nA:"], SamplingParams(max_new_tokens=4))
    msg = str(e.value)
    assert "HTTP 401" in msg and "Incorrect API key provided" in msg and "[API key]" in msg
    assert leaked_piece(wrong, msg) is None, f"part of the key is in the message: {msg[-200:]!r}"


def test_pieces_of_the_key_a_server_echoes_are_masked_too():
    key = new_key()
    body = f"bad key {key[:20]}... (ends with {key[-10:]}); request id abc123"
    shown = scrub_and_shorten(body, key, 500)
    assert leaked_piece(key, shown) is None and "request id abc123" in shown
    # the whole key right at the cut: scrubbed first, so the cut cannot leave a piece of it
    text = "x" * (DETAIL_CHARS - 20) + key
    assert leaked_piece(key, scrub_and_shorten(text, key, DETAIL_CHARS)) is None


# ------------------------------------------------------------------------------ options


def key_like_values() -> list[str]:
    return [new_key(), "sk_live_" + "a1B2c3D4e5F6g7H8i9J0", "hf_" + "AbCdEfGhIjKlMnOpQrStUvWx", "0123456789abcdef0123456789abcdef"]


@pytest.mark.parametrize("value", key_like_values(), ids=["openai", "stripe-like", "huggingface", "hex"])
def test_a_key_given_as_api_key_env_is_refused_without_showing_it(value):
    from cotkit.models import load_backend

    with pytest.raises(ConfigError) as e:
        load_backend("openai", model="tiny", api_key_env=value)
    assert value not in str(e.value) and "api_key_env" in str(e.value)


def test_the_value_of_a_variable_pasted_as_its_name_is_refused(monkeypatch):
    key = "Zq9" * 8  # no known prefix: recognised because it is the value of a set variable
    monkeypatch.setenv("MY_PROVIDER_KEY", key)
    assert looks_like_key(key)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "MY_KEY_2", "hf_token", "together_api_key", "GROQ_API_KEY_PROJECT_2024"])
def test_ordinary_variable_names_are_accepted(name):
    from cotkit.models import load_backend

    assert load_backend("openai", model="tiny", api_key_env=name).config.api_key_env == name


def run_files_and_output(out: Path, r) -> str:
    text = r.stdout + r.stderr
    for p in out.rglob("*") if out.exists() else []:
        if p.is_file():
            text += p.read_text(errors="replace")
    return text


def test_train_refuses_a_key_as_teacher_api_key_env_before_writing_anything(cli, data_dir, tiny_model, tmp_path):
    key = new_key()
    out = tmp_path / "run"
    r = cli("--data-dir", data_dir, "train", "--method", "finetune-cot", "--task", "gsm8k", "--model", tiny_model,
            "-o", out, "--teacher-endpoint", "http://127.0.0.1:9/v1", "--teacher-model", "tiny",
            "--teacher-api-key-env", key)  # fmt: skip
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--teacher-api-key-env" in r.stderr and "looks like an API key" in r.stderr
    assert leaked_piece(key, run_files_and_output(out, r)) is None
    assert not (out / "config.yaml").exists()


@pytest.mark.parametrize("option", ["api_key", "api_key_env"])
def test_train_refuses_a_key_in_backend_options_before_writing_anything(cli, data_dir, tiny_model, tmp_path, option):
    key = new_key()
    out = tmp_path / "run"
    r = cli("--plugin", PLUGIN, "--data-dir", data_dir, "train", "--method", "tally", "--task", "gsm8k", "--model", tiny_model,
            "-o", out, "--backend", "openai", "--backend-option", f"{option}={key}")  # fmt: skip
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert leaked_piece(key, run_files_and_output(out, r)) is None
    assert not (out / "config.yaml").exists()


def test_a_key_variable_name_is_recorded_and_the_key_is_not(cli, data_dir, tiny_model, tmp_path, monkeypatch):
    """The accepted way: the run records the variable's name; the key itself is in no run file."""
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    out = tmp_path / "run"
    r = cli("--plugin", PLUGIN, "--data-dir", data_dir, "train", "--method", "tally", "--task", "gsm8k", "--model", tiny_model,
            "-o", out, "--backend", "openai", "--backend-option", f"api_key_env={KEY_ENV}")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert KEY_ENV in (out / "config.yaml").read_text()
    assert json.loads((out / "state.json").read_text())["status"] == "complete"
    assert leaked_piece(key, run_files_and_output(out, r)) is None
