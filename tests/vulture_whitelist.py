"""Names vulture cannot see used (read by `tests/test_dead_code.py`; not a test module).

Each line names code that is called from outside Python's view: by lm-eval through YAML
`!function` tags and its LM interface, by transformers through attributes it reads, by the
standard library's HTTP server, or by name in a subprocess command line.
"""

# ruff: noqa
_ = object()

# lm-eval reads these through `!function cotkit.lmeval.bridge.*` in tasks/lm_eval/*.yaml
from cotkit.lmeval import bridge, model

bridge.doc_to_text, bridge.doc_to_target, bridge.keep_all, bridge.process_results
# lm-eval's LM interface: the harness calls them
model.CotkitLM.generate_until, model.CotkitLM.loglikelihood_rolling, model.CotkitLM.get_model_info

# attributes transformers/tokenizers read after we set them
_.pad_token, _.padding_side, _.use_cache, _.pre_tokenizer, _.decoder

# started by name in a subprocess (`from cotkit.reading.timelimit import _serve`)
from cotkit.reading.timelimit import _serve

_serve

# PEP 562 module hooks of the public API
import cotkit

cotkit.__getattr__, cotkit.__dir__
# public API names no module of this repository calls (cotkit/__init__.py maps them by string)
cotkit.load_task

# http.server.BaseHTTPRequestHandler calls these (the test's OpenAI-compatible server)
_.do_GET, _.do_POST, _.log_message, _.request_queue_size

# inspect.signature reads it: Typer takes `cotkit eval`'s options from the signature
# cotkit.cli.options.with_settings_options gives the command
_.__signature__

# transformers' Trainer calls these TrainerCallback events (plugins/methods/grpo.py)
_.on_log, _.on_save

# vLLM calls it by name in its workers (plugins/backends/vllm.py: worker_extension_cls, collective_rpc)
_.tie_output_head
