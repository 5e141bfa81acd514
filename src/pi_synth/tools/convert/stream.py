"""Streaming building blocks with their caches as explicit state, for tracing to ONNX.

A TorchScript streaming model keeps its caches in buffers and updates them in place
(``copy_``, ``+=``). Tracing drops those writes, and the scripted module itself does not
export. So a converter rebuilds the network from these blocks, each of which reads its
cache from the graph's state inputs and writes the new cache to a state output:

* :class:`Ctx` hands out state inputs in a fixed order and collects state outputs; a first
  *planning* pass (``ctx.plan``) only records the shapes, so the exporter knows them.
* Blocks are plain Python objects holding tensors (weights already folded); they are
  traced, never trained. Batch is 1 and every shape is static.

Lean on purpose, because a streaming block is short (a RAVE decoder starts at one frame)
and per-node overhead, not arithmetic, is what costs:

* per cache at most one ``Concat`` and one ``Slice``, no scatter; a residual unit's delay
  line and its first convolution's cache share one state (:meth:`Residual._shared`);
* a transposed convolution with kernel ``2·stride`` is an ordinary kernel-2 convolution
  over ``[previous frame, frames]`` plus depth-to-space: its cache is one input frame;
* **two layouts**. Where a block has few frames (``t <= cl_frames``, the wide, short start
  of a decoder) the blocks run *channels-last* (``[1, T, C]``): a convolution is ``k``
  time slices concatenated on channels and one ``MatMul`` with a constant weight, which
  onnxruntime pre-packs — an ``N = T`` GEMM inside ``Conv`` wastes most of its SIMD width
  when ``T`` is 1–8 (measured 2.3× on a 768-channel, 2-frame layer). The taps are one
  ``Gather`` with constant indices (im2col), and depth-to-space is a free reshape. Long blocks stay channels-first with ``Conv``. ``layout()`` decides
  and one ``Transpose`` switches.

The RAVE decoder uses a third form, **rows** (the blocks' ``rows`` methods): every activation is a
``[T, C]`` matrix (one row per frame, no batch axis) and the caches travel in *one* state vector
(:class:`PackedCtx`). Measured on onnxruntime 1.32, a ``Concat`` + ``Slice`` pair costs 3.4 µs,
a state input/output pair 3–6 µs in a plain ``session.run`` and a node 0.6–1 µs, so:

* a cache is a piece of the state (one ``Split``, one ``Reshape`` per channel count), ``[cache, x]``
  one ``Concat``, and no ``Slice`` writes a rows cache back: per channel count, the new caches are
  one ``Gather`` of whole rows (constant indices) from one ``Concat`` of the old caches and every
  input the caches were extended with (channels-first caches keep their tail ``Slice``);
* a convolution is a row ``Gather`` (im2col, a ``Reshape`` when one output frame reads the whole
  input) and one ``Gemm`` carrying the bias, or the residual; the activation after it sits right
  on the ``Gemm`` (onnxruntime fuses them into ``FusedGemm``); depth-to-space after a transposed
  convolution is a ``Reshape``. (Element-wise ``Gather`` on a flat vector, which would save the
  reshapes, costs ~20 ns per element in onnxruntime: 1.4 ms for the PQMF's im2col.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Ctx:
    """State plumbing for one traced call (or a planning pass when ``plan`` is True)."""

    inputs: list = field(default_factory=list)
    plan: bool = False
    outputs: list = field(default_factory=list)
    shapes: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    _next: int = 0

    def read(self, shape, label: str, like: torch.Tensor) -> torch.Tensor:
        if self.plan:
            self.shapes.append(tuple(int(s) for s in shape))
            self.labels.append(label)
            return torch.zeros(shape, dtype=like.dtype)
        t = self.inputs[self._next]
        self._next += 1
        return t

    def write(self, t: torch.Tensor) -> None:
        self.outputs.append(t)

    def write_rows(self, x: torch.Tensor) -> None:
        """The new cache (``[p, C]``, just read) is the last ``p`` rows of ``[cache, x]``."""
        if self.plan:
            self.outputs.append(None)
            return
        cache = self.inputs[self._next - 1]
        p = cache.shape[0]
        self.outputs.append(torch.cat([cache, x])[-p:] if x.shape[0] < p else x[-p:])


class PackedCtx(Ctx):
    """Every cache in one flat state vector; states labelled ``noise`` stay separate pairs.

    Caches are grouped by kind and channel count (``[p, C]`` rows, ``[1, C, p]`` channels-first):
    the state is cut by one ``Split`` into groups, each group reshaped once and split into its
    caches. A rows group's new state is one ``Gather`` of whole rows (constant indices) from one
    ``Concat`` of the old group and the inputs its caches were extended with
    (:meth:`Ctx.write_rows`); a channels-first group's is the ``Concat`` of its caches' tails
    (:meth:`Ctx.write`; a ``Gather`` on the last axis would copy single elements). Built from a
    planning pass (``shapes``, ``labels``); :meth:`finish` returns the state outputs.
    """

    def __init__(self, state, extra, shapes, labels):
        super().__init__(inputs=[])
        self.layout = pack_layout(shapes, labels)
        groups = self.layout["groups"]
        sizes = [g["size"] for g in groups]
        parts = list(torch.split(state, sizes)) if len(groups) > 1 else [state]
        self._cache = {}  # read index -> cache tensor
        for g, part in zip(groups, parts):
            gt = part.reshape(g["shape"])
            pieces = list(torch.split(gt, g["frames"], g["axis"])) if len(g["reads"]) > 1 else [gt]
            g["old"] = gt
            for j, piece in zip(g["reads"], pieces):
                self._cache[j] = piece
        self._extra = list(extra)
        self._writes = {}
        self._nr = self._nw = 0

    def read(self, shape, label, like):
        j = self._nr
        self._nr += 1
        if j in self._cache:
            return self._cache[j]
        return self._extra[self.layout["extra"].index(j)]

    def _write(self, kind, t):
        j = self._nw
        self._nw += 1
        self._writes[j] = (kind, t)

    def write(self, t):
        self._write("whole", t)

    def write_rows(self, x):
        self._write("tail", x)

    def finish(self):
        if self._nw != self._nr:
            raise RuntimeError(f"state plan mismatch: {self._nr} reads, {self._nw} writes")
        flat = []
        for g in self.layout["groups"]:
            ax, sources, idx, off, pos = g["axis"], [g["old"]], [], g["frames_total"], 0
            for j, p in zip(g["reads"], g["frames"]):
                kind, t = self._writes[j]
                m = t.shape[ax]
                if kind == "whole":
                    idx.append(torch.arange(off, off + m))
                elif m >= p:
                    idx.append(torch.arange(off + m - p, off + m))
                else:  # the last p - m frames of the old cache, then all of x
                    idx.append(torch.cat([torch.arange(pos + m, pos + p), torch.arange(off, off + m)]))
                sources.append(t)
                off += m
                pos += p
            idx = torch.cat(idx)
            if torch.equal(idx, torch.arange(g["frames_total"], off)):  # the new caches, in order
                new = torch.cat(sources[1:], ax) if len(sources) > 2 else sources[1]
            else:
                new = torch.cat(sources, ax).index_select(ax, idx)
            flat.append(new.reshape(-1))
        extra = [self._writes[j][1] for j in self.layout["extra"]]
        return [torch.cat(flat) if len(flat) > 1 else flat[0], *extra]


def _frame_axis(shape) -> tuple:
    """(group key, frame axis, channels) of a cache shape."""
    if len(shape) == 2:
        return ("rows", shape[1]), 0, shape[1]
    if len(shape) == 3 and shape[0] == 1:
        return ("cf", shape[1]), 2, shape[1]
    raise ValueError(f"cannot pack a cache of shape {shape}")


def pack_layout(shapes, labels) -> dict:
    """How :class:`PackedCtx` packs caches: groups (in first-read order) and the separate reads."""
    groups, extra = {}, []
    for j, (sh, lb) in enumerate(zip(shapes, labels)):
        if lb.startswith("noise"):  # "noise" (uniform), "noise_normal": fed from outside by --check
            extra.append(j)
            continue
        key, ax, c = _frame_axis(tuple(sh))
        g = groups.setdefault(key, {"axis": ax, "c": c, "reads": [], "frames": []})
        g["reads"].append(j)
        g["frames"].append(int(sh[ax]))
    out = []
    for (kind, c), g in groups.items():
        n = sum(g["frames"])
        g["frames_total"] = n
        g["shape"] = (n, c) if kind == "rows" else (1, c, n)
        g["size"] = n * c
        out.append(g)
    return {"groups": out, "extra": extra, "size": sum(g["size"] for g in out)}


def row_taps(t_out: int, k: int, d: int, s: int, start: int = 0) -> torch.Tensor:
    """Row indices ``[t_out, k]`` of a convolution's taps in a ``[L, C]`` input."""
    return start + unfold_index(t_out, k, d, s)


def rows_gemm(full, idx, w, bias=None, residual=None, act=None):
    """``act(im2col(full) @ w + bias [+ residual])`` as ``[t_out, C_out]``: a row ``Gather`` and a
    ``Reshape`` (only the ``Reshape`` when the taps read ``full`` once in order) and one ``Gemm``
    (kept a ``Gemm`` without bias too, so onnxruntime fuses the activation into it)."""
    t_out, k = idx.shape
    c = full.shape[1]
    if idx.numel() == full.shape[0] and torch.equal(idx.reshape(-1), torch.arange(full.shape[0])):
        a = full.reshape(t_out, k * c) if k > 1 else full
    else:
        a = full[idx.reshape(-1)] if k == 1 else full[idx].reshape(t_out, k * c)
    if residual is not None and bias is not None:
        residual = residual + bias
    elif residual is None:
        residual = bias if bias is not None else torch.zeros(w.shape[1])
    y = torch.addmm(residual, a, w)
    return act.apply2d(y) if act is not None else y


def tlen(x, cl: bool) -> int:
    return x.shape[1] if cl else x.shape[2]


def tslice(x, a, b, cl: bool, step: int = 1):
    return x[:, a:b:step] if cl else x[:, :, a:b:step]


def cached_concat(ctx: Ctx, x: torch.Tensor, p: int, label: str, cl: bool = False):
    """``[cache(p frames), x]`` on the time axis, and the new cache (its last ``p`` frames)."""
    if p == 0:
        return x
    shape = (1, p, x.shape[2]) if cl else (1, x.shape[1], p)
    s = ctx.read(shape, label, x)
    full = torch.cat([s, x], 1 if cl else 2)
    n = tlen(full, cl)
    # a Slice per cache: gathering frames on the last axis (channels-first) would be a Gather
    # of single elements, ~20 ns each in onnxruntime
    ctx.write(tslice(full, n - p, n, cl))
    return full


def unfold_index(t_out: int, k: int, d: int, s: int) -> torch.Tensor:
    """Frame indices ``[t_out, k]`` of a convolution's taps (a constant for one ``Gather``)."""
    return torch.arange(t_out).reshape(-1, 1) * s + torch.arange(k).reshape(1, -1) * d


def unfold(full: torch.Tensor, t_out: int, k: int, d: int, s: int) -> torch.Tensor:
    """Channels-last im2col ``[1, L, C] -> [1, t_out, k·C]``: a reshape when the taps cover
    ``full`` exactly once in order (one output frame), else one ``Gather``."""
    c = full.shape[2]
    idx = unfold_index(t_out, k, d, s)
    if idx.numel() == full.shape[1] and torch.equal(idx.reshape(-1), torch.arange(full.shape[1])):
        return full.reshape(1, t_out, k * c)
    return full[:, idx].reshape(1, t_out, k * c)


class Block:
    """A traced step ``x -> y`` that may read and write state through ``ctx``.

    ``cl`` selects the layout: channels-last ``[1, T, C]`` or channels-first ``[1, C, T]``.
    """

    cl = False

    def __call__(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def macs(self, t_in: int) -> tuple[int, int]:
        """(multiply-adds, output length) for an input of ``t_in`` frames."""
        return 0, t_in

    def rows(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        """The same step on a ``[T, C]`` activation (caches ``[p, C]``, see :class:`PackedCtx`)."""
        raise NotImplementedError(f"{type(self).__name__} has no rows form")

    def children(self) -> list:
        return []


def set_layout(block, cl: bool) -> None:
    if block is None:
        return
    block.cl = cl
    for c in block.children():
        set_layout(c, cl)


class Seq(Block):
    def __init__(self, blocks):
        self.blocks = [b for b in blocks if b is not None]

    def __call__(self, x, ctx):
        for b in self.blocks:
            x = b(x, ctx)
        return x

    def macs(self, t):
        total = 0
        for b in self.blocks:
            m, t = b.macs(t)
            total += m
        return total, t

    def children(self):
        return self.blocks

    def rows(self, x, ctx):
        i, b = 0, self.blocks
        while i < len(b):
            if isinstance(b[i], (Conv, ConvT)) and i + 1 < len(b) and isinstance(b[i + 1], Fn):
                x = b[i].rows(x, ctx, act=b[i + 1])  # the activation right on the Gemm
                i += 2
            else:
                x = b[i].rows(x, ctx)
                i += 1
        return x


class _Split(Block):
    """A :class:`Seq` run in two layouts, split where its blocks' frame counts cross ``rows_frames``."""

    def children(self):
        return [self.seq]

    def macs(self, t):
        return self.seq.macs(t)


class RowsThenCF(_Split):
    """The leading blocks that see at most ``rows_frames`` frames in the rows form, the rest
    channels-first (``Conv`` beats im2col + ``Gemm`` on long blocks: fewer nodes). ``rows``
    returns ``[T, C]`` or, once switched, ``[1, C, T]``."""

    def __init__(self, seq: Seq, t_in: int, rows_frames: int):
        self.seq, self.plan = seq, []
        t, cf = t_in, False
        for b in seq.blocks:
            _, t_out = b.macs(t)
            cf = cf or max(t, t_out) > rows_frames
            if cf:
                set_layout(b, False)
            self.plan.append(cf)
            t = t_out

    def __call__(self, x, ctx):
        return self.seq(x, ctx)

    def rows(self, x, ctx):
        rows = [b for b, cf in zip(self.seq.blocks, self.plan) if not cf]
        x = Seq(rows).rows(x, ctx)
        if len(rows) < len(self.seq.blocks):
            x = x.transpose(0, 1).unsqueeze(0) if x.shape[0] > 1 and x.shape[1] > 1 else x.reshape(1, x.shape[1], -1)
            for b in self.seq.blocks[len(rows):]:
                x = b(x, ctx)
        return x


class CFThenRows(_Split):
    """The leading blocks that see more than ``rows_frames`` frames channels-first, the rest in
    the rows form (an encoder's tail: few frames, many channels, where a ``Conv`` wastes most of
    its SIMD width and a ``Gemm`` does not). Takes and returns ``[1, C, T]``."""

    def __init__(self, seq: Seq, t_in: int, rows_frames: int):
        self.seq, self.n_cf, t = seq, 0, t_in
        for i, b in enumerate(seq.blocks):
            _, t_out = b.macs(t)
            if max(t, t_out) > rows_frames:
                self.n_cf = i + 1
            t = t_out

    def __call__(self, x, ctx):
        for b in self.seq.blocks[: self.n_cf]:
            x = b(x, ctx)
        rest = self.seq.blocks[self.n_cf:]
        if not rest:
            return x
        x = x[0].transpose(0, 1) if x.shape[2] > 1 else x.reshape(1, -1)
        y = Seq(rest).rows(x, ctx)
        return y.transpose(0, 1).unsqueeze(0) if y.shape[0] > 1 else y.reshape(1, -1, 1)


class ToLayout(Block):
    """Switch layout: ``to_cl`` True → channels-last."""

    def __init__(self, to_cl: bool):
        self.to_cl = to_cl

    def __call__(self, x, ctx):
        if x.shape[1] == 1 or x.shape[2] == 1:  # a reshape is enough
            return x.reshape(1, x.shape[2], x.shape[1])
        return x.transpose(1, 2)


def layout(seq: Seq, t_in: int, cl_frames: int, input_cl: bool = False, output_cl: bool = False) -> Seq:
    """Run the leading blocks of ``seq`` that see at most ``cl_frames`` frames channels-last.

    Returns a new :class:`Seq` with the layout switches inserted.
    """
    out, cl, t = [], input_cl, t_in
    for b in seq.blocks:
        _, t_out = b.macs(t)
        want = max(t, t_out) <= cl_frames
        if want != cl:
            out.append(ToLayout(want))
            cl = want
        set_layout(b, cl)
        out.append(b)
        t = t_out
    if cl != output_cl:
        out.append(ToLayout(output_cl))
    return Seq(out)


class Fn(Block):
    """A stateless function; ``per_channel`` tensors are shaped ``[1, C, 1]`` (channels-first)
    and reshaped for channels-last; ``fn(x, *tensors)``."""

    def __init__(self, fn, name="", per_channel=()):
        self.fn, self.name, self.per_channel = fn, name, list(per_channel)

    def __call__(self, x, ctx):
        ts = [t.reshape(1, 1, -1) if self.cl else t for t in self.per_channel]
        return self.fn(x, *ts)

    def apply2d(self, y):
        """On a ``[T, C]`` matrix."""
        return self.fn(y, *[t.reshape(1, -1) for t in self.per_channel])

    def rows(self, x, ctx):
        return self.apply2d(x)


class LatentNoise(Block):
    """A Wasserstein RAVE's noise augmentation: ``n`` standard normal channels after the latents,
    new every frame (the ``.ts`` draws ``torch.randn(1, n, T)`` before decoding; ONNX
    ``RandomNormal`` here, seeded so renders repeat). ``mode="input"`` (``--check`` only) reads
    them from outside instead, so the ``.ts``'s own numbers can be fed."""

    def __init__(self, n: int, mode: str = "random"):
        self.n, self.mode = int(n), mode

    def _noise(self, t, ctx, like):
        shape = (1, self.n, t)
        if self.mode == "input":
            u = ctx.read(shape, "noise_normal", like)
            ctx.write(u * 1)
            return u
        return torch.randn(shape, dtype=like.dtype)

    def __call__(self, x, ctx):
        if self.cl:  # [1, T, k]
            return torch.cat([x, self._noise(x.shape[1], ctx, x).transpose(1, 2)], 2)
        return torch.cat([x, self._noise(x.shape[2], ctx, x)], 1)

    def rows(self, x, ctx):  # [T, k]
        return torch.cat([x, self._noise(x.shape[0], ctx, x)[0].transpose(0, 1)], 1)


class Delay(Block):
    """Cached padding with crop: delays ``x`` by ``p`` frames (an ``AlignBranches`` padding)."""

    def __init__(self, p: int, label: str):
        self.p, self.label = p, label

    def __call__(self, x, ctx):
        if self.p == 0:
            return x
        full = cached_concat(ctx, x, self.p, self.label, self.cl)
        return tslice(full, 0, tlen(x, self.cl), self.cl)

    def rows(self, x, ctx):
        if self.p == 0:
            return x
        cache = ctx.read((self.p, x.shape[1]), self.label, x)
        ctx.write_rows(x)
        return torch.cat([cache, x])[: x.shape[0]]


class Conv(Block):
    """``CachedConv1d``: a stride delay (``pd`` frames, cropped) then a cache of ``pc`` frames.

    Both caches become one state of ``pc + pd`` frames: the conv reads ``[state, x][:-pd]``.
    """

    def __init__(self, weight, bias, stride=1, dilation=1, groups=1, pc=0, pd=0, label=""):
        self.w = weight.detach().float().contiguous()
        self.b = None if bias is None else bias.detach().float()
        self.stride, self.dilation, self.groups = int(stride), int(dilation), int(groups)
        self.pc, self.pd, self.label = int(pc), int(pd), label
        self._wcl = None

    def weight_cl(self):
        """``[k·C_in, C_out]``: row ``j·C_in + c`` is tap ``j`` of input channel ``c``."""
        if self._wcl is None:
            w = self.w
            if self.groups > 1:  # block-diagonal full weight
                co, ci, k = w.shape
                g = self.groups
                full = torch.zeros(co, ci * g, k)
                for i in range(g):
                    full[i * co // g:(i + 1) * co // g, i * ci:(i + 1) * ci] = w[i * co // g:(i + 1) * co // g]
                w = full
            co, ci, k = w.shape
            self._wcl = w.permute(2, 1, 0).reshape(k * ci, co).contiguous()
        return self._wcl

    def t_out(self, t):
        k = self.w.shape[-1]
        return (t + self.pc - self.dilation * (k - 1) - 1) // self.stride + 1

    def apply(self, full, t_out):
        """The convolution proper, on an input that already holds its history."""
        if not self.cl:
            return F.conv1d(full, self.w, self.b, self.stride, 0, self.dilation, self.groups)
        k, d, s = self.w.shape[-1], self.dilation, self.stride
        if k == 1:
            a = full if s == 1 and tlen(full, True) == t_out else full[:, 0:(t_out - 1) * s + 1:s]
        else:  # im2col as one Gather: [1, T, k, C] -> [1, T, k*C]
            a = unfold(full, t_out, k, d, s)
        y = a @ self.weight_cl()
        return y if self.b is None else y + self.b

    def __call__(self, x, ctx):
        t = tlen(x, self.cl)
        full = cached_concat(ctx, x, self.pc + self.pd, self.label, self.cl)
        if self.pd:
            full = tslice(full, 0, tlen(full, self.cl) - self.pd, self.cl)
        return self.apply(full, self.t_out(t))

    def gemm(self, full, t_out, start=0, act=None, residual=None):
        """The convolution on a ``[L, C]`` input that holds its history (taps from row ``start``)."""
        idx = row_taps(t_out, self.w.shape[-1], self.dilation, self.stride, start)
        return rows_gemm(full, idx, self.weight_cl(), self.b, residual, act)

    def rows(self, x, ctx, act=None, residual=None):
        p = self.pc + self.pd
        full = x
        if p:
            full = torch.cat([ctx.read((p, x.shape[1]), self.label, x), x])
            ctx.write_rows(x)
        return self.gemm(full, self.t_out(x.shape[0]), 0, act, residual)

    def macs(self, t):
        t_out = self.t_out(t)
        return int(self.w.numel() * t_out), t_out


class ConvT(Block):
    """``CachedConvTranspose1d`` (no padding in the op; the first ``2p`` output frames are
    overlap-added with the cached tail of the previous block, then the tail is cropped).

    With kernel ``2·stride`` and ``2p == stride`` (RAVE's upsampling layers) this is exactly a
    kernel-2 convolution over ``[last input frame of the previous block, x]`` producing
    ``C_out·stride`` channels, then depth-to-space; that is what is traced. Other shapes use the
    general overlap-add form (channels-first only).
    """

    def __init__(self, weight, bias, stride, padding, label=""):
        w = weight.detach().float()  # [C_in, C_out, K]
        self.c_in, self.c_out, self.k = w.shape
        self.s, self.p, self.label = int(stride), int(padding), label
        self.b = None if bias is None else bias.detach().float()
        self.fast = self.k == 2 * self.s and 2 * self.p == self.s
        s = self.s
        if self.fast:
            # channels-first: W2[(c, j), i, 0] = w[i, c, j + s] (previous frame), [.., 1] = w[i, c, j]
            w2 = torch.stack([w[:, :, s:], w[:, :, :s]], -1)  # [C_in, C_out, s, 2]
            self.w2 = w2.permute(1, 2, 0, 3).reshape(self.c_out * s, self.c_in, 2).contiguous()
            self.b2 = None if self.b is None else self.b.repeat_interleave(s).contiguous()
            # channels-last: rows (tap, i) with tap 0 = previous frame; columns (j, c)
            wcl = torch.stack([w[:, :, s:], w[:, :, :s]], 0)  # [2, C_in, C_out, s]
            self.wcl = wcl.permute(0, 1, 3, 2).reshape(2 * self.c_in, s * self.c_out).contiguous()
            self.bcl = None if self.b is None else self.b.repeat(s).contiguous()
        else:
            self.w = w.contiguous()

    def __call__(self, x, ctx):
        t = tlen(x, self.cl)
        if self.fast:
            full = cached_concat(ctx, x, 1, self.label, self.cl)
            if self.cl:
                a = unfold(full, t, 2, 1, 1)
                y = a @ self.wcl
                if self.bcl is not None:
                    y = y + self.bcl
                return y.reshape(1, t * self.s, self.c_out)
            y = F.conv1d(full, self.w2, self.b2)  # [1, C_out*s, T]
            y = y.reshape(1, self.c_out, self.s, t).transpose(2, 3)
            return y.reshape(1, self.c_out, t * self.s)
        if self.cl:
            raise ValueError("general transposed convolution runs channels-first only")
        y = F.conv_transpose1d(x, self.w, None, self.s)
        p2 = 2 * self.p
        if p2:
            cache = ctx.read((1, self.c_out, p2), self.label, x)
            ctx.write(y[..., -p2:])
            y = torch.cat([y[..., :p2] + cache, y[..., p2: y.shape[-1] - p2]], -1)
        if self.b is not None:
            y = y + self.b.reshape(1, -1, 1)
        return y

    def rows(self, x, ctx, act=None):
        if not self.fast:
            raise NotImplementedError("a general transposed convolution has no rows form")
        t = x.shape[0]
        full = torch.cat([ctx.read((1, self.c_in), self.label, x), x])
        ctx.write_rows(x)
        # an activation with per-channel tensors (Snake, a learned AdaIN) meets the channels
        # after depth-to-space; a plain one sits on the Gemm
        late = act if act is not None and act.per_channel else None
        y = rows_gemm(full, row_taps(t, 2, 1, 1), self.wcl, self.bcl, act=None if late else act)  # [T, s·C_out]
        y = y.reshape(t * self.s, self.c_out)  # depth-to-space
        return late.apply2d(y) if late else y

    def macs(self, t):
        t_out = t * self.s if self.fast else (t - 1) * self.s + self.k - 2 * self.p
        return int(self.c_in * self.c_out * self.k * t), t_out


class Residual(Block):
    """``net(delay_a(x)) + delay_b(x)``."""

    def __init__(self, net: Block, delay_net: Block, delay_res: Block):
        self.net, self.dn, self.dr = net, delay_net, delay_res

    def children(self):
        return [self.net, self.dn, self.dr]

    def _shared(self):
        """``(act, conv, rest)`` when the delay line and the first conv's cache can share one state.

        RAVE's residual units are ``x -> act -> cached conv -> ...`` beside ``delay(x)``. Both
        caches hold the history of ``x`` (the conv's through ``act``, which maps 0 to 0), so one
        cache of ``max(conv cache, delay)`` frames of ``x`` serves both: one Concat instead of two.
        """
        b = getattr(self.net, "blocks", None)
        if (self.dn.p == 0 and self.dr.p > 0 and b and len(b) >= 2 and isinstance(b[0], Fn)
                and b[0].name in ("leaky_relu", "snake") and isinstance(b[1], Conv)
                and b[1].pd == 0 and b[1].stride == 1):
            return b[0], b[1], Seq(b[2:])
        return None

    def __call__(self, x, ctx):
        shared = self._shared()
        if shared is None:
            return self.net(self.dn(x, ctx), ctx) + self.dr(x, ctx)
        act, conv, rest = shared
        cl = self.cl
        t, p, pc = tlen(x, cl), self.dr.p, conv.pc
        h = max(p, pc)
        full = cached_concat(ctx, x, h, self.dr.label, cl)
        delayed = tslice(full, h - p, h - p + t, cl)
        a = full if h == pc else tslice(full, h - pc, h + t, cl)
        y = conv.apply(act(a, ctx), t)
        return rest(y, ctx) + delayed

    def macs(self, t):
        return self.net.macs(t)

    def rows(self, x, ctx):
        shared = self._shared()
        if shared is None:
            b = getattr(self.net, "blocks", None)
            if self.dn.p == 0 and self.dr.p == 0 and b and _residual_conv(b[-1], x.shape[1]):
                return b[-1].rows(Seq(b[:-1]).rows(x, ctx), ctx, residual=x)  # a causal unit
            return self.net.rows(self.dn.rows(x, ctx), ctx) + self.dr.rows(x, ctx)
        act, conv, rest = shared
        t, c, p, pc = x.shape[0], x.shape[1], self.dr.p, conv.pc
        h = max(p, pc)
        full = torch.cat([ctx.read((h, c), self.dr.label, x), x])
        ctx.write_rows(x)
        delayed = full[h - p: h - p + t]
        rb, act2 = rest.blocks, None
        if rb and isinstance(rb[0], Fn):
            act2, rb = rb[0], rb[1:]
        y = conv.gemm(act.rows(full, ctx), t, h - pc, act2)
        if len(rb) == 1 and _residual_conv(rb[0], c):
            return rb[0].rows(y, ctx, residual=delayed)  # the residual rides on the Gemm
        return Seq(rb).rows(y, ctx) + delayed


def _residual_conv(b, c: int) -> bool:
    """Can ``b`` take a residual ``[T, c]`` on its ``Gemm``: a frame-preserving convolution to ``c``."""
    return isinstance(b, Conv) and b.stride == 1 and b.pd == 0 and b.w.shape[0] == c


class SumBranches(Block):
    """``sum(branch_i(delay_i(x)))`` (a ``ResidualStack``)."""

    def __init__(self, branches, delays):
        self.branches, self.delays = branches, delays

    def children(self):
        return self.branches + self.delays

    def __call__(self, x, ctx):
        out = None
        for b, d in zip(self.branches, self.delays):
            y = b(d(x, ctx), ctx)
            out = y if out is None else out + y
        return out

    def macs(self, t):
        total, t_out = 0, t
        for b in self.branches:
            m, t_out = b.macs(t)
            total += m
        return total, t_out

    def rows(self, x, ctx):
        out = None
        for b, d in zip(self.branches, self.delays):
            y = b.rows(d.rows(x, ctx), ctx)
            out = y if out is None else out + y
        return out
