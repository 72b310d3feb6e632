"""Check a callback request's shape against the callback it names, before Dash reads it.

The browser builds a ``/_dash-update-component`` body from the callback's declaration: one
``{"id", "property", "value"}`` object per declared input and state (a list of them for a
pattern with ``ALL``), in the declared order, and the outputs it asks for (one object, or a
list of them for a callback with several outputs). Dash trusts that shape: a number where
an object belongs, a missing ``state`` or outputs of another count end in a server error
deep inside it. ``shape_problem`` compares the body with the app's own callback map
(``dash.Dash.callback_map``) and says in one line what does not fit, so the request is
answered with 400 before Dash sees it.

Example:
    >>> shape_problem(app.callback_map, {"output": "exp-system.children", "inputs": [1]})  # doctest: +SKIP
    "input 1 of 'exp-system.children': expected an object with 'id' and 'property', got 1"
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: pattern-matching wildcards that match any number of components (a list in the request)
_MANY = (["ALL"], ["ALLSMALLER"])
#: longest part of a received value quoted in a problem
_SHOWN = 60


def shape_problem(callback_map: Mapping[str, Any], body: Mapping[str, Any]) -> str | None:
    """What makes ``body`` no request for the server callback it names, or ``None``.

    Args:
        callback_map: the app's ``callback_map`` (``dash.Dash.callback_map``).
        body: a parsed request body: a dict whose ``output`` is a string.

    Returns:
        One line naming the part of the request that does not fit (a callback computed in
        the browser, a slot of the wrong count, type, id or property, outputs of another
        shape, ``changedPropIds`` that are no list of text), or ``None``.
    """
    output = body["output"]
    entry = callback_map.get(output)
    name = _shown(output)
    if entry is None:
        return f"no callback for {name} on this dashboard; reload the page"
    if not callable(entry.get("callback")):
        return f"{name} is computed in the browser: this dashboard has no server callback for it"
    for key, label in (("inputs", "input"), ("state", "state")):
        received = body.get(key, [])
        declared = entry.get(key) or []
        if not isinstance(received, list):
            return f"'{key}' of {name}: expected a list, got {_shown(received)}"
        if len(received) != len(declared):
            return (
                f"'{key}' of {name}: expected {len(declared)} entries (the callback's "
                f"declared {label}s), got {len(received)}"
            )
        for i, (slot, got) in enumerate(zip(declared, received, strict=True), 1):
            problem = _slot_problem(slot, got)
            if problem:
                return f"{label} {i} of {name}: {problem}"
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        return f"'changedPropIds' of {name}: expected a list of text, got {_shown(changed)}"
    if entry.get("no_output"):
        return None
    return _outputs_problem(entry.get("output"), body.get("outputs"), name)


def _slot_problem(slot: Mapping[str, Any], got: Any) -> str | None:
    """How a received input or state entry differs from its declaration, or ``None``."""
    declared_id, prop = slot.get("id"), slot.get("property")
    pattern = _pattern(declared_id)
    if pattern is not None and any(v in _MANY for v in pattern.values()):
        if not isinstance(got, list):
            return f"expected a list of objects (a pattern with ALL), got {_shown(got)}"
        return next(filter(None, (_entry_problem(g, pattern, prop) for g in got)), None)
    return _entry_problem(got, pattern if pattern is not None else declared_id, prop)


def _outputs_problem(declared: Any, got: Any, name: str) -> str | None:
    if isinstance(declared, list):
        if not isinstance(got, list) or len(got) != len(declared):
            count = len(got) if isinstance(got, list) else "no list"
            return f"'outputs' of {name}: expected a list of {len(declared)} objects, got {count}"
        pairs = list(zip(declared, got, strict=True))
    else:
        pairs = [(declared, got)]
    for i, (output, received) in enumerate(pairs, 1):
        declared_id = getattr(output, "component_id", None)
        pattern = declared_id if isinstance(declared_id, dict) else None
        if pattern is not None and isinstance(received, list):  # ALL: one object each
            problems = [_entry_problem(r, pattern, output.component_property) for r in received]
            problem = next(filter(None, problems), None)
        else:
            problem = _entry_problem(received, declared_id, output.component_property)
        if problem:
            return f"output {i} of {name}: {problem}"
    return None


def _entry_problem(got: Any, declared_id: Any, prop: Any) -> str | None:
    """How one ``{"id", "property"[, "value"]}`` object differs from the declared one."""
    if not isinstance(got, dict) or "id" not in got or not isinstance(got.get("property"), str):
        return f"expected an object with 'id' and 'property', got {_shown(got)}"
    if got["property"].split("@", 1)[0] != prop:
        return f"expected property {prop!r}, got {_shown(got['property'])}"
    if isinstance(declared_id, dict):  # a pattern: the same keys, the fixed values alike
        received = got["id"]
        fixed = {k: v for k, v in declared_id.items() if isinstance(v, str | int | float)}
        same = isinstance(received, dict) and set(received) == set(declared_id)
        if not same or any(received.get(k) != v for k, v in fixed.items()):
            return f"expected an id matching {_shown(declared_id)}, got {_shown(received)}"
    elif got["id"] != declared_id:
        return f"expected id {declared_id!r}, got {_shown(got['id'])}"
    return None


def _pattern(declared_id: Any) -> dict[str, Any] | None:
    """A pattern-matching id (the callback map holds it as JSON text) as a dict, else None."""
    if isinstance(declared_id, dict):
        return declared_id
    if isinstance(declared_id, str) and declared_id.startswith("{"):
        try:
            parsed = json.loads(declared_id)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"
