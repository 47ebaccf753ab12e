"""What agents learn: memory across sessions and learning from feedback.

- :mod:`.resource`: the ``memory://`` resource kind (the reader's own memories).
- :mod:`.tools`: the built-in ``remember`` and ``forget`` tools, run by the action path.
- :mod:`.prelude`: what a turn gives the model before the conversation (memories, examples)
  and how it is routed (``routing: feedback``), and the turn's record afterwards.
- :mod:`.frames`: the ``memory_list``, ``memory_forget`` and ``feedback`` frames.

The data lives in the state store (``engine/store/_learning.py``); every subject sees
only their own.  Nothing here is imported by :mod:`engine.memory` itself, so the resource
kind can register while :mod:`engine.resources` is being imported.
"""
