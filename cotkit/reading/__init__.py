"""Reading model output: the answer a completion states, LaTeX answers, reasoning steps.

`answers` finds and normalizes an answer in free text (numbers, labels, `\\boxed{}`); `latex`
compares mathematical answers (MATH-style normalization and structure); `steps` splits a
completion into the steps a step scorer judges; `timelimit` runs a parser or a symbolic
comparison in a worker under a wall-clock limit, because a pathological answer can make sympy
run for minutes. Verifiers and step scorers are built from these; none of them knows a task.
"""
