"""The campaigns; importing this package registers every one (see :data:`base.REGISTRY`)."""

from fuzz.campaigns import code, hypercalls

__all__ = ["code", "hypercalls"]
