"""Checks every request's values need before any handler (or query) sees them."""

from __future__ import annotations

from typing import Any

from service.domain.inputs import refuse_nul
from service.interceptors.base import Around
from service.rules import MethodRules


class InputsAround(Around):
    """INVALID_ARGUMENT for a NUL character in any string field of the request.

    It runs after authentication and authorization (whose queries take only well-formed ids),
    so a caller without credentials or access learns nothing from it.
    """

    async def before(self, rules: MethodRules, request: Any, context: Any) -> None:
        refuse_nul(request)
