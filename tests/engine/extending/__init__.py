"""The README's "Extending" examples, as written there, for tests/engine/test_extending.py.

They live outside the engine on purpose: a test registers them, proving that a tool kind
or a model provider needs nothing but its own module and its registration.
"""
