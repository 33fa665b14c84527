"""RD-NAS: Enhancing One-Shot Supernet Ranking Ability via Ranking Distillation from Zero-Cost Proxies.

Peijie Dong et al., ICASSP 2023, https://arxiv.org/abs/2301.09850
Authors' code: https://github.com/pprp/CVPR2022-NAS-competition-Track1-3th-solution

RD-NAS trains a weight-sharing supernet and, besides cross-entropy, asks each pair of subnets to be ordered
the way a zero-cost proxy (the cheap teacher) orders them: a margin ranking loss (Eq. 3) on pairs drawn by
a margin subnet sampler that keeps pairs far apart in Group distance (Eq. 4).

The file has three parts:
  Part I    RD-NAS on NAS-Bench-201, the whole method, in the paper's order: config, the NB201 space and
            supernet, data, zero-cost proxies (Sec. 2.1), distances and the margin subnet sampler (Sec. 2.2.2,
            Eq. 4), the margin ranking loss (Sec. 2.2.1, Eq. 3), SPOS / FairNAS / Sandwich / RD steps, ranking
            metrics (Eq. 2), the training loop, main.
  Part II   the ResNet-like space of Sec. 3.1 (CVPR 2022 NAS Track 1), trained by Part I's loop under torchrun.
  Part III  reproducing the tables: flags, run folders and resume, data files, benchmark tables, the proxies
            table, search (Table 3), summaries and Fig. 1, stand-alone ground truth, benchmarks of speed.

Run:
  python rdnas.py --space nb201 --data DIR         # paper, 1 GPU: CIFAR-10 in DIR, NB201's ground truth shipped
  python rdnas.py --preset cpu --data DIR          # the same, scaled down: 1.5 minutes on 2 CPU cores
  torchrun --nproc_per_node=8 rdnas.py --space resnet48 --data IMAGENET                      # paper, 8 GPUs
"""
import argparse
import copy
import csv
import dataclasses
import datetime
import errno
import glob
import gzip
import hashlib
import itertools
import json
import math
import os
import pickle
import random
import re
import signal
import struct
import sys
import time
import tracemalloc
from collections import Counter

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler


# =====================================================================================================
# Part I: RD-NAS on NAS-Bench-201
# The method, top to bottom. A reader who stops at the end of Part I has read all of it; the tools it calls
# (flags, run folders and resume, data files, benchmark tables) are in Part III.
# =====================================================================================================

class UserError(Exception):
    """A mistake in the user's input: main() prints it as one line, never as a traceback."""


# ---- Config ----

def arg(default, help):
    """A Config field and its --help line."""
    return dataclasses.field(default=default, metadata=dict(help=help))


@dataclasses.dataclass
class Config:
    """The flags of Part I, each with its --help line; Part II adds ResNet48Config's, Part III the tools' (Flags)."""
    space: str = arg("nb201", "search space: nb201 (Sec. 3.2) | resnet48 (Sec. 3.1, Part II)")
    mode: str = arg("train", "what to do: train, or a tool of Part III (MODES)")
    preset: str = arg("paper", "a bundle of defaults (NB201_PRESETS, RESNET48_PRESETS): paper | cpu | tiny")
    # search space and supernet
    ops: str = arg("nb201", "nb201: the 5 ops of the paper (15,625 archs); no-none: the 4 ops the authors' code trained")
    C: int = arg(16, "NB201 initial channels")
    N: int = arg(5, "NB201 cells per stage")
    # data
    dataset: str = arg("cifar10", "cifar10 (NB201 cifar10-valid protocol) | cifar100 | imagenet16-120 | fashion-mnist | synthetic | imagenet (resnet48)")
    data: str = arg("data", "dataset folder")
    resolution: int = arg(0, "resize images to this side (0 = native)")
    train_subset: int = arg(0, "use only the first K training images (0 = all)")
    valid_subset: int = arg(0, "rank on only the first K held-out images (0 = all)")
    # optimisation (NB201's weight-sharing recipe by default)
    epochs: int = arg(250, "training epochs of the supernet (stage 2 on resnet48)")
    batch_size: int = arg(64, "training batch size (the global batch under torchrun)")
    lr: float = arg(0.025, "initial learning rate, cosine-annealed per step to --lr-min")
    lr_min: float = arg(0.001, "final learning rate")
    momentum: float = arg(0.9, "SGD momentum")
    weight_decay: float = arg(5e-4, "SGD weight decay")
    nesterov: bool = arg(True, "Nesterov momentum")
    grad_clip: float = arg(5.0, "clip the gradient norm to this (0 = off)")
    seed: int = arg(0, "seeds weights, data order and subnet draws")
    channels_last: bool = arg(False, "NHWC memory layout of NB201 nets and batches: 1.3-1.9x faster steps on this CPU "
                                     "(--mode bench); float rounding differs from the default layout")
    device: str = arg("auto", "auto (cuda, then mps, then cpu) | cpu | cuda | cuda:1 | mps")
    # one-shot method (Sec. 2.2)
    method: str = arg("rd", "spos | fairnas | sandwich | rd (RD-NAS)")
    sampler: str = arg("group", "RD's pairs: uniform | hamming | group (Table 4)")
    teacher: str = arg("flops", "the zero-cost proxy that orders RD's pairs; the authors' NB201 code used FLOPs, "
                                "counted as mmcv counts them (--teacher flops_mmcv)")
    mu: float = arg(-1.0, "margin-sampler threshold; -1 = 6.7 (group) or 4.5 (hamming)")
    candidates: int = arg(10, "n candidate pairs drawn per try by the margin sampler")
    max_tries: int = arg(10, "tries before the sampler falls back to the farthest pair seen")
    margin: float = arg(0.0, "m of Eq. 3 (the authors used 0)")
    rd_weight: float = arg(1.0, "weight of the ranking term")
    rd_schedule: str = arg("sin", "lambda(t) of the ranking term: sin = 2 sin(pi*0.8*t/T) (authors' code) | constant 1")
    rd_detach: bool = arg(False, "the authors' one-sided rank loss: gradient only through the second subnet of each pair")
    sandwich_random: int = arg(2, "random subnets per Sandwich step besides the largest and smallest")
    # evaluation (Sec. 3.2: 200 random subnets)
    eval_archs: str = arg("200", "number of subnets to rank, or 'all' (NB201)")
    eval_seed: int = arg(0, "the ranked subnets and the proxies' batch depend on this only, not on --seed")
    eval_every: int = arg(0, "rank the subnets every K epochs (0 = only at the end)")
    eval_batch_size: int = arg(512, "batch size when ranking")
    bn: str = arg("train", "BN when ranking: train (batch statistics, authors' code) | recal (recomputed per subnet)")
    bn_batches: int = arg(10, "K training batches per subnet for --bn recal")
    benchmark: str = arg("", "ground-truth table (CSV); empty = the default for the dataset; none = no ground truth")
    gt_metric: str = arg("valid", "train | valid | test column of the benchmark")
    proxy_batch: int = arg(64, "images in the batch the data-dependent proxies see")
    # output
    out: str = arg("", "run folder: log.jsonl, ckpt.pt, results.json (empty = runs/<space>-<dataset>-<method>-...)")
    resume: bool = arg(False, "continue the run in --out from its checkpoint")
    log_every: int = arg(50, "steps between progress lines")
    plot: bool = arg(False, "draw the Fig. 1 curve (needs matplotlib)")
    proxies: str = arg("flops,params,snip,grasp,synflow,zen,naswot",
                       "the proxies drawn as lines in Fig. 1 (--plot) and scored by --mode proxies")


# Presets: one literal dict per setting (Part II has ResNet48's); explicit flags override them.
NB201_PRESETS = {
    # NB201's weight-sharing setting (AutoDL-Projects configs/nas-benchmark/algos/weight-sharing.config: SGD
    # Nesterov, lr 0.025 -> 0.001 cosine, wd 5e-4, batch 64). Epochs: the paper says only "consistent with
    # NAS-Bench-201", whose config trains 100; 250 is what the authors' PicoNAS NB201 supernet scripts train.
    "paper": dict(dataset="cifar10", C=16, N=5, epochs=250, batch_size=64, lr=0.025, lr_min=0.001,
                  eval_archs="200", bn="train"),
    # About 1.5 minutes per run on 2 CPU cores: the paper's benchmark scaled down (README: "pilot"). CIFAR-10 with
    # NB201's split at 16x16, C=8, N=1, all 25k training images for 4 epochs, 200 subnets ranked on 2,000
    # held-out images against the shipped NB201 ground truth.
    "cpu": dict(dataset="cifar10", data="data", resolution=16, C=8, N=1, train_subset=0, valid_subset=2000, epochs=4,
                batch_size=128, lr=0.05, lr_min=0.0, eval_archs="200", eval_batch_size=1000, proxy_batch=64,
                channels_last=True,
                # --dataset fashion-mnist: the Fashion-MNIST mini-benchmark of results/ (our ground truth, made
                # in the default layout, which it keeps so that its figures reproduce to the digit)
                fashion_mnist=dict(data="/usr/share/datasets/fashion-mnist", train_subset=10000, epochs=6,
                                   channels_last=False)),
    # Seconds: the smoke test (synthetic data, tiny net).
    "tiny": dict(dataset="synthetic", resolution=8, C=4, N=1, train_subset=256, valid_subset=128, epochs=2,
                 batch_size=32, lr=0.05, lr_min=0.0, eval_archs="20", eval_batch_size=128, proxy_batch=16,
                 log_every=4, budget=20, population=8, topk=3),
}


# ---- Device and seed ----

def get_device(name="auto"):
    """--device auto picks cuda, then mps, then cpu; a device this machine lacks is a one-line error."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserError(f"--device {name!r} is not a device; accepted: auto, cpu, cuda, cuda:N, mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu (or auto)")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise UserError(f"--device {name}: MPS is not available here; use --device cpu (or auto)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed):
    """One call seeds python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- Search space: NAS-Bench-201 (Dong & Yang, ICLR 2020; Sec. 3.2) ----
# A cell is a DAG on 4 nodes; each of its 6 edges i->j carries one of 5 ops, so 5^6 = 15,625 archs.
# Node j = sum over i<j of op_ij(node i), and the cell returns node 3. An arch is a tuple of 6 op
# names in arch-string edge order; everything is keyed by the arch string, never by benchmark index.

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # benchmark order
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))                         # arch-string order
# The paper speaks of all 15,625 archs (5 ops); the authors' code trained without `none` (4,096 archs).
OP_SETS = {"nb201": OPS, "no-none": OPS[1:]}


def arch_to_str(arch):
    """(o0, ..., o5) -> '|o0~0|+|o1~0|o2~1|+|o3~0|o4~1|o5~2|' (NB201 arch string)."""
    return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*arch)


def str_to_arch(s):
    """NB201 arch string -> tuple of 6 op names; a malformed string raises UserError saying why."""
    nodes = s.strip().strip("|").split("|+|") if isinstance(s, str) else []
    if len(nodes) != 3:
        raise UserError(f"malformed arch string {s!r}: expected 3 nodes like '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'")
    arch = []
    for j, node in enumerate(nodes, start=1):
        edges = node.split("|")
        if len(edges) != j:
            raise UserError(f"malformed arch string {s!r}: node {j} needs {j} inputs, got {len(edges)}")
        for i, edge in enumerate(edges):
            op, _, src = edge.partition("~")
            if op not in OPS:
                raise UserError(f"unknown op {op!r} in arch string {s!r}; accepted ops: {', '.join(OPS)}")
            if src != str(i):
                raise UserError(f"malformed arch string {s!r}: edge {edge!r} should read '{op}~{i}'")
            arch.append(op)
    return tuple(arch)


def all_archs(ops=OPS):
    """Every arch of the space, in lexicographic order of op indices (5^6 = 15,625 for the 5 NB201 ops)."""
    return list(itertools.product(ops, repeat=len(EDGES)))


def sample_nb201(rng, ops=OPS):
    """A uniformly random NB201 arch: one op per edge, drawn from `rng`."""
    return tuple(rng.choice(ops) for _ in EDGES)


class ReLUConvBN(nn.Sequential):
    """NB201 `nor_conv_kxk`: ReLU -> Conv(k, stride, pad k//2, no bias) -> BN."""

    def __init__(self, C_in, C_out, k, stride=1, affine=True):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(C_in, C_out, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(C_out, affine=affine))


class Zero(nn.Module):
    """NB201 `none`: the edge carries zeros (x * 0, so shapes and devices follow x)."""

    def forward(self, x):
        return x.mul(0.0)


def make_op(name, C, affine=True):
    """One NB201 candidate operation on C channels, stride 1."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(C, C, 1, affine=affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(C, C, 3, affine=affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise UserError(f"unknown op {name!r}; accepted ops: {', '.join(OPS)}")


class ResNetBasicBlock(nn.Module):
    """NB201 reduction block: ReLUConvBN 3x3/2 -> ReLUConvBN 3x3, shortcut AvgPool(2) -> Conv1x1; no ReLU after the add."""

    def __init__(self, C_in, C_out):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride=2)
        self.conv_b = ReLUConvBN(C_out, C_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))
        self.residual = True                                  # Zen-score switches the shortcut off (see zen)

    def forward(self, x):
        out = self.conv_b(self.conv_a(x))
        return self.downsample(x) + out if self.residual else out


def cell_forward(x, edge_ops):
    """Node j = sum_{i<j} op_ij(node i); returns node 3. `edge_ops` are 6 callables in EDGES order."""
    nodes = [x]
    for j in (1, 2, 3):
        first = j * (j - 1) // 2  # index of edge (0, j) in EDGES
        nodes.append(sum(edge_ops[first + i](nodes[i]) for i in range(j)))
    return nodes[3]


class NB201Macro(nn.Module):
    """The NB201 macro skeleton: stem -> N cells (C) -> reduce -> N cells (2C) -> reduce -> N cells (4C) -> head.

    `make_cell(C)` builds each searchable cell (a fixed arch's, or the supernet's); `self.cells` holds them with
    the two reduction blocks at positions N and 2N+1.
    """

    def __init__(self, C, N, num_classes, in_channels, make_cell):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        widths = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
        reductions = {N, 2 * N + 1}
        cells, C_prev = [], C
        for k, C_cur in enumerate(widths):
            cells.append(ResNetBasicBlock(C_prev, C_cur) if k in reductions else make_cell(C_cur))
            C_prev = C_cur
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(C_prev, num_classes)


class NB201Cell(nn.Module):
    def __init__(self, arch, C):
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, C) for op in arch)

    def forward(self, x):
        return cell_forward(x, self.edges)


class NB201Net(NB201Macro):
    """The stand-alone NAS-Bench-201 network of one arch (the benchmark's `infer.tiny`, C=16, N=5)."""

    def __init__(self, arch, C=16, N=5, num_classes=10, in_channels=3):
        arch = str_to_arch(arch) if isinstance(arch, str) else tuple(arch)
        super().__init__(C, N, num_classes, in_channels, lambda c: NB201Cell(arch, c))
        self.arch = arch

    def features(self, x):                                  # x: (B, in_channels, H, W)
        x = self.stem(x)                                    # (B, C, H, W)
        for cell in self.cells:
            x = cell(x)
        return self.lastact(x)                              # (B, 4C, H/4, W/4)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))  # (B, num_classes)


class NB201SuperCell(nn.Module):
    """Single-path supernet cell: every edge holds all candidate ops; `arch` picks one per edge."""

    def __init__(self, C, ops):
        # affine=False inside the cell ops: the usual weight-sharing choice, since one learned BN scale
        # cannot suit every subnet. Stem, reductions and head stay affine.
        super().__init__()
        self.edges = nn.ModuleList(nn.ModuleDict({op: make_op(op, C, affine=False) for op in ops}) for _ in EDGES)

    def forward(self, x, arch):
        return cell_forward(x, [edge[op] for edge, op in zip(self.edges, arch)])


class NB201Supernet(NB201Macro):
    """SPOS single-path supernet of NB201 (Guo et al., 2020, ref. [1]): one arch choice shared by all cells."""

    def __init__(self, C=16, N=5, num_classes=10, in_channels=3, ops=OPS):
        self.ops = tuple(OP_SETS[ops] if isinstance(ops, str) else ops)
        super().__init__(C, N, num_classes, in_channels, lambda c: NB201SuperCell(c, self.ops))
        self.C, self.N, self.num_classes, self.in_channels = C, N, num_classes, in_channels

    def forward(self, x, arch):                             # x: (B, in_channels, H, W)
        if isinstance(arch, list):                          # several subnets on one batch: one logits each
            return [self.forward(x, a) for a in arch]
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x) if isinstance(cell, ResNetBasicBlock) else cell(x, arch)
        return self.classifier(self.lastact(x).mean((2, 3)))  # (B, num_classes)

    def extract(self, arch):
        """The stand-alone NB201Net of `arch` holding this supernet's weights (BN without affine -> 1, 0)."""
        net = NB201Net(arch, self.C, self.N, self.num_classes, self.in_channels).to(self.classifier.weight.device)
        own = self.state_dict()
        state = {}
        for name, value in net.state_dict().items():
            parts = name.split(".")
            if parts[0] == "cells" and parts[2] == "edges":  # cells.k.edges.e.<rest> <- cells.k.edges.e.<op>.<rest>
                src = ".".join(parts[:4] + [arch[int(parts[3])]] + parts[4:])
            else:
                src = name
            if src in own:
                state[name] = own[src]
            else:  # affine BN weight/bias that the supernet cell ops do not have
                state[name] = torch.ones_like(value) if parts[-1] == "weight" else torch.zeros_like(value)
        net.load_state_dict(state)
        return net


# ---- Data ----
# load_dataset (Part III) reads a dataset into memory as uint8 images (N, C, H, W) and int64 labels, split as
# NAS-Bench-201 splits it: CIFAR-10 trains on NB201's `train` 25k of the training set, and the subnets are
# ranked on its `valid` 25k (the cifar10-valid protocol of Sec. 3.2). Batches are cut, normalised and
# augmented on the fly (random crop with 4-pixel padding + horizontal flip, as NB201).

class Loader:
    """Batches from in-memory uint8 images: normalise with the given channel mean and std, augment."""

    def __init__(self, x, y, batch_size, mean, std, augment=False, shuffle=False, generator=None, drop_last=False,
                 layout=torch.contiguous_format):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        self.augment, self.shuffle, self.generator, self.drop_last = augment, shuffle, generator, drop_last
        self.layout = layout                                 # torch.channels_last with --channels-last

    def __len__(self):
        return len(self.x) // self.batch_size if self.drop_last else math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            x = (self.x[idx].float() / 255 - self.mean) / self.std   # (B, C, H, W)
            if self.augment:
                x = self.random_crop_flip(x)
            yield x.contiguous(memory_format=self.layout), self.y[idx]

    def random_crop_flip(self, x, pad=4):
        B, C, H, W = x.shape
        g = self.generator
        padded = F.pad(x, (pad, pad, pad, pad))                      # (B, C, H+2p, W+2p), zero padding
        dy, dx = torch.randint(2 * pad + 1, (2, B), generator=g)
        rows = (dy[:, None] + torch.arange(H))[:, None, :, None]     # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(W))[:, None, None, :]     # (B, 1, 1, W)
        x = padded[torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None], rows, cols]
        flip = torch.rand(B, generator=g) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(3), x)


def make_loaders(data, cfg, generator, augment=None):
    """Training loader (shuffled, augmented unless synthetic/gray) and held-out loader (fixed order), both
    normalised with the channel mean and std of the first 10,000 training images."""
    xtr, ytr = data["train"]
    pixels = xtr[:10000].float() / 255
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3)).clamp_min(1e-3)
    augment = (cfg.dataset in ("cifar10", "cifar100", "imagenet16-120")) if augment is None else augment
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    train_loader = Loader(xtr, ytr, cfg.batch_size, mean, std, augment, shuffle=True, generator=generator,
                          drop_last=True, layout=layout)
    valid_loader = Loader(*data["valid"], cfg.eval_batch_size, mean, std, layout=layout)
    return train_loader, valid_loader


def bn_recal_loader(data, batch_size, seed, train_loader):
    """--bn recal's training batches, normalised as `train_loader`'s and shuffled by `seed` alone: made anew for
    each subnet, it gives every subnet the same K batches."""
    return Loader(*data["train"], batch_size, train_loader.mean, train_loader.std, shuffle=True,
                  generator=torch.Generator().manual_seed(seed), layout=train_loader.layout)


def fixed_batch(data, cfg, device, loader):
    """One seeded, normalised batch of training images for the data-dependent proxies (SNIP, GraSP, NASWOT)."""
    xtr, ytr = data["train"]
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(cfg.eval_seed))[: cfg.proxy_batch]
    x = (xtr[idx].float() / 255 - loader.mean) / loader.std          # (B, C, H, W)
    return x.to(device), ytr[idx].to(device)


# ---- Zero-cost proxies: the teachers (Sec. 2.1, Table 2, Fig. 1) ----
# Each proxy is fn(net, inputs, targets) -> float, larger = predicted better. A proxy works on a private
# copy of the network, so the caller's weights, buffers, mode and input are never touched.

def conv_linear_weights(net):
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def count_cost(net, input_shape, convention="nb201"):
    """(MFLOPs, Mparams): multiply-adds of conv and linear layers for one image, NB201's convention.

    convention="mmcv" also counts what mmcv's counter (the authors' FLOPs teacher) counts: one per input element
    of a pooling layer, per output element of a ReLU, one (two if affine) per element of a BN.
    """
    macs = []
    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            macs.append(out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, nn.Linear):
            macs.append(m.in_features * m.out_features)
        elif isinstance(m, nn.AvgPool2d):
            macs.append(inp[0][0].numel())
        elif isinstance(m, nn.ReLU):
            macs.append(out[0].numel())
        else:                                                # BatchNorm2d
            macs.append(out[0].numel() * (2 if m.affine else 1))
    counted = (nn.Conv2d, nn.Linear) + ((nn.AvgPool2d, nn.ReLU, nn.BatchNorm2d) if convention == "mmcv" else ())
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, counted)]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            p = next(net.parameters())
            net(torch.zeros((1,) + tuple(input_shape), device=p.device, dtype=p.dtype))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return sum(macs) / 1e6, sum(q.numel() for q in net.parameters()) / 1e6


def flops(net, inputs, targets):
    """FLOPs (Abdelfattah et al., 2021, ref. [2]): MFLOPs of the stand-alone net, conv + linear multiply-adds.
    (The teacher reads the same counts from per-op tables, arch_cost, without building each net.)"""
    return count_cost(net, inputs.shape[1:])[0]


def flops_mmcv(net, inputs, targets):
    """FLOPs as the authors' teacher counted them (mmcv): pooling, ReLU and BN too, so avg_pool ranks above skip."""
    return count_cost(net, inputs.shape[1:], "mmcv")[0]


def params(net, inputs, targets):
    """Params (ref. [2]): number of parameters of the stand-alone net, in millions."""
    return sum(p.numel() for p in net.parameters()) / 1e6


def snip(net, inputs, targets):
    """SNIP (Lee et al., ICLR 2019; as a proxy in ref. [2]): sum over conv/linear weights of |dL/dw * w|."""
    net = copy.deepcopy(net).train()
    ws = conv_linear_weights(net)
    loss = F.cross_entropy(net(inputs), targets)
    grads = torch.autograd.grad(loss, ws, allow_unused=True)
    return float(sum((g * w.detach()).abs().sum() for g, w in zip(grads, ws) if g is not None))


def grasp(net, inputs, targets):
    """GraSP (Wang et al., ICLR 2020; ref. [2]): -sum(w * Hg), the Hessian-gradient product by double backward."""
    net = copy.deepcopy(net).train()
    ws = conv_linear_weights(net)
    loss = F.cross_entropy(net(inputs), targets)
    g = torch.autograd.grad(loss, ws, create_graph=True, allow_unused=True)
    used = [(w, gi) for w, gi in zip(ws, g) if gi is not None and gi.requires_grad]
    if not used:
        return 0.0
    z = sum((gi * gi.detach()).sum() for _, gi in used)          # g(w) . g_fixed, so dz/dw = H g
    hg = torch.autograd.grad(z, [w for w, _ in used], allow_unused=True)
    return float(-sum((w.detach() * h).sum() for (w, _), h in zip(used, hg) if h is not None))


def synflow(net, inputs, targets):
    """Synflow (Tanaka et al., NeurIPS 2020; ref. [2]): R = sum f_|w|(1), score = sum |w * dR/dw| (data-free).

    |w| for every parameter, BN as identity, float64, an all-ones input of batch 1. Values reach 1e40+.
    """
    net = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # identity: eval mode with mean 0, var 1, eps 0, scale 1, shift 0
                m.running_mean.zero_(), m.running_var.fill_(1.0)
                m.eps = 0.0
                if m.affine:
                    m.weight.fill_(1.0), m.bias.zero_()
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.abs_()
                if m.bias is not None:
                    m.bias.abs_()
    ws = conv_linear_weights(net)
    R = net(torch.ones((1,) + tuple(inputs.shape[1:]), dtype=torch.float64, device=inputs.device)).sum()
    grads = torch.autograd.grad(R, ws, allow_unused=True)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(ws, grads) if g is not None))


def zen(net, inputs, targets, gamma=1e-2):
    """Zen-score (Lin et al., ICCV 2021, ref. [3]) (data-free):
    log E ||f(x) - f(x + gamma*eps)||_1 + sum over BN of log sqrt(mean sigma^2), with w ~ N(0, 1), BN in train mode.

    As in every reference (ZenNAS scores models built with no_reslink; the authors' Track 1 model comments
    the shortcut add out), the score is taken on the network with its residual shortcuts removed: each block
    with a `residual` switch is run without it. f is the pre-pooling feature map (`net.features`); sigma^2 is
    each BN layer's variance over the batch of x (running variance at momentum 1). A BN that saw only zeros
    (a conv fed by `none` edges alone) has variance 0 and is left out of the sum, so only an arch with no path
    to the output (f(x) = f(x'), delta = 0) scores -inf.
    """
    net = copy.deepcopy(net).train()
    g = torch.Generator(device=inputs.device).manual_seed(0)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(generator=g)
                if m.bias is not None:
                    m.bias.zero_()
            if hasattr(m, "residual"):
                m.residual = False
        for m in bns:
            m.reset_running_stats()
            m.momentum = 1.0
        x = torch.randn(inputs.shape, generator=g, device=inputs.device)
        x2 = x + gamma * torch.randn(inputs.shape, generator=g, device=inputs.device)
        f1 = net.features(x)                                     # (B, C', H', W')
        variances = [m.running_var.mean() for m in bns if m.num_batches_tracked > 0]   # BNs that ran
        log_bn = sum(torch.log(v.sqrt()) for v in variances if v > 0)
        f2 = net.features(x2)
        delta = (f1 - f2).abs().sum((1, 2, 3)).mean()
        score = float(torch.log(delta) + log_bn)
    return score if math.isfinite(score) else -math.inf


def naswot(net, inputs, targets):
    """NASWOT (Mellor et al., ICML 2021, ref. [4]): slogdet of K = sum over ReLUs of c c^T + (1-c)(1-c)^T.

    c is the binary activation code of each ReLU's input over the batch. Only nn.ReLU modules are hooked
    (not wrappers that contain one), and only forward passes are needed. Singular K -> -inf.
    """
    net = copy.deepcopy(net).train()
    B = inputs.shape[0]
    K = torch.zeros(B, B, dtype=torch.float64, device=inputs.device)
    def hook(m, inp, out):
        c = (inp[0].reshape(B, -1) > 0).float()                 # (B, D) binary code
        K.add_((c @ c.T + (1 - c) @ (1 - c).T).double())         # (B, B); counts < 2^24 are exact in float32
    hooks = [m.register_forward_hook(hook) for m in net.modules() if type(m) is nn.ReLU]
    with torch.no_grad():
        net(inputs)
    for h in hooks:
        h.remove()
    sign, logdet = torch.linalg.slogdet(K)
    return float(logdet) if sign > 0 else -math.inf


PROXIES = {"flops": flops, "params": params, "snip": snip, "grasp": grasp, "synflow": synflow, "zen": zen, "naswot": naswot,
           "flops_mmcv": flops_mmcv}
DATA_FREE = ("flops", "params", "synflow", "zen", "flops_mmcv")


def parse_proxies(names):
    names = [n.strip() for n in names.split(",") if n.strip()] if isinstance(names, str) else list(names)
    bad = [n for n in names if n not in PROXIES]
    if bad or not names:
        raise UserError(f"unknown proxy {', '.join(bad) or '(none given)'}; valid names: {', '.join(PROXIES)}")
    return names


class Teacher:
    """The zero-cost teacher of RD-NAS (Sec. 2.2): a proxy score per arch, computed once and cached.

    `score(arch)` computes the proxy (score_arch for NB201, resnet48_score for ResNet48); `key(arch)`
    names the arch in the cache (arch string or 52-digit code); `path` keeps the cache across runs.
    """

    def __init__(self, score, key=arch_to_str, path=None):
        self.score, self.key, self.path = score, key, path
        self.cache, self.computed = {}, 0
        if path and os.path.exists(path):
            try:
                with open(path) as f:
                    self.cache = {k: float(v) for k, v in json.load(f).items()}
            except (ValueError, AttributeError):               # truncated or corrupt: it is a cache, rebuild it
                print(f"warning: {path} is unreadable; the teacher's scores are recomputed")

    def __call__(self, arch):
        key = self.key(arch)
        if key not in self.cache:
            self.cache[key] = self.score(arch)
            self.computed += 1
        return self.cache[key]

    def save(self):
        if self.path:
            atomic_write_text(self.path, json.dumps(self.cache))


def score_arch(proxy, arch, net_args, batch, seed=0):
    """One proxy score of one NB201 arch (larger = better); -inf for degenerate nets, never NaN."""
    if proxy in ("flops", "params", "flops_mmcv"):                     # from per-op tables (Part III)
        return arch_cost(arch, **net_args, convention="mmcv" if proxy == "flops_mmcv" else "nb201")[proxy == "params"]
    inputs, targets = batch
    res = net_args.get("resolution", inputs.shape[-1])
    kw = {k: v for k, v in net_args.items() if k != "resolution"}
    with torch.random.fork_rng(devices=[inputs.device] if inputs.is_cuda else []):
        torch.manual_seed(seed)                                 # the same initial weights for an arch, every time
        net = NB201Net(arch, **kw).to(inputs.device)
    if inputs.shape[-1] != res:
        raise UserError(f"proxy batch is {inputs.shape[-1]}px but the net expects {res}px")
    score = PROXIES[proxy](net, inputs, targets)
    return score if math.isfinite(score) or score == -math.inf else -math.inf


def net_kwargs(cfg, data):
    """The NB201Net arguments of this run's data (and its image side, for the FLOPs of the teacher)."""
    return dict(C=cfg.C, N=cfg.N, num_classes=data["num_classes"], in_channels=data["in_channels"],
                resolution=data["train"][0].shape[-1])


# ---- Margin subnet sampler: Hamming and Group distances (Sec. 2.2.2, Eq. 4) ----

# Eq. 4 groups the candidate ops into those with parameters and those without (`none` included; the
# authors' code had no `none` op and so no group for it).
OP_GROUPS = {"nor_conv_1x1": "with-params", "nor_conv_3x3": "with-params",
             "none": "param-free", "skip_connect": "param-free", "avg_pool_3x3": "param-free"}


def hamming_distance(a, b):
    """f_h: the number of edges whose ops differ."""
    return sum(x != y for x, y in zip(a, b))


def group_distance(a, b):
    """f_g, Eq. 4: per edge k, 0 if the ops agree, 0.5 * f_h^k within a group, 2 * f_h^k across groups."""
    return sum(0.0 if x == y else (0.5 if OP_GROUPS[x] == OP_GROUPS[y] else 2.0) for x, y in zip(a, b))


DISTANCES = {"uniform": None, "hamming": hamming_distance, "group": group_distance}   # --sampler; None: plain random pairs


def resolved_mu(cfg):
    """The sampler's threshold mu: 6.7 for the group distance (paper, Sec. 3.2), 4.5 for Hamming (authors' code)."""
    if cfg.mu >= 0:
        return cfg.mu
    return {"group": 6.7, "hamming": 4.5}.get(cfg.sampler, 0.0)


class MarginSubnetSampler:
    """MSS, Sec. 2.2.2: draw n random pairs, keep {(a_i, a_j) | f(a_i, a_j) > mu}, train on one kept pair.

    The paper's set keeps pairs farther apart than mu (its prose says "less than", the set and the authors'
    code say more). Which of the c kept pairs to train on it leaves open: one of them, drawn at random. The
    authors' code resampled until a pair qualified, without bound; here at most `max_tries` rounds of n pairs
    are drawn, and if none qualifies the farthest pair seen is used and counted in `fallbacks`.
    `sample_arch(rng)` draws one arch of the space; `distance=None` gives plain random pairs (Table 4's "RD"
    row). `histogram` counts the distances of the returned pairs, for plain random pairs the space's Hamming
    distance `hamming` (reset by the caller each epoch).
    """

    def __init__(self, sample_arch, distance=None, mu=0.0, n=10, max_tries=10, rng=None, hamming=hamming_distance):
        self.sample_arch, self.distance, self.mu, self.n, self.max_tries = sample_arch, distance, mu, n, max_tries
        self.hamming = hamming
        self.rng = rng or random.Random(0)                   # draws the archs and picks among the kept pairs
        self.fallbacks, self.histogram = 0, Counter()

    def __call__(self):
        draw = lambda: self.sample_arch(self.rng)
        if self.distance is None:
            a, b = draw(), draw()
            self.histogram[self.hamming(a, b)] += 1
            return a, b
        farthest = None
        for _ in range(self.max_tries):
            pairs = [(draw(), draw()) for _ in range(self.n)]
            scored = [(self.distance(a, b), a, b) for a, b in pairs]
            kept = [p for p in scored if p[0] > self.mu]
            if kept:
                d, a, b = kept[self.rng.randrange(len(kept))]
                break
            best = max(scored, key=lambda p: p[0])
            farthest = best if farthest is None or best[0] > farthest[0] else farthest
        else:
            d, a, b = farthest
            self.fallbacks += 1
        self.histogram[d] += 1
        return a, b


# ---- Margin ranking loss (Sec. 2.2.1, Eq. 3) ----
# Eq. 1: the supernet should order a pair as stand-alone training would, max P(pi*_i > pi*_j), and the proxy's
# order P(pi^z_i - pi^z_j > 0) stands in for it (its noise sigma_i - sigma_j is ~0 in expectation). Eq. 3 turns
# that order into a hinge on the two subnets' cross-entropies.

def margin_ranking_loss(ce_i, ce_j, score_i, score_j, margin=0.0):
    """Eq. 3: L_rd = max[0, m - (L_ce(a_i) - L_ce(a_j))] for a pair where the teacher ranks a_j above a_i.

    score_* are the teacher's values (larger = better); for each pair the order is taken from them, so
    the subnet the teacher prefers must have the lower cross-entropy by `margin`. Teacher ties give 0.
    Returns the mean over the pairs. Equals nn.MarginRankingLoss(margin)(ce_i, ce_j, sign(s_j - s_i)) except on
    teacher ties, which torch charges `margin` and this leaves at 0.
    """
    ce_i, ce_j = torch.as_tensor(ce_i), torch.as_tensor(ce_j)
    y = torch.sign(torch.as_tensor(score_j, dtype=ce_i.dtype, device=ce_i.device)
                   - torch.as_tensor(score_i, dtype=ce_i.dtype, device=ce_i.device))   # +1: a_j preferred
    loss = torch.clamp_min(margin - y * (ce_i - ce_j), 0.0)
    return torch.where(y == 0, torch.zeros_like(loss), loss).mean()


def one_sided_ranking_loss(ce_1, ce_2, score_1, score_2, margin=0.0):
    """--rd-detach, the authors' pairwise rank loss: Eq. 3 with the first subnet's CE detached, so the gradient
    always flows through the second subnet, and a teacher tie counts as the first subnet preferred.

    s_1 < s_2: max[0, m + L_ce(a_2) - L_ce(a_1)] pulls a_2's CE down to a_1's;
    otherwise: max[0, m + L_ce(a_1) - L_ce(a_2)] pushes a_2's CE up to a_1's.
    """
    y = 1.0 if score_2 > score_1 else -1.0                   # +1: a_2 preferred; a tie goes to a_1 (their if/else)
    return torch.clamp_min(margin - y * (ce_1.detach() - ce_2), 0.0)


def rd_lambda(epoch, epochs, schedule="sin"):
    """lambda(t), the weight of the ranking term (the paper gives Eq. 3 without one; this is the authors' code):
    2 sin(pi * 0.8 * t / T) is 0 at the start, 2 at t = 0.625 T and 1.18 at the end; or constant 1."""
    return 2.0 * math.sin(math.pi * 0.8 * epoch / max(1, epochs)) if schedule == "sin" else 1.0


# ---- One-shot training steps: SPOS, FairNAS, Sandwich and RD-NAS (Sec. 2.2, Tables 1, 2 and 4) ----
# Each step runs forward and backward for one batch and returns (stats, the archs it trained); the
# training loop zeroes, clips and steps the optimizer around it.

# Sandwich needs a largest and a smallest subnet. NB201 subnets differ in ops, not widths: the largest
# has nor_conv_3x3 on every edge (most parameters and FLOPs); among the parameter-free archs the
# smallest is taken to be all skip_connect, the cheapest arch that still carries signal (all-`none`
# outputs a constant, and a constant cannot be distilled into).
LARGEST_NB201, SMALLEST_NB201 = ("nor_conv_3x3",) * 6, ("skip_connect",) * 6


def cross_entropy_step(net, x, y, arch):
    logits = net(x, arch)                                    # (B, classes)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return loss.item(), (logits.argmax(1) == y).sum().item(), logits


def spos_step(net, x, y, sample_arch):
    """SPOS (Guo et al., ECCV 2020, ref. [1]): one uniformly sampled single path per step."""
    arch = sample_arch()
    loss, correct, _ = cross_entropy_step(net, x, y, arch)
    return dict(loss=loss, correct=correct), [arch]


def fairnas_step(net, x, y, ops, rng):
    """FairNAS (Chu et al., 2019, ref. [16]): strict fairness. A random permutation of the ops on every edge
    gives |ops| subnets that together use each op on each edge exactly once; their gradients are summed
    (backward one at a time, which saves memory) before a single optimizer step."""
    perms = [rng.sample(ops, len(ops)) for _ in EDGES]
    archs = [tuple(perm[k] for perm in perms) for k in range(len(ops))]
    steps = [cross_entropy_step(net, x, y, arch)[:2] for arch in archs]  # (loss, correct) per subnet
    return dict(loss=sum(s[0] for s in steps) / len(steps), correct=steps[0][1]), archs   # accuracy of the first


def sandwich_step(net, x, y, largest, smallest, sample_arch, n_random=2):
    """Sandwich rule (Yu & Huang, AutoSlim, ref. [15]): the largest subnet learns from the labels; the
    smallest and `n_random` random subnets learn from the largest one's soft predictions
    (in-place distillation, KL divergence)."""
    loss, correct, logits = cross_entropy_step(net, x, y, largest)
    soft = logits.detach().softmax(1)                        # (B, classes) teacher = largest subnet
    archs = [largest, smallest] + [sample_arch() for _ in range(n_random)]
    for arch in archs[1:]:
        kd = F.kl_div(net(x, arch).log_softmax(1), soft, reduction="batchmean")
        kd.backward()
    return dict(loss=loss, correct=correct), archs


def rd_step(net, x, y, sampler, teacher, lam, margin=0.0, detach=False):
    """RD-NAS (Sec. 2.2): a pair from the margin subnet sampler, both CE losses, plus the ranking term of Eq. 3
    in the zero-cost teacher's order: L = L_ce(a_i) + L_ce(a_j) + lambda(t) * L_rd(a_i, a_j) (the paper gives no
    total loss; this sum is the authors' code)."""
    a_i, a_j = sampler()
    out_i, out_j = net(x, [a_i, a_j])                        # (B, classes) each, in one call (one DDP forward)
    ce_i, ce_j = F.cross_entropy(out_i, y), F.cross_entropy(out_j, y)
    s_i, s_j = teacher(a_i), teacher(a_j)
    if detach:                                               # the authors' one-sided variant
        rank = one_sided_ranking_loss(ce_i, ce_j, s_i, s_j, margin)
    else:
        rank = margin_ranking_loss(ce_i, ce_j, s_i, s_j, margin)
    (ce_i + ce_j + lam * rank).backward()
    stats = dict(loss=(ce_i.item() + ce_j.item()) / 2, correct=(out_i.argmax(1) == y).sum().item(), rank=rank.item())
    return stats, [a_i, a_j]


@dataclasses.dataclass
class Space:
    """A search space as the training loop sees it: its supernet and what each method draws from it.

    NB201's is made by train_nb201 below, ResNet48's by train_resnet48 in Part II.
    """
    model: nn.Module          # the supernet: forward(x, arch) (wrapped in DDP under torchrun)
    batches: object           # epoch -> that epoch's (x, y) training batches
    sample_arch: object       # () -> one uniformly random arch (SPOS, Sandwich, evaluation draws)
    largest: object           # Sandwich's largest and smallest subnets
    smallest: object
    ops: tuple = ()           # the candidate ops FairNAS permutes (NB201 only)
    sampler: object = None    # RD: the margin subnet sampler, () -> (a_i, a_j)
    teacher: object = None    # RD: the zero-cost teacher, arch -> score (cached)
    evaluate: object = None   # () -> the ranking record of Sec. 3.2 (main process only)


def method_step(cfg, space, rng, x, y, lam):
    """One step of --method on a batch: (stats, archs trained)."""
    net = space.model
    if cfg.method == "spos":
        return spos_step(net, x, y, space.sample_arch)
    if cfg.method == "fairnas":
        return fairnas_step(net, x, y, space.ops, rng)
    if cfg.method == "sandwich":
        return sandwich_step(net, x, y, space.largest, space.smallest, space.sample_arch, cfg.sandwich_random)
    return rd_step(net, x, y, space.sampler, space.teacher, lam, cfg.margin, cfg.rd_detach)


def cosine_lr(cfg, step, total_steps):
    """Cosine annealing from --lr to --lr-min over the whole run, computed per step (nothing to checkpoint)."""
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * step / max(1, total_steps)))


# ---- Ranking metrics (Sec. 2.1 and 3.2) ----

def concordant_pair_ratio(pred, true):
    """CPR, Eq. 2: delta = sum_{i<j} 1[(pi*_i - pi*_j)(pi^z_i - pi^z_j) > 0] / #pairs; ties are not concordant.

    (The authors' public function counts the i with true_i * pred_i > 0 and divides by n, meant for lists of
    pairwise differences; their NB201 evaluator called it on raw accuracies, all positive, and so got 1.0: that
    is why Table 2's one-shot rows read 100.0, and its proxy rows k/200.)
    """
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    n, concordant = len(pred), 0
    for start in range(0, n, 2048):  # row blocks keep memory at O(2048 * n) for the 15,625-arch space
        block = slice(start, min(n, start + 2048))
        prod = (true[block, None] - true[None, :]) * (pred[block, None] - pred[None, :])   # (b, n)
        upper = np.arange(block.start, block.stop)[:, None] < np.arange(n)[None, :]        # only pairs i < j
        concordant += int(np.count_nonzero((prod > 0) & upper))
    return concordant / (n * (n - 1) / 2)


def precision_at_top(pred, true, fraction=0.1):
    """P@top-k: the share of the true top-k archs found in the predicted top-k (k = fraction * n)."""
    k = max(1, int(round(fraction * len(pred))))
    top_pred = set(np.argsort(-np.asarray(pred, dtype=np.float64), kind="stable")[:k])
    top_true = set(np.argsort(-np.asarray(true, dtype=np.float64), kind="stable")[:k])
    return len(top_pred & top_true) / k


def rank_metrics(pred, true):
    """Kendall tau (tau-b), Pearson r, Spearman rho (scipy; in [-1, 1]), CPR (Eq. 2; in [0, 1]) and, not in the
    paper, P@top-10% (in [0, 1])."""
    from scipy import stats  # imported here so `import rdnas` stays light
    pred = np.asarray(pred, dtype=np.float64)
    finite = pred[np.isfinite(pred)]
    low, high = (finite.min() - 1, finite.max() + 1) if len(finite) else (-1.0, 1.0)
    pred = np.where(np.isnan(pred) | np.isneginf(pred), low, np.where(np.isposinf(pred), high, pred))  # NaN/-inf last
    true = np.asarray(true, dtype=np.float64)
    if len(pred) < 2 or len(pred) != len(true):
        raise UserError(f"rank_metrics needs two equal-length lists of at least 2 scores, got {len(pred)} and {len(true)}")
    def safe(x):
        return float(x) if np.isfinite(x) else 0.0  # a constant prediction has no correlation, not NaN
    with np.errstate(all="ignore"):
        tau = safe(stats.kendalltau(pred, true).statistic)
        r = safe(stats.pearsonr(pred, true).statistic) if np.ptp(pred) > 0 and np.ptp(true) > 0 else 0.0
        rho = safe(stats.spearmanr(pred, true).statistic)
    return dict(tau=tau, r=r, rho=rho, cpr=concordant_pair_ratio(pred, true), p_top10=precision_at_top(pred, true))


def format_metrics(m):
    return "  ".join(f"{k}={100 * v:6.2f}" for k, v in m.items())


# ---- Ranking evaluation (Sec. 3.2: 200 random subnets, tau / r / rho / CPR) ----

def recalibrate_bn(net, arch, loader, batches):
    """--bn recal: reset every BN's running statistics and re-estimate them on K training batches for `arch`."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                                    # cumulative average over the K batches
    net.train()
    with torch.no_grad():
        for k, (x, _) in enumerate(loader):
            if k == batches:
                break
            net(x.to(next(net.parameters()).device), arch)
    for m in bns:
        m.momentum = 0.1


def subnet_accuracy(net, arch, loader, bn="train", recal_loader=None, bn_batches=10):
    """Top-1 accuracy (%) of one subnet on the held-out loader, with an explicit BN policy."""
    if bn == "recal":
        recalibrate_bn(net, arch, recal_loader, bn_batches)
        net.eval()
    else:
        net.train()   # batch statistics, as the authors' code evaluated
    device, correct, total = next(net.parameters()).device, 0, 0
    with torch.no_grad():
        for x, y in loader:
            correct += (net(x.to(device), arch).argmax(1).cpu() == y).sum().item()
            total += len(y)
    return 100.0 * correct / total


def eval_pool(ops, table=None):
    """The archs a ranking may sample: the space, restricted to the benchmark's archs when one is given."""
    archs = all_archs(ops)
    if table is not None:
        archs = [a for a in archs if arch_to_str(a) in table]
        if len(archs) < 2:
            raise UserError(f"the benchmark holds fewer than 2 archs of this space (ops: {', '.join(ops)})")
    return archs


def eval_count(n):
    """--eval-archs as a number of subnets: at least 2, so that there is a ranking."""
    if not str(n).isdigit() or int(n) < 2:
        raise UserError(f"--eval-archs takes a number >= 2 (or 'all' on NB201), got {n!r}")
    return int(n)


def sample_eval_archs(ops, n, seed, table=None):
    """--eval-archs subnets drawn with the evaluation seed only, so every run and method ranks the same ones."""
    pool = eval_pool(ops, table)
    if n == "all":
        return pool
    return random.Random(seed).sample(pool, min(eval_count(n), len(pool)))


def evaluate_ranking(net, archs, valid_loader, cfg, recal_loader=None, table=None, key=arch_to_str, every=0):
    """Rank `archs` by supernet accuracy on the held-out images; with a ground truth {key(arch): accuracy},
    also rank_metrics against it. `recal_loader()` gives the training batches of --bn recal: a new loader per
    arch with the same seed, so that every subnet's BN statistics are recomputed on the same K batches."""
    gt = None if table is None else [lookup(table, a, key=key) for a in archs]   # an arch it lacks: fail before work
    accs, t = [], time.time()
    for k, arch in enumerate(archs):
        accs.append(subnet_accuracy(net, arch, valid_loader, cfg.bn, recal_loader and recal_loader(), cfg.bn_batches))
        if every and ((k + 1) % every == 0 or k + 1 == len(archs)):
            print(f"ranked {k + 1}/{len(archs)} archs, {(time.time() - t) / (k + 1):.2f}s per arch", flush=True)
    record = dict(archs=[key(a) for a in archs], supernet_acc=accs)
    if gt is not None:
        record.update(gt=gt, metrics=rank_metrics(accs, gt))
    return record


# ---- Runs: the state the loop keeps, logs, evaluations (folders, locks and resume: Part III) ----

@dataclasses.dataclass
class Run:
    """A run folder, and the state that its checkpoint keeps besides the weights and the optimizer."""
    out: str                               # the run folder: log.jsonl, ckpt.pt, results.json
    config: dict                           # the run's Config, as saved
    rng: random.Random                     # every random choice of subnets
    gen: torch.Generator = None            # data order and augmentation (NB201's in-memory loader)
    epoch: int = 0                         # epochs finished, counted over all stages
    history: list = dataclasses.field(default_factory=list)   # the ranking records so far
    world: int = 1                         # processes under torchrun
    is_main: bool = True                   # only the main process prints, logs and writes
    data: str = ""                         # data_fingerprint of the loaded images: --resume refuses other data

    @property
    def ckpt(self):
        return os.path.join(self.out, "ckpt.pt")


def log_json(out, record):
    """Append one JSON line to <out>/log.jsonl and flush it (the machine-readable twin of the printed lines)."""
    with open(os.path.join(out, "log.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def checkpoint(run, net, opt, sampler=None):
    """Save the run after an epoch or an evaluation (main process only)."""
    if run.is_main:
        save_checkpoint(run.ckpt, model=net.state_dict(), optimizer=opt.state_dict(), config=run.config,
                        epoch=run.epoch, history=run.history, world_size=run.world, data=run.data,
                        rng=dict(python=run.rng.getstate(), data=run.gen.get_state() if run.gen is not None else None,
                                 torch=torch.get_rng_state(), fallbacks=sampler.fallbacks if sampler else 0))


def format_eta(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def progress_line(cfg, stage, epoch, step, steps, sums, lr, images, seconds):
    """The progress line printed every --log-every steps: running loss and accuracy, speed, time left."""
    left = ((cfg.epochs - epoch) * steps - step - 1) * cfg.batch_size * seconds / images
    return (f"{stage} epoch {epoch + 1}/{cfg.epochs} step {step + 1}/{steps} loss {sums['loss'] / (step + 1):.4f} "
            f"acc {100 * sums['correct'] / sums['n']:.2f}% lr {lr:.5f} {images / seconds:.0f} img/s eta {format_eta(left)}")


def diverged(run, stage, epoch, step, loss, last_finite):
    """The one-line error of a step whose loss is not finite: where, and what is kept."""
    kept = f"the checkpoint of epoch {run.epoch} is kept" if run.epoch else "no epoch had finished"
    return UserError(f"training diverged at {stage} epoch {epoch + 1}, step {step + 1}: loss {loss} "
                     f"(last finite loss {last_finite}); lower --lr ({kept})")


def epoch_record(cfg, space, run, stage, sums, steps, lr, seconds):
    """The log.jsonl record of an epoch; for RD also the ranking term and the sampler's distances."""
    record = dict(event="epoch", stage=stage, epoch=run.epoch, loss=sums["loss"] / steps,
                  acc=100 * sums["correct"] / sums["n"], lr=lr, seconds=seconds)
    if cfg.method == "rd":
        record.update(rank_loss=sums["rank"] / steps, fallbacks=space.sampler.fallbacks,
                      distances={str(k): v for k, v in sorted(space.sampler.histogram.items())},
                      teacher_computed=space.teacher.computed)
    return record


def evaluate_and_log(cfg, space, run):
    """Rank the subnets (Sec. 3.2) and report tau, r, rho, CPR in one line and one log.jsonl record."""
    t = time.time()
    record = space.evaluate()
    record.update(event="eval", epoch=run.epoch, bn=cfg.bn, seconds=time.time() - t)
    mean_acc = sum(record["supernet_acc"]) / len(record["archs"])
    summary = format_metrics(record["metrics"]) if "metrics" in record else "(no ground truth)"
    print(f"eval epoch {run.epoch}: {len(record['archs'])} subnets, bn={cfg.bn}, mean acc {mean_acc:.2f}%  {summary}  "
          f"[{time.time() - t:.1f}s]", flush=True)
    log_json(run.out, record)
    return record


def eval_due(cfg, epoch):
    """Rank every --eval-every epochs and after the last; --epochs 0 ranks the untrained supernet (Table 2's Random)."""
    return bool(cfg.eval_every and epoch > 0 and epoch % cfg.eval_every == 0) or epoch == cfg.epochs


def ranking_pending(cfg, space, run, done):
    """Is a ranking due before the first epoch of train()? Yes for a run killed while ranking (it resumes from the
    checkpoint written before that ranking) and for --epochs 0; never twice for one epoch."""
    logged = bool(run.history) and run.history[-1]["epoch"] == run.epoch
    return space.evaluate is not None and run.is_main and 0 <= done <= cfg.epochs and eval_due(cfg, done) and not logged


# ---- Training loop ----

def train(cfg, space, run, opt, stage="train", first_epoch=0):
    """One-shot supernet training (Sec. 2.2): --epochs epochs of --method, the learning rate cosine-annealed per
    step. After each epoch a checkpoint, then the ranking of Sec. 3.2 when it is due. Epochs count on from
    `first_epoch`, so that the two stages of Sec. 3.1 checkpoint and resume as one run."""
    net = getattr(space.model, "module", space.model)       # the supernet itself (space.model may be DDP)
    device = next(net.parameters()).device
    done = run.epoch - first_epoch                            # epochs of this stage finished before a resume
    if ranking_pending(cfg, space, run, done):              # killed while ranking, or --epochs 0
        run.history.append(evaluate_and_log(cfg, space, run))
        checkpoint(run, net, opt, space.sampler)
    images, seconds, last_finite = 0, 0.0, None
    for epoch in range(max(0, done), cfg.epochs):
        space.model.train()
        batches, t_epoch = space.batches(first_epoch + epoch + 1), time.time()
        lam = cfg.rd_weight * rd_lambda(epoch, cfg.epochs, cfg.rd_schedule)       # weight of Eq. 3 this epoch
        if space.sampler is not None:
            space.sampler.histogram = Counter()
        sums, steps = Counter(), len(batches)
        if steps == 0:
            raise UserError(f"no training step in an epoch: --batch-size {cfg.batch_size} is larger than the training "
                            f"set; lower --batch-size")
        for step, (x, y) in enumerate(batches):
            t_step = time.time()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr = cosine_lr(cfg, epoch * steps + step, cfg.epochs * steps)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            stats, _ = method_step(cfg, space, run.rng, x, y, lam)
            if not all(math.isfinite(v) for v in stats.values()):
                raise diverged(run, stage, epoch, step, stats["loss"], last_finite)
            last_finite = stats["loss"]
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            sums.update(stats, n=len(y))
            images, seconds = images + len(y) * run.world, seconds + time.time() - t_step
            if run.is_main and ((step + 1) % cfg.log_every == 0 or step + 1 == steps):
                print(progress_line(cfg, stage, epoch, step, steps, sums, lr, images, seconds), flush=True)
        run.epoch = first_epoch + epoch + 1
        if run.is_main:
            log_json(run.out, epoch_record(cfg, space, run, stage, sums, steps, lr, time.time() - t_epoch))
            if space.teacher is not None:
                space.teacher.save()
        checkpoint(run, net, opt, space.sampler)               # first, so a kill while ranking loses no training
        if space.evaluate and run.is_main and eval_due(cfg, epoch + 1):
            run.history.append(evaluate_and_log(cfg, space, run))
            checkpoint(run, net, opt, space.sampler)


def train_nb201(cfg):
    """--mode train on NAS-Bench-201: the supernet, its data, the teacher and the sampler; train(); results.json."""
    run, device = open_run(cfg), get_device(cfg.device)
    table, table_path = ground_truth(cfg)                    # fail on a bad benchmark before any work
    seed_everything(cfg.seed)
    data = load_dataset(cfg)
    run.gen = torch.Generator().manual_seed(cfg.seed)        # data order and augmentation
    train_loader, valid_loader = make_loaders(data, cfg, run.gen)
    kw = net_kwargs(cfg, data)
    net = NB201Supernet(cfg.C, cfg.N, kw["num_classes"], kw["in_channels"], cfg.ops).to(device, memory_format=train_loader.layout)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    space = Space(net, lambda epoch: train_loader, lambda: sample_nb201(run.rng, net.ops),
                  LARGEST_NB201, SMALLEST_NB201, net.ops)
    if cfg.method == "rd":
        name, batch = parse_proxies([cfg.teacher])[0], fixed_batch(data, cfg, device, train_loader)
        space.teacher = Teacher(lambda arch: score_arch(name, arch, kw, batch, cfg.eval_seed),
                                path=os.path.join(run.out, f"teacher_{name}.json"))
        space.sampler = MarginSubnetSampler(lambda rng: sample_nb201(rng, net.ops), DISTANCES[cfg.sampler],
                                            resolved_mu(cfg), cfg.candidates, cfg.max_tries, run.rng)
    eval_archs = sample_eval_archs(net.ops, cfg.eval_archs, cfg.eval_seed, table)
    recal = (lambda: bn_recal_loader(data, cfg.batch_size, cfg.eval_seed, train_loader)) if cfg.bn == "recal" else None
    space.evaluate = lambda: evaluate_ranking(net, eval_archs, valid_loader, cfg, recal, table)
    run.data = data_fingerprint(*data["train"], *data["valid"])
    if cfg.resume:
        restore(cfg, run, net, opt, space.sampler)
    else:
        log_json(run.out, dict(event="config", config=run.config, benchmark=table_path, split=data["split"], data=run.data))
        print(f"ground truth: {table_path} ({len(table)} archs)" if table is not None else
              "no ground truth given (--benchmark): subnets are trained and ranked, but no correlation is computed")
    print(f"{cfg.method}{'+' + cfg.sampler if cfg.method == 'rd' else ''} on {cfg.dataset} "
          f"({len(data['train'][0])} train / {len(data['valid'][0])} held-out images), {len(net.ops) ** 6} archs, "
          f"device {device}, run folder {run.out}")
    train(cfg, space, run, opt)
    final = run.history[-1] if run.history else None
    atomic_write_text(os.path.join(run.out, "results.json"), json.dumps(dict(
        config=run.config, benchmark=table_path, final=final,
        curve=[dict(epoch=h["epoch"], metrics=h.get("metrics")) for h in run.history]), indent=1))
    if cfg.plot:
        plot_curve(run.out, cfg, run.history, table, data, train_loader, device)
    unlock_run_folder(run.out)
    return net, final


# ---- Command line ----

def main(argv=None):
    """Parse the flags, run --mode on --space; a user's mistake ends in one line, never a traceback."""
    cfg = parse_args(argv)
    if sys.platform != "win32":                              # `kill` (SIGTERM) ends a run like Ctrl-C: resumable
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    modes = {"train": train_nb201, "proxies": proxy_table, "search": run_search, "standalone": standalone_main,
             "build-gt": build_ground_truth, "summarize": summarize, "bench": bench, "export-benchmark": export_main}
    if cfg.space == "resnet48":                              # Part II
        modes = {"train": train_resnet48, "rank": rank_main}
    try:
        if cfg.mode not in modes:
            raise UserError(f"--mode {cfg.mode} is not for --space {cfg.space}; it takes: {', '.join(modes)}")
        return modes[cfg.mode](cfg)
    except UserError as e:
        sys.exit(f"rdnas: error: {e}")
    except KeyboardInterrupt:
        sys.exit("rdnas: interrupted; finished epochs (and ground-truth runs) are kept in the run folder: "
                 "the same command with --resume continues")


# =====================================================================================================
# Part II: the ResNet-like search space (Sec. 3.1, Table 1; CVPR 2022 NAS Track 1)
# The 52-character Track 1 codes, the slimmable supernet, ImageNet data and DDP under torchrun, and the
# ranking of the competition's archs. Training is Part I's train(), called once per stage.
# =====================================================================================================

# ---- Config and presets of the ResNet-like space ----

@dataclasses.dataclass
class ResNet48Config(Config):
    """Part I's Config and the flags of --space resnet48."""
    base_width: int = arg(64, "stage widths base * (1, 2, 4, 8); 64 is ResNet48, smaller for CPU runs")
    pretrain_epochs: int = arg(0, "stage 1 of Sec. 3.1 (90 on ImageNet): SPOS pre-training before --epochs")
    pretrain_lr: float = arg(0.1, "initial learning rate of the pre-training stage")
    init: str = arg("", "start from this checkpoint's weights instead of pre-training")
    archs: str = arg("", "--mode rank: the competition JSON of codes to score")
    workers: int = arg(4, "DataLoader worker processes (ImageNet)")
    ckpt: str = arg("", "--mode rank (and search): checkpoint to load (default: <out>/ckpt.pt)")


RESNET48_PRESETS = {
    # Sec. 3.1: pre-train 90 epochs, then 70 epochs at lr 0.001, batch 256, SGD momentum 0.9 (8 GPUs).
    # Not given by the paper, our choices: pre-training lr 0.1, weight decay 1e-4 (ImageNet ResNet defaults).
    "paper": dict(dataset="imagenet", data="data/imagenet", resolution=224, base_width=64, epochs=70, lr=0.001,
                  lr_min=0.0, pretrain_epochs=90, pretrain_lr=0.1, batch_size=256, weight_decay=1e-4,
                  nesterov=False, method="rd", sampler="hamming", teacher="flops", eval_archs="200",
                  eval_batch_size=256, bn="recal", bn_batches=10, valid_subset=10000, workers=8, log_every=100),
    # Minutes on 2 CPU cores: synthetic 32x32 images, 1/4 widths.
    "cpu": dict(dataset="synthetic", resolution=32, base_width=16, epochs=2, lr=0.01, lr_min=0.0, pretrain_epochs=1,
                pretrain_lr=0.05, batch_size=32, train_subset=1024, valid_subset=256, weight_decay=1e-4,
                nesterov=False, method="rd", sampler="hamming", teacher="flops", eval_archs="8", eval_batch_size=128,
                bn="recal", bn_batches=2, workers=0, log_every=8),
    # Seconds: tests.
    "tiny": dict(dataset="synthetic", resolution=32, base_width=8, epochs=1, lr=0.01, lr_min=0.0, pretrain_epochs=1,
                 pretrain_lr=0.05, batch_size=16, train_subset=64, valid_subset=32, weight_decay=1e-4, nesterov=False,
                 method="rd", sampler="hamming", teacher="flops", eval_archs="3", eval_batch_size=32, bn="recal",
                 bn_batches=1, workers=0, log_every=2),
}


# ---- Search space: ResNet48 ----
# ResNet with BasicBlocks; stage depths and block widths are searched. The competition's 52-character
# code: [0] image-size code, [1:5] depth per stage, [5] stem width code, then for each of the 23 max
# blocks two digits (mid width, out width), codes 1..7 indexing RESNET48_RATIOS, "00" when inactive.

RESNET48_BASE = (64, 128, 256, 512)
RESNET48_MAX_DEPTHS = (5, 5, 8, 5)
RESNET48_MIN_DEPTH = 2
RESNET48_STRIDES = (1, 2, 2, 2)
RESNET48_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)         # code k -> RESNET48_RATIOS[k - 1]
RESNET48_IMAGE_SIZES = {"1": 224}
# Sec. 3.1: "5.06e19": one ratio per active block, summed over the depths of each stage, multiplied over stages.
RESNET48_SPACE_SIZE = math.prod(sum(len(RESNET48_RATIOS) ** d for d in range(RESNET48_MIN_DEPTH, m + 1))
                                for m in RESNET48_MAX_DEPTHS)


def make_divisible(v, divisor=8):
    """Round v to a multiple of `divisor`, never going more than 10% below v (MobileNet's rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def decode_resnet48_code(code):
    """52-char code -> {image_size, stem, stages: [{out, mid: [ratio per active block]}]}; ValueError names the position."""
    if not isinstance(code, str) or len(code) != 52 or not code.isdigit():
        what = (f"{len(code)} characters" + ("" if code.isdigit() else ", not all digits")) if isinstance(code, str) \
            else type(code).__name__
        raise ValueError(f"ResNet48 code {code!r}: expected 52 digits, got {what}")
    if code[0] not in RESNET48_IMAGE_SIZES:
        raise ValueError(f"ResNet48 code position 0 (image size) is {code[0]!r}; accepted: "
                         + ", ".join(f"{k} ({v})" for k, v in RESNET48_IMAGE_SIZES.items()))
    def ratio(pos):
        if code[pos] not in "1234567":
            raise ValueError(f"ResNet48 code position {pos} is {code[pos]!r}; accepted width codes: 1-7")
        return RESNET48_RATIOS[int(code[pos]) - 1]
    stages, pos = [], 6
    for s, max_depth in enumerate(RESNET48_MAX_DEPTHS):
        depth = int(code[1 + s])
        if not RESNET48_MIN_DEPTH <= depth <= max_depth:
            raise ValueError(f"ResNet48 code position {1 + s} (depth of stage {s + 1}) is {code[1 + s]}; "
                             f"accepted: {RESNET48_MIN_DEPTH}-{max_depth}")
        mids, out_pos = [], pos + 1
        for b in range(max_depth):
            p = pos + 2 * b
            if b < depth:
                mids.append(ratio(p))
                ratio(p + 1)
                if code[p + 1] != code[out_pos]:
                    raise ValueError(f"ResNet48 code position {p + 1} is {code[p + 1]}; the out width is shared by a "
                                     f"stage, accepted: {code[out_pos]} (as at position {out_pos})")
            elif code[p:p + 2] != "00":
                raise ValueError(f"ResNet48 code position {p} is {code[p:p + 2]!r} but block {b + 1} of stage {s + 1} "
                                 f"is inactive (depth {depth}); accepted: 00")
        stages.append(dict(out=ratio(out_pos), mid=mids))
        pos += 2 * max_depth
    return dict(image_size=RESNET48_IMAGE_SIZES[code[0]], stem=ratio(5), stages=stages)


def encode_resnet48_code(decoded):
    """The exact inverse of decode_resnet48_code."""
    size_code = {v: k for k, v in RESNET48_IMAGE_SIZES.items()}[decoded["image_size"]]
    digit = lambda r: str(RESNET48_RATIOS.index(r) + 1)
    code = size_code + "".join(str(len(st["mid"])) for st in decoded["stages"]) + digit(decoded["stem"])
    for st, max_depth in zip(decoded["stages"], RESNET48_MAX_DEPTHS):
        code += "".join(digit(m) + digit(st["out"]) for m in st["mid"]) + "00" * (max_depth - len(st["mid"]))
    return code


def sample_resnet48(rng):
    """A uniformly random decoded arch: each depth, each active block's mid ratio, each stage's out ratio and the stem."""
    stages = [dict(out=rng.choice(RESNET48_RATIOS),
                   mid=[rng.choice(RESNET48_RATIOS) for _ in range(rng.randint(RESNET48_MIN_DEPTH, m))])
              for m in RESNET48_MAX_DEPTHS]
    return dict(image_size=224, stem=rng.choice(RESNET48_RATIOS), stages=stages)


def resnet48_widths(decoded, base=RESNET48_BASE):
    """Channel numbers of a decoded arch: stem, and per stage (out, [mid per block]), make_divisible by 8."""
    stem = make_divisible(base[0] * decoded["stem"])
    return stem, [(make_divisible(b * st["out"]), [make_divisible(b * m) for m in st["mid"]])
                  for b, st in zip(base, decoded["stages"])]


class SlimConv2d(nn.Conv2d):
    """A conv whose subnets use the first in/out channels of the shared weight (slimmable slicing)."""

    def forward(self, x, out_channels=None):
        w = self.weight[: out_channels or self.out_channels, : x.shape[1]]
        return F.conv2d(x, w, None, self.stride, self.padding)


class SlimBatchNorm2d(nn.BatchNorm2d):
    """BN over the first C channels of shared statistics and affine parameters; recalibrated per subnet."""

    def forward(self, x):
        C = x.shape[1]
        factor = 0.0
        if self.training:
            self.num_batches_tracked += 1
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return F.batch_norm(x, self.running_mean[:C], self.running_var[:C], self.weight[:C], self.bias[:C],
                            self.training, factor, self.eps)


class ResNet48Block(nn.Module):
    """BasicBlock: conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus shortcut (conv1x1 + BN when shape changes)."""

    def __init__(self, C_in, C_mid, C_out, stride, conv=nn.Conv2d, bn=nn.BatchNorm2d, projection=None):
        super().__init__()
        self.stride = stride
        self.conv1, self.bn1 = conv(C_in, C_mid, 3, stride, 1, bias=False), bn(C_mid)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()              # modules, so that NASWOT's hooks see them
        self.conv2, self.bn2 = conv(C_mid, C_out, 3, 1, 1, bias=False), bn(C_out)
        projection = (stride != 1 or C_in != C_out) if projection is None else projection
        self.shortcut = nn.Sequential(conv(C_in, C_out, 1, stride, bias=False), bn(C_out)) if projection else None
        self.residual = True                                  # Zen-score switches the shortcut off (see zen)

    def forward(self, x, mid=None, out=None):
        slim = isinstance(self.conv1, SlimConv2d)
        h = self.relu1(self.bn1(self.conv1(x, mid) if slim else self.conv1(x)))
        h = self.bn2(self.conv2(h, out) if slim else self.conv2(h))
        if not self.residual:
            return self.relu2(h)
        needs_projection = self.stride != 1 or x.shape[1] != h.shape[1]
        if needs_projection:
            sc = self.shortcut[1](self.shortcut[0](x, out) if slim else self.shortcut[0](x))
        else:
            sc = x
        return self.relu2(h + sc)


class ResNet48Net(nn.Module):
    """The stand-alone network of one ResNet48 code (7x7/2 stem + maxpool, 4 stages of BasicBlocks, GAP, FC)."""

    def __init__(self, code, num_classes=1000, base=RESNET48_BASE, in_channels=3):
        super().__init__()
        self.decoded = decode_resnet48_code(code) if isinstance(code, str) else code
        stem, stages = resnet48_widths(self.decoded, base)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, C = [], stem
        for (out, mids), stride in zip(stages, RESNET48_STRIDES):
            for b, mid in enumerate(mids):
                blocks.append(ResNet48Block(C, mid, out, stride if b == 0 else 1))
                C = out
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(C, num_classes)

    def features(self, x):                                  # x: (B, 3, H, W)
        x = self.stem(x)                                    # (B, stem, H/4, W/4)
        for block in self.blocks:
            x = block(x)
        return x                                            # (B, C_last, H/32, W/32)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))       # (B, classes)


class ResNet48Supernet(nn.Module):
    """Slimmable ResNet48 supernet: elastic depth (the first d blocks of a stage) and elastic width (the first
    channels of every weight). forward(x, arch) takes a decoded arch or a list of them (one logits each)."""

    def __init__(self, num_classes=1000, base=RESNET48_BASE, in_channels=3):
        super().__init__()
        self.base, self.num_classes, self.in_channels = tuple(base), num_classes, in_channels
        full = make_divisible(base[0])
        self.stem_conv, self.stem_bn = SlimConv2d(in_channels, full, 7, 2, 3, bias=False), SlimBatchNorm2d(full)
        self.stages = nn.ModuleList()
        C = full
        for b, depth, stride in zip(base, RESNET48_MAX_DEPTHS, RESNET48_STRIDES):
            width = make_divisible(b)
            # the first block of a stage always owns a projection: a subnet may change the width there
            self.stages.append(nn.ModuleList(
                ResNet48Block(C if k == 0 else width, width, width, stride if k == 0 else 1, SlimConv2d,
                              SlimBatchNorm2d, projection=(k == 0)) for k in range(depth)))
            C = width
        self.fc = nn.Linear(C, num_classes)

    def forward(self, x, arch):
        if isinstance(arch, list):
            return [self.forward(x, a) for a in arch]
        arch = decode_resnet48_code(arch) if isinstance(arch, str) else arch
        stem, stages = resnet48_widths(arch, self.base)
        h = F.max_pool2d(F.relu(self.stem_bn(self.stem_conv(x, stem))), 3, 2, 1)   # (B, stem, H/4, W/4)
        for blocks, (out, mids) in zip(self.stages, stages):
            for block, mid in zip(blocks, mids):                                     # elastic depth
                h = block(h, mid, out)
        h = h.mean((2, 3))                                                           # (B, out_last)
        return F.linear(h, self.fc.weight[:, : h.shape[1]], self.fc.bias)

    def extract(self, arch):
        """The stand-alone ResNet48Net of `arch` holding this supernet's sliced weights and BN statistics."""
        arch = decode_resnet48_code(arch) if isinstance(arch, str) else arch
        net = ResNet48Net(arch, self.num_classes, self.base, self.in_channels).to(self.fc.weight.device)
        sources = [(net.stem[0], self.stem_conv), (net.stem[1], self.stem_bn)]
        supers = [blk for blocks, st in zip(self.stages, arch["stages"]) for blk in list(blocks)[: len(st["mid"])]]
        for small, big in zip(net.blocks, supers):
            sources += [(small.conv1, big.conv1), (small.bn1, big.bn1), (small.conv2, big.conv2), (small.bn2, big.bn2)]
            if small.shortcut is not None:
                sources += [(small.shortcut[0], big.shortcut[0]), (small.shortcut[1], big.shortcut[1])]
        sources.append((net.fc, self.fc))
        with torch.no_grad():
            for small, big in sources:
                for name, t in list(small.named_parameters(recurse=False)) + list(small.named_buffers(recurse=False)):
                    src = getattr(big, name)
                    t.copy_(src if t.dim() == 0 else src[tuple(slice(0, n) for n in t.shape)])
        return net


def resnet48_cost(arch, num_classes=1000, base=RESNET48_BASE, resolution=224, in_channels=3):
    """(MFLOPs, Mparams) of a ResNet48 arch in closed form (conv + linear multiply-adds, NB201's convention)."""
    arch = decode_resnet48_code(arch) if isinstance(arch, str) else arch
    stem, stages = resnet48_widths(arch, base)
    side = (resolution + 1) // 2                                     # 7x7/2 stem
    macs = side * side * stem * in_channels * 49
    n = stem * in_channels * 49 + 2 * stem
    side = (side + 1) // 2                                           # 3x3/2 max pool
    C = stem
    for (out, mids), stride in zip(stages, RESNET48_STRIDES):
        for b, mid in enumerate(mids):
            s = stride if b == 0 else 1
            side = (side + s - 1) // s
            macs += side * side * (C * mid * 9 + mid * out * 9)
            n += C * mid * 9 + mid * out * 9 + 2 * mid + 2 * out
            if s != 1 or C != out:
                macs += side * side * C * out
                n += C * out + 2 * out
            C = out
    macs += C * num_classes
    n += C * num_classes + num_classes
    return macs / 1e6, n / 1e6


def resnet48_hamming(a, b):
    """Hamming distance between two ResNet48 archs, over the digits of their 52-character codes."""
    return hamming_distance(encode_resnet48_code(a), encode_resnet48_code(b))


# About the mean Hamming distance of two random codes (measured: 34.6 over the 45,000 released codes,
# checked in the tests), as mu = 6.7 is about the mean group distance on NB201.
RESNET48_HAMMING_MU = 35.0

# ---- ResNet48: teacher, data, distributed training and ranking ----

def resnet48_score(proxy, arch, num_classes, base, resolution, batch=None, seed=0):
    """Teachers for the ResNet-like space (Table 1): FLOPs and params in closed form, Zen-score on a fresh net."""
    if proxy in ("flops", "params"):
        return resnet48_cost(arch, num_classes, base, resolution)[0 if proxy == "flops" else 1]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ResNet48Net(arch, num_classes, base)
    inputs, targets = batch
    score = PROXIES[proxy](net.to(inputs.device), inputs, targets)
    return score if math.isfinite(score) or score == -math.inf else -math.inf


def resnet48_datasets(cfg):
    """(training set, held-out set, num_classes): ImageNet in torchvision's ImageFolder layout (train/, val/), or synthetic."""
    if cfg.dataset == "synthetic":
        xtr, ytr, xva, yva = make_synthetic(n_train=cfg.train_subset or 2048, n_valid=cfg.valid_subset or 512,
                                            side=cfg.resolution)
        norm = lambda x: (x.float() / 255 - 0.5) / 0.25
        return (torch.utils.data.TensorDataset(norm(xtr), ytr), torch.utils.data.TensorDataset(norm(xva), yva), 10)
    if cfg.dataset != "imagenet":
        raise UserError(f"--space resnet48 trains on --dataset imagenet or synthetic, not {cfg.dataset}")
    import torchvision  # only the ImageNet path needs it
    from torchvision import transforms as T
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(cfg.data, split)):
            raise UserError(f"ImageNet not found: {os.path.join(cfg.data, split)!r} is missing; --data must hold "
                            f"train/ and val/ in torchvision's ImageFolder layout (one folder per class)")
    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_set = torchvision.datasets.ImageFolder(os.path.join(cfg.data, "train"), T.Compose(
        [T.RandomResizedCrop(cfg.resolution), T.RandomHorizontalFlip(), T.ToTensor(), norm]))
    valid_set = torchvision.datasets.ImageFolder(os.path.join(cfg.data, "val"), T.Compose(
        [T.Resize(int(cfg.resolution * 256 / 224)), T.CenterCrop(cfg.resolution), T.ToTensor(), norm]))
    if cfg.train_subset:
        train_set = torch.utils.data.Subset(train_set, range(cfg.train_subset))
    if cfg.valid_subset:  # a fixed, class-balanced-in-expectation subset of val for ranking
        idx = torch.randperm(len(valid_set), generator=torch.Generator().manual_seed(SPLIT_SEED))[: cfg.valid_subset]
        valid_set = torch.utils.data.Subset(valid_set, idx.tolist())
    return train_set, valid_set, len(train_set.dataset.classes if hasattr(train_set, "dataset") else train_set.classes)


def init_distributed(cfg):
    """(rank, world_size, device). Under torchrun: one process per device, NCCL on GPU, gloo on CPU."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, get_device(cfg.device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = get_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # at the end rank 0 ranks the subnets alone while the others wait at a barrier: allow it hours, not minutes
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=6))
    return dist.get_rank(), dist.get_world_size(), device


def epoch_seed(seed, epoch):
    """The data-order seed of one epoch: its own stream per (run seed, epoch), so that no two pairs share one
    (seed + epoch would give run seed s+1 at epoch k the order of run seed s at epoch k+1)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)   # < 2^63


def resnet48_train_loader(cfg, train_set, rank, world, seed):
    """The training batches of one epoch, shuffled by `seed` (this rank's share under torchrun)."""
    per_rank = max(1, cfg.batch_size // world)              # --batch-size is the global batch
    sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=seed, drop_last=True) if world > 1 else None
    return DataLoader(train_set, per_rank, shuffle=sampler is None, sampler=sampler,
                      generator=torch.Generator().manual_seed(seed), num_workers=cfg.workers, drop_last=True,
                      pin_memory=torch.cuda.is_available())


def resnet48_valid_loader(cfg, valid_set):
    """The held-out batches the subnets are ranked on, in a fixed order."""
    return DataLoader(valid_set, cfg.eval_batch_size, num_workers=cfg.workers)


def resnet48_recal_loader(cfg, train_set):
    """The training batches that --bn recal recomputes each subnet's BN statistics on."""
    return DataLoader(train_set, cfg.eval_batch_size, shuffle=True, num_workers=cfg.workers,
                      generator=torch.Generator().manual_seed(cfg.eval_seed))


def load_resnet48_table(path):
    """A ResNet48 ground truth `arch,accuracy` (arch = 52-digit code) -> {code: accuracy}."""
    if not path or path == "none":
        return None
    if not os.path.isfile(path):
        raise UserError(f"benchmark file {path!r} not found; expected a CSV with columns arch,accuracy")
    table = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"arch", "accuracy"} <= set(reader.fieldnames or []):
            raise UserError(f"{path}: expected columns arch,accuracy (arch = 52-digit ResNet48 code)")
        for line, row in enumerate(reader, start=2):
            try:
                table[encode_resnet48_code(decode_resnet48_code(row["arch"]))] = float(row["accuracy"])
            except ValueError as e:
                raise UserError(f"{path}:{line}: {e}") from None
    return table


def build_resnet48(cfg, num_classes, device):
    base = tuple(cfg.base_width * k for k in (1, 2, 4, 8))
    return ResNet48Supernet(num_classes, base).to(device), base


def train_resnet48(cfg):
    """The two stages of Sec. 3.1, each one call of Part I's train(): SPOS pre-training (--pretrain-epochs at
    --pretrain-lr, skipped with --init), then --epochs of --method.

    Under torchrun every rank runs this: DDP averages gradients, every rank draws the same subnets (one
    seeded rng), only rank 0 logs, ranks and writes, and a resumed run needs the same world size.
    """
    if cfg.method == "fairnas":
        raise UserError("--method fairnas permutes NB201 ops; for --space resnet48 use spos, sandwich or rd")
    if cfg.method == "rd" and cfg.sampler == "group":
        raise UserError("--sampler group is defined on NB201 op groups; for --space resnet48 use hamming or uniform")
    rank, world, device = init_distributed(cfg)
    run = open_run(cfg, is_main=rank == 0, world=world)       # the same folder on every rank; only rank 0 writes
    seed_everything(cfg.seed)                                # identical initial weights on every rank
    train_set, valid_set, num_classes = resnet48_datasets(cfg)
    net, base = build_resnet48(cfg, num_classes, device)
    if cfg.init:
        try:
            net.load_state_dict(load_checkpoint(cfg.init)["model"])
        except RuntimeError:
            raise UserError(f"--init {cfg.init}: its supernet has other shapes than this one (check --base-width "
                            f"and the dataset's classes)") from None
    # a subnet leaves the deeper blocks unused, hence find_unused_parameters
    model = net if world == 1 else DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    def batches(epoch):                                      # a fresh loader per epoch, seeded by (seed, epoch)
        return resnet48_train_loader(cfg, train_set, rank, world, epoch_seed(cfg.seed, epoch))
    space = Space(model, batches, lambda: sample_resnet48(run.rng),
                  largest=dict(image_size=224, stem=1.0, stages=[dict(out=1.0, mid=[1.0] * m) for m in RESNET48_MAX_DEPTHS]),
                  smallest=dict(image_size=224, stem=0.7, stages=[dict(out=0.7, mid=[0.7] * 2) for _ in RESNET48_MAX_DEPTHS]))
    if cfg.method == "rd":
        name = parse_proxies([cfg.teacher])[0]
        xb, yb = next(iter(DataLoader(train_set, cfg.proxy_batch)))   # never the ranking images
        space.teacher = Teacher(lambda a: resnet48_score(name, a, num_classes, base, cfg.resolution,
                                                         (xb.to(device), yb.to(device)), cfg.eval_seed),
                                key=encode_resnet48_code, path=os.path.join(run.out, f"teacher_{name}.json") if run.is_main else None)
        space.sampler = MarginSubnetSampler(sample_resnet48, {"hamming": resnet48_hamming}.get(cfg.sampler),
                                            cfg.mu if cfg.mu >= 0 else RESNET48_HAMMING_MU, cfg.candidates, cfg.max_tries,
                                            run.rng, hamming=resnet48_hamming)
    pretrain = dataclasses.replace(cfg, epochs=0 if cfg.init else cfg.pretrain_epochs, lr=cfg.pretrain_lr, method="spos")
    if cfg.resume:
        restore(cfg, run, net, opt, space.sampler, pretrain.epochs + cfg.epochs)
    elif run.is_main:
        log_json(run.out, dict(event="config", config=run.config, world_size=world))
    table = load_resnet48_table(cfg.benchmark)
    eval_rng = random.Random(cfg.eval_seed)
    eval_archs = [sample_resnet48(eval_rng) for _ in range(eval_count(cfg.eval_archs))]
    valid_loader = resnet48_valid_loader(cfg, valid_set)
    space.evaluate = lambda: evaluate_ranking(net, eval_archs, valid_loader, cfg,
                                              lambda: resnet48_recal_loader(cfg, train_set), table,
                                              key=encode_resnet48_code)
    train(pretrain, dataclasses.replace(space, evaluate=None), run, opt, stage="pretrain")
    train(cfg, space, run, opt, stage="train", first_epoch=pretrain.epochs)
    # every rank reports a checksum of its weights: DDP keeps them identical
    checksum = torch.tensor([float(sum(p.detach().double().sum() for p in net.parameters()))], dtype=torch.float64,
                            device=device)                                   # NCCL gathers GPU tensors only
    checksums = [checksum.clone() for _ in range(world)]
    if world > 1:
        dist.all_gather(checksums, checksum)
    result = None
    if run.is_main:
        result = dict(config=run.config, world_size=world, final=run.history[-1],
                      rank_weight_checksums=[float(c) for c in checksums])
        atomic_write_text(os.path.join(run.out, "results.json"), json.dumps(result, indent=1))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if run.is_main:
        unlock_run_folder(run.out)
    return result


def rank_main(cfg):
    """--mode rank: score every code of --archs (competition JSON) with the supernet; write the submission."""
    if not os.path.isfile(cfg.archs):
        raise UserError(f"--archs {cfg.archs!r} not found; expected the competition JSON "
                        f'{{"arch1": {{"acc": 0.0, "arch": "1..."}}, ...}}')
    try:
        with open(cfg.archs) as f:
            entries = json.load(f)
        codes = [(k, v["arch"]) for k, v in entries.items()]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise UserError(f"{cfg.archs} is not a competition JSON ({type(e).__name__}: {e})") from None
    if not codes:
        raise UserError(f"{cfg.archs} holds no archs; expected the competition JSON "
                        f'{{"arch1": {{"acc": 0.0, "arch": "1..."}}, ...}}')
    archs = []
    for key, code in codes:
        try:
            archs.append(decode_resnet48_code(code))
        except ValueError as e:
            raise UserError(f"{cfg.archs}, {key}: {e}") from None
    out, device = run_dir(cfg), get_device(cfg.device)
    path = os.path.join(out, "submission.json")
    if os.path.exists(path):                                 # a submission is never overwritten
        raise UserError(f"{path} exists; move it away or rank into another --out")
    ckpt = load_checkpoint(cfg.ckpt or os.path.join(out, "ckpt.pt"))
    mcfg = dataclasses.replace(cfg, **{k: ckpt["config"][k] for k in ("dataset", "resolution", "base_width",
                                                                      "train_subset", "valid_subset")})
    train_set, valid_set, num_classes = resnet48_datasets(mcfg)
    net, _ = build_resnet48(mcfg, num_classes, device)
    net.load_state_dict(ckpt["model"])
    valid_loader = resnet48_valid_loader(mcfg, valid_set)
    print(f"ranking {len(archs)} archs from {cfg.archs} (bn={cfg.bn}, {cfg.bn_batches} recal batches each)")
    record = evaluate_ranking(net, archs, valid_loader, cfg, lambda: resnet48_recal_loader(mcfg, train_set),
                              load_resnet48_table(cfg.benchmark), key=encode_resnet48_code,
                              every=max(1, len(archs) // 20))
    for (key, _), acc in zip(codes, record["supernet_acc"]):
        entries[key]["acc"] = acc
    atomic_write_text(path, json.dumps(entries))
    if "metrics" in record:
        print(f"ranking against {cfg.benchmark}: {format_metrics(record['metrics'])}")
    print(f"wrote {path}")
    return path


# =====================================================================================================
# Part III: reproducing the tables
# The tools around the method: the flags and their checks, run folders (locks, checkpoints, resume), data
# files, benchmark tables, the proxies against the benchmark (Table 2), Fig. 1, search (Table 3), summaries
# over runs (Tables 2-4), stand-alone training for a ground truth, speed benchmarks.
# =====================================================================================================

# ---- Command line: the flags and their checks ----

@dataclasses.dataclass
class Flags(ResNet48Config):
    """Every flag of the command line: Part I's Config, Part II's, and those of the modes below."""
    search: str = arg("evolution", "--mode search: evolution | random")
    search_by: str = arg("supernet", "--mode search: supernet or any proxy name (zero-shot search)")
    budget: int = arg(100, "--mode search: archs evaluated")
    population: int = arg(20, "--mode search: evolution population")
    topk: int = arg(5, "--mode search: parents kept per generation")
    mutate_prob: float = arg(0.2, "--mode search: probability of redrawing each edge's op")
    report_tables: str = arg("", "--mode search / summarize: comma-separated NB201/NATS tables for Table 3 (default: those next to --benchmark)")
    arch: str = arg("", "--mode standalone: the arch string to train")
    gt_archs: int = arg(150, "--mode build-gt: archs to train from scratch")
    gt_seeds: int = arg(2, "--mode build-gt: seeds per arch")
    runs: str = arg("", "--mode summarize: run folders (a glob)")
    bench_archs: int = arg(20, "--mode bench: archs timed per figure (median over them)")


PRESETS = {"nb201": NB201_PRESETS, "resnet48": RESNET48_PRESETS}        # --preset, per --space
# --mode standalone / build-gt train one arch from scratch with a recipe of their own, by (preset, dataset):
# NB201's stand-alone recipe (SGD Nesterov, lr 0.1 cosine, 200 epochs), and that of results/fmnist_gt.csv.
STANDALONE_RECIPES = {("paper", None): dict(epochs=200, batch_size=256, lr=0.1, lr_min=0.0, weight_decay=5e-4, nesterov=True),
                      ("cpu", "fashion-mnist"): dict(epochs=4, batch_size=128, lr=0.05, lr_min=0.0, weight_decay=5e-4,
                                                     valid_subset=0)}
MODES = ("train", "proxies", "search", "standalone", "build-gt", "summarize", "bench", "export-benchmark", "rank")
CHOICES = {"space": ("nb201", "resnet48"), "mode": MODES, "ops": ("nb201", "no-none"),
           "dataset": ("cifar10", "cifar10-valid", "cifar100", "imagenet16-120", "fashion-mnist", "synthetic", "imagenet"),
           "method": ("spos", "fairnas", "sandwich", "rd"), "sampler": ("uniform", "hamming", "group"),
           "rd_schedule": ("sin", "constant"), "bn": ("train", "recal"), "gt_metric": ("train", "valid", "test"),
           "search": ("evolution", "random")}
POSITIVE_FIELDS = ("C", "N", "batch_size", "candidates", "max_tries", "eval_batch_size", "bn_batches", "proxy_batch",
                   "budget", "population", "topk", "gt_archs", "gt_seeds", "log_every", "bench_archs", "base_width")
# (field, lowest, highest) for the real-valued flags; --lr and --pretrain-lr must also be > 0
FLOAT_RANGES = (("lr", 0, math.inf), ("pretrain_lr", 0, math.inf), ("lr_min", 0, math.inf), ("momentum", 0, 1),
                ("weight_decay", 0, math.inf), ("grad_clip", 0, math.inf), ("margin", 0, math.inf),
                ("rd_weight", 0, math.inf), ("mutate_prob", 0, 1), ("mu", -1, math.inf))
NON_NEGATIVE_FIELDS = ("seed", "eval_seed", "resolution", "train_subset", "valid_subset", "epochs", "sandwich_random", "eval_every",
                       "pretrain_epochs", "workers")


def parse_args(argv=None):
    """argv -> Flags. Precedence: explicit flag > PRESETS[space][preset] > Flags' defaults."""
    p = argparse.ArgumentParser(description="RD-NAS (Dong et al., ICASSP 2023). Defaults shown are before --preset.")
    for f in dataclasses.fields(Flags):
        flag, help = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        else:
            typ = {"int": int, "float": float, "str": str}.get(f.type, f.type)
            p.add_argument(flag, type=typ, default=None, choices=CHOICES.get(f.name), help=f"{help} (default: {f.default!r})")
    args = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    space, preset = args.get("space", Flags.space), args.get("preset", Flags.preset)
    if preset not in PRESETS[space]:
        p.error(f"argument --preset: invalid choice for --space {space}: {preset!r} (choose from {', '.join(PRESETS[space])})")
    values = dict(PRESETS[space][preset])
    if args.get("dataset") == "fashion-mnist":               # a preset's own settings for Fashion-MNIST
        values.update(values.get("fashion_mnist", {}))
    values.pop("fashion_mnist", None)
    if args.get("mode") in ("standalone", "build-gt") and space == "nb201":   # training one arch from scratch
        dataset = args.get("dataset", values.get("dataset", Flags.dataset))
        values.update(STANDALONE_RECIPES.get((preset, dataset), STANDALONE_RECIPES.get((preset, None), {})))
    if args.get("dataset") == "cifar10-valid":               # NB201's name of the protocol --dataset cifar10 runs
        args["dataset"] = "cifar10"
    cfg = dataclasses.replace(Flags(), **{**values, **args})
    for names, least in ((POSITIVE_FIELDS, 1), (NON_NEGATIVE_FIELDS, 0)):
        for name in names:
            if getattr(cfg, name) < least:
                p.error(f"argument --{name.replace('_', '-')}: must be >= {least}, got {getattr(cfg, name)}")
    for name, low, high in FLOAT_RANGES:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and low <= value <= high and (name not in ("lr", "pretrain_lr") or value > 0)):
            span = f"{'(0' if name in ('lr', 'pretrain_lr') else f'[{low:g}'}, " + (f"{high:g}]" if high < math.inf else "inf)")
            p.error(f"argument --{name.replace('_', '-')}: must be a finite number in {span}, got {value}")
    if 0 < cfg.resolution < 8:
        p.error(f"argument --resolution: must be 0 (native) or >= 8 (two reductions halve it twice), got {cfg.resolution}")
    if cfg.space == "resnet48":
        nb201_only = [f for f in ("ops", "C", "N") if f in args]
        if nb201_only:
            p.error(f"--{', --'.join(nb201_only)} set the NB201 space; --space resnet48 has its own (see --base-width)")
    return cfg


# ---- Run folders: locks, atomic writes, checkpoints, resume ----

# Config fields a resumed run may change; every other field must match the checkpoint.
RESUME_FREE = {"resume", "out", "device", "log_every", "plot", "data", "eval_every", "eval_batch_size", "mode",
               "runs", "ckpt"}


def atomic_write(path, write):
    """Write a file so that a killed process leaves either the old or the new version, never half of one:
    `write(tmp)` fills a temporary file that is then renamed. A failed write removes it, and a full disk is a
    one-line error that says the old file is intact."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in str(e):
            raise UserError(f"no space left writing {path}; the last {os.path.basename(path)} is intact") from None
        raise


def atomic_write_text(path, text):
    """atomic_write of a text file."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write)


def run_dir(cfg):
    """--out, or runs/<space>-<dataset>-<method>-seed<seed>; created if missing, checked writable before any work."""
    method = cfg.method + (f"-{cfg.sampler}" if cfg.method == "rd" else "")
    out = cfg.out or os.path.join("runs", f"{cfg.space}-{cfg.dataset}-{method}-seed{cfg.seed}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder; choose a folder")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise UserError(f"--out {out} is not writable ({e.strerror}); choose another folder") from None
    return out


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_run_folder(out):
    """Own `out` for this process: <out>/run.lock holds our PID. A lock whose process is gone (a killed run) is
    taken over; one whose process lives is a one-line error. Temporary files left by killed writes are removed."""
    path = os.path.join(out, "run.lock")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(open(path).read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and pid_alive(pid):
                raise UserError(f"{out} is in use by another run (pid {pid}); wait for it or choose another --out") from None
            os.remove(path)                                  # stale: its process was killed
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        for name in os.listdir(out):
            if re.search(r"\.tmp\d+$", name):
                os.remove(os.path.join(out, name))
        return path
    raise UserError(f"{out}: could not take {path}; another run may be starting there")


def unlock_run_folder(out):
    path = os.path.join(out, "run.lock")
    try:
        if int(open(path).read().strip() or 0) == os.getpid():
            os.remove(path)
    except (OSError, ValueError):
        pass


def open_run(cfg, is_main=True, world=1):
    """The run of --out, locked for this process; a folder that holds a run is refused unless --resume, and
    --resume on a folder without one is refused too."""
    run = Run(run_dir(cfg), dataclasses.asdict(cfg), random.Random(cfg.seed), world=world, is_main=is_main)
    if is_main:
        lock_run_folder(run.out)
    if os.path.exists(run.ckpt) and not cfg.resume:
        raise UserError(f"{run.out} already holds a run; pass --resume to continue it or choose another --out")
    if cfg.resume and not os.path.exists(run.ckpt):
        raise UserError(f"--resume: {run.out} holds no run to resume (no ckpt.pt); run without --resume to start one")
    if is_main and not cfg.resume and os.path.exists(os.path.join(run.out, "log.jsonl")):
        os.remove(os.path.join(run.out, "log.jsonl"))        # the log of a run killed before its first checkpoint
    return run


def save_checkpoint(path, **state):
    """One dict {model, optimizer, config, epoch, rng, ...}, written to a temporary file and renamed."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path, cfg=None):
    """Load a checkpoint; a corrupt file or one made with a different config is a one-line UserError."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path!r} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        saved = ckpt["config"]
    except Exception as e:
        raise UserError(f"checkpoint {path!r} is unreadable (corrupt or truncated?): {type(e).__name__}: {e}") from None
    if cfg is not None:
        diff = [f"{k}={saved.get(k)!r} (now {v!r})" for k, v in dataclasses.asdict(cfg).items()
                if k not in RESUME_FREE and saved.get(k) != v]
        if diff:
            raise UserError(f"checkpoint {path} was made with a different config: {', '.join(diff)}")
    return ckpt


def read_jsonl(path):
    """The records of a JSON-lines file ([] if there is none), without a line cut short by a kill."""
    records = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records


def trim_log(run):
    """Drop the log.jsonl records written after the checkpoint (and a line cut short by a kill), so that the log
    of a resumed run reads as if the run had never stopped."""
    path = os.path.join(run.out, "log.jsonl")
    if not os.path.exists(path):
        return
    evaluated = {h["epoch"] for h in run.history}
    kept = [r for r in read_jsonl(path) if r.get("event") == "config" or
            (r.get("event") == "epoch" and r["epoch"] <= run.epoch) or (r.get("event") == "eval" and r["epoch"] in evaluated)]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def restore(cfg, run, net, opt, sampler=None, total_epochs=None):
    """--resume: the weights, the optimizer, the epochs done, the rankings and every random generator."""
    ckpt = load_checkpoint(run.ckpt, cfg)
    if ckpt.get("data", run.data) != run.data:
        raise UserError(f"{run.ckpt} was trained on other data than --data {cfg.data} holds now (fingerprint "
                        f"{ckpt['data']}, now {run.data}); resume with the same data files")
    if ckpt["world_size"] != run.world:
        raise UserError(f"{run.ckpt} was written by {ckpt['world_size']} processes; resume it with the same "
                        f"--nproc_per_node (now {run.world})")
    net.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    run.epoch, run.history = ckpt["epoch"], ckpt["history"]
    run.rng.setstate(ckpt["rng"]["python"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if run.gen is not None:
        run.gen.set_state(ckpt["rng"]["data"])
    if sampler is not None:
        sampler.fallbacks = ckpt["rng"]["fallbacks"]
    if run.is_main:
        trim_log(run)
        print(f"resumed {run.out} after epoch {run.epoch}/{total_epochs or cfg.epochs}")


def data_fingerprint(*tensors):
    """A cheap identity of the loaded data (shapes and a hash of the bytes), so that --resume refuses other data."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---- Data files: Fashion-MNIST (IDX), CIFAR-10/100, ImageNet16-120, and load_dataset over them ----

def read_idx(path):
    """Read an IDX file (MNIST format), gzipped or not -> numpy array."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            magic, = struct.unpack(">I", f.read(4))
            if magic >> 8 != 0x08:
                raise UserError(f"{path} is not an IDX file of unsigned bytes (magic {magic:#x})")
            dims = struct.unpack(">" + "I" * (magic & 0xFF), f.read(4 * (magic & 0xFF)))
            return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)
    except (EOFError, OSError, ValueError, struct.error) as e:         # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} is truncated or corrupt ({type(e).__name__}); replace it with the original file") from None


def find_file(folder, names, what):
    for name in names:
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise UserError(f"{what} not found: looked for {' or '.join(names)} in {folder!r} (set --data)")


def download_fashion_mnist(root):
    """The folder of torchvision's Fashion-MNIST files under `root`, downloading them when online."""
    raw = os.path.join(root, "FashionMNIST", "raw")
    if not os.path.exists(os.path.join(raw, "t10k-labels-idx1-ubyte.gz")):
        try:
            import torchvision                               # only this fallback needs it
            torchvision.datasets.FashionMNIST(root, train=True, download=True)
        except Exception as e:
            raise UserError(f"Fashion-MNIST not found in {root!r} and could not be downloaded ({type(e).__name__}): "
                            f"apt-get install dataset-fashion-mnist (IDX files in /usr/share/datasets/fashion-mnist), "
                            f"or pass --data to a folder holding them") from None
    return raw


def load_fashion_mnist(root):
    """Fashion-MNIST from IDX files: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), or
    torchvision's download into --data when the files are not there."""
    files = [f"{p}-{k}-idx{d}-ubyte.gz" for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))]
    if not all(os.path.exists(os.path.join(root, f)) or os.path.exists(os.path.join(root, f[:-3])) for f in files):
        root = download_fashion_mnist(root)
    def part(prefix):
        x = read_idx(find_file(root, [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte"], "Fashion-MNIST"))
        y = read_idx(find_file(root, [f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte"], "Fashion-MNIST"))
        if len(x) != len(y) or x.ndim != 3:
            raise UserError(f"{root}: {prefix} images ({x.shape}) and labels ({len(y)}) do not match; the files are damaged")
        return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))
    # Train on the 60k training images, rank (and build the ground truth) on the 10k test images.
    return part("train") + part("t10k")


def load_cifar(root, name):
    """CIFAR-10/100 from the standard python folder (`cifar-10-batches-py/`, `cifar-100-python/`, as torchvision
    extracts it), read with pickle -> (x_train, y_train, pos_train, x_test, y_test, pos_test): uint8 images
    (N, 3, 32, 32), labels, and each image's position in the original order. A batch may hold fewer rows than
    the original; its `indices` key then gives each row's position. torchvision downloads the folder when it
    is missing (its own class would reject a partial folder, hence pickle)."""
    folder = os.path.join(root, "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    if not os.path.isdir(folder):
        try:
            import torchvision                               # only the download needs it
            (torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100)(root, download=True)
        except Exception as e:                               # offline or unwritable: say where the files go
            raise UserError(f"{name} is not in {root!r} and could not be downloaded ({type(e).__name__}); put the "
                            f"extracted {os.path.basename(folder)}/ folder there and pass --data {root}") from None
    train_files = [f"data_batch_{k}" for k in range(1, 6)] if name == "cifar10" else ["train"]
    label = b"labels" if name == "cifar10" else b"fine_labels"
    def part(files, rows_per_file):
        xs, ys, ps = [], [], []
        for k, file in enumerate(files):
            path = find_file(folder, [file], f"{name} batch")
            try:
                with open(path, "rb") as f:
                    d = pickle.load(f, encoding="bytes")
                x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(d[label], dtype=np.int64)
            except Exception as e:
                raise UserError(f"{path} is not a CIFAR python batch ({type(e).__name__}); replace it with the original") from None
            xs.append(x), ys.append(y)
            ps.append(k * rows_per_file + np.asarray(d.get(b"indices", range(len(x))), dtype=np.int64))
        return [torch.from_numpy(np.concatenate(v)) for v in (xs, ys, ps)]
    return part(train_files, 10000 if name == "cifar10" else 50000) + part(["test_batch" if name == "cifar10" else "test"], 10000)


NB201_SPLITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks", "nb201_splits.json.gz")


def nb201_split(name):
    """NAS-Bench-201's own split as a boolean mask over the original order (benchmarks/nb201_splits.json.gz, made
    from AutoDL-Projects' cifar-split.txt and cifar100-test-split.txt): cifar10-valid `train` / `valid` over
    CIFAR-10's 50,000 training images, cifar100 `xvalid` / `xtest` over CIFAR-100's 10,000 test images."""
    with gzip.open(NB201_SPLITS, "rt") as f:
        entry = json.load(f)[name]
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(entry["bits"]), dtype=np.uint8))[: entry["n"]]
    return torch.from_numpy(bits.astype(bool))


def load_imagenet16(root, classes=120):
    """ImageNet16-120: the pickled 16x16 batches train_data_batch_1..10 and val_data; first 120 classes.

    Each pickle holds `data` (uint8, N x 768 = 3 x 16 x 16, channel-major) and 1-based `labels`.
    """
    def part(names):
        xs, ys = [], []
        for name in names:
            with open(find_file(root, [name], "ImageNet16 batch"), "rb") as f:
                d = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 16, 16))
            ys.append(np.asarray(d["labels"], dtype=np.int64) - 1)  # labels are 1-based
        x, y = np.concatenate(xs), np.concatenate(ys)
        keep = y < classes
        return torch.from_numpy(x[keep]), torch.from_numpy(y[keep])
    return part([f"train_data_batch_{i}" for i in range(1, 11)]) + part(["val_data"])


SPLIT_SEED = 777  # fixed: the held-out split never depends on --seed (it is saved in the run folder too)


def split_indices(n, seed=SPLIT_SEED):
    """A seeded random halving of range(n) -> (first half, second half)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n // 2], perm[n // 2:]


def make_synthetic(n_train=2048, n_valid=1024, classes=10, side=16, seed=0):
    """Deterministic, learnable toy data: each class is a fixed random image pattern plus noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, 3, side, side, generator=g)
    def part(n):
        y = torch.randint(classes, (n,), generator=g)
        x = 0.25 * templates[y] + 0.75 * torch.rand(n, 3, side, side, generator=g)   # faint signal, strong noise
        return (x * 255).to(torch.uint8), y
    return part(n_train) + part(n_valid)


def resize_uint8(x, side):
    """Area-resize a uint8 image tensor (N, C, H, W) to side x side."""
    return torch.cat([F.interpolate(c.float(), size=(side, side), mode="area").round().clamp(0, 255).to(torch.uint8)
                      for c in x.split(4096)])


def load_dataset(cfg):
    """-> dict(train=(x, y), valid=(x, y), num_classes, in_channels, split) with uint8 images (N, C, H, W).

    cifar10 trains on NAS-Bench-201's `train` 25k of the training set and ranks on its `valid` 25k (the
    cifar10-valid protocol); cifar100 trains on the training set and ranks on NB201's `xvalid` half of the test
    set; images missing from a partial folder are skipped and counted. imagenet16-120 ranks on a seeded random
    half of its validation set (SPLIT_SEED; NB201's own split file for it is not shipped).
    """
    name, root = cfg.dataset, cfg.data
    split = {}
    if name == "synthetic":
        xtr, ytr, xva, yva = make_synthetic(side=cfg.resolution or 16)
    elif name == "fashion-mnist":
        xtr, ytr, xva, yva = load_fashion_mnist(root)
    elif name in ("cifar10", "cifar100"):
        xtr, ytr, ptr, xte, yte, pte = load_cifar(root, name)
        if name == "cifar10":                                # NB201 cifar10-valid: train / valid of the 50k
            in_train, in_valid = nb201_split("train")[ptr], nb201_split("valid")[ptr]
            xtr, ytr, xva, yva = xtr[in_train], ytr[in_train], xtr[in_valid], ytr[in_valid]
            split = dict(split="nb201 cifar10-valid", train=len(xtr), valid=len(xva),
                         missing_train=25000 - len(xtr), missing_valid=25000 - len(xva))
        else:                                                # NB201 cifar100: x-valid half of the test set
            in_valid = nb201_split("xvalid")[pte]
            xva, yva = xte[in_valid], yte[in_valid]
            split = dict(split="nb201 cifar100 x-valid", train=len(xtr), valid=len(xva), missing_valid=5000 - len(xva))
    elif name == "imagenet16-120":
        xtr, ytr, xte, yte = load_imagenet16(root)
        a, _ = split_indices(len(xte))
        xva, yva, split = xte[a], yte[a], {"val_half_a": a.tolist()}
    else:
        raise UserError(f"--dataset {name} is for --space resnet48 only")
    if cfg.train_subset:
        xtr, ytr = xtr[: cfg.train_subset], ytr[: cfg.train_subset]
    if cfg.valid_subset:
        xva, yva = xva[: cfg.valid_subset], yva[: cfg.valid_subset]
    if cfg.resolution and xtr.shape[-1] != cfg.resolution:
        xtr, xva = (resize_uint8(x, cfg.resolution) for x in (xtr, xva))
    num_classes = int(max(ytr.max(), yva.max())) + 1
    return dict(train=(xtr, ytr), valid=(xva, yva), num_classes=num_classes, in_channels=xtr.shape[1], split=split)


# ---- Ground truth: NAS-Bench-201 tables ----
# Layouts read, all keyed by arch string:
#   per-dataset NB201 table: `arch str,...,train accuracy,validation accuracy,test accuracy`
#   NATS-Bench 3-dataset test table: `CIFAR10TestAccuracy200Epochs,...,ArchitectureString`
#   plain table (ours, e.g. results/): `arch,accuracy`, plus any extra columns
NATS_COLUMNS = {"cifar10": "CIFAR10TestAccuracy200Epochs", "cifar100": "CIFAR100TestAccuracy200Epochs",
                "imagenet16-120": "ImageNetTestAccuracy200Epochs"}
NB201_COLUMNS = {"train": "train accuracy", "valid": "validation accuracy", "test": "test accuracy"}
NB201_FILE_DATASETS = {"cifar10-valid": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet16-120"}


# The ground truth shipped with the repo (README: "The NAS-Bench-201 ground truth"): all 15,625 archs, 200-epoch
# means of NAS-Bench-201 v1_1 and, for cifar10_test (trained on all 50k images), NATS-Bench tss.
SHIPPED_NB201 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks", "nb201.csv.gz")
SHIPPED_COLUMNS = {("cifar10", "valid"): "cifar10-valid_valid", ("cifar10", "test"): "cifar10-valid_test",
                   ("cifar100", "valid"): "cifar100_valid", ("cifar100", "test"): "cifar100_test",
                   ("imagenet16-120", "valid"): "ImageNet16-120_valid", ("imagenet16-120", "test"): "ImageNet16-120_test"}


def read_benchmark(path, f, dataset, metric, column=None):
    """load_benchmark's reader of an open CSV file; `column` picks a column of the shipped table by name."""
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    if "cifar10-valid_valid" in header:                  # the shipped table (benchmarks/nb201.csv.gz)
        arch_col, acc_col = "arch", column or SHIPPED_COLUMNS.get((dataset, metric))
        if acc_col not in header:
            raise UserError(f"{os.path.basename(path)} has no {metric} accuracy of {dataset}; it holds "
                            f"{', '.join(header[1:])} (--gt-metric valid or test)")
    elif "arch str" in header:
        base = os.path.basename(path)
        for tag, ds in NB201_FILE_DATASETS.items():   # nb201_<dataset>_... names say which dataset they hold
            if base.startswith(f"nb201_{tag}_") and ds != dataset:
                raise UserError(f"{base} holds {tag} accuracies but --dataset is {dataset}")
        arch_col, acc_col = "arch str", NB201_COLUMNS[metric]
    elif "ArchitectureString" in header:
        if metric != "test" or dataset not in NATS_COLUMNS:
            raise UserError(f"{os.path.basename(path)} has only test accuracies of cifar10, cifar100, "
                            f"imagenet16-120; use --gt-metric test and one of those datasets")
        arch_col, acc_col = "ArchitectureString", NATS_COLUMNS[dataset]
    elif "arch" in header and "accuracy" in header:
        if metric != "valid":
            raise UserError(f"{path} has one accuracy column (arch,accuracy); --gt-metric {metric} needs an NB201 "
                            f"table with train/validation/test columns")
        arch_col, acc_col = "arch", "accuracy"
    else:
        raise UserError(f"{path}: unknown table layout {header[:4]}...; accepted: NB201 'arch str,...,validation "
                        f"accuracy', NATS 'CIFAR10TestAccuracy200Epochs,...,ArchitectureString', or 'arch,accuracy'")
    table, lines = {}, {}
    for line, row in enumerate(reader, start=2):
        try:
            arch, acc = arch_to_str(str_to_arch(row[arch_col])), float(row[acc_col])
        except (UserError, ValueError, TypeError) as e:
            raise UserError(f"{path}:{line}: {e}") from None
        if not math.isfinite(acc):
            raise UserError(f"{path}:{line}: accuracy {row[acc_col]!r} of {arch} is not a finite number")
        if arch in table:
            raise UserError(f"{path}:{line}: {arch} is listed twice (first on line {lines[arch]})")
        table[arch], lines[arch] = acc, line
    if not table:
        raise UserError(f"{path} has no rows")
    return table


def load_benchmark(path, dataset="cifar10", metric="valid", column=None):
    """Read a ground-truth table -> {arch string: accuracy in percent}. Bad files raise a one-line UserError."""
    if not os.path.isfile(path):
        raise UserError(f"benchmark file {path!r} not found; pass a CSV made by --mode export-benchmark or an arch,accuracy table")
    try:
        with (gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")) as f:
            return read_benchmark(path, f, dataset, metric, column)
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text CSV table (binary file?); pass a CSV made by --mode export-benchmark "
                        f"or an arch,accuracy table") from None


def lookup(table, arch, path="the benchmark", key=arch_to_str):
    key = key(arch)
    if key not in table:
        raise UserError(f"{path} has no entry for arch {key} ({len(table)} archs in the table)")
    return table[key]


def export_benchmark(api, out_dir, hp="200"):
    """Write the per-dataset CSVs that load_benchmark reads from an official API object.

    `api` is nats_bench.create(path, 'tss') or nas_201_api.NASBench201API(path). hp='200' and the
    mean over seeds (is_random=False) are the figures papers quote; the API's default hp='12' is not.
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for tag in NB201_FILE_DATASETS:  # get_more_info: valid = x-valid; test = ori-test (cifar10-valid) or x-test
        path = os.path.join(out_dir, f"nb201_{tag}_{hp}ep_train_valid_test.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file id", "arch str", "cfg name", "C", "N"] + list(NB201_COLUMNS.values()))
            for index in range(len(api)):
                info = api.get_more_info(index, tag, hp=hp, is_random=False)
                w.writerow([index, arch_to_str(str_to_arch(api.arch(index))), "infer.tiny", 16, 5,
                            info["train-accuracy"], info["valid-accuracy"], info["test-accuracy"]])
        written.append(path)
    return written


def default_benchmark(cfg):
    """The ground truth when --benchmark is not given: the shipped NAS-Bench-201 table for the NB201 datasets;
    our own Fashion-MNIST ground truth (results/) when the run uses the recipe it was built with."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fmnist_gt.csv")
    recipe = dict(dataset="fashion-mnist", resolution=16, C=8, N=1)
    if os.path.exists(path) and all(getattr(cfg, k) == v for k, v in recipe.items()):
        return path
    if cfg.space == "nb201" and cfg.dataset in ("cifar10", "cifar100", "imagenet16-120") and os.path.exists(SHIPPED_NB201):
        return SHIPPED_NB201
    return ""


def ground_truth(cfg):
    """The benchmark table named by --benchmark (or the dataset's default), or None."""
    path = cfg.benchmark or default_benchmark(cfg)
    if not path or path == "none":
        return None, None
    return load_benchmark(path, cfg.dataset, cfg.gt_metric), path


def export_main(cfg):
    """--mode export-benchmark --data OFFICIAL_FILE --out DIR: official NATS-Bench/NB201 file -> our CSVs."""
    if not os.path.exists(cfg.data):
        raise UserError(f"official benchmark file {cfg.data!r} not found (e.g. NATS-tss-v1_0-3ffb9-simple or "
                        f"NAS-Bench-201-v1_1-096897.pth); pass it with --data")
    try:
        from nats_bench import create
        api = create(cfg.data, "tss", fast_mode=True, verbose=False)
    except ImportError:
        try:
            from nas_201_api import NASBench201API
            api = NASBench201API(cfg.data, verbose=False)
        except ImportError:
            raise UserError("--mode export-benchmark needs the official API: pip install nats_bench "
                            "(or nas-bench-201)") from None
    for path in export_benchmark(api, run_dir(cfg)):
        print(f"wrote {path}")


# ---- FLOPs and params of an NB201 arch without building its network (the teacher's fast path) ----

_COST_TABLES = {}


def cost_table(C=16, N=5, num_classes=10, in_channels=3, resolution=32, convention="nb201"):
    """Per-op cost tables for NB201 archs: an arch's FLOPs/params = base + sum over its 6 edges of cost(op).

    Every edge of a cell sees the same shape, so the cost of an op does not depend on its edge; the table
    comes from counting 6 real networks once (all-`none`, then all-op for each op).
    """
    key = (C, N, num_classes, in_channels, resolution, convention)
    if key not in _COST_TABLES:
        shape = (in_channels, resolution, resolution)
        base = count_cost(NB201Net(("none",) * 6, C, N, num_classes, in_channels), shape, convention)
        per_op = {}
        for op in OPS:
            full = count_cost(NB201Net((op,) * 6, C, N, num_classes, in_channels), shape, convention)
            per_op[op] = tuple((f - b) / 6 for f, b in zip(full, base))
        _COST_TABLES[key] = (base, per_op)
    return _COST_TABLES[key]


def arch_cost(arch, C=16, N=5, num_classes=10, in_channels=3, resolution=32, convention="nb201"):
    """(MFLOPs, Mparams) of an NB201 arch from the per-op tables, without building its network."""
    base, per_op = cost_table(C, N, num_classes, in_channels, resolution, convention)
    return tuple(b + sum(per_op[op][k] for op in arch) for k, b in enumerate(base))


# ---- Zero-cost proxies against the benchmark (Table 2, top rows) ----

def proxy_table(cfg):
    """--mode proxies: score --eval-archs archs with each proxy; tau, r, rho, CPR against --benchmark; s/arch."""
    out, device = run_dir(cfg), get_device(cfg.device)
    seed_everything(cfg.seed)
    names = parse_proxies(cfg.proxies)
    table, table_path = ground_truth(cfg)
    needs_data = any(n not in DATA_FREE for n in names)
    if needs_data:
        data = load_dataset(cfg)
        train_loader, _ = make_loaders(data, cfg, torch.Generator().manual_seed(cfg.seed))
        # the batch and the initial weights follow --seed, the scored archs --eval-seed: seeds vary the former only
        batch = fixed_batch(data, dataclasses.replace(cfg, eval_seed=cfg.seed), device, train_loader)
        kw = net_kwargs(cfg, data)
    else:  # data-free proxies need only the input shape of the dataset
        shape = {"fashion-mnist": (1, 28), "imagenet16-120": (3, 16)}.get(cfg.dataset, (3, 32))
        classes = {"cifar100": 100, "imagenet16-120": 120}.get(cfg.dataset, 10)
        res = cfg.resolution or shape[1]
        B = cfg.proxy_batch                                  # Zen draws its own Gaussian batch of this shape
        batch = (torch.zeros(B, shape[0], res, res, device=device), torch.zeros(B, dtype=torch.long, device=device))
        kw = dict(C=cfg.C, N=cfg.N, num_classes=classes, in_channels=shape[0], resolution=res)
    if cfg.eval_archs == "all" and needs_data:
        raise UserError("--eval-archs all is for the data-free proxies (flops, params, synflow, zen)")
    archs = sample_eval_archs(OP_SETS[cfg.ops], cfg.eval_archs, cfg.eval_seed, table)
    print(f"scoring {len(archs)} archs with {', '.join(names)} (C={kw['C']}, N={kw['N']}, "
          f"{kw['resolution']}px, batch {batch[0].shape[0]} of {cfg.dataset}"
          f"{'' if needs_data else ', data-free'}); ground truth: {table_path or 'none'}")
    rows = {}
    for name in names:
        t = time.time()
        scores = [score_arch(name, a, kw, batch, cfg.seed) for a in archs]
        row = dict(seconds_per_arch=(time.time() - t) / len(archs), scores=scores)
        if table is not None:
            row["metrics"] = rank_metrics(scores, [lookup(table, a) for a in archs])
        rows[name] = row
    print(f"{'proxy':10s} {'tau':>7s} {'r':>7s} {'rho':>7s} {'CPR':>7s} {'s/arch':>9s}")
    for name, row in rows.items():
        m = row.get("metrics")
        cells = "".join(f" {100 * m[k]:7.2f}" for k in ("tau", "r", "rho", "cpr")) if m else " " * 32
        print(f"{name:10s}{cells} {row['seconds_per_arch']:9.4f}")
    result = dict(config=dataclasses.asdict(cfg), benchmark=table_path, archs=[arch_to_str(a) for a in archs], proxies=rows)
    atomic_write_text(os.path.join(out, "proxies.json"), json.dumps(result, indent=1))
    return result


# ---- Fig. 1: Kendall tau over training, zero-cost proxies as horizontal lines ----

def plot_fig1(curves, proxy_taus, path, title):
    """Fig. 1: Kendall tau against epoch for each one-shot method, each zero-cost proxy as a horizontal line.

    curves: {label: ([epochs], [tau])}; proxy_taus: {name: tau}. Needs matplotlib (imported here only).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, (label, (epochs, taus)) in enumerate(curves.items()):
        ax.plot(epochs, [100 * t for t in taus], "o-", color=f"C{k}", label=f"{label} (one-shot)")
    for k, (name, tau) in enumerate(proxy_taus.items()):
        ax.axhline(100 * tau, ls="--", lw=1, color=f"C{(k + len(curves)) % 10}", label=f"{name} (zero-shot)")
    ax.set(xlabel="epoch", ylabel="Kendall tau (%)", title=title)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def plot_curve(out, cfg, history, table, data, loader, device):
    """--plot after training: this run's tau per evaluation, with each --proxies' tau on the same archs."""
    if table is None or not history:
        raise UserError("--plot needs a ground truth (--benchmark) and at least one evaluation")
    archs = [str_to_arch(a) for a in history[-1]["archs"]]
    gt = [lookup(table, a) for a in archs]
    kw, batch = net_kwargs(cfg, data), fixed_batch(data, cfg, device, loader)
    proxy_taus = {name: rank_metrics([score_arch(name, a, kw, batch, cfg.eval_seed) for a in archs], gt)["tau"]
                  for name in parse_proxies(cfg.proxies)}
    label = cfg.method.upper() + (f" + {cfg.sampler}" if cfg.method == "rd" else "")
    curve = {label: ([h["epoch"] for h in history], [h["metrics"]["tau"] for h in history])}
    return plot_fig1(curve, proxy_taus, os.path.join(out, "fig1_tau.png"),
                     f"Ranking consistency, {cfg.dataset}, {len(archs)} subnets")


# ---- Search with the trained supernet (Table 3) ----

def mutate(arch, ops, prob, rng):
    """SPOS mutation: each edge's op is redrawn uniformly with probability `prob`."""
    return tuple(rng.choice(ops) if rng.random() < prob else op for op in arch)


def crossover(a, b, rng):
    """SPOS crossover: each edge's op comes from either parent with probability 1/2."""
    return tuple(rng.choice(pair) for pair in zip(a, b))


def evolution_search(score, ops, budget, population=20, topk=5, mutate_prob=0.2, rng=None):
    """Evolutionary search as in SPOS (ref. [1], Sec. 3.4): a random population, then generations of children
    of the top-k archs seen so far, half by mutation and half by crossover, until exactly `budget` distinct
    archs have been scored. Returns (best arch, trace of (arch, score) in evaluation order)."""
    rng = rng or random.Random(0)
    budget = min(budget, len(ops) ** len(EDGES))              # never more archs than the space holds
    seen, trace = {}, []
    def visit(arch):
        if arch not in seen and len(seen) < budget:
            seen[arch] = score(arch)
            trace.append((arch, seen[arch]))
    while len(seen) < min(population, budget):
        visit(sample_nb201(rng, ops))
    while len(seen) < budget:
        parents = sorted(seen, key=seen.get, reverse=True)[:topk]
        before = len(seen)
        for k in range(population):
            if k % 2 == 0:
                child = mutate(rng.choice(parents), ops, mutate_prob, rng)
            else:
                child = crossover(rng.choice(parents), rng.choice(parents), rng)
            visit(child)
        if len(seen) == before:   # the parents' neighbourhood is exhausted: add a random arch
            visit(sample_nb201(rng, ops))
    return max(seen, key=seen.get), trace


def random_search(score, ops, budget, rng=None):
    """Random search: score `budget` distinct uniformly drawn archs, keep the best."""
    rng = rng or random.Random(0)
    seen, trace = {}, []
    while len(seen) < min(budget, len(ops) ** len(EDGES)):
        arch = sample_nb201(rng, ops)
        if arch not in seen:
            seen[arch] = score(arch)
            trace.append((arch, seen[arch]))
    return max(seen, key=seen.get), trace


# Table 3 columns: (dataset, split) -> which table holds it. CIFAR-10 "test" is the network trained on
# all 50k images (NATS table); without that table, the cifar10-valid table's ori-test column is used.
TABLE3_COLUMNS = (("cifar10", "valid"), ("cifar10", "test"), ("cifar100", "valid"), ("cifar100", "test"),
                  ("imagenet16-120", "valid"), ("imagenet16-120", "test"))


def table3_tables(paths):
    """{(dataset, split): {arch: acc}} from NB201 per-dataset tables and the NATS 3-dataset table."""
    tables = {}
    for path in paths:
        base = os.path.basename(path)
        if os.path.abspath(path) == SHIPPED_NB201:             # every column; CIFAR-10 test of the full-50k net
            tables.update({key: load_benchmark(path, *key) for key in SHIPPED_COLUMNS})
            tables[("cifar10", "test")] = load_benchmark(path, column="cifar10_test")
            continue
        if "3datasets" in base or "natsbench" in base:
            tables[("cifar10", "test")] = load_benchmark(path, "cifar10", "test")
            continue
        tag = next((t for t in NB201_FILE_DATASETS if base.startswith(f"nb201_{t}_")), None)
        if tag is None:
            raise UserError(f"{base}: report tables must be named nb201_<cifar10-valid|cifar100|ImageNet16-120>_... "
                            f"or natsbench_..._3datasets.csv")
        ds = NB201_FILE_DATASETS[tag]
        for split in ("valid", "test"):
            if not (ds == "cifar10" and split == "test" and ("cifar10", "test") in tables):
                tables[(ds, split)] = load_benchmark(path, ds, split)
    return tables


def report_paths(cfg):
    """--report-tables, or the NB201/NATS tables lying next to --benchmark, or the shipped table."""
    if cfg.report_tables:
        return [p for p in cfg.report_tables.split(",") if p]
    if cfg.benchmark == "none":
        return []
    if not cfg.benchmark or os.path.abspath(cfg.benchmark) == SHIPPED_NB201:
        return [SHIPPED_NB201] if os.path.exists(SHIPPED_NB201) else []
    folder = os.path.dirname(os.path.abspath(cfg.benchmark))
    names = sorted(os.listdir(folder))
    return [os.path.join(folder, n) for n in names
            if n.endswith(".csv") and (n.startswith("nb201_") or ("natsbench" in n and "3datasets" in n))]


def table3_row(arch, tables):
    return {f"{ds}/{split}": tables[(ds, split)].get(arch_to_str(arch)) for ds, split in TABLE3_COLUMNS if (ds, split) in tables}


def table3_optimum(tables):
    """The benchmark's optimum row, computed from the tables themselves (each column's best arch)."""
    return {f"{ds}/{split}": max(tables[(ds, split)].values()) for ds, split in TABLE3_COLUMNS if (ds, split) in tables}


# Config fields that define a trained supernet and its data (taken from the checkpoint for --mode search).
MODEL_FIELDS = ("space", "ops", "C", "N", "dataset", "data", "resolution", "train_subset", "valid_subset", "method",
                "sampler", "teacher", "batch_size", "channels_last")


def format_table3(groups):
    """Rows of Table 3: mean +- std over runs of each column."""
    cols = [f"{ds}/{split}" for ds, split in TABLE3_COLUMNS]
    lines = [f"{'method':28s}" + "".join(f"{c:>22s}" for c in cols)]
    for label, rows in groups:
        cells = []
        for c in cols:
            vals = [r[c] for r in rows if r.get(c) is not None]
            cells.append(f"{np.mean(vals):.2f}+-{np.std(vals):.2f}" if len(vals) > 1 else
                         (f"{vals[0]:.2f}" if vals else "-"))
        lines.append(f"{label[:28]:28s}" + "".join(f"{c:>22s}" for c in cells))
    return "\n".join(lines)


def run_search(cfg):
    """--mode search: find the best arch by the supernet (from --ckpt) or by a proxy (--search-by), then report it."""
    out, device = run_dir(cfg), get_device(cfg.device)
    model_cfg = cfg
    if cfg.search_by == "supernet":
        ckpt = load_checkpoint(cfg.ckpt or os.path.join(out, "ckpt.pt"))
        model_cfg = dataclasses.replace(cfg, **{k: ckpt["config"].get(k, getattr(cfg, k)) for k in MODEL_FIELDS})
        if not os.path.exists(model_cfg.data) and os.path.exists(cfg.data):   # the data folder has moved
            model_cfg = dataclasses.replace(model_cfg, data=cfg.data)
    seed_everything(cfg.seed)
    data = load_dataset(model_cfg)
    train_loader, valid_loader = make_loaders(data, model_cfg, torch.Generator().manual_seed(cfg.seed))
    ops = OP_SETS[model_cfg.ops]
    if cfg.search_by == "supernet":
        kw = net_kwargs(model_cfg, data)
        net = NB201Supernet(model_cfg.C, model_cfg.N, kw["num_classes"], kw["in_channels"], ops).to(
            device, memory_format=train_loader.layout)
        net.load_state_dict(ckpt["model"])
        recal = lambda: bn_recal_loader(data, model_cfg.batch_size, cfg.eval_seed, train_loader)
        def score(arch):
            return subnet_accuracy(net, arch, valid_loader, cfg.bn, recal() if cfg.bn == "recal" else None, cfg.bn_batches)
    else:
        if cfg.search_by not in PROXIES:
            raise UserError(f"--search-by {cfg.search_by}: use supernet or a proxy ({', '.join(PROXIES)})")
        name = cfg.search_by
        kw, batch = net_kwargs(model_cfg, data), fixed_batch(data, model_cfg, device, train_loader)
        def score(arch):
            return score_arch(name, arch, kw, batch, cfg.eval_seed)
    seen = []
    def scored(arch):
        seen.append(score(arch))
        if len(seen) % max(1, cfg.budget // 10) == 0 or len(seen) == cfg.budget:
            print(f"search {len(seen)}/{cfg.budget}: best so far {max(seen):.4g}", flush=True)
        return seen[-1]
    rng = random.Random(cfg.seed)
    t = time.time()
    if cfg.search == "evolution":
        best, trace = evolution_search(scored, ops, cfg.budget, cfg.population, cfg.topk, cfg.mutate_prob, rng)
    else:
        best, trace = random_search(scored, ops, cfg.budget, rng)
    tables = table3_tables(report_paths(cfg))
    row = table3_row(best, tables)
    result = dict(config=dataclasses.asdict(cfg), model_config=dataclasses.asdict(model_cfg), best=arch_to_str(best),
                  best_score=dict(trace)[best], seconds=time.time() - t, table3=row,
                  trace=[(arch_to_str(a), s) for a, s in trace])
    atomic_write_text(os.path.join(out, f"search_{cfg.search}_{cfg.search_by}.json"), json.dumps(result, indent=1))
    print(f"best arch ({cfg.search} search by {cfg.search_by}, {len(trace)} archs scored): {arch_to_str(best)}")
    if row:
        print(format_table3([(f"found ({cfg.search_by})", [row]), ("optimal", [table3_optimum(tables)])]))
    return result


# ---- Summaries over runs (Tables 2, 3 and 4) ----

def summarize(cfg):
    """--mode summarize: mean +- std of tau, r, rho, CPR per method over the run folders of --runs (a glob),
    and Table 3 rows of their searches."""
    folders = sorted(glob.glob(cfg.runs)) if cfg.runs else []
    if not folders:
        raise UserError(f"--runs {cfg.runs!r} matches no run folder (give a glob like 'runs/nb201-*')")
    def method_label(c):
        if not c["epochs"]:
            return "random init"                                # --epochs 0: Table 2's "Random" row
        return c["method"] + (f"+{c['sampler']}" if c["method"] == "rd" else "")
    rank_rows, search_rows, proxy_rows, curves, finished = {}, {}, {}, {}, []
    for folder in folders:
        res = os.path.join(folder, "results.json")
        if os.path.exists(res):
            try:
                with open(res) as f:
                    r = json.load(f)
            except ValueError:
                print(f"warning: skipping {res}: not readable JSON (truncated?)")
                continue
            if r.get("final") and r["final"].get("metrics"):
                finished.append(r)
        if os.path.exists(os.path.join(folder, "proxies.json")):
            with open(os.path.join(folder, "proxies.json")) as f:
                for name, row in json.load(f)["proxies"].items():
                    if "metrics" in row:
                        proxy_rows.setdefault(name, []).append(row["metrics"])
        for path in sorted(glob.glob(os.path.join(folder, "search_*.json"))):
            with open(path) as f:
                s = json.load(f)
            c, mc = s["config"], s["model_config"]
            label = (method_label(mc) if c["search_by"] == "supernet" else c["search_by"]) + f" ({c['search']})"
            search_rows.setdefault(label, []).append(s["table3"])
    # runs are averaged per method; settings other than the method and seed that differ between runs (say
    # --epochs) join the label, so that different budgets are never averaged together
    free = {"method", "sampler", "seed", "out", "resume", "eval_every", "plot", "log_every", "device", "workers"}
    trained = [r for r in finished if r["config"]["epochs"]]
    varying = [k for k in (trained[0]["config"] if trained else {})
               if k not in free and len({json.dumps(r["config"].get(k)) for r in trained}) > 1]
    for r in finished:
        c = r["config"]
        label = method_label(c) + ("".join(f" {k}={c.get(k)}" for k in varying) if c["epochs"] else "")
        rank_rows.setdefault(label, []).append(r["final"]["metrics"])
        if len(r["curve"]) > 1:
            curves.setdefault(label, []).append({p["epoch"]: p["metrics"]["tau"] for p in r["curve"]})
    lines = []
    if rank_rows or proxy_rows:
        lines.append(f"{'method':18s} {'runs':>4s} " + " ".join(f"{k:>14s}" for k in ("tau", "r", "rho", "CPR")))
        for label, rows in list(proxy_rows.items()) + list(rank_rows.items()):
            cells = [f"{100 * np.mean([m[k] for m in rows]):6.2f}+-{100 * np.std([m[k] for m in rows]):5.2f}"
                     for k in ("tau", "r", "rho", "cpr")]
            lines.append(f"{label:18s} {len(rows):4d} " + " ".join(f"{c:>14s}" for c in cells))
    if search_rows:
        tables = table3_tables(report_paths(cfg))
        groups = list(search_rows.items()) + ([("optimal", [table3_optimum(tables)])] if tables else [])
        lines.append(format_table3(groups))
    text = "\n".join(lines) or "no finished runs found"
    print(text)
    summary = dict(ranking=rank_rows, proxies=proxy_rows, search=search_rows)
    if cfg.out:
        os.makedirs(cfg.out, exist_ok=True)
        atomic_write_text(os.path.join(cfg.out, "summary.json"), json.dumps(summary, indent=1))
    if cfg.plot:  # Fig. 1 from the runs evaluated more than once: mean tau per epoch over their seeds
        if not curves:
            raise UserError("--plot needs runs trained with --eval-every (a tau curve, not a single evaluation)")
        mean_curves = {}
        for label, runs in curves.items():
            epochs = sorted(set.intersection(*(set(r) for r in runs)))
            mean_curves[label] = (epochs, [np.mean([r[e] for r in runs]) for e in epochs])
        taus = {name: np.mean([m["tau"] for m in rows]) for name, rows in proxy_rows.items()}
        summary["fig1"] = plot_fig1(mean_curves, taus, os.path.join(cfg.out or ".", "fig1_tau.png"),
                                    "Kendall tau of the supernet ranking vs zero-cost proxies")
    return summary


# ---- Ground truth from scratch: stand-alone training (--mode standalone / build-gt) ----

def train_standalone(arch, data, cfg, seed, device):
    """Train one NB201Net from scratch (NB201's stand-alone recipe, scaled by the flags) -> held-out accuracy (%)."""
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    train_loader, valid_loader = make_loaders(data, cfg, gen)
    kw = net_kwargs(cfg, data)
    net = NB201Net(arch, cfg.C, cfg.N, kw["num_classes"], kw["in_channels"]).to(device, memory_format=train_loader.layout)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    total = cfg.epochs * len(train_loader)
    if cfg.epochs and not len(train_loader):
        raise UserError(f"no training step: --batch-size {cfg.batch_size} is larger than the "
                        f"{len(data['train'][0])} training images; lower --batch-size")
    for epoch in range(cfg.epochs):
        net.train()
        for step, (x, y) in enumerate(train_loader):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(cfg, epoch * len(train_loader) + step, total)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x.to(device)), y.to(device)).backward()
            opt.step()
    net.eval()
    correct = total_n = 0
    with torch.no_grad():
        for x, y in valid_loader:
            correct += (net(x.to(device)).argmax(1).cpu() == y).sum().item()
            total_n += len(y)
    return 100.0 * correct / total_n


def standalone_main(cfg):
    """--mode standalone --arch ARCH: train one arch from scratch and print its held-out accuracy."""
    arch, device = str_to_arch(cfg.arch), get_device(cfg.device)
    acc = train_standalone(arch, load_dataset(cfg), cfg, cfg.seed, device)
    print(f"{arch_to_str(arch)}: held-out accuracy {acc:.2f}% after {cfg.epochs} epochs (seed {cfg.seed})")
    return acc


def build_ground_truth(cfg):
    """--mode build-gt: train --gt-archs seeded random archs with --gt-seeds seeds each -> <out>/gt.csv.

    Every finished (arch, seed) is appended to <out>/gt_progress.jsonl, so a killed build resumes where it
    stopped; gt.csv (arch,accuracy = mean over seeds, acc_seed<k>) is rewritten atomically after each arch.
    """
    out, device = run_dir(cfg), get_device(cfg.device)
    data = load_dataset(cfg)
    space = all_archs(OP_SETS[cfg.ops])
    if cfg.gt_archs > len(space):
        raise UserError(f"--gt-archs {cfg.gt_archs}: --ops {cfg.ops} has only {len(space)} archs")
    archs = random.Random(cfg.eval_seed).sample(space, cfg.gt_archs)
    lock_run_folder(out)
    recipe = {k: getattr(cfg, k) for k in ("dataset", "resolution", "C", "N", "train_subset", "valid_subset",
                                           "epochs", "batch_size", "lr", "lr_min", "weight_decay", "nesterov", "ops",
                                           "eval_seed", "gt_archs", "gt_seeds")}
    recipe_path = os.path.join(out, "gt_recipe.json")
    if os.path.exists(recipe_path):                          # a resumed build must keep its recipe
        old = json.load(open(recipe_path))
        diff = [f"{k}={old.get(k)!r} (now {v!r})" for k, v in recipe.items() if old.get(k) != v]
        if diff:
            raise UserError(f"{out} holds a ground truth built with another recipe: {', '.join(diff)}; "
                            f"choose another --out")
    atomic_write_text(recipe_path, json.dumps(recipe, indent=1))
    progress_path = os.path.join(out, "gt_progress.jsonl")
    done, seconds = {}, []
    if os.path.exists(progress_path):
        records = read_jsonl(progress_path)
        for r in records:
            done[(r["arch"], r["seed"])] = r["acc"]
            seconds.append(r.get("seconds", 0.0))
        atomic_write_text(progress_path, "".join(json.dumps(r) + "\n" for r in records))   # without a cut line
    print(f"building a ground truth of {len(archs)} archs x {cfg.gt_seeds} seeds in {out} "
          f"({len(done)} runs already done)")
    t0, new = time.time(), 0
    for k, arch in enumerate(archs):
        key = arch_to_str(arch)
        for seed in range(cfg.gt_seeds):
            if (key, seed) not in done:
                t = time.time()
                done[(key, seed)] = train_standalone(arch, data, cfg, seed, device)
                seconds.append(time.time() - t)
                with open(progress_path, "a") as f:
                    f.write(json.dumps(dict(arch=key, seed=seed, acc=done[(key, seed)], seconds=seconds[-1])) + "\n")
                new += 1
        rows = [(arch_to_str(a), [done[(arch_to_str(a), s)] for s in range(cfg.gt_seeds)]) for a in archs[: k + 1]]
        lines = ["arch,accuracy," + ",".join(f"acc_seed{s}" for s in range(cfg.gt_seeds))]
        lines += [f"{a},{np.mean(accs):.4f}," + ",".join(f"{v:.4f}" for v in accs) for a, accs in rows]
        atomic_write_text(os.path.join(out, "gt.csv"), "\n".join(lines) + "\n")
        if new:
            left = (len(archs) - k - 1) * cfg.gt_seeds * (time.time() - t0) / new
            print(f"arch {k + 1}/{len(archs)} {key} acc {np.mean(rows[-1][1]):.2f}% eta {format_eta(left)}", flush=True)
    accs = np.array([r[1] for r in rows])                      # (archs, seeds)
    learned = accs.mean(1) > 100 / data["num_classes"] + 5        # archs whose cell has no path stay at chance
    spread = f"{accs.mean(1)[learned].std(ddof=1):.2f} points" if learned.sum() > 1 else "n/a"
    print(f"{len(accs)} archs, {int((~learned).sum())} at chance; spread (SD over archs above chance) {spread}; "
          f"median {np.median(seconds):.1f} s per arch and seed")
    if cfg.gt_seeds >= 2:
        from scipy import stats
        tau = stats.kendalltau(accs[:, 0], accs[:, 1]).statistic
        noise = math.sqrt(((accs[:, 0] - accs[:, 1]) ** 2).mean() / 2)   # per-run SD, from the seed pairs
        print(f"seed noise {noise:.2f} points; seed-to-seed Kendall tau (the ceiling of any ranking on this "
              f"ground truth): {100 * tau:.2f}")
    unlock_run_folder(out)
    return os.path.join(out, "gt.csv")


# ---- Benchmarks: speed and memory as ratios measured in one run (--mode bench) ----

def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench(cfg):
    """--mode bench: the performance figures of the README, each as a ratio of two timings taken in one run."""
    device = get_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    C, N, B, res = 16, 5, 64, 32
    x, y = torch.randn(B, 3, res, res, device=device), torch.randint(10, (B,), device=device)
    archs = [sample_nb201(rng, OPS[1:]) for _ in range(cfg.bench_archs)]
    results = {}
    # 1. supernet path vs the stand-alone network of the same arch (fwd + bwd + SGD step)
    supernet = NB201Supernet(C, N).to(device)
    def sgd_step(net, *arch):
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x, *arch), y).backward()
            opt.step()
        return step
    ratios = []
    for arch in archs:
        standalone = supernet.extract(arch)
        a, b = sgd_step(supernet, arch), sgd_step(standalone)
        a(), b()                                                     # warm-up
        ratios.append(median_time(a, 3) / median_time(b, 3))
    results["supernet_vs_standalone_step"] = float(np.median(ratios))
    # 1b. ResNet48: a sliced subnet of the slimmable supernet vs ResNet48Net of the same code (full widths, 64px)
    r48, x48, y48 = ResNet48Supernet(1000).to(device), torch.randn(32, 3, 64, 64, device=device), y.new_zeros(32)
    ratios48 = []
    for _ in range(max(1, min(5, cfg.bench_archs))):
        arch = sample_resnet48(rng)
        standalone = r48.extract(arch)
        opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (r48, standalone)]
        def step48(m, opt, *a):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x48, *a), y48).backward()
            opt.step()
        step48(r48, opts[0], arch), step48(standalone, opts[1])
        ratios48.append(median_time(lambda: step48(r48, opts[0], arch), 3) / median_time(lambda: step48(standalone, opts[1]), 3))
    results["resnet48_subnet_vs_standalone_step"] = float(np.median(ratios48))
    # 2. RD + Group step vs SPOS step on the same batch (teacher = FLOPs, cached)
    step_rng = random.Random(0)
    teacher = Teacher(lambda arch: arch_cost(arch, C, N)[0])
    sampler = MarginSubnetSampler(sample_nb201, group_distance, 6.7, cfg.candidates, cfg.max_tries, step_rng)
    for arch in all_archs(OPS):
        teacher(arch)                                                # warm the cache: no proxy in the timed steps
    lam = rd_lambda(5, 10)                                           # mid-run weight of the ranking term
    spos = lambda: (supernet.zero_grad(set_to_none=True), spos_step(supernet, x, y, lambda: sample_nb201(step_rng)))
    rd = lambda: (supernet.zero_grad(set_to_none=True), rd_step(supernet, x, y, sampler, teacher, lam))
    spos(), rd()
    # each step draws its own subnets (their costs differ up to ~3x), so compare mean step times over many
    # interleaved steps, not a median of noisy ratios
    pairs = np.array([(median_time(rd, 1), median_time(spos, 1)) for _ in range(5 * len(archs))])
    results["rd_group_vs_spos_step"] = float(pairs[:, 0].mean() / pairs[:, 1].mean())
    # 3. proxies: seconds per arch, and cost relative to one forward + backward of the same net and batch
    proxy_rows, floor = {}, []
    for name in parse_proxies(cfg.proxies):
        secs, rel = [], []
        for arch in archs:
            net = NB201Net(arch, C, N).to(device)
            def fwd_bwd():
                net.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
            fwd_bwd()
            base = median_time(fwd_bwd, 3)
            s = median_time(lambda: PROXIES[name](net, x, y), 1)
            secs.append(s)
            rel.append(s / base)
            if name == "zen":  # the floor of its definition: two forwards in train mode, without the copy and init
                def two_forwards():
                    with torch.no_grad():
                        net.features(x), net.features(x)
                floor.append(median_time(two_forwards, 3) / base)
        proxy_rows[name] = dict(seconds_per_arch=float(np.median(secs)), vs_fwd_bwd=float(np.median(rel)))
        if name == "zen":
            proxy_rows[name]["two_forwards_vs_fwd_bwd"] = float(np.median(floor))
    results["proxies"] = proxy_rows
    # 4. ranking 200 subnets: --bn recal vs --bn train (tiny supernet, synthetic data, 10 recal batches)
    ecfg = dataclasses.replace(cfg, **PRESETS["nb201"]["tiny"])
    data = load_dataset(ecfg)
    tr, va = make_loaders(data, ecfg, torch.Generator().manual_seed(0))
    small = NB201Supernet(ecfg.C, ecfg.N, data["num_classes"], data["in_channels"]).to(device)
    eval_archs = sample_eval_archs(OPS, 200, 0)
    t_train = median_time(lambda: [subnet_accuracy(small, a, va, "train") for a in eval_archs], 1)
    t_recal = median_time(lambda: [subnet_accuracy(small, a, va, "recal", tr, 10) for a in eval_archs], 1)
    results["eval_200_subnets"] = dict(train_s=t_train, recal_s=t_recal, recal_vs_train=t_recal / t_train)
    # 5. loading a 15,625-arch benchmark table: time and peak Python memory
    if cfg.benchmark and cfg.benchmark != "none":
        tracemalloc.start()
        t = time.perf_counter()
        table = load_benchmark(cfg.benchmark, cfg.dataset, cfg.gt_metric)
        seconds = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results["benchmark_load"] = dict(archs=len(table), seconds=seconds, peak_mib=peak / 2 ** 20)
    # 6. memory layout: the same supernet step with channels_last against the default layout, at the paper's
    # size and at the cpu preset's (16 px, C=8, N=1, batch 128); the same archs, interleaved
    layouts = {}
    for C_, N_, B_, res_ in ((16, 5, 64, 32), (8, 1, 128, 16)):
        xs, ys = torch.randn(B_, 3, res_, res_, device=device), torch.randint(10, (B_,), device=device)
        steps = {}
        for name, fmt in (("default", torch.contiguous_format), ("channels_last", torch.channels_last)):
            net = NB201Supernet(C_, N_).to(device, memory_format=fmt)
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
            xf = xs.contiguous(memory_format=fmt)
            def step(net=net, opt=opt, xf=xf, arch=None):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(xf, arch), ys).backward()
                opt.step()
            steps[name] = step
        pairs = []
        for arch in archs[:5]:
            for name in steps:
                steps[name](arch=arch)                               # warm-up
            pairs.append([median_time(lambda: steps[name](arch=arch), 3) for name in steps])
        pairs = np.array(pairs)
        layouts[f"C{C_}_N{N_}_{res_}px_batch{B_}"] = float(pairs[:, 1].sum() / pairs[:, 0].sum())
    results["channels_last_vs_default_step"] = layouts
    print(f"bench on {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; NB201 C={C}, N={N}, batch {B}")
    print(f"  supernet path / stand-alone NB201Net step time (median of {len(archs)} archs): "
          f"{results['supernet_vs_standalone_step']:.3f}")
    print(f"  ResNet48 sliced subnet / stand-alone ResNet48Net step time (full widths, 64px, batch 32, median of "
          f"{len(ratios48)} codes): {results['resnet48_subnet_vs_standalone_step']:.3f}")
    print(f"  RD + Group step / SPOS step (same batch, cached FLOPs teacher): {results['rd_group_vs_spos_step']:.2f}")
    for name, row in proxy_rows.items():
        print(f"  proxy {name:8s} {row['seconds_per_arch']:.4f} s/arch, {row['vs_fwd_bwd']:.2f} x one forward+backward"
              + (f" (its two forwards alone: {row['two_forwards_vs_fwd_bwd']:.2f})" if name == "zen" else ""))
    e = results["eval_200_subnets"]
    print(f"  ranking 200 subnets (tiny preset): bn=train {e['train_s']:.2f}s, bn=recal {e['recal_s']:.2f}s, "
          f"ratio {e['recal_vs_train']:.2f}")
    for size, ratio in layouts.items():
        print(f"  supernet step, channels_last / default layout ({size}, 5 archs): {ratio:.2f}")
    if "benchmark_load" in results:
        b = results["benchmark_load"]
        print(f"  load_benchmark: {b['archs']} archs in {b['seconds']:.3f}s, peak {b['peak_mib']:.1f} MiB")
    if cfg.out:
        os.makedirs(cfg.out, exist_ok=True)
        atomic_write_text(os.path.join(cfg.out, "bench.json"), json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
