"""Faults of a full partition's virtual hardware: what the guest gets, and what ends it.

Two kinds, kept apart as on hardware: :class:`DeliveryFault` is an x86
exception the virtual CPU raises while emulating (delivered to the guest
through its IDT, or escalated to #DF and a triple fault), and
:class:`FullStop` is what this virtual hardware cannot do or must not
allow (the partition ends with a named fault for the health monitor).
"""

from __future__ import annotations

#: exceptions that push an error code
ERROR_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
VECTOR_DF, VECTOR_GP, VECTOR_PF, VECTOR_UD, VECTOR_NP, VECTOR_SS = 8, 13, 14, 6, 11, 12


class FullStop(Exception):
    """Why a full partition must end: ``kind`` is the fault's name, ``detail`` says what happened."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class DeliveryFault(Exception):
    """A fault while delivering an event (escalates: #DF, then a triple fault)."""

    def __init__(self, vector: int, error: int) -> None:
        super().__init__(vector)
        self.vector = vector
        self.error = error
