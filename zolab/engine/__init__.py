"""The ZO engine: the parts a rule is composed of, one file per concern.

seeds (keys of every draw), samplers (the laws of z), directions (u_k from them; the protocol any directions
object follows), lowrank (low-rank directions of matrices), schemes (the points a step evaluates and their
differences), estimator (queries, schemes run, ĝ), jvp (forward-mode passes), groups (param groups, names,
shards), blocks (which tensors a step perturbs), perturb (how a point is evaluated), update (the rule's traced
or eager update, atomic steps), ops (what the update is written with), schedules,
resume (state_dict and its checks), record (the step record), scratch (reused tensors), checks (argument
checks), parallel (points and losses across processes). No module here imports Lightning, YAML, TensorBoard,
the lab, the tasks, the claims or the probes (tests/test_layers.py checks it).
"""
