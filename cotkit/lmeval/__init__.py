"""cotkit inside lm-eval: cotkit tasks as lm-eval tasks, cotkit backends as the lm-eval model.

`bridge` holds the functions lm-eval task YAMLs point to (`!function cotkit.lmeval.bridge.*`);
`model` wraps a cotkit Backend as an `lm_eval.api.model.LM`; `runner` drives `simple_evaluate`.
"""
