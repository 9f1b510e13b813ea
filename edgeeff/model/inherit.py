"""ImageNet features for a weightless lite spec, inherited from the nearest pretrained Lite0/1/2.

A lite φ without its own weights (φ = -2, -1, -0.5, +0.5, ...) is a narrower and/or shallower
copy of one of the pretrained Lite0/1/2 networks: same block table, same kernels per stage,
fixed stem and head. Instead of random initialisation it takes a slice of that network:

* **Source**: the smallest pretrained Lite whose architecture dominates the target (as many
  filters in every stage, as many blocks per stage, same kernels). If none does (φ beyond
  Lite2), Lite2 as far as it goes: the extra channels and blocks keep Keras' initialisation,
  with their weights *into* inherited channels zeroed (extra blocks get a zero projection), so
  the inherited part computes what it computed in Lite2 and the rest starts as a no-op.
* **Depth**: each stage keeps its first blocks (the first carries the stride and the width
  change); the dropped blocks are residual and their expected output is compensated (below).
* **Residual-stream width**: every block of a stage reads and writes the same channels (the
  residual adds tie them), so one selection per stage: the channels whose consuming weights
  have the largest L1 norm (the stage's later expand convs, the next stage's first expand conv,
  or ``top_conv`` after the last stage).
* **Expanded width** (inside a block): the spread of the channel after the depthwise BN and
  ReLU6 x the L1 norm of the projection weights that read it. The spread is the std of
  ReLU6(N(beta, gamma^2)): ``|gamma|`` for a channel that stays inside 0..6, less for one that
  sits mostly below 0 or above 6, whose removal the mean compensation below mostly repairs
  (it ranks channels better than plain ``|gamma|``: benchmarks/inherit_vs_random.py).
* **Mean compensation**: a removed channel (or a dropped block) took its expected value away
  from the layer that reads it. The post-BN activation is taken as Gaussian with mean ``beta``
  and std ``|gamma|``; an expanded channel feeds ``E[ReLU6(x)]`` (closed form) into the
  projection, a residual-stream channel feeds the sum of its blocks' ``project_bn`` betas into
  the next convolutions. That expectation times the consuming weights is subtracted from the
  consuming BatchNorm's moving mean, so the consumer sees the same mean input as in the source.
  No BatchNorm re-estimation (it hurt on a few photos).

Pure numpy on the arrays of :func:`edgeeff.model.pretrained.converted`; the result is a
starting point for ``edgeeff train``, not an ImageNet model of this architecture.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from edgeeff.core.arch import Architecture, Block, ModelSpec, expand, preset_spec
from edgeeff.core.errors import EdgeeffError, RandomWeightsWarning
from edgeeff.core.optional import MissingExtra
from edgeeff.core.zoo import AVAILABLE, PRETRAINED, source_for
from edgeeff.model import pretrained

RELU6_CAP = 6.0

Arrays = dict[str, list[np.ndarray]]


class InheritedWeightsWarning(RandomWeightsWarning):
    """Weights sliced from a larger pretrained network: a starting point, not a trained model."""


# ---------------------------------------------------------------------------- the source


def _stages(arch: Architecture) -> list[list[Block]]:
    return [[b for b in arch.blocks if b.stage == s] for s in range(1, len(arch.stages) + 1)]


def dominates(src: Architecture, tgt: Architecture) -> bool:
    """``src`` has at least ``tgt``'s filters and blocks in every stage, the same kernels and
    expansion ratios, and at least its stem and head widths."""
    if src.stem_filters < tgt.stem_filters or src.top_filters < tgt.top_filters:
        return False
    for s_blocks, t_blocks in zip(_stages(src), _stages(tgt)):
        if len(s_blocks) < len(t_blocks):
            return False
        s, t = s_blocks[0], t_blocks[0]
        if s.filters_out < t.filters_out or s.kernel != t.kernel or s.expand_ratio != t.expand_ratio:
            return False
    return True


def _installed(name: str) -> bool:
    return pretrained.available_for(preset_spec(name))


def choose_source(spec: ModelSpec) -> tuple[str, bool]:
    """(pretrained preset to inherit from, whether it dominates ``spec``): the smallest
    installed Lite0/1/2 that dominates, else the largest installed one."""
    if spec.family != "lite":
        raise EdgeeffError(
            f"cannot inherit weights for {spec.name}: edgeeff ships pretrained weights only for "
            f"the lite family ({', '.join(AVAILABLE)}), none for the efficientnet family; use "
            "--family lite, --weights none, or a .weights.h5 file (e.g. keras.applications' "
            "EfficientNetB0-B7)")
    tgt = expand(spec)
    installed = [n for n in AVAILABLE if _installed(n)]
    if not installed:
        raise MissingExtra(PRETRAINED[AVAILABLE[0]].module, "inheriting weights")
    for name in installed:  # AVAILABLE runs from the smallest to the largest
        if dominates(expand(preset_spec(name)), tgt):
            return name, True
    return installed[-1], False


def can_inherit(spec: ModelSpec) -> bool:
    """A lite spec and at least one pretrained Lite installed."""
    try:
        choose_source(spec)
    except EdgeeffError:
        return False
    return True


# ---------------------------------------------------------------------------- statistics


_erf = np.vectorize(math.erf, otypes=[float])


def _pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


def relu6_moments(mu, sigma) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of min(max(x, 0), 6) for x ~ N(mu, sigma^2), elementwise
    (closed form: the Gaussian's truncated moments on [0, 6] plus the mass clipped at 6)."""
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.maximum(np.abs(np.asarray(sigma, dtype=np.float64)), 1e-12)
    a, b = (0.0 - mu) / sigma, (RELU6_CAP - mu) / sigma
    mass, pa, pb, above = _cdf(b) - _cdf(a), _pdf(a), _pdf(b), 1.0 - _cdf(b)
    m1 = mu * mass + sigma * (pa - pb) + RELU6_CAP * above
    m2 = (mu * mu * mass + 2.0 * mu * sigma * (pa - pb)
          + sigma * sigma * (mass + a * pa - b * pb) + RELU6_CAP ** 2 * above)
    return m1, np.sqrt(np.maximum(m2 - m1 * m1, 0.0))


def relu6_mean(mu, sigma) -> np.ndarray:
    """E[min(max(x, 0), 6)] for x ~ N(mu, sigma^2), elementwise."""
    return relu6_moments(mu, sigma)[0]


# ---------------------------------------------------------------------------- selections


@dataclass(frozen=True)
class Sel:
    """Which source channels fill a target dimension: target positions ``0..len(idx)-1`` take
    source channels ``idx`` (ascending); positions from ``len(idx)`` to ``size - 1`` are new
    (the target is wider than the source there)."""

    idx: np.ndarray
    size: int  # the target's width
    source: int  # the source's width

    @property
    def old(self) -> int:
        return len(self.idx)

    @property
    def removed(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.source), self.idx)


def _top(score: np.ndarray, k: int) -> Sel:
    n = len(score)
    if k >= n:
        return Sel(np.arange(n), k, n)
    keep = np.sort(np.argsort(-score, kind="stable")[:k])
    return Sel(keep, k, n)


def _identity(n_target: int, n_source: int) -> Sel:
    return Sel(np.arange(min(n_target, n_source)), n_target, n_source)


def _head_channels(source: Arrays, n_target: int, n_source: int) -> Sel:
    """The top conv's channels a head of ``n_target`` keeps (a lite head scaled with width
    is narrower than the source's 1280): as inside a block, the spread after top_bn and ReLU6
    x the L1 norm of the ImageNet classifier's weights that read the channel."""
    if n_target >= n_source:
        return _identity(n_target, n_source)
    gamma, beta = source["top_bn"][0], source["top_bn"][1]
    spread = relu6_moments(beta, gamma)[1]
    reads = np.abs(source["predictions"][0]).sum(axis=1)  # Dense kernel: (channels, classes)
    return _top(spread * reads, n_target)


def _rows_l1(w: np.ndarray) -> np.ndarray:
    """L1 norm of a HWIO kernel per input channel."""
    return np.abs(w).sum(axis=(0, 1, 3))


def _place_conv(init: np.ndarray, w: np.ndarray, sin: Sel, sout: Sel) -> np.ndarray:
    """The target HWIO kernel: inherited rows x columns, new inputs zero-weighted into
    inherited outputs, everything else (new outputs) as initialised."""
    out = np.array(init, dtype=np.float32, copy=True)
    out[:, :, :sin.old, :sout.old] = w[:, :, sin.idx][:, :, :, sout.idx]
    out[:, :, sin.old:, :sout.old] = 0.0
    return out


def _place_channels(init: list[np.ndarray], ws: list[np.ndarray], sel: Sel) -> list[np.ndarray]:
    """Per-channel arrays (BatchNorm's four, or a depthwise kernel on its third axis)."""
    out = []
    for i, w in zip(init, ws):
        o = np.array(i, dtype=np.float32, copy=True)
        if o.ndim == 4:  # depthwise HWC1
            o[:, :, :sel.old] = w[:, :, sel.idx]
        else:
            o[:sel.old] = w[sel.idx]
        out.append(o)
    return out


def _compensate(bn: list[np.ndarray], w: np.ndarray, lost: np.ndarray, sout: Sel) -> None:
    """The consumer (kernel ``w``, source layout) lost ``lost`` (expected input per source input
    channel): subtract the expected pre-BN shortfall from its inherited moving means."""
    if not np.any(lost):
        return
    delta = np.einsum("hwio,i->o", w.astype(np.float64), lost)[sout.idx]
    bn[2][:sout.old] = (bn[2][:sout.old] - delta).astype(np.float32)


# ---------------------------------------------------------------------------- the algorithm


def inherit_arrays(spec: ModelSpec, source: Arrays, source_spec: ModelSpec, init: Arrays,
                   compensate: bool = True) -> Arrays:
    """Target layer name -> weight list, from the ``source`` arrays (of ``source_spec``'s
    architecture). ``init`` holds the target model's initial weights (shapes, and the values of
    whatever the source cannot provide)."""
    tgt, src = expand(spec), expand(source_spec)
    if tgt.stem_filters != src.stem_filters:
        raise EdgeeffError("inheritance needs the lite family's fixed stem")
    t_stages, s_stages = _stages(tgt), _stages(src)
    if [b[0].kernel for b in t_stages] != [b[0].kernel for b in s_stages]:
        raise EdgeeffError("inheritance needs the same kernel sizes per stage")
    n_stages = len(t_stages)
    kept = [min(len(t), len(s)) for t, s in zip(t_stages, s_stages)]

    def beta(b: Block) -> np.ndarray:
        return source[b.name + "_project_bn"][1].astype(np.float64)

    # Expected residual-stream value per source channel where a consumer reads it: after the
    # first ``m`` blocks of a stage, the sum of their project_bn betas.
    def stream_mean(stage: int, m: int) -> np.ndarray:
        return np.sum([beta(b) for b in s_stages[stage][:m]], axis=0)

    # consumers of each stage's stream (source kernels, among the blocks that stay)
    def consumers(stage: int) -> list[np.ndarray]:
        ks = [source[b.name + "_expand_conv"][0] for b in s_stages[stage][1:kept[stage]]]
        if stage + 1 < n_stages:
            nxt = s_stages[stage + 1][0]
            ks.append(source[nxt.name + ("_expand_conv" if nxt.expand_ratio != 1 else "_dwconv")][0])
        else:
            ks.append(source["top_conv"][0])
        return ks

    stream: list[Sel] = []
    for st in range(n_stages):
        width = t_stages[st][0].filters_out
        score = np.sum([_rows_l1(k) for k in consumers(st)], axis=0)
        stream.append(_top(score, width))

    out: Arrays = {}
    stem = _identity(tgt.stem_filters, src.stem_filters)
    out["stem_conv"] = [_place_conv(init["stem_conv"][0], source["stem_conv"][0],
                                    _identity(3, 3), stem)]
    out["stem_bn"] = _place_channels(init["stem_bn"], source["stem_bn"], stem)

    for st in range(n_stages):
        for j, tb in enumerate(t_stages[st]):
            sin = (stem if st == 0 else stream[st - 1]) if j == 0 else stream[st]
            sout = stream[st]
            p = tb.name + "_"
            if j >= len(s_stages[st]):  # deeper than the source: a block that adds nothing
                for layer in ("expand_conv", "expand_bn", "dwconv", "bn", "project_bn"):
                    if p + layer in init:
                        out[p + layer] = [np.array(a, copy=True) for a in init[p + layer]]
                out[p + "project_conv"] = [np.zeros_like(init[p + "project_conv"][0])]
                continue
            sb = s_stages[st][j]
            q = sb.name + "_"
            # what the block's input lost: removed stream channels and, for a stage's first
            # block, the expected output of the previous stage's dropped blocks
            lost = np.zeros(sin.source)
            if j == 0 and st > 0:
                mu_src = stream_mean(st - 1, len(s_stages[st - 1]))
                mu_tgt = np.zeros_like(mu_src)
                mu_tgt[sin.idx] = stream_mean(st - 1, kept[st - 1])[sin.idx]
                lost = mu_src - mu_tgt
            elif j > 0:
                lost[sin.removed] = stream_mean(st, j)[sin.removed]
            dw_bn = source[q + "bn"]
            if tb.expand_ratio != 1:
                # what a channel's removal costs once its mean is compensated: its spread after
                # ReLU6 (|gamma| for a channel inside 0..6) x the weights that read it
                spread = relu6_moments(dw_bn[1], dw_bn[0])[1]
                proj_rows = _rows_l1(source[q + "project_conv"][0][:, :, :, sout.idx])
                inner = _top(spread * proj_rows, tb.expanded)
                out[p + "expand_conv"] = [_place_conv(init[p + "expand_conv"][0],
                                                      source[q + "expand_conv"][0], sin, inner)]
                ebn = _place_channels(init[p + "expand_bn"], source[q + "expand_bn"], inner)
                if compensate:
                    _compensate(ebn, source[q + "expand_conv"][0], lost, inner)
                out[p + "expand_bn"] = ebn
            else:  # the depthwise conv reads the block input directly (stage 1: the stem)
                inner = sin
            out[p + "dwconv"] = _place_channels(init[p + "dwconv"], source[q + "dwconv"], inner)
            out[p + "bn"] = _place_channels(init[p + "bn"], dw_bn, inner)
            out[p + "project_conv"] = [_place_conv(init[p + "project_conv"][0],
                                                   source[q + "project_conv"][0], inner, sout)]
            pbn = _place_channels(init[p + "project_bn"], source[q + "project_bn"], sout)
            if compensate and len(inner.removed):
                gone = np.zeros(inner.source)
                gone[inner.removed] = relu6_mean(dw_bn[1][inner.removed], dw_bn[0][inner.removed])
                _compensate(pbn, source[q + "project_conv"][0], gone, sout)
            out[p + "project_bn"] = pbn

    last = n_stages - 1
    head_in = stream[last]
    top = _head_channels(source, tgt.top_filters, src.top_filters)
    out["top_conv"] = [_place_conv(init["top_conv"][0], source["top_conv"][0], head_in, top)]
    tbn = _place_channels(init["top_bn"], source["top_bn"], top)
    if compensate:
        mu_src = stream_mean(last, len(s_stages[last]))
        mu_tgt = np.zeros_like(mu_src)
        mu_tgt[head_in.idx] = stream_mean(last, kept[last])[head_in.idx]
        _compensate(tbn, source["top_conv"][0], mu_src - mu_tgt, top)
    out["top_bn"] = tbn
    if "predictions" in init and [w.shape for w in init["predictions"]] == \
            [w.shape for w in source["predictions"]]:
        out["predictions"] = [np.array(w, dtype=np.float32, copy=True) for w in source["predictions"]]
    return out


def describe(spec: ModelSpec, name: str, dominated: bool, compensate: bool = True) -> str:
    """The model card's weights string: never claims to be an ImageNet model."""
    tag = pretrained._package(name)[0]
    head = "" if spec.num_classes == 1000 else "; new head"
    if source_for(spec) == name:  # only on request: 'auto' loads these as imagenet weights
        return f"inherited from {name} ({tag}; the same architecture: an exact copy{head})"
    how = "width/depth sliced" + (", mean-compensated" if compensate else "")
    if not dominated:
        how += (f"; channels and blocks beyond {name}'s left at Keras init "
                "(zero-weighted into inherited channels)")
    return (f"inherited from {name} ({tag}; {how}{head}): not a trained model of this "
            "architecture, fine-tune it with 'edgeeff train'")


def inherit_into(model, spec: ModelSpec, compensate: bool = True) -> str:
    """Fill ``model`` (built from the lite ``spec``) with weights inherited from the nearest
    pretrained Lite0/1/2; returns the model card's description. ``compensate=False`` skips the
    mean compensation (for comparison only)."""
    name, dominated = choose_source(spec)
    source = pretrained.converted(name)
    layers = {layer.name: layer for layer in model.layers if layer.weights}
    init = {n: [np.asarray(w) for w in layer.get_weights()] for n, layer in layers.items()}
    arrays = inherit_arrays(spec, source, preset_spec(name), init, compensate)
    for layer_name, ws in arrays.items():
        if layer_name in layers:
            layers[layer_name].set_weights(ws)
    desc = describe(spec, name, dominated, compensate)
    if source_for(spec) == name:
        return desc  # the pretrained network itself
    warnings.warn(f"weights inherited from EfficientNet-{name.capitalize()}'s ImageNet weights "
                  f"(sliced to {spec.name}): NOT a trained ImageNet model, predictions are "
                  "approximate; fine-tune with 'edgeeff train' for a real model",
                  InheritedWeightsWarning, stacklevel=2)
    return desc
