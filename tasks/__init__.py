"""Task data shipped with cotkit: few-shot exemplars and lm-eval task YAMLs (no logic here)."""
