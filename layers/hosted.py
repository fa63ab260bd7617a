"""One frozen base shared by K level stacks: the agent host's math (no Ray).

:class:`SharedBase` replaces every target module of one model by a :class:`SharedLinear`
slot that holds the frozen base layer and the read projection P once. Each agent gets its own
:class:`~layers.stack.LevelStack` (:meth:`SharedBase.stack_for`) whose :class:`LevelLinear`
modules wrap the same base layer and the same P tensor but own their write matrices B_l, so
everything the agent does with its stack (optimizers, trackers, promotions, pulls, state) is
unchanged. A slot computes, for a batch that concatenates the K agents' rows (agent k owns rows
``k*b .. (k+1)*b - 1``)::

    y = W x + s * bmm(P x, (sum_l B_l^(k))^T)     W x and P x once for all K*b rows

so each agent's rows see exactly its own levels, and with a loss that sums each agent's own
mean, each agent's B receives exactly the gradient it would get alone. Outside a batched pass
a slot runs one agent's module (:meth:`SharedBase.route`), which is what an agent's own
:class:`RoutedModel` does on every call (evaluation, generation, internalisation, a solo step).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from layers.config import LevelsConfig
from layers.level_linear import LevelLinear
from layers.projection import ReadGrowth, read_projection
from layers.stack import LevelStack, _set_submodule
from layers.targets import in_out_features, select_targets

# the levels settings every stack on one base must share: they fix P and the slots' arithmetic
SHARED_FIELDS = ("rank", "seed", "scale", "dtype", "target_modules")


class SharedLinear(nn.Module):
    """The slot of one adapted module in a shared base: runs one member (``active``), or all of
    ``batch`` on their own rows, or refuses (neither set: no agent chosen, a wrong call)."""

    def __init__(self, name: str, base_layer: nn.Module, projection: torch.Tensor, *, scale: float,
                 dtype: torch.dtype) -> None:
        super().__init__()
        self.name, self.base_layer, self.scale = name, base_layer, float(scale)
        self.register_buffer("P", projection.to(device=base_layer.weight.device, dtype=dtype), persistent=False)
        # members are the agents' modules (their B are the agents' parameters): plain attributes,
        # not submodules, so the shared model's parameters stay the frozen base only
        self.active: LevelLinear | None = None
        self.batch: tuple[LevelLinear, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active is not None:
            return self.active(x)
        if not self.batch:
            raise RuntimeError(f"shared base module {self.name!r} called with no agent routed "
                               "(use the agent's model, SharedBase.route or SharedBase.batched)")
        k = len(self.batch)
        if x.shape[0] % k:
            raise ValueError(f"shared base module {self.name!r}: {x.shape[0]} rows do not split over {k} agents")
        y = self.base_layer(x)  # (K*b, ..., d_out): W x once for every row
        h = F.linear(x.to(self.P.dtype), self.P)  # (K*b, ..., R): P x once for every row
        rank = h.shape[-1]
        writes = []
        for m in self.batch:
            w = m.write_matrix()  # (d_out, R): that agent's enabled sum
            writes.append(w if w is not None else h.new_zeros(m.out_features, rank))
        b = torch.stack(writes)  # (K, d_out, R)
        delta = torch.bmm(h.reshape(k, -1, rank), b.transpose(1, 2))  # (K, b*..., R) @ (K, R, d_out)
        delta = delta.reshape(*y.shape[:-1], y.shape[-1])  # (K*b, ..., d_out): agent k's rows, its own levels
        wide = torch.promote_types(y.dtype, delta.dtype)  # one rounding, as LevelLinear does
        return torch.add(y.to(wide), delta.to(wide), alpha=self.scale).to(y.dtype)


class RoutedModel:
    """The shared base as one agent sees it: every call runs with that agent's levels only.
    Attribute reads go to the shared model (``config``, ``get_input_embeddings`` ...)."""

    def __init__(self, base: SharedBase, stack: LevelStack) -> None:
        self._base, self._stack = base, stack

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._base.route(self._stack):
            return self._base.model(*args, **kwargs)

    forward = __call__

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self._base.route(self._stack):
            return self._base.model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (copy, pickle): no recursion through self._base
            raise AttributeError(name)
        return getattr(self._base.model, name)


class SharedBase:
    """One frozen model and its slots; K agents' stacks attach with :meth:`stack_for`.

    ``key`` identifies what the model was built from (e.g. its model config); an agent whose key
    differs is refused, naming the fields that differ."""

    def __init__(self, model: nn.Module, config: LevelsConfig, *, key: Any = None) -> None:
        if any(isinstance(m, LevelLinear | SharedLinear) for m in model.modules()):
            raise ValueError("SharedBase: the model already carries a level stack or shared slots")
        self.model, self.config, self.key = model, dataclasses.replace(config), key
        self.device = next(model.parameters()).device
        for p in model.parameters():
            p.requires_grad_(False)
        self.slots: dict[str, SharedLinear] = {}
        for name in select_targets(model, config.target_modules):
            base = model.get_submodule(name)
            d_in, _ = in_out_features(base)
            if config.rank > d_in:
                raise ValueError(f"levels.rank={config.rank} exceeds the input features ({d_in}) of module {name!r}")
            slot = SharedLinear(name, base, read_projection(config.seed, name, config.rank, d_in),
                                scale=config.scale, dtype=config.torch_dtype)
            _set_submodule(model, name, slot)
            self.slots[name] = slot
        self.stacks: list[LevelStack] = []
        self.first_rank = config.rank  # the rank agents' configs name; growth raises self.config.rank
        self.growths: list[ReadGrowth] = []  # applied to every slot, in order

    def check(self, owner: str, config: LevelsConfig, key: Any = None) -> None:
        """Raise ValueError naming ``owner`` and what differs unless a stack of ``config`` (built from
        ``key``) can run on this base."""
        if key != self.key:
            raise ValueError(f"agent {owner!r}: its model differs from the host's base ({_differences(key, self.key)})")
        for f in SHARED_FIELDS:
            mine, theirs = getattr(config, f), getattr(self.config, f) if f != "rank" else self.first_rank
            if mine != theirs:
                raise ValueError(f"agent {owner!r}: levels.{f}={mine!r} differs from the host's levels.{f}={theirs!r} "
                                 "(agents on one base share the model, target modules, rank, seed, scale and dtype)")

    def stack_for(self, owner: str, config: LevelsConfig, key: Any = None) -> LevelStack:
        """A new stack of ``config`` on this base (all levels zero, every level enabled), after :meth:`check`."""
        self.check(owner, config, key)
        modules = {name: LevelLinear(slot.base_layer, slot.P, config.names, scale=slot.scale, dtype=slot.P.dtype)
                   for name, slot in self.slots.items()}  # P is the slot's tensor (no copy): same dtype and device
        stack = LevelStack(self.model, dataclasses.replace(config, rank=self.config.rank), modules, {}, shared=True)
        stack.growths = list(self.growths)  # it starts grown as far as the base is
        stack.model = RoutedModel(self, stack)  # the model as this agent sees it
        self.stacks.append(stack)
        return stack

    def apply_growth(self, event: ReadGrowth) -> bool:
        """Grow the shared P of every slot by ``event`` (:class:`~layers.projection.ReadGrowth`) and every
        stack on this base with it (zero columns in each B_l, each stack's listeners told), so all the
        host's agents keep one P. Idempotent: a no-op (False) once the base is at ``event.to_rank``.
        Raises ValueError for an event that does not start at the base's rank (nothing changes)."""
        if event.to_rank <= self.config.rank:
            return False
        if event.from_rank != self.config.rank:
            raise ValueError(f"SharedBase.apply_growth: event {event.from_rank}->{event.to_rank} does not start at "
                             f"the base's rank {self.config.rank}")
        grown = {}
        for name, slot in self.slots.items():
            if event.to_rank > slot.P.shape[1]:
                raise ValueError(f"SharedBase.apply_growth: rank {event.to_rank} exceeds the input features "
                                 f"({slot.P.shape[1]}) of {name!r}")
            rows = event.rows_for(self.config.seed, name, slot.P)  # (added, d_in) float64
            grown[name] = torch.cat([slot.P, rows.to(slot.P)], dim=0)  # (R', d_in)
        for name, slot in self.slots.items():
            slot.P = grown[name]
        self.config.rank = event.to_rank
        self.growths.append(event)
        for stack in self.stacks:
            stack.adopt_growth(event, {name: slot.P for name, slot in self.slots.items()})
        return True

    @contextlib.contextmanager
    def route(self, stack: LevelStack) -> Iterator[None]:
        """Run the ``with`` block with every slot computing through ``stack``'s modules only."""
        previous = [(s.active, s.batch) for s in self.slots.values()]
        for name, slot in self.slots.items():
            slot.active, slot.batch = stack.modules[name], ()
        try:
            yield
        finally:
            for slot, (active, batch) in zip(self.slots.values(), previous, strict=True):
                slot.active, slot.batch = active, batch

    @contextlib.contextmanager
    def batched(self, stacks: Sequence[LevelStack]) -> Iterator[None]:
        """Run the ``with`` block with the input rows split evenly over ``stacks``, in order."""
        foreign = [i for i, s in enumerate(stacks) if not any(s is t for t in self.stacks)]
        if foreign:
            raise ValueError(f"SharedBase.batched: stack {foreign[0]} was not made on this base")
        previous = [(s.active, s.batch) for s in self.slots.values()]
        for name, slot in self.slots.items():
            slot.active, slot.batch = None, tuple(s.modules[name] for s in stacks)
        try:
            yield
        finally:
            for slot, (active, batch) in zip(self.slots.values(), previous, strict=True):
                slot.active, slot.batch = active, batch


def _differences(a: Any, b: Any) -> str:
    """The fields where two dataclasses differ (``name: a != b``), else both reprs."""
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and type(a) is type(b):
        diffs = [f"{f.name}: {getattr(a, f.name)!r} != {getattr(b, f.name)!r}" for f in dataclasses.fields(a)
                 if getattr(a, f.name) != getattr(b, f.name)]
        return ", ".join(diffs)
    return f"{a!r} != {b!r}"
