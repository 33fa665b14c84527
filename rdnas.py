"""RD-NAS: Enhancing One-Shot Supernet Ranking Ability via Ranking Distillation from Zero-Cost Proxies.
Peijie Dong et al., ICASSP 2023, https://arxiv.org/abs/2301.09850. A supernet trained with cross-entropy plus a margin
ranking loss (Eq. 3) that orders pairs of subnets as a zero-cost proxy (the teacher) does, on pairs far apart in
Group distance (Eq. 4). Part I: the method on NAS-Bench-201, in the order a run happens, ending with the run itself;
Part II: the ResNet-like space of Sec. 3.1; Part III: plumbing, the tools that reproduce the tables, the command line.
  python rdnas.py --space nb201 --data DIR         # paper, 1 GPU: CIFAR-10 in DIR, NB201's ground truth shipped
  python rdnas.py --preset cpu --data DIR          # the same, scaled down: about 6 minutes on 2 CPU cores
  torchrun --nproc_per_node=8 rdnas.py --space resnet48 --data IMAGENET                      # paper, 8 GPUs
Words a reader meets that the paper does not define:
  the authors' code  PicoNAS at a14c0e5 (github.com/pprp/PicoNAS, NB201), their CVPR 2022 Track 1 repository (ResNet48)
  tau_ties           Kendall tau over the ranked pairs that FLOPs ties (the same convolutions in other places): what a
                     supernet ranks beyond its FLOPs teacher; a copy of FLOPs scores 0 there
  split-half tau     tau between the rankings on the two halves of the held-out images: the noise ceiling of a ranking
  no-none            --ops no-none: NB201 without its `none` op (4^6 = 4,096 archs), what the authors' code trained
  fallbacks          margin-sampler calls where no drawn pair passed mu and the farthest pair seen was used instead
"""
import argparse, copy, csv, dataclasses, datetime, glob, gzip, itertools, json, math, os, pickle, random, re, sys
import tempfile, time
from collections import Counter
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.flop_counter import FlopCounterMode

# the shipped NB201 ground truth and split; next to this file (the working directory when pasted into a notebook)
BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(globals().get("__file__", "rdnas.py"))), "benchmarks")

# ==== Part I: RD-NAS on NAS-Bench-201, in the order a run happens (the plumbing it calls by name is in Part III)

# ---- Search space: NAS-Bench-201 (Dong & Yang, ICLR 2020; Sec. 3.2) ----
# A cell is a DAG on 4 nodes whose 6 edges carry one of 5 ops each: 5^6 = 15,625 archs. An arch is a tuple of 6 op
# names in arch-string edge order, keyed by its arch string (never by a benchmark index).
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # benchmark order
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))                         # arch-string order
OP_SETS = {"nb201": OPS, "no-none": OPS[1:]}    # the paper's 15,625 archs; the authors' code trained 4,096

def arch_to_str(arch):
    """(o0, ..., o5) -> '|o0~0|+|o1~0|o2~1|+|o3~0|o4~1|o5~2|' (NB201 arch string)."""
    return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*arch)

def str_to_arch(s):
    """NB201 arch string -> tuple of 6 op names; ValueError for anything else."""
    m = re.fullmatch(r"\|(\w+)~0\|\+\|(\w+)~0\|(\w+)~1\|\+\|(\w+)~0\|(\w+)~1\|(\w+)~2\|", str(s).strip())
    if not m or not set(m.groups()) <= set(OPS):
        raise ValueError(f"malformed arch string {s!r}: expected '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|', ops from {OPS}")
    return m.groups()

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
    return {"none": Zero, "skip_connect": nn.Identity,
            "nor_conv_1x1": lambda: ReLUConvBN(C, C, 1, affine=affine),
            "nor_conv_3x3": lambda: ReLUConvBN(C, C, 3, affine=affine),
            "avg_pool_3x3": lambda: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)}[name]()

class ResNetBasicBlock(nn.Module):
    """NB201 reduction block: ReLUConvBN 3x3/2 -> ReLUConvBN 3x3, shortcut AvgPool(2) -> Conv1x1; no ReLU after."""
    def __init__(self, C_in, C_out):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride=2)
        self.conv_b = ReLUConvBN(C_out, C_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))
        self.residual = True                                  # Zen-score switches the shortcut off (see zen)
    def forward(self, x):
        out = self.conv_b(self.conv_a(x))
        return self.downsample(x) + out if self.residual else out

class NB201Cell(nn.Module):
    """A cell whose edge k holds the ops `choices[k]`: one op each (a stand-alone net), or all (the supernet)."""
    def __init__(self, C, choices, affine=True):
        super().__init__()
        self.edges = nn.ModuleList(nn.ModuleDict({op: make_op(op, C, affine) for op in ops}) for ops in choices)
    def forward(self, x, arch):                               # node j = sum_{i<j} op_ij(node i); returns node 3
        nodes = [x]
        for j in (1, 2, 3):
            first = j * (j - 1) // 2                          # index of edge (0, j) in EDGES
            nodes.append(sum(self.edges[first + i][arch[first + i]](nodes[i]) for i in range(j)))
        return nodes[3]

class NB201Net(nn.Module):
    """stem -> N cells (C) -> reduce -> N cells (2C) -> reduce -> N cells (4C) -> head: NB201's `infer.tiny` of arch."""
    def __init__(self, arch=None, C=16, N=5, num_classes=10, ops=None):
        super().__init__()
        self.arch = arch if arch is None else tuple(str_to_arch(arch) if isinstance(arch, str) else arch)
        self.ops, self.C, self.N, self.num_classes = tuple(ops or ()), C, N, num_classes
        # a supernet's cell ops have no BN affine parameters (one learned scale cannot suit every subnet)
        choices, affine = ([(op,) for op in self.arch], True) if self.arch else ([self.ops] * len(EDGES), False)
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        widths, cells = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N, []
        for k, C_cur in enumerate(widths):
            reduce = k in (N, 2 * N + 1)
            cells.append(ResNetBasicBlock(widths[k - 1], C_cur) if reduce else NB201Cell(C_cur, choices, affine))
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(4 * C, num_classes)
    def features(self, x, arch=None):                       # x: (B, 3, H, W)
        x = self.stem(x)                                    # (B, C, H, W)
        for cell in self.cells:
            x = cell(x) if isinstance(cell, ResNetBasicBlock) else cell(x, arch or self.arch)
        return self.lastact(x)                              # (B, 4C, H/4, W/4)
    def forward(self, x, arch=None):
        if isinstance(arch, list):                          # several subnets on one batch: one logits each
            return [self.forward(x, a) for a in arch]
        return self.classifier(self.features(x, arch).mean((2, 3)))   # (B, num_classes)

class NB201Supernet(NB201Net):
    """The single-path supernet of SPOS (ref. [1]): all `ops` on every edge; forward(x, arch) runs one op per edge."""
    def __init__(self, C=16, N=5, num_classes=10, ops=OPS):
        super().__init__(None, C, N, num_classes, OP_SETS[ops] if isinstance(ops, str) else ops)

# ---- Data: CIFAR-10 with NAS-Bench-201's split (Sec. 3.2) ----
# The supernet trains on NB201's `train` 25k of CIFAR-10's training set; the subnets are ranked on its `valid` 25k
# (the cifar10-valid protocol). Images are read, resized and normalised once and kept in memory; batches are cut
# and augmented on the fly (random crop with 4-pixel padding and horizontal flip, as NB201).
def nb201_split(name):
    """NB201's `train` or `valid` half of CIFAR-10's training set, a mask (from AutoDL-Projects' cifar-split.txt)."""
    with gzip.open(os.path.join(BENCHMARKS, "nb201_splits.json.gz"), "rt") as f:
        entry = json.load(f)[name]                           # {"n": 50000, "bits": hex of the packed mask}
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(entry["bits"]), np.uint8))
    return torch.from_numpy(bits[:entry["n"]] > 0)

def make_synthetic(n_train=2048, n_valid=1024, classes=10, side=16, seed=0):
    """Deterministic, learnable toy images: each class a fixed random pattern (faint) plus noise (strong)."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, 3, side, side, generator=g)
    def part(n):
        y = torch.randint(classes, (n,), generator=g)
        x = 0.25 * templates[y] + 0.75 * torch.rand(n, 3, side, side, generator=g)
        return (x * 255).to(torch.uint8), y
    return part(n_train) + part(n_valid)

def load_dataset(cfg):
    """-> dict(train=(x, y), valid=(x, y), split): CIFAR-10 as NB201 splits it, or synthetic; resized, normalised."""
    split = {}
    if cfg.dataset == "synthetic":
        xtr, ytr, xva, yva = make_synthetic(side=cfg.resolution or 16)
    else:
        x, y, pos = read_cifar10(cfg.data)                  # uint8 images, labels, positions in the 50,000 (Part III)
        in_train, in_valid = nb201_split("train")[pos], nb201_split("valid")[pos]
        xtr, ytr, xva, yva = x[in_train], y[in_train], x[in_valid], y[in_valid]
        split = dict(split="nb201 cifar10-valid", missing_train=25000 - len(xtr), missing_valid=25000 - len(xva))
    xtr, ytr = xtr[:cfg.train_subset or None], ytr[:cfg.train_subset or None]
    xva, yva = xva[:cfg.valid_subset or None], yva[:cfg.valid_subset or None]
    if cfg.resolution and xtr.shape[-1] != cfg.resolution:   # area resize of the uint8 images, in chunks
        resize = lambda c: F.interpolate(c.float(), size=cfg.resolution, mode="area").round().clamp(0, 255)
        xtr, xva = (torch.cat([resize(c).to(torch.uint8) for c in x.split(4096)]) for x in (xtr, xva))
    pixels = xtr[:10000].float() / 255
    mean = pixels.mean((0, 2, 3)).view(1, 3, 1, 1)
    std = pixels.std((0, 2, 3)).clamp_min(1e-3).view(1, 3, 1, 1)
    norm = lambda x: torch.cat([(c.float() / 255 - mean) / std for c in x.split(4096)]) if len(x) else x.float()
    return dict(train=(norm(xtr), ytr), valid=(norm(xva), yva), split=split)

class Loader:
    """Batches of in-memory images: with a seeded `generator` shuffled (the last partial batch dropped), or in order."""
    def __init__(self, x, y, batch_size, augment=False, generator=None, layout=torch.contiguous_format):
        self.x, self.y, self.batch_size, self.augment = x, y, batch_size, augment
        self.generator, self.layout = generator, layout
    def __len__(self):
        return len(self.x) // self.batch_size if self.generator else math.ceil(len(self.x) / self.batch_size)
    def __iter__(self):
        order = torch.randperm(len(self.x), generator=self.generator) if self.generator else torch.arange(len(self.x))
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            x = self.random_crop_flip(self.x[idx]) if self.augment else self.x[idx]   # (B, 3, H, W)
            yield x.contiguous(memory_format=self.layout), self.y[idx]
    def random_crop_flip(self, x, pad=4):
        B, C, H, W = x.shape
        g = self.generator
        padded = F.pad(x, (pad, pad, pad, pad))                      # (B, C, H+2p, W+2p), zero padding
        dy, dx = torch.randint(2 * pad + 1, (2, B), generator=g)
        rows = (dy[:, None] + torch.arange(H))[:, None, :, None]     # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(W))[:, None, None, :]     # (B, 1, 1, W)
        x = padded[torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None], rows, cols]
        return torch.where((torch.rand(B, generator=g) < 0.5)[:, None, None, None], x.flip(3), x)

# ---- Zero-cost proxies as the teacher (Sec. 2.1, Sec. 2.2) ----
# A proxy is fn(net, inputs, targets) -> float, larger = better. The authors' NB201 teacher is FLOPs; Table 2's other
# proxies (SNIP, GraSP, Synflow, Zen-score, NASWOT) are in Part III, and any of them can teach (--teacher).
# FLOPs is a coarse teacher: it counts convolutions only, so the 15,625 archs take 28 values (k 1x1 and l 3x3 convs,
# k + l <= 6), and Eq. 3 adds 0 on the pairs it ties: 5.5% of Group-sampled pairs, 7.5% of Hamming-sampled and 8.5%
# of random ones (100,000 pairs each, README).
def flops(net, inputs, targets):
    """FLOPs (Abdelfattah et al., 2021, ref. [2]): MFLOPs of the stand-alone net for one image, its conv and linear
    multiply-adds (NB201's convention), as torch's FlopCounterMode counts them (2 FLOPs per multiply-add)."""
    net = copy.deepcopy(net).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(inputs[:1])
    return counter.get_total_flops() / 2e6

def params(net, inputs, targets):
    """Params (ref. [2]): number of parameters of the stand-alone net, in millions."""
    return sum(p.numel() for p in net.parameters()) / 1e6

_COST_TABLES = {}

def arch_cost(arch, C=16, N=5, num_classes=10, resolution=32):
    """(MFLOPs, Mparams) of an NB201 arch, base + sum over its edges of cost(op), from 6 networks counted once; summed
    in sorted order, so that archs with the same ops in other places tie exactly (and Eq. 3 adds 0 for them)."""
    key = (C, N, num_classes, resolution)
    if key not in _COST_TABLES:
        image = torch.zeros(1, 3, resolution, resolution)
        count = lambda net: (flops(net, image, None), params(net, image, None))
        build = lambda op: NB201Net((op,) * 6, C, N, num_classes)
        base = count(build("none"))
        _COST_TABLES[key] = base, {op: tuple((f - b) / 6 for f, b in zip(count(build(op)), base)) for op in OPS}
    base, per_op = _COST_TABLES[key]
    return tuple(b + sum(sorted(per_op[op][k] for op in arch)) for k, b in enumerate(base))

def fixed_batch(data, n, seed, device):
    """`n` seeded training images for the data-dependent proxies (SNIP, GraSP, NASWOT), never the ranking images."""
    idx = torch.randperm(len(data["train"][0]), generator=torch.Generator().manual_seed(seed))[:n]
    return data["train"][0][idx].to(device), data["train"][1][idx].to(device)

def score_arch(proxy, arch, net_args, batch, seed=0, cost=arch_cost, Net=NB201Net):
    """proxy(arch), -inf (never NaN) for a degenerate net: FLOPs and params from `cost`, other proxies on the
    stand-alone `Net` built with the same seeded initial weights every time. net_args: the net's size and input side
    (NB201: C, N, num_classes, resolution; Part II: resnet48_cost, ResNet48Net and num_classes, base, resolution)."""
    if proxy in (flops, params):
        return cost(arch, **net_args)[proxy is params]
    with torch.random.fork_rng(devices=[batch[0].device] if batch[0].is_cuda else []):
        torch.manual_seed(seed)
        net = Net(arch, **{k: v for k, v in net_args.items() if k != "resolution"}).to(batch[0].device)
    score = proxy(net, *batch)
    return score if math.isfinite(score) else -math.inf

class Teacher(dict):
    """RD-NAS's zero-cost teacher (Sec. 2.2): score(arch), once per arch; the cache is saved in the run's checkpoint."""
    def __init__(self, score, key=arch_to_str):
        super().__init__()
        self.score, self.key = score, key
    def __call__(self, arch):
        if self.key(arch) not in self:
            self[self.key(arch)] = self.score(arch)
        return self[self.key(arch)]

# ---- Margin subnet sampler: Hamming and Group distances (Sec. 2.2.2, Eq. 4) ----
# Eq. 4 groups the candidate ops into those with parameters and those without (`none` included; the authors' code
# had no `none` op and so no group for it).
OP_GROUPS = {"nor_conv_1x1": "with-params", "nor_conv_3x3": "with-params",
             "none": "param-free", "skip_connect": "param-free", "avg_pool_3x3": "param-free"}

def hamming_distance(a, b):
    """f_h: the number of positions (edges) whose choices differ."""
    return sum(x != y for x, y in zip(a, b))

def group_distance(a, b):
    """f_g, Eq. 4: per edge k, 0 if the ops agree, 0.5 * f_h^k within a group, 2 * f_h^k across groups."""
    return sum(0.0 if x == y else (0.5 if OP_GROUPS[x] == OP_GROUPS[y] else 2.0) for x, y in zip(a, b))

# --sampler none: RD on plain random pairs, no margin sampler (Table 4's "RD" row, Table 1's "RD-NAS w/o MSS")
DISTANCES = {"none": None, "hamming": hamming_distance, "group": group_distance}
MU = {"group": 6.7, "hamming": 4.5}      # threshold mu: 6.7 for Group (Sec. 3.2), 4.5 for Hamming (authors' code)

class MarginSubnetSampler:
    """MSS, Sec. 2.2.2: draw n random pairs, keep {(a_i, a_j) | f(a_i, a_j) > mu} (the paper's prose says "less than"),
    train on one kept pair; after `max_tries` rounds the farthest pair seen (`fallbacks`); no distance: random pairs."""
    def __init__(self, sample_arch, distance=None, mu=0.0, rng=None, n=10, max_tries=10):
        self.sample_arch, self.distance, self.mu, self.n, self.max_tries = sample_arch, distance, mu, n, max_tries
        self.rng = rng or random.Random(0)                      # draws the archs and picks the kept pair
        self.fallbacks = 0
    def __call__(self):
        draw = lambda: self.sample_arch(self.rng)
        if self.distance is None:
            return draw(), draw()
        farthest = (-math.inf, None, None)
        for _ in range(self.max_tries):
            pairs = [(self.distance(a, b), a, b) for a, b in [(draw(), draw()) for _ in range(self.n)]]
            kept = [p for p in pairs if p[0] > self.mu]          # {(a_i, a_j) | f(a_i, a_j) > mu}
            if kept:
                return kept[self.rng.randrange(len(kept))][1:]
            farthest = max([farthest] + pairs, key=lambda p: p[0])
        self.fallbacks += 1
        return farthest[1:]

# ---- Margin ranking loss (Sec. 2.2.1, Eq. 3) ----
# Eq. 1: the supernet should order a pair as stand-alone training would, max P(pi*_i > pi*_j); the proxy's order
# P(pi^z_i - pi^z_j > 0) stands in for it. Eq. 3 turns that order into a hinge on the two subnets' cross-entropies.
def margin_ranking_loss(ce_i, ce_j, s_i, s_j, m=0.0):
    """Eq. 3 with each pair ordered by the teacher's scores (larger = better): y = sign(s_j - s_i) and
    L_rd = max[0, m - y (L_ce(a_i) - L_ce(a_j))]. A tie adds 0 (torch's MarginRankingLoss charges m). Mean of pairs."""
    ce_i, ce_j = torch.as_tensor(ce_i), torch.as_tensor(ce_j)
    s_i, s_j = torch.as_tensor(s_i, dtype=ce_i.dtype), torch.as_tensor(s_j, dtype=ce_i.dtype)
    y = torch.sign(s_j - s_i).to(ce_i.device)
    loss = torch.clamp_min(m - y * (ce_i - ce_j), 0.0)                         # Eq. 3
    return torch.where(y == 0, torch.zeros_like(loss), loss).mean()

def rd_lambda(epoch, epochs):
    """lambda(t), the weight of Eq. 3 (the paper gives none; this is the authors' code): 2 sin(pi * 0.8 * t / T) is 0
    at the start, 2 at t = 0.625 T and 1.18 at the end."""
    return 2.0 * math.sin(math.pi * 0.8 * epoch / max(1, epochs))

# ---- One-shot training steps: SPOS, FairNAS, Sandwich and RD-NAS (Sec. 2.2, Tables 1, 2 and 4) ----
# Each step runs forward and backward on one batch and returns (stats, the archs it trained); the loop zeroes, clips
# and steps the optimizer around it. Sandwich's largest NB201 subnet is all nor_conv_3x3, its smallest all
# skip_connect, the cheapest arch that still carries signal (all-`none` outputs a constant).
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
    """FairNAS (Chu et al., 2019, ref. [16]): a random permutation of the ops on every edge gives |ops| subnets that
    together use each op on each edge exactly once; their gradients are summed before one optimizer step."""
    perms = [rng.sample(ops, len(ops)) for _ in EDGES]
    archs = [tuple(perm[k] for perm in perms) for k in range(len(ops))]
    steps = [cross_entropy_step(net, x, y, arch)[:2] for arch in archs]  # (loss, correct) per subnet
    return dict(loss=sum(s[0] for s in steps) / len(steps), correct=steps[0][1]), archs   # accuracy of the first

def sandwich_step(net, x, y, largest, smallest, sample_arch, n_random=2):
    """Sandwich rule (Yu & Huang, AutoSlim, ref. [15]): the largest subnet learns from the labels, the smallest and
    `n_random` random ones from the largest one's soft predictions (in-place distillation, KL divergence)."""
    loss, correct, logits = cross_entropy_step(net, x, y, largest)
    soft = logits.detach().softmax(1)                        # (B, classes)
    archs = [largest, smallest] + [sample_arch() for _ in range(n_random)]
    for arch in archs[1:]:
        F.kl_div(net(x, arch).log_softmax(1), soft, reduction="batchmean").backward()
    return dict(loss=loss, correct=correct), archs

def rd_step(net, x, y, sampler, teacher, lam, m=0.0):
    """RD-NAS (Sec. 2.2): a pair from the margin subnet sampler, both CE losses and Eq. 3 in the teacher's order:
    L = L_ce(a_i) + L_ce(a_j) + lambda(t) * L_rd(a_i, a_j) (the paper gives no total; the sum is the authors' code)."""
    a_i, a_j = sampler()
    out_i, out_j = net(x, [a_i, a_j])                        # (B, classes) each, in one call (one DDP forward)
    ce_i, ce_j = F.cross_entropy(out_i, y), F.cross_entropy(out_j, y)
    rank = margin_ranking_loss(ce_i, ce_j, teacher(a_i), teacher(a_j), m)
    (ce_i + ce_j + lam * rank).backward()
    stats = dict(loss=(ce_i.item() + ce_j.item()) / 2, correct=(out_i.argmax(1) == y).sum().item(), rank=rank.item())
    return stats, [a_i, a_j]

# ---- Ranking metrics (Sec. 2.1 and 3.2) ----
def concordant_pair_ratio(pred, true):
    """CPR, Eq. 2: delta = sum_{i<j} 1[(pi*_i - pi*_j)(pi^z_i - pi^z_j) > 0] / #pairs; ties are not concordant.
    (The authors' function, called on raw accuracies, returned 1.0: Table 2's one-shot rows read 100.0.)"""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    concordant = sum(int(np.count_nonzero((true[i] - true[i + 1:]) * (pred[i] - pred[i + 1:]) > 0))
                     for i in range(len(pred)))
    return concordant / (len(pred) * (len(pred) - 1) / 2)

def rank_metrics(pred, true, ties=None):
    """Kendall tau (b), Pearson r, Spearman rho (scipy), CPR (Eq. 2) and, given scores `ties` (FLOPs), Kendall tau (b)
    within their ties (tau_ties). NaN and -inf rank last; a constant gets 0; fewer than 2 archs: all NaN."""
    from scipy import stats  # imported here so that `import rdnas` stays light
    names = ("tau", "r", "rho", "cpr") + (() if ties is None else ("tau_ties",))
    if len(pred) < 2:
        return dict.fromkeys(names, math.nan)
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    finite = pred[np.isfinite(pred)]
    low, high = (finite.min() - 1, finite.max() + 1) if len(finite) else (-1.0, 1.0)
    pred = np.where(np.isnan(pred) | np.isneginf(pred), low, np.where(np.isposinf(pred), high, pred))
    safe = lambda x: float(x) if np.isfinite(x) else 0.0
    with np.errstate(all="ignore"):
        r = safe(stats.pearsonr(pred, true).statistic) if np.ptp(pred) > 0 and np.ptp(true) > 0 else 0.0
        m = dict(tau=safe(stats.kendalltau(pred, true).statistic), r=r,
                 rho=safe(stats.spearmanr(pred, true).statistic), cpr=concordant_pair_ratio(pred, true))
        if ties is not None:         # over the pairs i<j with z_i = z_j (equal FLOPs)
            i, j = np.triu_indices(len(pred), 1)
            tied = np.asarray(ties)[i] == np.asarray(ties)[j]
            dp, dt = np.sign(pred[i] - pred[j])[tied], np.sign(true[i] - true[j])[tied]   # s_ij = sign(dp) sign(dt)
            m["tau_ties"] = safe(np.sum(dp * dt) / np.sqrt(np.count_nonzero(dp) * np.count_nonzero(dt)))
    return m

# ---- Ranking evaluation (Sec. 3.2: 200 random subnets against the ground truth) ----
def subnet_accuracy(net, arch, batches, bn="train", recal_loader=None, bn_batches=10):
    """Top-1 accuracy (%) of one subnet on held-out `batches`, and the images it gets right. BN on each batch's
    statistics (bn="train", the authors' code), on running statistics recomputed on `bn_batches` training batches
    (bn="recal"), or on the running statistics as they are (bn="eval")."""
    device = next(net.parameters()).device
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    if bn == "recal":
        for m in bns:
            m.reset_running_stats()
            m.momentum = None                                # a cumulative average over the K batches
        with torch.no_grad():
            for x, _ in itertools.islice(recal_loader, bn_batches):
                net.train()(x.to(device), arch)
        for m in bns:
            m.momentum = 0.1
    net.train(bn == "train")
    with torch.no_grad():
        hits = torch.cat([net(x.to(device), arch).argmax(1) == y.to(device) for x, y in batches]).cpu()
    return 100.0 * hits.sum().item() / len(hits), hits

def sample_eval_archs(ops, n, seed, table=None):
    """Sec. 3.2's 200 random subnets (--eval-archs, of the benchmark's archs), drawn by the evaluation seed alone."""
    pool = [a for a in all_archs(ops) if table is None or arch_to_str(a) in table]
    return random.Random(seed).sample(pool, min(int(n), len(pool)))

def evaluate_ranking(net, archs, batches, cfg, recal_loader=None, table=None, key=arch_to_str, ties=None):
    """Rank `archs` by supernet accuracy on the held-out `batches`: tau, r, rho, CPR (and tau within the ties of
    `ties`, arch -> FLOPs) against {key(arch): accuracy}; the noise ceiling, tau between the rankings on the two halves
    of `batches`."""
    gt = None if table is None else [lookup(table, a, key) for a in archs]   # an arch it lacks: fail before work
    accs, hits, t = [], [], time.time()
    for k, arch in enumerate(archs, 1):
        acc, hit = subnet_accuracy(net, arch, batches, cfg.bn, recal_loader and recal_loader(), cfg.bn_batches)
        accs.append(acc)
        hits.append(hit)
        if k % max(1, len(archs) // 10) == 0 and k < len(archs):   # a progress line about every 10%
            per = (time.time() - t) / k
            eta = datetime.timedelta(seconds=int(per * (len(archs) - k)))
            print(f"ranked {k}/{len(archs)} subnets, {per:.2f}s per subnet, eta {eta}", flush=True)
    hits, n = torch.stack(hits), len(hits[0]) // 2                          # (subnets, images)
    record = dict(archs=[key(a) for a in archs], supernet_acc=accs, split_half_images=n,
                  split_half_tau=rank_metrics(hits[:, :n].sum(1), hits[:, n:2 * n].sum(1))["tau"])
    flops = None if ties is None else [ties(a) for a in archs]
    return record if gt is None else dict(record, gt=gt, metrics=rank_metrics(accs, gt, flops))

def ranking_seconds(net, archs, batches):
    """The training eta's estimate of one ranking: one subnet ranked with BN frozen (bn="eval": no statistic moves),
    times the number of subnets."""
    training, t = net.training, time.time()
    with torch.random.fork_rng(devices=[]):                 # a DataLoader draws its seed from torch's rng
        subnet_accuracy(net, archs[0], batches, bn="eval")
    net.train(training)
    return len(archs) * (time.time() - t)

# ---- Config ----
def arg(default, help=None):
    """A Config field and its --help line; a field without one is a setting of the presets, not a flag."""
    return dataclasses.field(default=default, metadata=dict(help=help))

@dataclasses.dataclass
class Config:
    """Defaults: the paper's NB201 setting with NB201's weight-sharing recipe (SGD Nesterov, momentum 0.9, lr 0.025
    cosine to 0.001, wd 5e-4, batch 64, grad norm clip 5); 250 epochs as the authors' scripts (the paper: "as
    NAS-Bench-201")."""
    space: str = arg("nb201", "search space: nb201 (Sec. 3.2) | resnet48 (Sec. 3.1, Part II)")
    ops: str = arg("nb201", "nb201: the paper's 5 ops (15,625 archs) | no-none: the 4 ops the authors' code trained")
    C: int = arg(16, "NB201 initial channels")
    N: int = arg(5, "NB201 cells per stage")
    dataset: str = arg("cifar10", "cifar10 (NB201's cifar10-valid split) | synthetic | imagenet (resnet48)")
    data: str = arg("data", "dataset folder (holds cifar-10-batches-py/, downloaded when missing)")
    resolution: int = arg(0, "resize the images to this side, a multiple of 4 (0 = native)")
    valid_subset: int = arg(0, "rank the subnets on the first K held-out images only (0 = all)")
    train_subset: int = arg(0)                              # train on the first K images only (0 = all)
    epochs: int = arg(250, "supernet training epochs (stage 2 on resnet48)")
    batch_size: int = arg(64, "training batch size (the global batch under torchrun)")
    lr: float = arg(0.025, "initial learning rate, cosine-annealed per step")
    lr_min: float = arg(0.001)
    weight_decay: float = arg(5e-4)
    nesterov: bool = arg(True)
    seed: int = arg(0, "seeds weights, data order and subnet draws (--mode proxies: the batch and initial weights)")
    channels_last: bool = arg(False, "NHWC memory layout: other float rounding, faster steps on some CPUs")
    device: str = arg("auto", "auto (cuda, then mps, then cpu) | cpu | cuda | mps")
    method: str = arg("rd", "spos | fairnas | sandwich | rd (RD-NAS)")
    sampler: str = arg("group", "RD's pairs: group | hamming (margin sampler, Table 4) | none (plain random pairs)")
    teacher: str = arg("flops", "the zero-cost proxy that orders RD's pairs (the authors' NB201 code: flops)")
    mu: float = arg(-1.0, "margin sampler threshold mu; -1: 6.7 for group (Sec. 3.2), 4.5 for hamming")
    margin: float = arg(0.0, "m of Eq. 3 (the authors used 0)")
    proxy_batch: int = arg(64)                              # images the data-dependent proxies see
    eval_archs: str = arg("200", "number of subnets to rank (Sec. 3.2: 200)")    # a str, as older checkpoints have
    eval_every: int = arg(0, "rank the subnets every K epochs too (0 = only at the end)")
    bn: str = arg("train", "BN when ranking: train (batch statistics, the authors') | recal (recomputed per subnet)")
    benchmark: str = arg("", "ground truth: a CSV arch,accuracy (default: the shipped NB201 table) | none")
    eval_seed: int = arg(0)                                 # draws the ranked subnets and the teacher's batch
    eval_batch_size: int = arg(512)
    bn_batches: int = arg(10)                               # training batches per subnet for --bn recal
    out: str = arg("", "run folder for log.jsonl, ckpt.pt, results.json (default: runs/<space>-<dataset>-...)")
    resume: bool = arg(False, "continue the run in --out (with the same data)")

def get_device(name="auto"):
    """--device auto picks cuda, then mps, then cpu; a device this machine lacks is refused."""
    have = dict(cuda=torch.cuda.is_available(), mps=torch.backends.mps.is_available(), cpu=True)
    name = next(d for d in have if have[d]) if name == "auto" else name
    if not have[name]:
        raise UserError(f"--device {name}: this machine has none")
    return torch.device(name)

# ---- Training loop ----
@dataclasses.dataclass
class Space:
    """A search space as the training loop sees it: its supernet and what each method draws from it."""
    model: nn.Module          # the supernet: forward(x, arch) (wrapped in DDP under torchrun)
    batches: object           # epoch -> that epoch's (x, y) training batches
    sample_arch: object       # () -> one uniformly random arch (SPOS, Sandwich)
    largest: object           # Sandwich's largest and smallest subnets
    smallest: object
    sampler: object = None    # RD: the margin subnet sampler, () -> (a_i, a_j)
    teacher: object = None    # RD: the zero-cost teacher, arch -> score (cached)
    evaluate: object = None   # () -> the ranking record of Sec. 3.2 (main process only)
    ranking_seconds: object = None   # () -> the estimated seconds of one ranking, for the eta

def method_step(cfg, space, rng, x, y, lam):
    """One step of --method on a batch: (stats, archs trained)."""
    net = space.model
    steps = {"spos": lambda: spos_step(net, x, y, space.sample_arch),
             "fairnas": lambda: fairnas_step(net, x, y, net.ops, rng),
             "sandwich": lambda: sandwich_step(net, x, y, space.largest, space.smallest, space.sample_arch),
             "rd": lambda: rd_step(net, x, y, space.sampler, space.teacher, lam, cfg.margin)}
    return steps[cfg.method]()

def ranking_due(cfg, epoch):
    """Sec. 3.2's ranking follows the last epoch (and every --eval-every epochs)."""
    return epoch == cfg.epochs or bool(cfg.eval_every) and epoch > 0 and epoch % cfg.eval_every == 0

def rank_and_checkpoint(cfg, space, run, opt):
    """The ranking (main process only): one line with the metrics, one log.jsonl record; then the checkpoint."""
    if not (space.evaluate and run.is_main):
        return
    t = time.time()
    record = dict(space.evaluate(), event="eval", epoch=run.epoch, bn=cfg.bn)
    summary = "  ".join(f"{k}={100 * v:6.2f}" for k, v in record.get("metrics", {}).items()) or "(no ground truth)"
    images = record["split_half_images"]
    print(f"eval epoch {run.epoch}: {len(record['archs'])} subnets, bn={cfg.bn}, mean acc "
          f"{np.mean(record['supernet_acc']):.2f}%  {summary}  split-half tau ({images} vs {images} images)="
          f"{100 * record['split_half_tau']:6.2f}  [{time.time() - t:.1f}s]", flush=True)
    log_json(run, record)
    run.history.append(record)
    save_checkpoint(run, getattr(space.model, "module", space.model), opt, space)

def start_epoch(cfg, space, run, opt, first_epoch):
    """The epoch of this stage to train next (0, or where a resumed run stopped); a ranking due there but not yet
    logged (killed while ranking, or --epochs 0) is made first."""
    done = run.epoch - first_epoch
    ranked = bool(run.history) and run.history[-1]["epoch"] == run.epoch
    if 0 <= done <= cfg.epochs and ranking_due(cfg, done) and not ranked:
        rank_and_checkpoint(cfg, space, run, opt)
    return max(0, done)

class Progress:
    """The bookkeeping around the steps: sums for each epoch's log record, a line every 50 steps with an eta that
    counts the rankings still due, and the stop of a diverged run."""
    def __init__(self, cfg, space, run, stage):
        self.cfg, self.space, self.run, self.stage = cfg, space, run, stage
        self.ranking = None
    def start(self):                                         # an epoch starts
        if self.ranking is None:                             # one ranking, estimated once: the eta counts it
            self.ranking = self.space.ranking_seconds() if self.space.evaluate and self.run.is_main else 0.0
        self.sums, self.epoch_start = Counter(), time.time()
    def step(self, stats, n, lr, epoch, step, steps):
        if not all(map(math.isfinite, stats.values())):
            kept = f"the checkpoint of epoch {self.run.epoch} is kept" if self.run.epoch else "no checkpoint written"
            raise UserError(f"training diverged at {self.stage} epoch {epoch + 1}, step {step + 1}: loss "
                            f"{stats['loss']}; lower --lr ({kept})")
        self.sums.update(stats, n=n)
        self.lr = lr
        if self.run.is_main and ((step + 1) % 50 == 0 or step + 1 == steps):
            cfg = self.cfg
            per_step = (time.time() - self.epoch_start) / (step + 1)               # this epoch's pace so far
            rankings = sum(ranking_due(cfg, e) for e in range(epoch + 1, cfg.epochs + 1))
            eta = ((cfg.epochs - epoch) * steps - step - 1) * per_step + rankings * self.ranking
            print(f"{self.stage} epoch {epoch + 1}/{cfg.epochs} step {step + 1}/{steps} loss "
                  f"{self.sums['loss'] / (step + 1):.4f} acc {100 * self.sums['correct'] / self.sums['n']:.2f}% lr "
                  f"{lr:.5f} {cfg.batch_size / per_step:.0f} img/s eta {datetime.timedelta(seconds=int(eta))}",
                  flush=True)
    def epoch_record(self, epoch, steps):
        sampler = self.space.sampler
        return dict(event="epoch", stage=self.stage, epoch=epoch, loss=self.sums["loss"] / steps, lr=self.lr,
                    acc=100 * self.sums["correct"] / self.sums["n"], rank_loss=self.sums["rank"] / steps,
                    fallbacks=sampler.fallbacks if sampler else 0, seconds=time.time() - self.epoch_start)

def train(cfg, space, run, opt, stage="train", first_epoch=0):
    """One-shot supernet training (Sec. 2.2): --epochs epochs of --method, the lr cosine-annealed per step from --lr to
    --lr-min, gradients clipped at norm 5; after each epoch a checkpoint, then the ranking of Sec. 3.2 when due.
    Epochs count on from `first_epoch` (Sec. 3.1's two stages); `run` holds what a resumed run has done."""
    net = getattr(space.model, "module", space.model)       # the supernet itself (space.model may be DDP)
    device = next(net.parameters()).device
    progress = Progress(cfg, space, run, stage)
    for epoch in range(start_epoch(cfg, space, run, opt, first_epoch), cfg.epochs):
        space.model.train()
        batches = space.batches(first_epoch + epoch + 1)
        lam = rd_lambda(epoch, cfg.epochs)                   # lambda(t), the weight of Eq. 3 this epoch
        steps = len(batches)
        if steps == 0:
            raise UserError(f"no training step: --batch-size {cfg.batch_size} is larger than the training set")
        progress.start()
        for step, (x, y) in enumerate(batches):
            cosine = math.cos(math.pi * (epoch * steps + step) / (cfg.epochs * steps))   # 1 -> -1 over the run
            lr = cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + cosine)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            stats, _ = method_step(cfg, space, run.rng, x.to(device), y.to(device), lam)
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            progress.step(stats, len(y), lr, epoch, step, steps)                 # stops a diverged run
        run.epoch = first_epoch + epoch + 1
        log_json(run, progress.epoch_record(run.epoch, steps))
        save_checkpoint(run, net, opt, space)                # first, so that a kill while ranking loses no training
        if ranking_due(cfg, epoch + 1):
            rank_and_checkpoint(cfg, space, run, opt)

# ---- The NAS-Bench-201 run (--mode train): Part I's pieces, wired ----
def train_nb201(cfg, proxy=flops):
    """One RD-NAS run on NAS-Bench-201: the supernet, its data, the teacher (`proxy`) and the margin sampler with its
    mu, the ranked archs and their ground truth, the training loop, results.json. --method picks the baselines."""
    run, device = open_run(cfg), get_device(cfg.device)     # the run folder (plumbing, Part III)
    torch.manual_seed(cfg.seed)                             # the supernet's initial weights
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = NB201Supernet(cfg.C, cfg.N, 10, cfg.ops).to(device, memory_format=layout)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    # data: NB201's train half, shuffled and augmented by run.gen; the held-out images on the device once
    data = load_dataset(cfg)
    run.gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = Loader(*data["train"], cfg.batch_size, cfg.dataset == "cifar10", run.gen, layout)
    valid = [(x.to(device), y.to(device)) for x, y in Loader(*data["valid"], cfg.eval_batch_size, layout=layout)]
    space = Space(net, lambda epoch: train_loader, lambda: sample_nb201(run.rng, net.ops), LARGEST_NB201,
                  SMALLEST_NB201)
    # RD: the teacher, scored on nets of the supernet's size, and the margin subnet sampler with its mu
    net_args = dict(C=cfg.C, N=cfg.N, num_classes=10, resolution=data["train"][0].shape[-1])
    if cfg.method == "rd":
        batch = fixed_batch(data, cfg.proxy_batch, cfg.eval_seed, device)
        space.teacher = Teacher(lambda arch: score_arch(proxy, arch, net_args, batch, cfg.eval_seed))
        mu = cfg.mu if cfg.mu >= 0 else MU.get(cfg.sampler, 0.0)
        space.sampler = MarginSubnetSampler(lambda rng: sample_nb201(rng, net.ops), DISTANCES[cfg.sampler], mu,
                                            run.rng)
    # the ranking: 200 archs against their 200-epoch validation accuracy on cifar10-valid, with FLOPs for tau_ties
    path = cfg.benchmark or ("none" if cfg.dataset == "synthetic" else os.path.join(BENCHMARKS, "nb201.csv.gz"))
    table = None if path == "none" else load_benchmark(path, "cifar10-valid_valid")
    archs = sample_eval_archs(net.ops, cfg.eval_archs, cfg.eval_seed, table)
    if len(archs) < 2:
        raise UserError(f"{path} holds {len(archs)} of the archs of --ops {cfg.ops}: nothing to rank")
    recal = lambda: Loader(*data["train"], cfg.batch_size, False, torch.Generator().manual_seed(cfg.eval_seed),
                           layout)                            # --bn recal: the same K batches for every subnet
    ties = lambda arch: arch_cost(arch, **net_args)[0]      # tau_ties: within FLOPs' ties, whatever the teacher
    space.evaluate = lambda: evaluate_ranking(net, archs, valid, cfg, recal, table, ties=ties)
    space.ranking_seconds = lambda: ranking_seconds(net, archs, valid)
    if not (cfg.resume and resume(cfg, run, net, opt, space)):
        claim_folder(cfg, run, dict(event="config", config=run.config, benchmark=path, split=data["split"]))
        print(f"ground truth: {path} ({len(table)} archs)" if table is not None else "no ground truth (--benchmark "
              "none): the subnets are trained and ranked, but no correlation is computed")
    method = cfg.method + ("+" + cfg.sampler if cfg.method == "rd" else "")
    print(f"{method} on {cfg.dataset} ({len(data['train'][0])} train / {len(data['valid'][0])} held-out images), "
          f"{len(net.ops) ** 6} archs, device {device}, run {run.out}")
    train(cfg, space, run, opt)
    curve = [dict(epoch=h["epoch"], metrics=h.get("metrics")) for h in run.history]   # Fig. 1's points
    result = dict(config=run.config, benchmark=path, final=run.history[-1], curve=curve)
    save(os.path.join(run.out, "results.json"), result)
    return net, run.history[-1]
# ==== Part II: the ResNet-like search space (Sec. 3.1, Table 1; CVPR 2022 NAS Track 1), trained by Part I's train()

RESNET48_PRESETS = {
    # Sec. 3.1: pre-train 90 epochs, then 70 epochs at lr 0.001, batch 256, SGD momentum 0.9 (8 GPUs). Not in the
    # paper, our choices: pre-training lr 0.1, weight decay 1e-4 (ImageNet ResNet defaults).
    "paper": dict(dataset="imagenet", data="data/imagenet", resolution=224, base_width=64, epochs=70, lr=0.001,
                  lr_min=0.0, pretrain_epochs=90, pretrain_lr=0.1, batch_size=256, weight_decay=1e-4, nesterov=False,
                  sampler="hamming", eval_batch_size=256, bn="recal", valid_subset=10000),
    # Seconds on 2 CPU cores: synthetic 32x32 images, 1/4 widths.
    "cpu": dict(dataset="synthetic", resolution=32, base_width=16, epochs=2, lr=0.01, lr_min=0.0, pretrain_epochs=1,
                pretrain_lr=0.05, batch_size=32, train_subset=1024, valid_subset=256, weight_decay=1e-4, nesterov=False,
                sampler="hamming", eval_archs="8", eval_batch_size=128, bn="recal", bn_batches=2),
}
RESNET48_PRESETS["tiny"] = dict(RESNET48_PRESETS["cpu"], base_width=8, epochs=1, batch_size=16, train_subset=64,
                                valid_subset=32, eval_archs="3", eval_batch_size=32, bn_batches=1)   # the tests'

# ---- Search space: ResNet48 ----
# ResNet with BasicBlocks, stage depths and block widths searched. A 52-digit code: [0] image size, [1:5] depths,
# [5] stem width, then per block (23 at most) its mid and out widths, codes 1..7 of RESNET48_RATIOS, "00" if inactive.
RESNET48_BASE = (64, 128, 256, 512)
RESNET48_MAX_DEPTHS = (5, 5, 8, 5)
RESNET48_MIN_DEPTH = 2
RESNET48_STRIDES = (1, 2, 2, 2)
RESNET48_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)         # code k -> RESNET48_RATIOS[k - 1]
# about the mean Hamming distance of two codes (34.6 over the 45,000 released), as 6.7 is the mean Group one on NB201
RESNET48_HAMMING_MU = 35.0

def make_divisible(v, divisor=8):
    """Round v to a multiple of `divisor`, never more than 10% below v (MobileNet's rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new

def decode_resnet48_code(code):
    """52-digit code -> {image_size, stem, stages: [{out, mid: [ratio per active block]}]}; ValueError if not one."""
    try:
        stages, pos, depths = [], 6, [int(d) for d in code[1:5]]
        for depth, max_depth in zip(depths, RESNET48_MAX_DEPTHS):
            ratio = lambda k: RESNET48_RATIOS[int(code[k]) - 1]
            stages.append(dict(out=ratio(pos + 1), mid=[ratio(pos + 2 * b) for b in range(depth)]))
            pos += 2 * max_depth
        decoded = dict(image_size=224, stem=RESNET48_RATIOS[int(code[5]) - 1], stages=stages)
        valid = encode_resnet48_code(decoded) == code and all(RESNET48_MIN_DEPTH <= d for d in depths)
    except (TypeError, ValueError, IndexError):
        valid = False
    if not valid:   # the code must read back to itself: every digit in range, shared out widths, 00 past the depth
        raise ValueError(f"{code!r} is not a Track 1 code: 52 digits, image size 1, stage depths 2-5, 2-5, 2-8, 2-5, "
                         f"width codes 1-7 (one out width per stage), 00 for the blocks past a stage's depth")
    return decoded

def encode_resnet48_code(decoded):
    """The exact inverse of decode_resnet48_code."""
    digit = lambda r: str(RESNET48_RATIOS.index(r) + 1)
    code = "1" + "".join(str(len(st["mid"])) for st in decoded["stages"]) + digit(decoded["stem"])
    for st, max_depth in zip(decoded["stages"], RESNET48_MAX_DEPTHS):
        code += "".join(digit(m) + digit(st["out"]) for m in st["mid"]) + "00" * (max_depth - len(st["mid"]))
    return code

def sample_resnet48(rng):
    """A uniformly random decoded arch: each depth, each active block's mid ratio, each stage's out ratio, the stem."""
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
        weight = self.weight[:out_channels or self.out_channels, :x.shape[1]]   # (C_out', C_in', k, k)
        return F.conv2d(x, weight, None, self.stride, self.padding)

class SlimBatchNorm2d(nn.BatchNorm2d):
    """BN over the first C channels of shared statistics and affine parameters; recalibrated per subnet."""
    def forward(self, x):
        C, factor = x.shape[1], 0.0
        if self.training:
            self.num_batches_tracked += 1
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return F.batch_norm(x, self.running_mean[:C], self.running_var[:C], self.weight[:C], self.bias[:C],
                            self.training, factor, self.eps)

class SlimLinear(nn.Linear):
    """A classifier whose subnets use the first input features of the shared weight."""
    def forward(self, x):
        return F.linear(x, self.weight[:, :x.shape[1]], self.bias)

class ResNet48Block(nn.Module):
    """BasicBlock: conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus shortcut (conv1x1 + BN when shape changes);
    slimmable: forward(x, mid, out) uses the first `mid` and `out` channels of each weight (None: all)."""
    def __init__(self, C_in, C_mid, C_out, stride, projection=None):
        super().__init__()
        conv, bn = SlimConv2d, SlimBatchNorm2d
        self.stride = stride
        self.conv1, self.bn1 = conv(C_in, C_mid, 3, stride, 1, bias=False), bn(C_mid)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()              # modules, so that NASWOT's hooks see them
        self.conv2, self.bn2 = conv(C_mid, C_out, 3, 1, 1, bias=False), bn(C_out)
        projection = (stride != 1 or C_in != C_out) if projection is None else projection
        self.shortcut = nn.Sequential(conv(C_in, C_out, 1, stride, bias=False), bn(C_out)) if projection else None
        self.residual = True                                  # Zen-score switches the shortcut off (see zen)
    def forward(self, x, mid=None, out=None):
        h = self.relu1(self.bn1(self.conv1(x, mid)))
        h = self.bn2(self.conv2(h, out))
        if not self.residual:
            return self.relu2(h)
        if self.stride != 1 or x.shape[1] != h.shape[1]:
            x = self.shortcut[1](self.shortcut[0](x, out))
        return self.relu2(h + x)

class ResNet48Net(nn.Module):
    """ResNet48 (7x7/2 stem + maxpool, 4 stages of BasicBlocks, GAP, FC): of an arch (a code or decoded), the
    stand-alone net with the arch's widths; without one, the supernet at full width and depth (ResNet48Supernet)."""
    def __init__(self, arch=None, num_classes=1000, base=RESNET48_BASE):
        super().__init__()
        self.arch = decode_resnet48_code(arch) if isinstance(arch, str) else arch
        self.base, self.num_classes = tuple(base), num_classes
        full = dict(image_size=224, stem=1.0, stages=[dict(out=1.0, mid=[1.0] * d) for d in RESNET48_MAX_DEPTHS])
        stem, stages = resnet48_widths(self.arch or full, base)
        self.stem_conv, self.stem_bn = SlimConv2d(3, stem, 7, 2, 3, bias=False), SlimBatchNorm2d(stem)
        self.stem_relu = nn.ReLU()                          # a module, so that NASWOT's hooks see it
        self.stages, C = nn.ModuleList(), stem
        for (out, mids), stride in zip(stages, RESNET48_STRIDES):
            # in the supernet the first block of a stage always owns a projection: a subnet may change the width there
            self.stages.append(nn.ModuleList(ResNet48Block(C if k == 0 else out, mid, out, stride if k == 0 else 1,
                                                           (k == 0) if self.arch is None else None)
                                             for k, mid in enumerate(mids)))
            C = out
        self.fc = SlimLinear(C, num_classes)
    def features(self, x, arch=None):                       # x: (B, 3, H, W)
        stem, stages = resnet48_widths(arch or self.arch, self.base)
        h = F.max_pool2d(self.stem_relu(self.stem_bn(self.stem_conv(x, stem))), 3, 2, 1)   # (B, stem, H/4, W/4)
        for blocks, (out, mids) in zip(self.stages, stages):
            for block, mid in zip(blocks, mids):                                     # elastic depth
                h = block(h, mid, out)
        return h                                                                     # (B, C_last, H/32, W/32)
    def forward(self, x, arch=None):
        if isinstance(arch, list):                          # several subnets on one batch: one logits each
            return [self.forward(x, a) for a in arch]
        return self.fc(self.features(x, arch).mean((2, 3)))   # (B, classes)

class ResNet48Supernet(ResNet48Net):
    """The slimmable supernet: elastic depth (the first d blocks of a stage) and elastic width (the first channels of
    every weight); forward(x, arch) runs one decoded arch."""
    def __init__(self, num_classes=1000, base=RESNET48_BASE):
        super().__init__(None, num_classes, base)

def resnet48_cost(arch, num_classes=1000, base=RESNET48_BASE, resolution=224):
    """(MFLOPs, Mparams) of a ResNet48 arch in closed form (conv + linear multiply-adds, NB201's convention)."""
    arch = decode_resnet48_code(arch) if isinstance(arch, str) else arch
    stem, stages = resnet48_widths(arch, base)
    side = (resolution + 1) // 2                                     # 7x7/2 stem
    macs, n = side * side * stem * 3 * 49, stem * 3 * 49 + 2 * stem
    side, C = (side + 1) // 2, stem                                  # 3x3/2 max pool
    for (out, mids), stride in zip(stages, RESNET48_STRIDES):
        for b, mid in enumerate(mids):
            s = stride if b == 0 else 1
            side = (side + s - 1) // s
            macs += side * side * (C * mid * 9 + mid * out * 9)
            n += C * mid * 9 + mid * out * 9 + 2 * mid + 2 * out
            if s != 1 or C != out:
                macs, n = macs + side * side * C * out, n + C * out + 2 * out
            C = out
    return (macs + C * num_classes) / 1e6, (n + C * num_classes + num_classes) / 1e6

# ---- ResNet48: teacher, data, distributed training and ranking ----
def resnet48_datasets(cfg):
    """(training set, held-out set, classes): ImageNet in ImageFolder layout (train/, val/), or synthetic."""
    if cfg.dataset == "synthetic":
        xtr, ytr, xva, yva = make_synthetic(cfg.train_subset or 2048, cfg.valid_subset or 512,
                                            side=cfg.resolution or 32)
        norm = lambda x: (x.float() / 255 - 0.5) / 0.25
        return torch.utils.data.TensorDataset(norm(xtr), ytr), torch.utils.data.TensorDataset(norm(xva), yva), 10
    import torchvision  # only the ImageNet path needs it
    from torchvision import transforms as T
    if not all(os.path.isdir(os.path.join(cfg.data, split)) for split in ("train", "val")):
        raise UserError(f"ImageNet not found: --data {cfg.data} must hold train/ and val/, one folder per class")
    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_set = torchvision.datasets.ImageFolder(os.path.join(cfg.data, "train"), T.Compose(
        [T.RandomResizedCrop(cfg.resolution), T.RandomHorizontalFlip(), T.ToTensor(), norm]))
    valid_set = torchvision.datasets.ImageFolder(os.path.join(cfg.data, "val"), T.Compose(
        [T.Resize(int(cfg.resolution * 256 / 224)), T.CenterCrop(cfg.resolution), T.ToTensor(), norm]))
    classes = len(train_set.classes)
    if cfg.train_subset:
        train_set = torch.utils.data.Subset(train_set, range(min(cfg.train_subset, len(train_set))))
    if cfg.valid_subset:  # a fixed random subset of val for ranking, the same for every run
        idx = torch.randperm(len(valid_set), generator=torch.Generator().manual_seed(777))[:cfg.valid_subset]
        valid_set = torch.utils.data.Subset(valid_set, idx.tolist())
    return train_set, valid_set, classes

def init_distributed(cfg):
    """(rank, world_size, device). Under torchrun: one process per device, NCCL on GPU, gloo on CPU."""
    device = get_device(cfg.device)
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():          # rank 0 ranks alone at the end while the others wait: allow it hours
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=6))
    return dist.get_rank(), dist.get_world_size(), device

def epoch_seed(seed, epoch):
    """The data-order seed of one epoch, its own stream per (run seed, epoch): seed + epoch would give run seed s+1 at
    epoch k the order of run seed s at epoch k+1."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)   # < 2^63

def read_track1(path):
    """The competition's JSON {"arch1": {"acc": 0.0, "arch": "1..."}, ...} -> (its entries, their decoded archs)."""
    try:
        entries = read_json(path)
        archs = [decode_resnet48_code(v["arch"]) for v in entries.values()]
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:
        archs = f"{type(e).__name__}: {e}"
    if not archs or isinstance(archs, str):
        raise UserError(f"--archs {path!r} is not the competition's JSON {{\"arch1\": {{\"acc\": 0.0, \"arch\": "
                        f"\"1...\"}}, ...}} ({archs or 'no archs'})")
    return entries, archs

def resnet48_loader(cfg, dataset, batch_size, seed=None, rank=0, world=1):
    """Batches of `dataset`: shuffled by `seed` (this rank's share under torchrun, drop_last), or in order."""
    workers = min(8, os.cpu_count() or 1) if cfg.dataset == "imagenet" else 0
    sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=seed, drop_last=True) if world > 1 else None
    return DataLoader(dataset, batch_size, shuffle=seed is not None and sampler is None, sampler=sampler,
                      generator=None if seed is None else torch.Generator().manual_seed(seed), num_workers=workers,
                      drop_last=seed is not None, pin_memory=torch.cuda.is_available())

def train_resnet48(cfg, proxy=flops):
    """The two stages of Sec. 3.1, each one call of Part I's train(): SPOS pre-training (--pretrain-epochs, skipped
    with --init), then --epochs of --method; --archs ranks Track 1's codes into submission.json. Under torchrun every
    rank runs this: DDP averages gradients, every rank draws the same subnets, only rank 0 logs, ranks and writes."""
    rank, world, device = init_distributed(cfg)
    if cfg.batch_size // world < 2:
        raise UserError(f"--batch-size {cfg.batch_size} gives a process fewer than 2 images: BatchNorm needs 2")
    run = open_run(cfg, is_main=rank == 0, world=world)       # the same folder on every rank; only rank 0 writes
    eval_rng = random.Random(cfg.eval_seed)                   # Sec. 3.2's random subnets, or Track 1's (--archs)
    archs = [sample_resnet48(eval_rng) for _ in range(int(cfg.eval_archs))]
    entries, archs = read_track1(cfg.archs) if cfg.archs else ({}, archs)
    torch.manual_seed(cfg.seed)                               # identical initial weights on every rank
    train_set, valid_set, classes = resnet48_datasets(cfg)
    base = tuple(cfg.base_width * k for k in (1, 2, 4, 8))
    net = ResNet48Supernet(classes, base).to(device)
    if cfg.init:
        load_checkpoint(cfg.init, "resnet48", net)
    # a subnet leaves the deeper blocks unused, hence find_unused_parameters
    model = net if world == 1 else DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    batches = lambda epoch: resnet48_loader(cfg, train_set, cfg.batch_size // world, epoch_seed(cfg.seed, epoch),
                                            rank, world)
    full = [dict(out=1.0, mid=[1.0] * m) for m in RESNET48_MAX_DEPTHS]
    space = Space(model, batches, lambda: sample_resnet48(run.rng), dict(image_size=224, stem=1.0, stages=full),
                  dict(image_size=224, stem=0.7, stages=[dict(out=0.7, mid=[0.7] * 2) for _ in full]))
    if cfg.method == "rd":
        batch = [t.to(device) for t in next(iter(DataLoader(train_set, cfg.proxy_batch)))]   # never the ranked images
        net_args = dict(num_classes=classes, base=base, resolution=cfg.resolution)      # FLOPs in closed form
        score = lambda arch: score_arch(proxy, arch, net_args, batch, cfg.eval_seed, resnet48_cost, ResNet48Net)
        space.teacher = Teacher(score, key=encode_resnet48_code)
        hamming = lambda a, b: hamming_distance(encode_resnet48_code(a), encode_resnet48_code(b))   # over 52 digits
        space.sampler = MarginSubnetSampler(sample_resnet48, {"hamming": hamming}.get(cfg.sampler),
                                            cfg.mu if cfg.mu >= 0 else RESNET48_HAMMING_MU, run.rng)
    pretrain = dataclasses.replace(cfg, epochs=0 if cfg.init else cfg.pretrain_epochs, lr=cfg.pretrain_lr,
                                   method="spos")
    if not (cfg.resume and resume(cfg, run, net, opt, space)):
        claim_folder(cfg, run, dict(event="config", config=run.config, world_size=world))
    valid_loader = resnet48_loader(cfg, valid_set, cfg.eval_batch_size)
    recal = lambda: resnet48_loader(cfg, train_set, cfg.eval_batch_size, cfg.eval_seed)
    space.evaluate = lambda: evaluate_ranking(net, archs, valid_loader, cfg, recal, key=encode_resnet48_code)
    space.ranking_seconds = lambda: ranking_seconds(net, archs, valid_loader)
    train(pretrain, dataclasses.replace(space, evaluate=None), run, opt, stage="pretrain")
    train(cfg, space, run, opt, stage="train", first_epoch=pretrain.epochs)
    result = dict(config=run.config, world_size=world, final=run.history[-1] if run.history else None)   # rank 0's
    if run.is_main:
        if entries:                    # Track 1's submission: the same JSON, `acc` filled with the supernet's
            filled = zip(entries.items(), run.history[-1]["supernet_acc"])
            save(os.path.join(run.out, "submission.json"), {k: dict(v, acc=acc) for (k, v), acc in filled})
        save(os.path.join(run.out, "results.json"), result)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result

# ==== Part III: plumbing; the tools that reproduce the tables (proxies, search, summaries); the command line

# ---- Plumbing: run folder, checkpoint, resume, input files. A first reading can skip this section ----
# One run a folder (a fresh run creates log.jsonl exclusively); a file goes to a temporary file of its own, then is
# renamed; no result is overwritten; --resume continues a killed run exactly, never a finished one.
class UserError(Exception):            # a mistake in the user's input: main() prints it as one line, not a traceback
    pass

class CifarUnpickler(pickle.Unpickler):
    """A CIFAR-10 batch is a pickle, which can run code: only the numpy arrays a batch holds are let through."""
    def find_class(self, module, name):
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct",
                                                                                              "ndarray", "dtype"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")

def read_cifar10(root):
    """CIFAR-10's training set in `root/cifar-10-batches-py/` (downloaded when missing) -> (uint8 images (N, 3, 32, 32),
    labels, positions in the original 50,000); a damaged batch, or one holding another's images, is refused."""
    folder = os.path.join(root, "cifar-10-batches-py")
    if not os.path.isdir(folder):
        try:
            import torchvision                               # only the download needs it
            torchvision.datasets.CIFAR10(root, download=True)
        except Exception as e:
            raise UserError(f"CIFAR-10 is not in {root!r} and could not be downloaded ({type(e).__name__}): put the "
                            f"extracted cifar-10-batches-py/ folder there and pass --data {root}") from None
    xs, ys, ps, seen = [], [], [], {}
    for k in range(1, 6):
        path = os.path.join(folder, f"data_batch_{k}")
        try:
            with open(path, "rb") as f:
                d = CifarUnpickler(f, encoding="bytes").load()
            x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[b"labels"], np.int64)
            pos = np.asarray(d.get(b"indices", range(len(x))), np.int64)
            name, digest = d.get(b"batch_label", b""), hash(x.tobytes())
            problems = [(not len(x) == len(y) == len(pos), "rows, labels and indices differ in number"),
                        (not np.isin(y, range(10)).all(), "a label is outside 0..9"),
                        (len(np.unique(pos[(pos >= 0) & (pos < 10000)])) < len(pos), "an index repeats or is outside"),
                        (bool(name) and f"batch {k} of".encode() not in name, f"it is labelled {name!r}"),
                        (digest in seen, f"it holds the images of data_batch_{seen.get(digest)}")]
        except Exception as e:
            raise UserError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e}); replace it") from None
        problem = next((text for bad, text in problems if bad), None)
        if problem:
            raise UserError(f"{path} is damaged: {problem}; replace it with the original")
        seen[digest] = k
        xs.append(x)
        ys.append(y)
        ps.append((k - 1) * 10000 + pos)
    return tuple(torch.from_numpy(np.concatenate(v)) for v in (xs, ys, ps))

def load_benchmark(path, column="accuracy", key=lambda s: arch_to_str(str_to_arch(s))):
    """A ground-truth CSV, gzipped or not -> {key(arch): accuracy}: `column` of the shipped NB201 table
    (benchmarks/nb201.csv.gz), or a plain `arch,accuracy` table. A bad row is an error that names its line."""
    try:
        with (gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")) as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as e:
        raise UserError(f"benchmark {path!r}: " + ("not found" if isinstance(e, FileNotFoundError) else
                        f"not a readable CSV text file ({type(e).__name__}: {e})")) from None
    column = column if column in fields else "accuracy"
    if not {"arch", column} <= set(fields):
        raise UserError(f"{path}: expected the columns arch,accuracy, found {fields}")
    table, lines = {}, {}
    for line, row in enumerate(rows, start=2):
        try:
            arch, acc = key(row["arch"]), float(row[column])
        except (ValueError, TypeError) as e:
            raise UserError(f"{path}:{line}: {e}") from None
        if arch in table or not math.isfinite(acc):
            raise UserError(f"{path}:{line}: " + (f"{arch} is listed twice (first on line {lines[arch]})" if arch in
                                                  table else f"accuracy {row[column]!r} of {arch} is not finite"))
        table[arch], lines[arch] = acc, line
    return table

def lookup(table, arch, key=arch_to_str):
    if key(arch) not in table:
        raise UserError(f"the benchmark has no entry for arch {key(arch)} ({len(table)} archs in the table)")
    return table[key(arch)]

def read_json(path):
    """A JSON file whose objects name each key once (json itself keeps the last of two)."""
    def once(pairs):
        twice = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1]
        if twice:
            raise ValueError(f"the key {twice[0]!r} is given twice")
        return dict(pairs)
    with open(path) as f:
        return json.load(f, object_pairs_hook=once)

@dataclasses.dataclass
class Run:                                  # a run folder, and the state its checkpoint keeps with the weights
    out: str                               # the run folder: log.jsonl, ckpt.pt, results.json
    config: dict                           # the run's Config, as saved
    rng: random.Random                     # every random choice of subnets
    gen: torch.Generator = None            # data order and augmentation (NB201's in-memory loader)
    epoch: int = 0                         # epochs finished, counted over all stages
    history: list = dataclasses.field(default_factory=list)   # the ranking records so far
    world: int = 1                         # processes under torchrun; only the main one logs and writes
    is_main: bool = True

def run_folder(cfg):
    """--out, or runs/<space>-<dataset>-<method>-seed<seed>."""
    method = cfg.method + (f"-{cfg.sampler}" if cfg.method == "rd" else "")
    return cfg.out or os.path.join("runs", f"{cfg.space}-{cfg.dataset}-{method}-seed{cfg.seed}")

def fresh_path(out, name):
    """<out>/<name>, a result about to be written: a result is never overwritten."""
    if os.path.exists(os.path.join(out, name)):
        raise UserError(f"{os.path.join(out, name)} exists; move it away or choose another --out (or --resume a run)")
    os.makedirs(out, exist_ok=True)
    return os.path.join(out, name)

def open_run(cfg, is_main=True, world=1):
    """The run of --out, which claims its folder once its inputs load (claim_folder); a finished run's is refused."""
    run = Run(run_folder(cfg), dataclasses.asdict(cfg), random.Random(cfg.seed), world=world, is_main=is_main)
    if os.path.exists(os.path.join(run.out, "results.json")):          # every rank stops, not only the first
        raise UserError(f"{run.out} holds a finished run (results.json exists): nothing to resume or redo")
    for name in ("ckpt.pt", "log.jsonl") if is_main and not cfg.resume else ():
        fresh_path(run.out, name)
    return run

def claim_folder(cfg, run, record):
    """The run's first log record. A fresh run claims its folder by creating log.jsonl (exclusive creation: of two runs
    started together, the second is refused); a run killed before its first checkpoint and resumed appends to it."""
    log = os.path.join(run.out, "log.jsonl")
    if run.is_main and not (cfg.resume and os.path.exists(log)):
        try:
            open(log, "x").close()
        except FileExistsError:
            raise UserError(f"{log} exists: the folder holds a run (--resume continues it) or one starting") from None
    log_json(run, record)

def save(path, obj):
    """JSON, or torch.save for *.pt, to a temporary file of this writer's own in the same folder, then renamed: a kill
    leaves the old file or the new one, a failed write (a full disk) neither a torn file nor a .tmp."""
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb" if path.endswith(".pt") else "w") as f:
            torch.save(obj, f) if path.endswith(".pt") else json.dump(obj, f, indent=1)
        os.chmod(tmp, 0o666 & ~os.umask(os.umask(0)))       # mkstemp makes it 0600: the umask's mode, as open()
        os.replace(tmp, path)
    except BaseException as e:
        os.remove(tmp)
        if isinstance(e, RuntimeError):                      # how torch.save's writer reports a failed write
            raise OSError(f"could not write {path} ({str(e).strip()[:200]})") from None
        raise

def log_json(run, record):
    """Append one JSON line to <out>/log.jsonl, the machine-readable twin of the printed lines."""
    if run.is_main:
        with open(os.path.join(run.out, "log.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

def save_checkpoint(run, net, opt, space):
    """The checkpoint: one dict {model, optimizer, config, epoch, history, teacher scores, rng states}."""
    if run.is_main:
        save(os.path.join(run.out, "ckpt.pt"), dict(
            model=net.state_dict(), optimizer=opt.state_dict(), config=run.config, epoch=run.epoch,
            history=run.history, world=run.world, teacher=dict(space.teacher or {}),
            fallbacks=space.sampler.fallbacks if space.sampler else 0, python_rng=run.rng.getstate(),
            torch_rng=torch.get_rng_state(), data_rng=run.gen.get_state() if run.gen else None))

def load_checkpoint(path, space, net=None, cfg=None, free=("resume", "out", "device", "data", "eval_every")):
    """An rdnas checkpoint of --space `space` as plain tensors and containers (weights_only: a planted object is
    refused, never run), with finite weights and teacher scores; its weights go into `net`. With `cfg`, every setting
    but the `free` ones must be the checkpoint's. Another program's, another version's or a damaged one: one line."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint {path!r}: " + ("not found" if isinstance(e, FileNotFoundError) else
                        f"refused ({type(e).__name__}): not tensors and containers only, or damaged")) from None
    keys = {"model", "optimizer", "config", "epoch", "history", "world", "teacher", "fallbacks", "python_rng",
            "torch_rng"}
    if not (isinstance(ckpt, dict) and keys <= set(ckpt) and all(isinstance(ckpt[k], dict) for k in ("model",
            "config", "teacher")) and {f.name for f in dataclasses.fields(Config)} <= set(ckpt["config"])):
        raise UserError(f"checkpoint {path!r} is not an rdnas checkpoint of this version, or damaged")
    config = ckpt["config"]
    weights = [v for v in ckpt["model"].values() if torch.is_tensor(v) and v.is_floating_point()]
    diff = [f"{k}={config.get(k)!r} (now {v!r})" for k, v in (dataclasses.asdict(cfg) if cfg else {}).items()
            if k not in free and config.get(k) != v]
    for bad, problem in ((config.get("space") != space, f"it holds a supernet of --space {config.get('space')}"),
                         (not all(torch.isfinite(v).all() for v in weights), "its weights are not all finite"),
                         (not all(isinstance(s, (int, float)) and not math.isnan(s) for s in ckpt["teacher"].values()),
                          "its teacher scores are not all numbers"),
                         (bool(diff), f"made with another config: {', '.join(diff)}")):
        if bad:
            raise UserError(f"checkpoint {path!r}: {problem}")
    try:
        if net is not None:
            net.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, ValueError) as e:
        raise UserError(f"checkpoint {path!r}: its supernet has other shapes ({str(e).splitlines()[0]})") from None
    return ckpt

def resume(cfg, run, net, opt, space):
    """--resume from the checkpoint, if any (a run killed before its first has none); in log.jsonl, the records after
    `resume` replace earlier ones."""
    path = os.path.join(run.out, "ckpt.pt")
    if not os.path.exists(path):
        return False
    ckpt = load_checkpoint(path, cfg.space, net, cfg)
    if ckpt["world"] != run.world:
        raise UserError(f"{run.out} was trained by {ckpt['world']} processes; resume it with as many")
    try:
        opt.load_state_dict(ckpt["optimizer"])
        run.rng.setstate(ckpt["python_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        if run.gen:
            run.gen.set_state(ckpt["data_rng"])
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise UserError(f"checkpoint {path!r}: damaged optimizer or rng state ({type(e).__name__})") from None
    run.epoch, run.history = ckpt["epoch"], ckpt["history"]
    if space.teacher is not None:
        space.teacher.update(ckpt["teacher"])
    if space.sampler:                                        # RD
        space.sampler.fallbacks = ckpt["fallbacks"]
    log_json(run, dict(event="resume", epoch=run.epoch))
    if run.is_main:
        print(f"resumed {run.out} after epoch {run.epoch}")
    return True

# ---- Zero-cost proxies of Table 2 and Fig. 1 (any of them is also a teacher: --teacher) ----
def conv_linear_weights(net):
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

def snip(net, inputs, targets):
    """SNIP (Lee et al., ICLR 2019; a proxy in ref. [2]): sum over conv/linear weights of |dL/dw * w|."""
    net = copy.deepcopy(net).train()
    ws = conv_linear_weights(net)
    grads = torch.autograd.grad(F.cross_entropy(net(inputs), targets), ws, allow_unused=True)
    return float(sum((g * w.detach()).abs().sum() for g, w in zip(grads, ws) if g is not None))

def grasp(net, inputs, targets):
    """GraSP (Wang et al., ICLR 2020; ref. [2]): -sum(w * Hg), the Hessian-gradient product by double backward."""
    net = copy.deepcopy(net).train()
    ws = conv_linear_weights(net)
    g = torch.autograd.grad(F.cross_entropy(net(inputs), targets), ws, create_graph=True, allow_unused=True)
    used = [(w, gi) for w, gi in zip(ws, g) if gi is not None and gi.requires_grad]
    if not any(gi.any() for _, gi in used):                     # no gradient reaches a weight: no path to the output
        return -math.inf
    z = sum((gi * gi.detach()).sum() for _, gi in used)          # g(w) . g_fixed, so dz/dw = H g
    hg = torch.autograd.grad(z, [w for w, _ in used], allow_unused=True)
    return float(-sum((w.detach() * h).sum() for (w, _), h in zip(used, hg) if h is not None))

def synflow(net, inputs, targets):
    """Synflow (Tanaka et al., NeurIPS 2020; ref. [2]), data-free: R = sum f_|w|(1), score = sum |w * dR/dw|, with |w|
    for every weight, BN as identity, in float64 (values reach 1e40+), on an all-ones input of batch 1."""
    net = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.forward = lambda x: x                        # BN as identity
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.abs_()
                if m.bias is not None:
                    m.bias.abs_()
    ws = conv_linear_weights(net)
    R = net(torch.ones((1,) + tuple(inputs.shape[1:]), dtype=torch.float64, device=inputs.device)).sum()
    grads = torch.autograd.grad(R, ws, allow_unused=True)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(ws, grads) if g is not None))

def zen(net, inputs, targets, gamma=1e-2):
    """Zen-score (Lin et al., ICCV 2021, ref. [3]), data-free, with w ~ N(0, 1) and BN in train mode:
    log E ||f(x) - f(x + gamma*eps)||_1 + sum over BN of log sqrt(mean sigma^2).
    As ZenNAS and the authors' code (PicoNAS) compute it: on the network without its residual shortcuts (each block's
    `residual` switch), f the pre-pooling map (`net.features`), sigma^2 each BN's running variance after both forward
    passes at the default momentum 0.1, over all BNs; an arch with no path to the output scores -inf."""
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
        x = torch.randn(inputs.shape, generator=g, device=inputs.device)
        x2 = x + gamma * torch.randn(inputs.shape, generator=g, device=inputs.device)
        delta = (net.features(x) - net.features(x2)).abs().sum((1, 2, 3)).mean()     # f: (B, C', H', W')
        score = float(torch.log(delta) + sum(torch.log(m.running_var.mean().sqrt()) for m in bns))
    return score if math.isfinite(score) else -math.inf

def naswot(net, inputs, targets):
    """NASWOT (Mellor et al., ICML 2021, ref. [4]): log|K|, K = sum over ReLUs of c c^T + (1-c)(1-c)^T, with c the
    binary code of each nn.ReLU's input over the batch. Singular K -> -inf."""
    net = copy.deepcopy(net).train()
    B = inputs.shape[0]
    K = torch.zeros(B, B, dtype=torch.float64, device=inputs.device)
    def hook(m, inp, out):
        c = (inp[0].reshape(B, -1) > 0).float()                 # (B, D) binary code
        K.add_((c @ c.T + (1 - c) @ (1 - c).T).double())         # (B, B); counts < 2^24 are exact in float32
    for relu in (m for m in net.modules() if type(m) is nn.ReLU):   # hooks on the copy: gone with it
        relu.register_forward_hook(hook)
    with torch.no_grad():
        net(inputs)
    sign, logdet = torch.linalg.slogdet(K)
    return float(logdet) if sign > 0 else -math.inf

PROXIES = {"flops": flops, "params": params, "snip": snip, "grasp": grasp, "synflow": synflow, "zen": zen,
           "naswot": naswot}

def proxy_table(cfg):
    """--mode proxies (Table 2): tau, r, rho, CPR, tau_ties of each of --proxies (--seed: batch and weights)."""
    path, device = fresh_path(cfg.out or f"runs/proxies-seed{cfg.seed}", "proxies.json"), get_device(cfg.device)
    names = cfg.proxies.split(",")
    if not set(names) <= set(PROXIES):
        raise UserError(f"--proxies {cfg.proxies}: the proxies are {', '.join(PROXIES)}")
    table = load_benchmark(cfg.benchmark or os.path.join(BENCHMARKS, "nb201.csv.gz"), "cifar10-valid_valid")
    batch = fixed_batch(load_dataset(cfg), cfg.proxy_batch, cfg.seed, device)
    net_args = dict(C=cfg.C, N=cfg.N, num_classes=10, resolution=batch[0].shape[-1])
    archs = sample_eval_archs(OP_SETS[cfg.ops], cfg.eval_archs, cfg.eval_seed, table)
    print(f"scoring {len(archs)} archs with {', '.join(names)} (C={cfg.C}, N={cfg.N}, {batch[0].shape[-1]}px, batch "
          f"{len(batch[0])}); ground truth: {cfg.benchmark or 'the shipped NB201 table'}")
    print(f"{'proxy':10s} {'tau':>7s} {'r':>7s} {'rho':>7s} {'CPR':>7s} {'tau_ties':>8s} {'s/arch':>9s}")
    rows, ties = {}, [arch_cost(a, **net_args)[0] for a in archs]     # tau within the ties of FLOPs, RD's teacher
    for name in names:
        t = time.time()
        scores = [score_arch(PROXIES[name], a, net_args, batch, cfg.seed) for a in archs]
        metrics = rank_metrics(scores, [lookup(table, a) for a in archs], ties)
        rows[name] = dict(seconds_per_arch=(time.time() - t) / len(archs), scores=scores, metrics=metrics)
        print(f"{name:10s}" + "".join(f" {100 * metrics[k]:7.2f}" for k in ("tau", "r", "rho", "cpr"))
              + f" {100 * metrics['tau_ties']:8.2f} {rows[name]['seconds_per_arch']:9.4f}")
    save(path, dict(config=dataclasses.asdict(cfg), archs=[arch_to_str(a) for a in archs], proxies=rows))
    return rows

# ---- Search with the trained supernet (Table 3) ----
def evolution_search(score, ops, budget, population=20, topk=5, mutate_prob=0.2, rng=None):
    """Evolutionary search as in SPOS (ref. [1]): a random population, then children of the top-k archs so far, half
    by mutation, half by crossover, until `budget` distinct archs are scored. -> (best arch, [(arch, score)])"""
    rng, budget, seen = rng or random.Random(0), min(budget, len(ops) ** len(EDGES)), {}
    mutate = lambda a: tuple(rng.choice(ops) if rng.random() < mutate_prob else op for op in a)   # redraw each op
    crossover = lambda a, b: tuple(rng.choice(pair) for pair in zip(a, b))    # each op from either parent
    def visit(arch):
        if arch not in seen and len(seen) < budget:
            seen[arch] = score(arch)
            if len(seen) % max(1, budget // 10) == 0 or len(seen) == budget:      # prints a progress line 10 times
                print(f"search {len(seen)}/{budget}: best so far {max(seen.values()):.4g}", flush=True)
    while len(seen) < min(population, budget):
        visit(sample_nb201(rng, ops))
    while len(seen) < budget:
        parents, before = sorted(seen, key=seen.get, reverse=True)[:topk], len(seen)
        for k in range(population):
            visit(mutate(rng.choice(parents)) if k % 2 == 0 else crossover(rng.choice(parents), rng.choice(parents)))
        if len(seen) == before:   # the parents' neighbourhood is exhausted: add a random arch
            visit(sample_nb201(rng, ops))
    return max(seen, key=seen.get), list(seen.items())

# Table 3's columns in the shipped table; CIFAR-10 test is the net trained on all 50k images (NATS-Bench, the "94.37")
TABLE3_COLUMNS = {"cifar10/valid": "cifar10-valid_valid", "cifar10/test": "cifar10_test",
                  "cifar100/valid": "cifar100_valid", "cifar100/test": "cifar100_test",
                  "imagenet16-120/valid": "ImageNet16-120_valid", "imagenet16-120/test": "ImageNet16-120_test"}

def format_table3(groups):
    """Rows of Table 3, (label, [row]) each: mean +- std over the rows of each column."""
    cell = lambda v: f"{np.mean(v):.2f}+-{np.std(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}" if v else "-"
    lines = [f"{'method':28s}" + "".join(f"{c:>22s}" for c in TABLE3_COLUMNS)]
    for label, rows in groups:
        lines.append(f"{label[:28]:28s}" + "".join(cell([r[c] for r in rows if r.get(c) is not None]).rjust(22)
                                                    for c in TABLE3_COLUMNS))
    return "\n".join(lines)

def run_search(cfg):
    """--mode search (Table 3): the best arch by the supernet of --out or by a proxy, looked up in the shipped table."""
    out, device, model_cfg = run_folder(cfg), get_device(cfg.device), cfg
    path = fresh_path(out, f"search_evolution_{cfg.search_by}.json")
    if cfg.search_by == "supernet":
        ckpt = load_checkpoint(os.path.join(out, "ckpt.pt"), "nb201")
        model_cfg = dataclasses.replace(cfg, **{k: ckpt["config"][k] for k in (
            "ops", "C", "N", "dataset", "resolution", "train_subset", "valid_subset", "batch_size", "channels_last",
            "method", "sampler", "epochs")})
    data, ops = load_dataset(model_cfg), OP_SETS[model_cfg.ops]
    layout = torch.channels_last if model_cfg.channels_last else torch.contiguous_format
    if cfg.search_by == "supernet":
        net = NB201Supernet(model_cfg.C, model_cfg.N, 10, ops).to(device, memory_format=layout)
        load_checkpoint(os.path.join(out, "ckpt.pt"), "nb201", net)
        valid = [(x.to(device), y.to(device)) for x, y in Loader(*data["valid"], cfg.eval_batch_size, layout=layout)]
        recal = lambda: Loader(*data["train"], model_cfg.batch_size, False,
                               torch.Generator().manual_seed(cfg.eval_seed), layout)
        score = lambda arch: subnet_accuracy(net, arch, valid, cfg.bn, recal(), cfg.bn_batches)[0]
    else:
        net_args = dict(C=cfg.C, N=cfg.N, num_classes=10, resolution=data["train"][0].shape[-1])
        batch = fixed_batch(data, cfg.proxy_batch, cfg.eval_seed, device)
        score = lambda arch: score_arch(PROXIES[cfg.search_by], arch, net_args, batch, cfg.eval_seed)
    t = time.time()
    best, trace = evolution_search(score, ops, cfg.budget, cfg.population, cfg.topk, 0.2, random.Random(cfg.seed))
    tables = {c: load_benchmark(os.path.join(BENCHMARKS, "nb201.csv.gz"), col) for c, col in TABLE3_COLUMNS.items()}
    row = {c: tables[c][arch_to_str(best)] for c in TABLE3_COLUMNS}
    save(path, dict(config=dataclasses.asdict(cfg), model_config=dataclasses.asdict(model_cfg), best=arch_to_str(best),
                    best_score=dict(trace)[best], seconds=time.time() - t, table3=row,
                    trace=[(arch_to_str(a), s) for a, s in trace]))
    print(f"best arch (evolution search by {cfg.search_by}, {len(trace)} archs scored): {arch_to_str(best)}")
    optimal = {c: max(t.values()) for c, t in tables.items()}
    print(format_table3([(f"found ({cfg.search_by})", [row]), ("optimal", [optimal])]))
    return row

# ---- Summaries over runs (Tables 2, 3 and 4) and Fig. 1 ----
def plot_fig1(curves, lines, path):
    """Fig. 1 and the budget curve: tau and tau within FLOPs' ties (mean +- std over runs) against epochs,
    {label: {epoch: [metrics]}}; `lines` {label: [metrics]} (proxies, the untrained supernet) drawn across."""
    try:
        import matplotlib                                    # only --plot needs it
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key in zip(axes, ("tau", "tau_ties")):
        for k, (label, points) in enumerate(curves.items()):
            epochs = sorted(points)
            taus = [[100 * m.get(key, np.nan) for m in points[e]] for e in epochs]
            ax.errorbar(epochs, [np.mean(t) for t in taus], [np.std(t) for t in taus], fmt="o-", capsize=3,
                        color=f"C{k}", label=label)
        for k, (label, rows) in enumerate(lines.items()):
            ax.axhline(np.mean([100 * m.get(key, np.nan) for m in rows]), ls="--", lw=1, color=f"C{k + len(curves)}",
                       label=label)
        ticks = sorted({e for points in curves.values() for e in points})
        ax.set_xscale("log", base=2)                         # budgets that double
        ax.set(xlabel="epochs", xticks=ticks, xticklabels=ticks, ylabel=f"Kendall {key} (%)",
               title={"tau": "Kendall tau against NB201", "tau_ties": "Kendall tau within FLOPs' ties"}[key])
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")

def run_label(c):
    """A run's row in the summaries: its method (RD with its sampler), or the untrained supernet."""
    if not c["epochs"]:
        return "random init"
    return c["method"] + (f"+{c['sampler']}" if c["method"] == "rd" and c["sampler"] != "none" else "")

def read_results(folders):
    """The trained runs (results.json), proxies (proxies.json) and searches (search_*.json) of the run folders."""
    runs, proxies, searches = [], {}, {}
    for path in [p for folder in folders for p in sorted(glob.glob(os.path.join(folder, "*.json")))]:
        name = os.path.basename(path)
        try:
            if name == "results.json":
                r = read_json(path)
                if r["final"] and "metrics" in r["final"]:          # the keys summarize reads, read here
                    runs.append(dict(r, label=run_label(r["config"]), curve=r["curve"]))
            elif name == "proxies.json":
                for proxy, row in read_json(path)["proxies"].items():
                    proxies.setdefault(proxy, []).append(row["metrics"])
            elif name.startswith("search_"):
                s = read_json(path)
                by = s["config"]["search_by"]
                label = (run_label(s["model_config"]) if by == "supernet" else by) + " (evolution)"
                searches.setdefault(label, []).append(dict(s["table3"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            raise UserError(f"{path}: not a result of rdnas ({type(e).__name__}: {e})") from None
    return runs, proxies, searches

def summarize(cfg):
    """--mode summarize: Tables 2-4 (mean +- std over the folders of --runs), Table 3's searches; --plot: Fig. 1."""
    folders = sorted(glob.glob(cfg.runs))
    if not folders:
        raise UserError(f"--runs {cfg.runs!r} matches no run folder (give a glob like 'runs/nb201-*')")
    path = fresh_path(cfg.out, "summary.json") if cfg.out else None
    figure = fresh_path(cfg.out or ".", "fig1_tau.png") if cfg.plot else None
    runs, proxies, searches = read_results(folders)
    # runs are averaged per method; a setting other than method and seed that differs between trained runs (say
    # --epochs, or RD's --teacher) joins the label, so that different budgets are never averaged together
    trained = [r["config"] for r in runs if r["config"]["epochs"]]
    varying = [k for k in dataclasses.asdict(Flags()) if k not in ("method", "sampler", "seed", "out", "resume",
               "eval_every", "device", "data") and len({json.dumps(c.get(k)) for c in trained}) > 1]
    suffix = lambda c, keys: "".join(f" {k}={c.get(k)}" for k in keys if k != "teacher" or c["method"] == "rd")
    ranking, curves = {}, {}
    for r in runs:
        c = r["config"]
        name = r["label"] + (suffix(c, varying) if c["epochs"] else "")
        metrics = dict(r["final"]["metrics"], split_half=r["final"].get("split_half_tau", np.nan))
        ranking.setdefault(name, []).append(metrics)
        if c["epochs"]:      # Fig. 1 (--eval-every) or the budget curve (runs of other --epochs): tau at each epoch
            curve = curves.setdefault(r["label"] + suffix(c, [k for k in varying if k != "epochs"]), {})
            for p in r["curve"]:
                curve.setdefault(p["epoch"], []).append(p["metrics"])
    columns = ("tau", "r", "rho", "cpr", "tau_ties", "split_half")
    lines = [f"{'method':18s} {'runs':>4s} " + " ".join(f"{k:>16s}" for k in columns)]
    for name, rows in list(proxies.items()) + list(ranking.items()):
        values = [100 * np.array([m.get(k, np.nan) for m in rows]) for k in columns]
        cells = [f"{v.mean():6.2f}+-{v.std():5.2f}".rjust(16) for v in values]
        lines.append(f"{name:18s} {len(rows):4d} " + " ".join(cells))
    if searches:
        lines.append(format_table3(list(searches.items())))
    print("\n".join(lines))
    if cfg.plot:                                             # first: a failed plot leaves no summary.json behind
        if not any(len(points) > 1 for points in curves.values()):
            raise UserError("--plot needs tau at two epochs or more: runs with --eval-every, or runs of other --epochs")
        plot_fig1(curves, {**proxies, **{n: rows for n, rows in ranking.items() if n == "random init"}}, figure)
    summary = dict(ranking=ranking, proxies=proxies, search=searches)
    if path:
        save(path, summary)
    return summary

# ---- Command line ----
@dataclasses.dataclass
class Flags(Config):
    """Every setting: Part I's Config, those of Part II's space, and those of the modes of Part III."""
    base_width: int = arg(64, "resnet48: stage widths base * (1, 2, 4, 8); 64 is ResNet48, less for CPU runs")
    pretrain_epochs: int = arg(0, "resnet48: epochs of SPOS pre-training before --epochs (stage 1 of Sec. 3.1)")
    pretrain_lr: float = arg(0.1)
    init: str = arg("", "resnet48: start from this checkpoint's weights instead of pre-training")
    archs: str = arg("", "resnet48: rank the codes of the competition's JSON (Track 1) into submission.json")
    mode: str = arg("train", "train | proxies (Table 2) | search (Table 3) | summarize (Tables 2-4, Fig. 1)")
    preset: str = arg("paper", "defaults for --space (PRESETS): paper | cpu | tiny")
    proxies: str = arg(",".join(PROXIES), "--mode proxies: the proxies to score, comma-separated")
    search_by: str = arg("supernet", "--mode search: the supernet of --out, or a proxy (zero-shot search)")
    budget: int = arg(1000, "--mode search: archs scored")
    population: int = arg(50)
    topk: int = arg(10)
    runs: str = arg("", "--mode summarize: the run folders, a glob")
    plot: bool = arg(False, "--mode summarize: draw Fig. 1 into --out (needs matplotlib)")

PRESETS = {"nb201": {
    "paper": {},                                            # Config's defaults: the paper's setting
    # About 6 minutes on 2 CPU cores, the paper's benchmark scaled down: CIFAR-10 at 16x16, C=8, N=1, NB201's 25k
    # training images for 16 epochs, 200 subnets ranked on 4,000 held-out images (README: chosen by the budget curve).
    "cpu": dict(resolution=16, C=8, N=1, valid_subset=4000, epochs=16, batch_size=128, lr=0.05, lr_min=0.0,
                eval_batch_size=1000, channels_last=True, budget=100, population=20, topk=5),
    # Seconds: the smoke test (synthetic images, a tiny net).
    "tiny": dict(dataset="synthetic", resolution=8, C=4, N=1, train_subset=256, valid_subset=128, epochs=2,
                 batch_size=32, lr=0.05, lr_min=0.0, eval_archs="20", eval_batch_size=128, proxy_batch=16, budget=20,
                 population=8, topk=3)},
    "resnet48": RESNET48_PRESETS}
CHOICES = dict(space=tuple(PRESETS), mode=("train", "proxies", "search", "summarize"), preset=("paper", "cpu", "tiny"),
               device=("auto", "cpu", "cuda", "mps"), ops=tuple(OP_SETS), dataset=("cifar10", "synthetic", "imagenet"),
               method=("spos", "fairnas", "sandwich", "rd"), sampler=tuple(DISTANCES), teacher=tuple(PROXIES),
               bn=("train", "recal"), search_by=("supernet",) + tuple(PROXIES))
# flags, and flag values, that only one mode or space reads: given elsewhere, they are refused rather than ignored
ONLY = {"proxies": "--mode proxies", "search_by": "--mode search", "budget": "--mode search",
        "runs": "--mode summarize", "plot": "--mode summarize", "archs": "--space resnet48", "init": "--space resnet48",
        "base_width": "--space resnet48", "pretrain_epochs": "--space resnet48", "dataset imagenet": "--space resnet48",
        "ops": "--space nb201", "C": "--space nb201", "N": "--space nb201", "benchmark": "--space nb201",
        "dataset cifar10": "--space nb201", "method fairnas": "--space nb201", "sampler group": "--space nb201",
        "mode proxies": "--space nb201", "mode search": "--space nb201", "mode summarize": "--space nb201"}

def number(low=0, high=math.inf, step=1, kind=int):
    """An argparse type: a finite `kind` number in [low, high], for ints a multiple of `step`."""
    def parse(text):
        value = kind(text)
        if not (math.isfinite(value) and low <= value <= high and (kind is float or value % step == 0)):
            raise argparse.ArgumentTypeError(f"{text} is not a{' multiple of ' + str(step) if step > 1 else ''} "
                                             f"number in [{low}, {high}]")
        return value
    parse.__name__ = kind.__name__                           # argparse's word for a value it cannot convert
    return parse

TYPES = dict(C=number(1), N=number(1), batch_size=number(1), budget=number(1), base_width=number(1),
             seed=number(0, 2 ** 32 - 1), resolution=number(0, step=4), lr=number(1e-12, kind=float),
             mu=lambda text: -1.0 if text == "-1" else number(0, kind=float)(text),
             eval_archs=lambda text: str(number(2)(text)))

def parse_args(argv=None):
    """argv -> Flags. Precedence: an explicit flag, then PRESETS[space][preset], then the defaults."""
    p = argparse.ArgumentParser(description="RD-NAS (Dong et al., ICASSP 2023). Defaults shown are before --preset.")
    for f in dataclasses.fields(Flags):
        flag, text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if text and f.type is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        elif text:
            p.add_argument(flag, choices=CHOICES.get(f.name), help=f"{text} (default: {f.default!r})",
                           type=TYPES.get(f.name, str if f.type is str else number(kind=f.type)))
    args = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    space, preset = args.get("space", "nb201"), args.get("preset", "paper")
    where = {"--mode " + args.get("mode", "train"), "--space " + space}
    for name, value in args.items():
        for key in (name, f"{name} {value}"):
            if key in ONLY and ONLY[key] not in where:
                p.error(f"--{key.replace('_', '-')} is for {ONLY[key]}")
    return dataclasses.replace(Flags(), **{**PRESETS[space][preset], **args})

def main(argv=None):
    """Run --mode on --space; a user's mistake, or a file or folder that cannot be read or written: one line."""
    cfg = parse_args(argv)
    train_space = train_nb201 if cfg.space == "nb201" else train_resnet48
    modes = dict(train=lambda: train_space(cfg, PROXIES[cfg.teacher]), proxies=lambda: proxy_table(cfg),
                 search=lambda: run_search(cfg), summarize=lambda: summarize(cfg))
    try:
        return modes[cfg.mode]()
    except UserError as e:
        sys.exit(f"rdnas: error: {e}")
    except OSError as e:                                     # a file or folder of the user's, or the disk
        reason = e.strerror or (str(e).strip() or type(e).__name__).splitlines()[-1]
        sys.exit(f"rdnas: error: {e.filename + ': ' if e.filename else ''}{reason}")
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)) and "can't allocate memory" not in str(e):
            raise
        sys.exit(f"rdnas: error: out of memory ({type(e).__name__}): lower --C, --resolution or --batch-size")
    except KeyboardInterrupt:
        sys.exit("rdnas: interrupted (the same command with --resume continues a training run)")

if __name__ == "__main__":
    main()
