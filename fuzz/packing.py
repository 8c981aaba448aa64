"""Packing: several cases that share a signature evaluated in one framework call.

The cases of a *family* (`fuzz.strategies.materialize_family`: one Hypothesis example, several
seeds) have the same op, mode, dtype, attributes and shapes. Normalization is independent across
its reduction sets, so such cases can be concatenated along an axis that no reduction set spans,
computed in one call (one IPC round trip, one framework dispatch, one TF trace, one oracle
evaluation) and split again:

    op                          packed along                      what the members share
    batch_norm, instance_norm   the channel axis (x, dy, tx;      nothing: gamma, beta, running
                                xs: channel axis + 1)             statistics and their tangents and
                                                                  gradients are per channel (axis 0)
    group_norm                  the channel axis, num_groups      nothing: channels are grouped in
                                multiplied by the pack size       contiguous blocks, so k cases of G
                                                                  groups are one case of k G groups
    layer_norm, rms_norm        axis 0, when it is not            gamma, beta, weight and their
                                normalized; else a new leading    tangents (identical arrays); not
                                axis (a non-negative `axis`       vjp with a parameter (its gradient
                                attribute moves by one)           sums over the batch)
    mvn, l2_normalize           the first axis outside `axes`;    nothing
                                else a new leading axis (non-
                                negative `axes` move by one)
    weight_norm                 `dim` (v, dw, tv; g and tg along  nothing: one norm per output
                                0, or `dim` when g keeps v's rank)

`plan(members)` says how (or None: not packable, e.g. every axis of an MVN reduced, an input this
module does not know); `pack(members, plan)` builds the packed `Case`; `split(plan, arrays)` cuts
packed outputs (or oracle references and bounds) back into per-member arrays: an output of the data
input's rank is cut along the data axis, any other (statistics, parameter gradients, running
statistics) along axis 0 for the batch-packed ops and along its last axis for the channel-packed
ones (BatchNorm's (C,) and (K, C), InstanceNorm's and GroupNorm's (N, C) and (N, G)); with a new
leading axis every output is cut along it.

Packing never decides a verdict on its own: the campaign re-runs every member that a packed call
flags alone, and records only what the solo run shows (`fuzz.campaign`); minimization runs unpacked.
`tests/fuzz/test_packing.py` checks that the oracle's references and bounds of a packed case, split,
equal each member's own, for every op and mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .case import Case

#: The most elements of a packed call's data input by default (a campaign's `--pack-elements`):
#: 64 cases of the largest default case (4,096 elements), so that with the default `--pack 64`
#: every case up to that size comes 64 to a family and the family size does not move the
#: campaign's mix of case sizes. A smaller budget trades data draws of larger shapes for more
#: signatures per second (benchmarks/family_size.py measures both and the mean case size).
PACK_ELEMENTS = 1 << 18

_CHANNEL_OPS = ("batch_norm", "instance_norm", "group_norm")
_BATCH_OPS = ("layer_norm", "rms_norm")
_DATA = {"x", "dy", "tx", "xs", "v", "dw", "tv"}
_PARAMS = {"gamma", "beta", "weight", "running_mean", "running_var", "tgamma", "tbeta", "tweight", "g", "tg"}


@dataclass(frozen=True)
class Plan:
    """How a family packs: `axes` maps each input name to its concatenation axis (None: shared by
    every member, which must hold identical arrays); `data_axis` and `data_ndim` are those of the
    data input (x, xs or v), `stats_last` whether non-data outputs are cut along their last axis
    (channel-packed ops) rather than axis 0; `attrs` are the packed case's attributes."""

    size: int
    axes: Mapping[str, int | None]
    data_axis: int
    data_ndim: int
    stats_last: bool
    attrs: Mapping
    stacked: bool = False  # members stacked along a new leading axis (`axes` then all 0 or None)


def _data_name(case: Case) -> str:
    return "xs" if "xs" in case.inputs else ("v" if case.op == "weight_norm" else "x")


def _channel_axis(case: Case) -> int:
    nd = case.inputs[_data_name(case)].ndim - (1 if "xs" in case.inputs else 0)
    return 1 if case.attrs.get("layout", "channels_first") == "channels_first" else nd - 1


def _axes(case: Case) -> tuple[int, dict[str, int | None], dict | None] | None:
    """(data axis, per-input axes, attributes of a stacked pack or None) for one member, or None."""
    op, attrs, names = case.op, case.attrs, set(case.inputs)
    if not names <= _DATA | _PARAMS:
        return None
    steps = 1 if "xs" in names else 0
    x = case.inputs[_data_name(case)]
    nd = x.ndim - steps
    if op in _CHANNEL_OPS:
        ch = _channel_axis(case)
        data = ch + steps
        axes = {n: (data if n in _DATA else 0) for n in names}
        return data, axes, None
    if op in _BATCH_OPS:
        k = attrs["normalized_ndim"] if "normalized_ndim" in attrs else nd - attrs["axis"] % nd
        if case.mode.endswith("vjp") and names & {"gamma", "beta", "weight"}:
            return None  # dgamma, dbeta, dweight sum over the batch: not separable
        axes = {n: (0 if n in _DATA else None) for n in names}
        if k < nd:
            return 0, axes, None
        stacked = dict(attrs)
        if "axis" in attrs and attrs["axis"] >= 0:
            stacked["axis"] = attrs["axis"] + 1
        return 0, axes, stacked
    if op in ("mvn", "l2_normalize"):
        reduced = {a % nd for a in attrs["axes"]}
        free = [i for i in range(nd) if i not in reduced]
        if free:
            return free[0], {n: free[0] for n in names}, None
        stacked = dict(attrs)
        stacked["axes"] = tuple(a + 1 if a >= 0 else a for a in attrs["axes"])
        return 0, {n: 0 for n in names}, stacked
    if op == "weight_norm":
        dim = attrs["dim"] % nd
        axes = {n: (dim if n in _DATA or case.inputs[n].ndim == nd else 0) for n in names}
        return dim, axes, None
    return None


def plan(members: Sequence[Case], max_elements: int = PACK_ELEMENTS) -> Plan | None:
    """How `members` pack into one case, or None (fewer than two members, different signatures,
    an op or mode that does not pack, shared inputs that differ, more than `max_elements` data
    elements in all, unless a single member has more)."""
    if len(members) < 2:
        return None
    first = members[0]
    got = _axes(first)
    if got is None:
        return None
    data_axis, axes, stacked = got
    shapes = {n: a.shape for n, a in first.inputs.items()}
    for m in members[1:]:
        if (m.op, m.mode, m.dtype) != (first.op, first.mode, first.dtype) or dict(m.attrs) != dict(first.attrs):
            return None
        if {n: a.shape for n, a in m.inputs.items()} != shapes:
            return None
        for n, a in axes.items():
            if a is None and m.inputs[n] is not first.inputs[n] and not np.array_equal(
                    m.inputs[n], first.inputs[n], equal_nan=True):
                return None
    data = first.inputs[_data_name(first)]
    if data.size * len(members) > max(max_elements, data.size):
        return None
    if stacked is not None:
        return Plan(len(members), axes, 0, data.ndim + 1, False, stacked, stacked=True)
    attrs = dict(first.attrs)
    if first.op == "group_norm":
        attrs["num_groups"] = attrs["num_groups"] * len(members)
    return Plan(len(members), axes, data_axis, data.ndim, first.op in _CHANNEL_OPS, attrs)


def pack(members: Sequence[Case], p: Plan) -> Case:
    """The packed case of `members` (see the module docstring)."""
    first = members[0]
    inputs = {}
    join = np.stack if p.stacked else np.concatenate
    for n, a in p.axes.items():
        inputs[n] = first.inputs[n] if a is None else join([m.inputs[n] for m in members], axis=a)
    return Case(first.op, first.mode, first.dtype, inputs, p.attrs)


def output_axis(p: Plan, array: np.ndarray) -> int:
    """The axis along which a packed output (or reference, or bound) is cut."""
    if array.ndim == p.data_ndim:
        return p.data_axis
    return array.ndim - 1 if p.stats_last else 0


def split(p: Plan, arrays: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]] | None:
    """Per-member dicts of the packed `arrays`; None when an array cannot be cut into `p.size`
    equal parts along its axis (a runner returned a wrong shape: the members are then run alone)."""
    out: list[dict[str, np.ndarray]] = [{} for _ in range(p.size)]
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.ndim == 0:
            return None
        if p.stacked:
            if a.shape[0] != p.size:
                return None
            for i in range(p.size):
                out[i][name] = a[i]
            continue
        ax = output_axis(p, a)
        if a.shape[ax] % p.size:
            return None
        step, cut = a.shape[ax] // p.size, [slice(None)] * a.ndim
        for i in range(p.size):  # (views, as numpy.split gives, without its per-part overhead)
            cut[ax] = slice(i * step, (i + 1) * step)
            out[i][name] = a[tuple(cut)]
    return out
