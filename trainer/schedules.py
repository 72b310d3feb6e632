"""Hyper-parameter schedules: ELEKTRONN2's ``Schedule`` on PyTorch optimisers and plain objects.

A schedule changes one value at fixed training steps ("update points")::

    Schedule(dec=0.995)                      # v <- v * 0.995 at steps 1000, 2000, ...
    Schedule(lindec=[4000, 0.001])           # v <- v - 0.001 * 1000 / 4000 at 1000, 2000, 3000;
                                             # v <- 0 at 4000, then done
    Schedule(updates=[(500, 0.8), (1000, 0.7)])  # v <- 0.8 at 500, v <- 0.7 at 1000, then done

``period`` (default 1000) sets the spacing of the update points of ``dec`` and ``lindec``.
Only the first of ``dec``, ``updates``, ``lindec`` that is given is used, as in ELEKTRONN2.

Differences from ELEKTRONN2, all deliberate:

* ``lindec`` reaches exactly 0 at ``n_steps`` for any ``n_steps`` (ELEKTRONN2 got stuck when
  ``n_steps`` was not a multiple of 1000). Its update points are the multiples of ``period``
  below ``n_steps`` plus ``n_steps`` itself; a decrement never takes the value past 0.
* ``updates`` has no dummy update at step 1000; steps must be strictly ascending.
* ``permut`` and unknown keywords raise ``ValueError``.
* ``update(step)`` may be called at every step: it does nothing until an update is due and
  catches up on every update point ``<= step`` it has missed (e.g. after a resume).
* ``plan`` gives the scheduled values without binding or training, so the dashboard can
  draw the plan.

Example:
    >>> import torch
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=5e-4)
    >>> s = Schedule(dec=0.995)
    >>> s.bind_variable(obj=opt, prop_name="lr")
    >>> for step in range(2001):
    ...     s.update(step)
    >>> round(opt.param_groups[0]["lr"], 10)
    0.0004950125
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from trainer.hyperparams import OPTIMISER_HYPERS, TORCH_NAMES

__all__ = ["Schedule", "bind_schedules"]

logger = logging.getLogger("voxelboard")

_MODES = ("dec", "updates", "lindec")
_VALID_KWARGS = (*_MODES, "period")


class Schedule:
    """A schedule for one hyper-parameter, bound to an optimiser key or an attribute.

    Args:
        dec: factor ``f``; ``v <- v * f`` at every multiple of ``period``.
        updates: ``[(step, value), ...]``, strictly ascending steps; ``v <- value`` at ``step``.
            Values may be numbers or lists (e.g. one dropout rate per layer).
        lindec: ``[n_steps, init_value]``; ``v <- v - init_value * period / n_steps`` at every
            multiple of ``period`` below ``n_steps``, ``v <- 0`` at ``n_steps``.
        period: spacing of the update points of ``dec`` and ``lindec`` (default 1000).

    Raises:
        ValueError: no mode given, ``permut``, unknown keywords, or malformed arguments.

    Attributes:
        mode: ``'mult'`` (dec), ``'set'`` (updates) or ``'lin'`` (lindec).
        next_update: step of the next update point, ``-1`` when the schedule is finished.
        value: the bound variable's value as last read or written (``None`` before binding).
    """

    def __init__(self, **kwargs: Any):
        if "permut" in kwargs:
            raise ValueError(
                "Schedule(permut=...) is not supported; to alternate between two values give "
                "updates=[(step, value_a), (step, value_b), ...]"
            )
        unknown = sorted(set(kwargs) - set(_VALID_KWARGS))
        if unknown:
            raise ValueError(
                f"unknown Schedule argument(s) {', '.join(unknown)}; "
                f"valid arguments are {', '.join(_VALID_KWARGS)}"
            )
        period = kwargs.get("period", 1000)
        if isinstance(period, bool) or not isinstance(period, int | np.integer) or period < 1:
            raise ValueError(f"Schedule period must be a positive integer, got {period!r}")
        self.period = int(period)
        self.factor = 1.0
        self.n_steps: int | None = None
        self.delta = 0.0
        self.updates: list[tuple[int, Any]] = []  # the full list, for plan
        self.pending: list[tuple[int, Any]] = []  # updates not applied yet
        mode = next((m for m in _MODES if kwargs.get(m) is not None), None)
        if mode == "dec":
            self.mode = "mult"
            self.factor = _number("dec", kwargs["dec"])
            self.next_update = self.period
        elif mode == "updates":
            self.mode = "set"
            self.updates = _parse_updates(kwargs["updates"])
            self.pending = list(self.updates)
            self.next_update = self.pending[0][0] if self.pending else -1
        elif mode == "lindec":
            self.mode = "lin"
            self.n_steps, init = _parse_lindec(kwargs["lindec"])
            self.delta = init * self.period / self.n_steps
            self.next_update = min(self.period, self.n_steps)
        else:
            raise ValueError(
                "Schedule needs one of dec=<factor>, updates=[(step, value), ...] or "
                "lindec=[n_steps, init_value]"
            )
        self._first_update = self.next_update
        self.value: Any = None
        self._get: Callable[[], Any] | None = None
        self._set: Callable[[Any], None] | None = None
        self._target = ""
        self._restored = False

    # ------------------------------------------------------------------ binding
    def bind_variable(
        self, variable_param: Any = None, obj: Any = None, prop_name: str | None = None
    ) -> None:
        """Attach the schedule to the value it changes.

        One of:

        * ``variable_param``: an object with ``get_value()`` and ``set_value(v)``;
        * ``obj`` with ``param_groups`` (a torch optimiser) and ``prop_name`` a param-group key:
          ``lr``, ``momentum`` / ``mom`` (``betas[0]`` for Adam-like optimisers, ``rho`` for
          AdaDelta), ``weight_decay`` / ``wd`` (either name finds the other), or any other
          key the groups have. Every group is set;
          the first group's value is read;
        * ``obj`` and ``prop_name`` an attribute or settable property (e.g. an ``nn.Dropout``'s
          ``p``, a config's ``history_freq``).

        The current value is read from the target, except after ``load_state_dict``: then the
        restored value is written to the target.

        Raises:
            AttributeError: the target has no such key or attribute (the message names the
                object's type and ``prop_name``), or a property without a setter.
            ValueError: neither or both of ``variable_param`` and ``obj`` given.
        """
        if (variable_param is None) == (obj is None):
            raise ValueError(
                "bind_variable needs either variable_param=<object with get_value/set_value> "
                "or obj=<object> with prop_name=<name>"
            )
        if variable_param is not None:
            if not (hasattr(variable_param, "get_value") and hasattr(variable_param, "set_value")):
                raise AttributeError(
                    f"cannot bind a schedule to {type(variable_param).__name__}: "
                    "variable_param needs get_value() and set_value()"
                )
            self._get, self._set = variable_param.get_value, variable_param.set_value
            self._target = type(variable_param).__name__
        else:
            if not prop_name:
                raise ValueError(f"bind_variable(obj={type(obj).__name__}) needs prop_name")
            self._get, self._set = _accessors(obj, prop_name)
            self._target = f"{type(obj).__name__}.{prop_name}"
        if self._restored:
            self._set(self.value)
        else:
            self.value = self._get()

    @property
    def bound(self) -> bool:
        """True once ``bind_variable`` succeeded."""
        return self._set is not None

    # ------------------------------------------------------------------ stepping
    def update(self, iteration: int) -> None:
        """Apply every update point ``<= iteration`` not applied yet.

        The trainer calls this after every step; it costs one comparison when nothing is due.
        Changes are applied to the bound variable's current value (so a value changed by
        hand, e.g. in the interactive shell, is decayed from where it was set).

        Raises:
            RuntimeError: an update is due but the schedule is not bound.
        """
        if self.next_update < 0 or iteration < self.next_update:
            return
        if self._get is None or self._set is None:
            raise RuntimeError(
                f"{self!r} is due at step {self.next_update} but not bound; "
                "call bind_variable(...) first"
            )
        v = self._get()
        while 0 <= self.next_update <= iteration:
            v = self._apply(v, self.next_update)
            self.next_update = self._following(self.next_update)
            if self.mode == "set":
                self.pending.pop(0)
        self._set(v)
        self.value = v

    def _apply(self, v: Any, step: int) -> Any:
        """Value after the update at update point ``step``, starting from ``v``."""
        if self.mode == "mult":
            return _map(v, lambda x: x * self.factor)
        if self.mode == "set":
            return _copy(dict(self.pending)[step])
        assert self.n_steps is not None
        if step >= self.n_steps:
            return _map(v, lambda x: 0.0)
        return _map(v, lambda x: _toward_zero(x, self.delta))

    def _following(self, step: int) -> int:
        """The update point after ``step``, or -1 at the end."""
        if self.mode == "mult":
            return step + self.period
        if self.mode == "set":
            later = [s for s, _ in self.pending if s > step]
            return later[0] if later else -1
        assert self.n_steps is not None
        if step >= self.n_steps:
            return -1
        return min(step + self.period, self.n_steps)

    def _points(self, start: int, pending: list[tuple[int, Any]]) -> Iterator[int]:
        """Update points from ``start`` on, ascending (infinite for ``dec``)."""
        s = start
        while s >= 0:
            yield s
            if self.mode == "set":
                later = [t for t, _ in pending if t > s]
                s = later[0] if later else -1
            else:
                s = self._following(s)

    # ------------------------------------------------------------------ planning
    def plan(self, n_steps: int, initial: float) -> tuple[np.ndarray, np.ndarray]:
        """The planned values up to ``n_steps``, one point per change, for drawing.

        Pure: needs no binding, ignores how far the schedule has been stepped and does not
        change it; stepping a fresh bound schedule gives exactly these values.

        Returns:
            ``(steps, values)``: step 0 with the value from step 0 on, then every update
            point in ``(0, n_steps]`` with the value from that step on. Draw as a step plot
            (plotly ``line_shape='hv'``) continued to ``n_steps``.
        """
        steps, values = [0], [initial]
        v = initial
        for s in self._points(self._first_update, self.updates):
            if s > n_steps:
                break
            v = self._apply_planned(v, s)
            if s == 0:
                values[0] = v
            else:
                steps.append(s)
                values.append(v)
        return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)

    def _apply_planned(self, v: Any, step: int) -> Any:
        if self.mode == "set":
            return _copy(dict(self.updates)[step])
        return self._apply(v, step)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue where this one stopped."""
        return {
            "mode": self.mode,
            "factor": self.factor,
            "n_steps": self.n_steps,
            "delta": self.delta,
            "period": self.period,
            "next_update": self.next_update,
            "value": _copy(self.value),
            "pending": [(s, _copy(v)) for s, v in self.pending],
            "updates": [(s, _copy(v)) for s, v in self.updates],
            "first_update": self._first_update,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``; writes the restored value to the target if bound.

        Raises:
            ValueError: the state belongs to a schedule of another mode.
        """
        if state.get("mode") != self.mode:
            raise ValueError(
                f"cannot load a {state.get('mode')!r} schedule state into {self!r}; "
                "the schedule in the config changed since the snapshot was taken"
            )
        self.factor = float(state["factor"])
        self.n_steps = None if state["n_steps"] is None else int(state["n_steps"])
        self.delta = float(state["delta"])
        self.period = int(state["period"])
        self.next_update = int(state["next_update"])
        self.pending = [(int(s), _copy(v)) for s, v in state["pending"]]
        self.updates = [(int(s), _copy(v)) for s, v in state.get("updates", self.updates)]
        self._first_update = int(state.get("first_update", self._first_update))
        self.value = _copy(state["value"])
        self._restored = True
        if self._set is not None and self.value is not None:
            self._set(self.value)

    def __repr__(self) -> str:
        if self.mode == "mult":
            detail = f"factor={self.factor}"
        elif self.mode == "lin":
            detail = f"n_steps={self.n_steps}, delta={self.delta:.6g}"
        else:
            detail = f"pending={self.pending}"
        target = f", target={self._target}" if self._target else ""
        return f"Schedule(mode={self.mode}, {detail}, next_update={self.next_update}{target})"


# ---------------------------------------------------------------------- helpers
def bind_schedules(
    settings: Mapping[str, Mapping[str, Any]], optimiser: Any, model: Any, config: Any
) -> dict[str, Schedule]:
    """A bound ``Schedule`` for each entry of a config's ``schedules`` (empty ones skipped).

    A name binds to the optimiser's hyper-parameter (``lr``, ``mom``, ``wd`` or PyTorch's
    names, ``trainer.hyperparams``), else to the model's attribute of that name (a dropout
    rate), else to the config key (``history_freq``).

    Raises:
        ValueError: a name that is none of these (the message says what may be given).
    """
    bound: dict[str, Schedule] = {}
    for name, params in settings.items():
        if not params:
            continue
        sched = Schedule(**params)
        if name in OPTIMISER_HYPERS:
            sched.bind_variable(obj=optimiser, prop_name=name)
        elif hasattr(model, name):
            sched.bind_variable(obj=model, prop_name=name)
        elif hasattr(config, name):
            sched.bind_variable(obj=config, prop_name=name)
        else:
            raise ValueError(
                f"schedules[{name!r}] in {config.exp_file}: no optimiser key, model "
                "attribute or config key of that name; use lr, mom, wd, a model attribute "
                "(e.g. a dropout rate) or a config key (e.g. history_freq)"
            )
        bound[name] = sched
        logger.info("Schedule for %s: %r", name, sched)
    return bound


def _number(name: str, value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Schedule {name}= must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"Schedule {name}= must be finite, got {value!r}")
    return f


def _parse_updates(updates: Any) -> list[tuple[int, Any]]:
    try:
        pairs = [(s, v) for s, v in updates]
    except (TypeError, ValueError):
        raise ValueError(
            f"Schedule updates= must be a list of (step, value) pairs, got {updates!r}"
        ) from None
    steps = []
    for s, _ in pairs:
        if isinstance(s, bool) or not float(s).is_integer() or s < 0:
            raise ValueError(f"Schedule updates=: step {s!r} is not a non-negative integer")
        steps.append(int(s))
    for a, b in zip(steps, steps[1:]):
        if b <= a:
            raise ValueError(
                f"Schedule updates= steps must be strictly ascending, but {b} follows {a}: "
                f"{steps}; sort the (step, value) pairs"
            )
    return [(s, _copy(v)) for s, (_, v) in zip(steps, pairs)]


def _parse_lindec(lindec: Any) -> tuple[int, float]:
    try:
        n_steps, init = lindec
    except (TypeError, ValueError):
        raise ValueError(
            f"Schedule lindec= must be [n_steps, init_value], got {lindec!r}"
        ) from None
    if isinstance(n_steps, bool) or not float(n_steps).is_integer() or n_steps < 1:
        raise ValueError(f"Schedule lindec=: n_steps must be a positive integer, got {n_steps!r}")
    return int(n_steps), _number("lindec init_value", init)


def _toward_zero(x: float, delta: float) -> float:
    y = x - delta
    # never overshoot zero: a negative learning rate would train uphill
    if (delta > 0 and y < 0) or (delta < 0 and y > 0):
        return 0.0
    return y


def _map(v: Any, fn: Callable[[float], float]) -> Any:
    if isinstance(v, list | tuple):
        return type(v)(_map(x, fn) for x in v)
    if isinstance(v, np.ndarray):
        return np.vectorize(fn, otypes=[np.float64])(v)
    return fn(v)


def _copy(v: Any) -> Any:
    if isinstance(v, list):
        return [_copy(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.copy()
    return v


def _accessors(obj: Any, prop_name: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """Getter and setter for an optimiser param-group key or an attribute of ``obj``."""
    groups = getattr(obj, "param_groups", None)
    if groups and isinstance(groups, Iterable) and not hasattr(type(obj), prop_name):
        return _group_accessors(obj, list(groups), prop_name)
    cls_attr = getattr(type(obj), prop_name, None)
    if isinstance(cls_attr, property):
        if cls_attr.fset is None:
            raise AttributeError(
                f"cannot bind a schedule to {type(obj).__name__}.{prop_name}: "
                "it is a read-only property"
            )
    elif not hasattr(obj, prop_name):
        raise AttributeError(
            f"cannot bind a schedule to {type(obj).__name__}.{prop_name}: "
            f"{type(obj).__name__} has no attribute {prop_name!r}"
        )
    return (lambda: getattr(obj, prop_name)), (lambda v: setattr(obj, prop_name, v))


def _group_accessors(
    opt: Any, groups: list[dict[str, Any]], prop_name: str
) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    first = groups[0]
    key = prop_name if prop_name in first else TORCH_NAMES.get(prop_name, prop_name)
    if key == TORCH_NAMES["wd"] and "wd" in first:
        key = "wd"  # VoxelBoard's optimisers decay through 'wd'; torch's weight_decay stays 0
    if key == "momentum" and "momentum" not in first and "rho" in first:
        key = "rho"  # ELEKTRONN2's mom is AdaDelta's rho
    if key == "momentum" and "momentum" not in first and "betas" in first:

        def get_beta() -> float:
            return opt.param_groups[0]["betas"][0]

        def set_beta(v: float) -> None:
            for g in opt.param_groups:
                g["betas"] = (v, *tuple(g["betas"])[1:])

        return get_beta, set_beta
    if key not in first:
        raise AttributeError(
            f"cannot bind a schedule to {type(opt).__name__}.{prop_name}: its param groups "
            f"have no key {key!r} (they have {', '.join(sorted(first))})"
        )

    def get_key() -> Any:
        return opt.param_groups[0][key]

    def set_key(v: Any) -> None:
        for g in opt.param_groups:
            g[key] = v

    return get_key, set_key
