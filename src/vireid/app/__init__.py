"""The application layer: what a user does with vireid (train, adapt, evaluate a run, load a run).

``runs`` holds the entry points re-exported from :mod:`vireid`; the workflows
built on them (``demo``, ``ablation``) live beside it. The engine below keeps
only the loop, checkpoints, optimisers and distribution.
"""
