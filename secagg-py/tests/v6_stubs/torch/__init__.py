"""A stand-in for torch, for importing fedbiomed 6.4.1's secagg modules without it (300 MB):
they import torch for type annotations in `fedbiomed.common.utils` and never call it. Any
attribute is an empty class, enough for an annotation to evaluate; a call would fail loudly."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return type(name, (), {})
