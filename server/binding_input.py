"""The subject binding of a request, read and checked at the boundary.

A binding is 32 bytes with the Argon2id parameters it was derived with (both or neither);
the parameters must lie within the bounds of ``staycheck.trust.binding`` so that every
verifier can derive the binding again in bounded time. Errors name the field and the rule,
never the value.
"""

from __future__ import annotations

from typing import Any

from staycheck.geo.errors import InvalidInputError
from staycheck.trust.binding import BINDING_LENGTH, BindingParameters


def read_binding(request: Any) -> tuple[bytes, BindingParameters | None]:
    """``(binding, parameters)`` of a ``SubmitItineraryRequest`` or ``ItineraryItem``."""
    binding: bytes = request.subject_binding
    has_params = request.HasField("binding_parameters")
    if not binding:
        if has_params:
            raise InvalidInputError("binding_parameters", "only with a subject_binding")
        return b"", None
    if len(binding) != BINDING_LENGTH:
        raise InvalidInputError("subject_binding", f"must be empty or {BINDING_LENGTH} bytes")
    if not has_params:
        raise InvalidInputError(
            "binding_parameters", "required with a subject_binding (the Argon2id parameters)"
        )
    p = request.binding_parameters
    params = BindingParameters(p.memory_kib, p.iterations, p.lanes)
    try:
        params.check()
    except ValueError as e:
        # check() says "<parameter>: <rule>"; the parameters are ours to show, not the value.
        name, rule = str(e).split(": ", 1)
        raise InvalidInputError(f"binding_parameters.{name}", rule) from None
    return binding, params
