"""Example tool implementations shipped with Scalytics Connect.

Each module holds stdlib-only functions run by the sandbox's Python runner:
they take the JSON arguments as keyword arguments and return a JSON value.
"""
