"""Tests for rdnas.py (python -m pytest -q): CPU only, no downloads, about a minute on 2 cores. Each checks a property
that could fail: parity with a trusted reference (scipy, torch, the benchmark's published figures, a stand-alone net
holding the same weights), a hand-worked example, or an invariant. Tests that read ../shared/data skip in a user's
clone. The file follows rdnas.py: its three parts under the same banners, its sections in the same order."""
import concurrent.futures, contextlib, copy, csv, dataclasses, glob, io, json, math, os, pickle, random, re, shutil, signal
import socket, subprocess, sys, time, types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import stats

import rdnas
from rdnas import OPS, NB201Net, NB201Supernet, UserError, arch_to_str, str_to_arch

torch.set_num_threads(1)              # tiny nets: one thread is as fast, and a busy machine cannot stall it
HERE = os.path.dirname(os.path.abspath(__file__))
RDNAS, ENV = os.path.join(HERE, "rdnas.py"), dict(os.environ, OMP_NUM_THREADS="1")
SHARED = os.path.join(HERE, "..", "shared", "data")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/data is absent (a user's clone)")
SHIPPED = os.path.join(rdnas.BENCHMARKS, "nb201.csv.gz")
BEST_C100 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
IDX0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
CODE = "1252233313000000223212122253130000000000006515000000"   # arch1 of Track 1's released file

def random_archs(n, seed=0, ops=OPS):
    return [rdnas.sample_nb201(rng, ops) for rng in [random.Random(seed)] for _ in range(n)]

def random_codes(n, seed=0):
    return [rdnas.encode_resnet48_code(rdnas.sample_resnet48(rng)) for rng in [random.Random(seed)] for _ in range(n)]

def extract_nb201(supernet, arch):  # The stand-alone NB201Net of `arch` holding the supernet's weights (BN 1, 0).
    net, own = NB201Net(arch, supernet.C, supernet.N, supernet.num_classes), supernet.state_dict()
    net.load_state_dict({k: own[k] if k in own else torch.ones_like(v) if k.endswith("weight") else torch.zeros_like(v)
                         for k, v in net.state_dict().items()})
    return net

def is_connected(arch):  # A path of non-`none` edges from node 0 to node 3 (else the cell outputs zeros).
    reach = {0}
    for (i, j), op in zip(rdnas.EDGES, arch):
        reach |= {j} if op != "none" and i in reach else set()
    return 3 in reach

def snapshot(folder):  # Every file under `folder` and its bytes.
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(folder) for f in names}

def run_main(argv):  # main(argv) -> (its return value, what it printed).
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = rdnas.main([str(a) for a in argv])
    return result, out.getvalue()

def one_line_error(argv):  # main(argv) must stop with the one line `rdnas: error: ...`; returns it.
    with pytest.raises(SystemExit) as e:
        run_main(argv)
    assert str(e.value.code).startswith("rdnas: error:") and "\n" not in str(e.value.code), str(e.value.code)
    return str(e.value.code)

def eval_line(text):  # The last printed eval line, without its timing.
    return [line for line in text.splitlines() if line.startswith("eval epoch")][-1].rsplit("[", 1)[0]

def assert_same_run(a, b):  # Two run folders hold the same weights (every tensor of ckpt.pt's model) and rankings.
    wa, wb = [torch.load(os.path.join(f, "ckpt.pt"), weights_only=False)["model"] for f in (a, b)]   # our own files
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.load(open(a / "results.json"))["curve"] == json.load(open(b / "results.json"))["curve"]

@pytest.fixture(scope="module")
def batch16():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 3, 8, 8, generator=g), torch.randint(10, (16,), generator=g)

# =====================================================================================================
# Part I: RD-NAS on NAS-Bench-201
# =====================================================================================================

# ---- Search space: NAS-Bench-201 (Dong & Yang, ICLR 2020; Sec. 3.2) ----
def test_space_sizes_and_arch_strings_round_trip_in_benchmark_edge_order_and_malformed_ones_raise():
    assert len(set(rdnas.all_archs())) == 5 ** 6 and len(set(rdnas.all_archs(rdnas.OP_SETS["no-none"]))) == 4 ** 6
    assert all(str_to_arch(arch_to_str(a)) == a for a in rdnas.all_archs())
    assert str_to_arch(IDX0) == ("avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_1x1", "skip_connect",
                                 "skip_connect")       # NB201's index 0: edges (0,1) (0,2) (1,2) (0,3) (1,3) (2,3)
    for bad in ["", None, "|nor_conv_3x3~0|+|nor_conv_3x3~0|", IDX0.replace("avg_pool_3x3", "conv_5x5"),
                IDX0.replace("3~0|+|nor_conv_1x1~0", "3~1|+|nor_conv_1x1~0"), IDX0[:-1], IDX0 + "|none~3|"]:
        with pytest.raises(ValueError):                # malformed strings
            str_to_arch(bad)

@pytest.mark.parametrize("arch, millions", [(("nor_conv_3x3",) * 6, 1.531546), (("nor_conv_1x1",) * 6, 0.241306),
                                            (("skip_connect",) * 6, 0.073306), (("none",) * 6, 0.073306),
                                            (BEST_C100, 1.288506), (IDX0, 0.129306)])
def test_parameter_counts_equal_the_benchmark(arch, millions):       # NB201's published params (MB) of these archs
    assert sum(p.numel() for p in NB201Net(arch).parameters()) == round(millions * 1e6)

@pytest.mark.parametrize("ops", ["nb201", "no-none"])
def test_supernet_path_equals_the_standalone_net_with_the_same_weights(ops):
    torch.manual_seed(0)
    sn, x = NB201Supernet(C=8, N=2, ops=ops), torch.randn(6, 3, 16, 16)
    with torch.no_grad():               # non-trivial running statistics, so that eval mode is compared too
        for m in sn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    for arch in random_archs(3, 1, sn.ops) + [("nor_conv_3x3",) * 6]:
        net = extract_nb201(sn, arch)
        for mode in (True, False):
            sn.train(mode), net.train(mode)
            torch.testing.assert_close(sn(x, arch), net(x), rtol=0, atol=1e-5)

# ---- Data: CIFAR-10 with NAS-Bench-201's split (Sec. 3.2) ----
def write_cifar(root, indices=True, damage=lambda batches: None, rows=40):  # `rows` images a batch, random positions
    (root / "cifar-10-batches-py").mkdir(parents=True)
    g, batches = np.random.default_rng(0), []
    for k in range(1, 6):
        batches.append({b"data": g.integers(0, 256, (rows, 3072), dtype=np.uint8), b"labels": g.integers(0, 10, rows).tolist(),
                        b"batch_label": f"training batch {k} of 5".encode()})
        if indices:
            batches[-1][b"indices"] = sorted(g.choice(10000, rows, replace=False).tolist())
    damage(batches)
    for k, b in enumerate(batches, 1):
        (root / "cifar-10-batches-py" / f"data_batch_{k}").write_bytes(pickle.dumps(b))
    return batches

@pytest.mark.parametrize("indices", [True, False])
def test_cifar_reader_takes_a_partial_folder_and_nb201s_split_selects_by_original_position(indices, tmp_path):
    batches = write_cifar(tmp_path, indices)
    x, y, pos = rdnas.read_cifar10(str(tmp_path))
    assert pos.tolist() == [k * 10000 + i for k, b in enumerate(batches) for i in b.get(b"indices", range(40))]
    assert np.array_equal(x[41].numpy(), batches[1][b"data"][1].reshape(3, 32, 32)) and y[41] == batches[1][b"labels"][1]
    data = rdnas.load_dataset(rdnas.parse_args(["--data", str(tmp_path), "--dataset", "cifar10"]))
    train, valid = rdnas.nb201_split("train"), rdnas.nb201_split("valid")            # halves of the 50,000
    assert len(train) == len(valid) == 50000 and train.sum() == valid.sum() == 25000 and bool((train ^ valid).all())
    for half in ("train", "valid"):
        keep = rdnas.nb201_split(half)[pos]
        assert torch.equal(data[half][1], y[keep]) and data["split"][f"missing_{half}"] == 25000 - keep.sum()
        for c in range(3):                  # the same images in the same order, normalised per channel
            assert np.corrcoef(x[keep][:, c].flatten().float(), data[half][0][:, c].flatten())[0, 1] > 1 - 1e-6

class Planted:                                                         # a pickle that runs code when loaded
    def __reduce__(self):
        return (sys.exit, ("a planted batch ran its payload",))

@pytest.mark.parametrize("damage", [                                  # each damages data_batch_2, b[1]
    lambda b: b[1][b"labels"].__setitem__(0, 40), lambda b: b[1][b"labels"].__setitem__(3, 255),
    lambda b: b[1][b"labels"].__setitem__(0, -1), lambda b: b[1][b"labels"].pop(), lambda b: b[1][b"indices"].pop(),
    lambda b: b[1].update({b"data": b[1][b"data"][:-1]}), lambda b: b[1][b"indices"].__setitem__(1, b[1][b"indices"][0]),
    lambda b: b[1][b"indices"].__setitem__(0, 10000), lambda b: b[1][b"indices"].__setitem__(0, -1),
    lambda b: b.__setitem__(1, copy.deepcopy(b[0])),                  # data_batch_2 a copy of data_batch_1
    lambda b: b.__setitem__(1, {k: v for k, v in b[0].items() if k != b"batch_label"}),   # the same, label removed
    lambda b: b[1].update({b"data": Planted()})],                     # unpickled, it would end the tests
    ids=["label40", "label255", "label-1", "labels", "indices", "rows", "repeat", "index10000", "index-1", "duplicate",
         "unlabelled copy", "planted"])
def test_cifar_reader_refuses_a_damaged_batch_in_one_line(damage, tmp_path):
    write_cifar(tmp_path, damage=damage)
    with pytest.raises(UserError) as e:
        rdnas.read_cifar10(str(tmp_path))
    assert "data_batch_2" in str(e.value) and "\n" not in str(e.value)

def test_missing_cifar_offline_says_in_one_line_how_to_get_it(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise RuntimeError("no network")
    torchvision = types.SimpleNamespace(datasets=types.SimpleNamespace(CIFAR10=offline))   # its download fails
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    message = one_line_error(["--preset", "tiny", "--dataset", "cifar10", "--data", tmp_path / "no", "--benchmark", "none",
                              "--out", tmp_path / "r"])
    assert "cifar-10-batches-py" in message and f"--data {tmp_path / 'no'}" in message

@needs_shared
def test_nb201_split_masks_round_trip_to_cifar_split_txt():
    published = json.load(open(os.path.join(SHARED, "nb201-splits", "cifar-split.txt")))
    for name in ("train", "valid"):
        assert rdnas.nb201_split(name).nonzero().flatten().tolist() == sorted(int(i) for i in published[name][1])

def test_loader_augmentation_is_seeded_and_crops_and_flips_each_image():
    x, y = torch.randn(10, 3, 6, 6), torch.arange(10)
    batches = lambda seed: list(rdnas.Loader(x, y, 4, True, torch.Generator().manual_seed(seed)))
    a, b = batches(3), batches(3)
    assert len(a) == 2 and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, batches(4)))
    for img, label in zip(torch.cat([xb for xb, _ in a]), torch.cat([yb for _, yb in a])):
        padded = F.pad(x[label], (4, 4, 4, 4))                       # one of the 81 shifts, flipped or not
        assert any(torch.equal(img, c) or torch.equal(img, c.flip(2)) for c in
                   [padded[:, i:i + 6, j:j + 6] for i in range(9) for j in range(9)])
    assert [yb.tolist() for _, yb in rdnas.Loader(x, y, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]

# ---- Zero-cost proxies as the teacher (Sec. 2.1, Sec. 2.2) ----
def counted(net, side):
    """(MFLOPs, Mparams) of a net for one image, by the FLOPs and Params proxies."""
    return rdnas.flops(net, torch.zeros(1, 3, side, side), None), rdnas.params(net, None, None)

def test_flops_tables_equal_counted_networks_and_nb201s_figures():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    assert counted(net, 8) == pytest.approx(((8 * 8 * 4 * 3 * 9 + 4 * 10) / 1e6, (108 + 50) / 1e6))
    assert [rdnas.arch_cost((op,) * 6)[0] for op in ("nor_conv_3x3", "skip_connect")] == pytest.approx([220.11968, 7.78304])
    assert all(rdnas.arch_cost(a) == rdnas.arch_cost(a[::-1]) for a in random_archs(500))   # equal FLOPs tie exactly
    for arch in random_archs(2, seed=4):
        assert rdnas.arch_cost(arch) == pytest.approx(counted(NB201Net(arch), 32), rel=1e-12)
        net = NB201Net(arch, C=8, N=2, num_classes=7)
        assert rdnas.arch_cost(arch, 8, 2, 7, 16) == pytest.approx(counted(net, 16), rel=1e-12)

# ---- Margin subnet sampler: Hamming and Group distances (Sec. 2.2.2, Eq. 4) ----
def test_distances_hand_worked_the_mean_group_distance_is_mu_and_the_sampler_keeps_pairs_above_it():
    a = ("nor_conv_3x3", "nor_conv_1x1", "none", "skip_connect", "avg_pool_3x3", "none")
    b = ("nor_conv_1x1", "nor_conv_1x1", "skip_connect", "nor_conv_3x3", "none", "nor_conv_3x3")
    assert rdnas.hamming_distance(a, b) == 5 and rdnas.group_distance(a, a) == 0
    assert rdnas.group_distance(a, b) == 0.5 + 0 + 0.5 + 2 + 0.5 + 2 == rdnas.group_distance(b, a)
    # 6 edges x E[per-edge distance] over the 25 equally likely op pairs: 6 x 28 / 25 = 6.72
    exact, rng = 6 * np.mean([rdnas.group_distance((p,), (q,)) for p in OPS for q in OPS]), random.Random(0)
    drawn = np.mean([rdnas.group_distance(rdnas.sample_nb201(rng), rdnas.sample_nb201(rng)) for _ in range(20000)])
    assert exact == pytest.approx(6.72) and drawn == pytest.approx(exact, abs=0.06)      # SD of the mean: ~0.015
    assert abs(rdnas.MU["group"] - exact) < 0.05
    s = rdnas.MarginSubnetSampler(rdnas.sample_nb201, rdnas.group_distance, 6.7, random.Random(0))
    assert all(rdnas.group_distance(*s()) > 6.7 for _ in range(200)) and s.fallbacks == 0
    seen = []
    distance = lambda a, b: seen.append(rdnas.group_distance(a, b)) or seen[-1]
    impossible = rdnas.MarginSubnetSampler(rdnas.sample_nb201, distance, 12.0, random.Random(0), n=4, max_tries=3)
    pair = impossible()                        # 12 = 6 x 2 is the largest Group distance: no pair exceeds it
    assert impossible.fallbacks == 1 and len(seen) == 12 and rdnas.group_distance(*pair) == max(seen)

# ---- Margin ranking loss (Sec. 2.2.1, Eq. 3) ----
def test_margin_ranking_loss_equals_torch_off_ties_is_zero_on_ties_and_pushes_the_preferred_ce_down():
    g = torch.Generator().manual_seed(0)
    ce_i, ce_j, s_i = torch.rand(60, generator=g), torch.rand(60, generator=g), torch.rand(60, generator=g)
    s_j = torch.where(torch.arange(60) % 4 == 0, s_i, torch.rand(60, generator=g))        # every 4th pair a tie
    y = torch.sign(s_j - s_i)
    for m in (0.0, 0.1, 0.5):
        ref = nn.MarginRankingLoss(margin=m, reduction="none")(ce_i, ce_j, y) * (y != 0)
        torch.testing.assert_close(rdnas.margin_ranking_loss(ce_i, ce_j, s_i, s_j, m), ref.mean())
    ce_i, ce_j = torch.tensor(1.0, requires_grad=True), torch.tensor(1.2, requires_grad=True)
    loss = rdnas.margin_ranking_loss(ce_i, ce_j, 0.0, 1.0, 0.1)            # the teacher prefers a_j
    loss.backward()
    assert loss.item() == pytest.approx(0.1 - (1.0 - 1.2)) and ce_i.grad < 0 < ce_j.grad   # descent lowers L_ce(a_j)

def test_rd_lambda_is_the_authors_schedule():
    assert rdnas.rd_lambda(0, 100) == 0.0 and rdnas.rd_lambda(62.5, 100) == pytest.approx(2.0)
    assert rdnas.rd_lambda(100, 100) == pytest.approx(2 * math.sin(0.8 * math.pi))

# ---- One-shot training steps: SPOS, FairNAS, Sandwich and RD-NAS (Sec. 2.2, Tables 1, 2 and 4) ----
def test_fairnas_uses_each_op_once_per_edge_and_sandwich_the_largest_smallest_and_random(batch16):
    _, archs = rdnas.fairnas_step(NB201Supernet(C=4, N=1), *batch16, OPS, random.Random(0))
    assert len(archs) == 5 and all(sorted(a[e] for a in archs) == sorted(OPS) for e in range(6))
    rng = random.Random(0)
    _, archs = rdnas.sandwich_step(NB201Supernet(C=4, N=1), *batch16, rdnas.LARGEST_NB201, rdnas.SMALLEST_NB201,
                                   lambda: rdnas.sample_nb201(rng), n_random=3)
    costs = [rdnas.arch_cost(a) for a in rdnas.all_archs() if is_connected(a)]   # all-none is cheaper but carries no signal
    assert len(archs) == 5 and rdnas.arch_cost(archs[0]) == max(costs) and rdnas.arch_cost(archs[1]) == min(costs)

@pytest.mark.parametrize("method, sampler", [("spos", "group"), ("fairnas", "group"), ("sandwich", "group"),
                                             ("rd", "none"), ("rd", "hamming"), ("rd", "group")])
def test_every_method_takes_optimizer_steps(method, sampler, batch16):
    torch.manual_seed(0)
    rng, net = random.Random(0), NB201Supernet(C=4, N=1)
    cfg = dataclasses.replace(rdnas.Config(), method=method, sampler=sampler)
    sampler_ = rdnas.MarginSubnetSampler(rdnas.sample_nb201, rdnas.DISTANCES[sampler], rdnas.MU.get(sampler, 0), rng)
    space = rdnas.Space(net, None, lambda: rdnas.sample_nb201(rng), rdnas.LARGEST_NB201, rdnas.SMALLEST_NB201, sampler_,
                        rdnas.Teacher(lambda a: rdnas.arch_cost(a, 4, 1, 10, 8)[0]))
    opt, before = torch.optim.SGD(net.parameters(), lr=0.05), [p.detach().clone() for p in net.parameters()]
    for _ in range(2):
        opt.zero_grad()
        out, archs = rdnas.method_step(cfg, space, rng, *batch16, 1.0)
        opt.step()
    assert math.isfinite(out["loss"]) and 0 <= out["correct"] <= 16
    assert len(archs) == dict(spos=1, fairnas=5, sandwich=4, rd=2)[method]
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
    assert method != "rd" or sampler == "none" or rdnas.DISTANCES[sampler](*archs) > rdnas.MU[sampler]

def test_the_ranking_gradient_reaches_both_subnets_of_the_pair(batch16):
    a_i, a_j, grads = ("nor_conv_3x3",) * 6, ("nor_conv_1x1",) * 6, []     # the FLOPs teacher prefers a_i
    for lam in (0.0, 1.0):                                                   # the difference: the ranking term's gradient
        torch.manual_seed(0)
        net = NB201Supernet(C=4, N=1)
        rdnas.rd_step(net, *batch16, lambda: (a_i, a_j), rdnas.Teacher(lambda a: rdnas.arch_cost(a)[0]), lam, 10.0)
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    reaches = lambda op: max((grads[1][n] - grads[0][n]).abs().max().item() for n in grads[0] if f".{op}." in n) > 1e-6
    assert reaches("nor_conv_1x1") and reaches("nor_conv_3x3")

# ---- Ranking metrics (Sec. 2.1 and 3.2) ----
def test_rank_metrics_equal_scipy_rank_nan_and_minus_inf_last_and_cpr_is_hand_worked():
    rng = np.random.default_rng(0)
    true = rng.normal(size=200)
    pred = true + rng.normal(size=200)
    m = rdnas.rank_metrics(pred, true)
    assert m["tau"] == pytest.approx(stats.kendalltau(pred, true).statistic) and m["cpr"] == pytest.approx((1 + m["tau"]) / 2)
    assert m["r"] == pytest.approx(stats.pearsonr(pred, true).statistic)
    assert m["rho"] == pytest.approx(stats.spearmanr(pred, true).statistic)
    pred[:5], pred[5:9] = np.nan, -np.inf
    low = np.where(np.isfinite(pred), pred, pred[np.isfinite(pred)].min() - 1)
    assert rdnas.rank_metrics(pred, true)["tau"] == pytest.approx(stats.kendalltau(low, true).statistic)
    # pairs (0,1): (1-3)(1-2) > 0 yes; (0,2): (1-2)(1-3) > 0 yes; (1,2): (3-2)(2-3) < 0 no -> 2/3; ties never count
    assert rdnas.concordant_pair_ratio([1, 3, 2], [1, 2, 3]) == pytest.approx(2 / 3)
    assert rdnas.concordant_pair_ratio([1, 1, 1], [1, 2, 3]) == 0.0 == rdnas.concordant_pair_ratio([3, 2, 1], [1, 2, 3])
    # tau within the teacher's ties: pairs (0,1) +1, (2,3) -1, (2,4) -1, (3,4) -1 -> -2 / sqrt(4 * 4)
    assert rdnas.rank_metrics([1, 2, 3, 0, 4], [10, 20, 5, 30, 1], [0.7, 0.7, 0.3, 0.3, 0.3])["tau_ties"] == -0.5
    assert rdnas.rank_metrics(pred, true, [1] * 200)["tau_ties"] == pytest.approx(stats.kendalltau(low, true).statistic)
    assert all(math.isnan(v) for v in rdnas.rank_metrics([1.0], [2.0], [3.0]).values())   # one arch: undefined
    copy_, teacher = rdnas.rank_metrics(np.round(true), true, np.round(true)), rdnas.rank_metrics(true, true, np.round(true))
    assert copy_["tau_ties"] == 0.0 < teacher["tau_ties"]          # a copy of its teacher ranks nothing within its ties

# ---- Ranking evaluation (Sec. 3.2: 200 random subnets against the ground truth) ----
def test_subnet_accuracy_uses_batch_statistics_or_recalibrates_them_and_ranking_checks_the_table_first(monkeypatch):
    torch.manual_seed(0)
    sn, x, y, arch = NB201Supernet(C=4, N=1), torch.randn(40, 3, 8, 8), torch.randint(10, (40,)), random_archs(1, 3)[0]
    loader, recal = rdnas.Loader(x, y, 16), lambda: rdnas.Loader(x, y, 8, False, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = 100 * sum((sn.train()(xb, arch).argmax(1) == yb).sum().item() for xb, yb in loader) / 40
    assert rdnas.subnet_accuracy(sn, arch, loader, "train")[0] == expected
    first = rdnas.subnet_accuracy(sn, arch, loader, "recal", recal(), 2)
    for m in sn.modules():                          # recalibration forgets the running statistics it found
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(3.0), m.running_var.fill_(9.0)
    assert rdnas.subnet_accuracy(sn, arch, loader, "recal", recal(), 2)[0] == first[0]
    record = rdnas.evaluate_ranking(sn, archs := random_archs(12, 2), rdnas.Loader(x, y, 20), rdnas.Config())   # split-half
    halves = [[rdnas.subnet_accuracy(sn, a, [(x[k:k + 20], y[k:k + 20])])[0] for a in archs] for k in (0, 20)]
    assert record["split_half_images"] == 20 and record["split_half_tau"] == pytest.approx(stats.kendalltau(*halves).statistic)
    archs, calls = random_archs(3, seed=5), []       # an arch without ground truth is refused before any ranking
    monkeypatch.setattr(rdnas, "subnet_accuracy", lambda *a: calls.append(a) or 50.0)
    with pytest.raises(UserError, match="no entry for arch"):
        rdnas.evaluate_ranking(None, archs, None, rdnas.Config(), table={arch_to_str(a): 1.0 for a in archs[:2]})
    assert calls == []

# ---- Config ----
def test_a_device_this_machine_lacks_is_refused(monkeypatch):
    assert rdnas.get_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rdnas.get_device("auto") == torch.device("cpu") or torch.backends.mps.is_available()
    with pytest.raises(UserError, match="--device cuda: this machine has none"):
        rdnas.get_device("cuda")

# ---- The NAS-Bench-201 run (--mode train): Part I's pieces, wired ----
REF = ["--preset", "tiny", "--epochs", 3, "--eval-every", 2, "--eval-archs", 6, "--bn", "recal"]

@pytest.fixture(scope="module")
def gt(tmp_path_factory):
    """A ground truth `arch,accuracy` for the tiny preset: FLOPs plus noise on 60-odd random archs."""
    path, rng = tmp_path_factory.mktemp("gt") / "gt.csv", np.random.default_rng(0)
    rows = [f"{arch_to_str(a)},{rdnas.arch_cost(a, 4, 1, 10, 8)[0] + rng.normal()}" for a in set(random_archs(64))]
    path.write_text("arch,accuracy\n" + "\n".join(rows) + "\n")
    return str(path)

@pytest.fixture(scope="module")
def reference(tmp_path_factory, gt):
    """An uninterrupted RD run on the tiny preset: (its flags, its folder, its final eval line)."""
    args, out = REF + ["--benchmark", gt], tmp_path_factory.mktemp("reference") / "run"
    return args, out, eval_line(run_main(args + ["--out", out])[1])

def test_smoke_run_prints_the_eval_line_with_the_papers_metrics_and_its_checkpoint_loads_safely(reference):
    args, out, line = reference
    events = [(r["event"], r.get("epoch")) for r in map(json.loads, open(out / "log.jsonl"))]
    assert events == [("config", None), ("epoch", 1), ("epoch", 2), ("eval", 2), ("epoch", 3), ("eval", 3)]
    final = json.load(open(out / "results.json"))["final"]
    ties = [rdnas.arch_cost(str_to_arch(a), 4, 1, 10, 8)[0] for a in final["archs"]]    # tau within the ties of FLOPs
    metrics = rdnas.rank_metrics(final["supernet_acc"], final["gt"], ties)
    assert final["metrics"] == pytest.approx(metrics) and len(final["archs"]) == 6 and "tau_ties" in metrics
    assert line.startswith("eval epoch 3: 6 subnets") and all(f"{k}={100 * v:6.2f}" in line for k, v in metrics.items())
    assert rdnas.load_checkpoint(str(out / "ckpt.pt"), "nb201")["epoch"] == 3      # as --resume and --mode search read it

def test_sigkill_then_resume_gives_the_same_weights_and_eval_line(reference, tmp_path):
    (args, ref, line), out = reference, tmp_path / "killed"
    proc, t = subprocess.Popen([sys.executable, RDNAS] + [str(a) for a in args] + ["--out", str(out)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), time.time()
    while not ((out / "log.jsonl").exists() and '"event": "epoch"' in (out / "log.jsonl").read_text()):
        assert proc.poll() is None and time.time() - t < 120, proc.stderr.read()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL), proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "results.json").exists()     # killed mid-run
    assert eval_line(run_main(args + ["--out", out, "--resume"])[1]) == line
    assert_same_run(ref, out)

@pytest.mark.parametrize("where", ["before the first checkpoint", "while writing a checkpoint", "while ranking"])
def test_a_kill_anywhere_then_resume_is_exact_and_a_fresh_run_there_is_refused(where, reference, tmp_path, monkeypatch):
    (args, ref, line), out = reference, tmp_path / "run"
    def die(*a, **k):
        raise KeyboardInterrupt
    if where == "before the first checkpoint":
        monkeypatch.setattr(rdnas, "save_checkpoint", die)
    elif where == "while writing a checkpoint":       # a torn write of epoch 3's checkpoint: epoch 2's is kept
        save = torch.save
        monkeypatch.setattr(torch, "save", lambda obj, f: f.write(b"torn") and die() if obj["epoch"] == 3 else save(obj, f))
    else:
        monkeypatch.setattr(rdnas, "evaluate_ranking", die)
    with pytest.raises(SystemExit, match="interrupted .*--resume"):
        run_main(args + ["--out", out])
    monkeypatch.undo()
    before = snapshot(out)                             # a fresh run into it stops in one line and changes nothing
    assert "exists" in one_line_error(args + ["--out", out]) and snapshot(out) == before
    assert eval_line(run_main(args + ["--out", out, "--resume"])[1]) == line
    assert_same_run(ref, out)

def test_the_teachers_cache_is_bound_to_the_config_it_scored(tmp_path):
    calls, (a, b) = [], random_archs(2, seed=9)
    teacher = rdnas.Teacher(lambda arch: calls.append(arch) or len(calls))       # each arch scored once
    assert (teacher(a), teacher(b), teacher(a)) == (1, 2, 1) and calls == [a, b] and teacher[arch_to_str(a)] == 1
    args, out = ["--preset", "tiny", "--epochs", 1, "--teacher", "naswot", "--eval-archs", 2], tmp_path / "run"
    run_main(args + ["--out", out])
    cache, cfg = torch.load(out / "ckpt.pt", weights_only=True)["teacher"], rdnas.parse_args([str(a) for a in args])
    net_args = dict(C=cfg.C, N=cfg.N, num_classes=10, resolution=cfg.resolution)
    batch = rdnas.fixed_batch(rdnas.load_dataset(cfg), cfg.proxy_batch, cfg.eval_seed, "cpu")
    assert len(cache) >= 2 and all(score == rdnas.score_arch(rdnas.naswot, str_to_arch(a), net_args, batch, cfg.eval_seed)
                                   for a, score in cache.items())
    os.remove(out / "results.json")                  # as if killed after its last checkpoint
    before = snapshot(out)
    for flag, value in (("--C", 8), ("--N", 2), ("--resolution", 16)):
        assert "another config" in one_line_error(args + ["--out", out, "--resume", flag, value])
    assert snapshot(out) == before

# =====================================================================================================
# Part II: the ResNet-like search space (Sec. 3.1, Table 1; CVPR 2022 NAS Track 1)
# =====================================================================================================

# ---- Search space: ResNet48 ----
def test_resnet48_space_size_is_the_papers_and_random_codes_round_trip():
    per_stage = [sum(len(rdnas.RESNET48_RATIOS) ** d for d in range(rdnas.RESNET48_MIN_DEPTH, m + 1))   # a ratio per block
                 for m in rdnas.RESNET48_MAX_DEPTHS]
    assert per_stage == [19600, 19600, 6725593, 19600] and f"{math.prod(per_stage):.2e}" == "5.06e+19"   # Sec. 3.1
    assert all(len(c) == 52 and rdnas.encode_resnet48_code(rdnas.decode_resnet48_code(c)) == c for c in random_codes(300))
    d = rdnas.decode_resnet48_code(CODE)            # depths 2 5 2 2, stem code 3 (0.9), stage 1: mids 3 1, out 3
    assert [len(s["mid"]) for s in d["stages"]] == [2, 5, 2, 2] and d["stem"] == 0.9
    assert d["stages"][0] == dict(out=0.9, mid=[0.9, 1.0]) and rdnas.resnet48_widths(d)[1][0] == (56, [56, 64])

@needs_shared
def test_track1_codes_round_trip_and_hamming_mu_is_about_their_mean_distance():
    codes = [v["arch"] for v in json.load(open(os.path.join(SHARED, "CVPR_2022_NAS_Track1_test.json"))).values()]
    assert len(codes) == 45000 and all(rdnas.encode_resnet48_code(rdnas.decode_resnet48_code(c)) == c for c in codes)
    pairs = np.random.default_rng(0).choice(codes, (5000, 2))
    assert abs(np.mean([rdnas.hamming_distance(a, b) for a, b in pairs]) - rdnas.RESNET48_HAMMING_MU) < 1.5

put = lambda pos, digits: CODE[:pos] + digits + CODE[pos + len(digits):]      # CODE with digits written at pos

@pytest.mark.parametrize("code", [CODE[:5], CODE + "0", "a" * 52, 12345, None, put(0, "2"), put(1, "6"), put(1, "1"),
                                  put(5, "8"), put(5, "0"), put(10, "13"), put(9, "4"), put(26, "00")])
def test_invalid_codes_raise_value_error(code):
    with pytest.raises(ValueError):
        rdnas.decode_resnet48_code(code)

def sliced_resnet48(sn, code):  # The reference: the stand-alone net of `code` given the first channels of each weight.
    net, own = rdnas.ResNet48Net(code, sn.num_classes, sn.base), sn.state_dict()
    net.load_state_dict({k: own[k][tuple(slice(0, n) for n in v.shape)].clone() for k, v in net.state_dict().items()})
    return net

def test_slimmable_subnet_equals_the_standalone_net_with_the_sliced_weights():
    torch.manual_seed(0)
    base = (16, 32, 64, 128)
    sn, x = rdnas.ResNet48Supernet(num_classes=10, base=base), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for m in sn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.1, 0.1)
    largest = dict(image_size=224, stem=1.0, stages=[dict(out=1.0, mid=[1.0] * m) for m in rdnas.RESNET48_MAX_DEPTHS])
    for code in random_codes(3, seed=5) + [rdnas.encode_resnet48_code(largest)]:
        arch, net = rdnas.decode_resnet48_code(code), sliced_resnet48(sn, code)
        for mode in (False, True):
            sn.train(mode), net.train(mode)
            torch.testing.assert_close(sn(x, arch), net(x), rtol=1e-5, atol=1e-5)
        assert rdnas.resnet48_cost(code, 10, base, 32) == pytest.approx(counted(net, 32))
    assert rdnas.resnet48_cost(code) == pytest.approx(counted(rdnas.ResNet48Net(code), 224))

# ---- ResNet48: teacher, data, distributed training and ranking ----
def test_epoch_seeds_never_collide_across_run_seeds():
    seeds = [rdnas.epoch_seed(s, e) for s in range(30) for e in range(1, 201)]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2 ** 63 for s in seeds)   # seed + epoch: 229 values
    cfg = rdnas.parse_args(["--space", "resnet48", "--preset", "tiny"])
    train_set = rdnas.resnet48_datasets(cfg)[0]
    first = lambda seed, epoch: next(iter(rdnas.resnet48_loader(cfg, train_set, 16, rdnas.epoch_seed(seed, epoch))))[1]
    assert torch.equal(first(0, 2), first(0, 2)) and not torch.equal(first(1, 1), first(0, 2))

@pytest.fixture(scope="module")
def r48(tmp_path_factory):
    out = tmp_path_factory.mktemp("r48") / "run"
    return out, run_main(["--space", "resnet48", "--preset", "tiny", "--out", out])[0]

def test_resnet48_inits_without_pretraining_and_ranks_track1_codes_into_a_submission(r48, tmp_path):
    out, result = r48
    assert len(result["final"]["supernet_acc"]) == 3 and '"stage": "pretrain"' in open(out / "log.jsonl").read()
    init = ["--space", "resnet48", "--preset", "tiny", "--init", out / "ckpt.pt"]       # --init: no pretraining
    text = run_main(init + ["--out", tmp_path / "b"])[1]
    assert "pretrain epoch" not in text and "train epoch 1/1" in text
    assert '"stage": "pretrain"' not in open(tmp_path / "b" / "log.jsonl").read()
    assert "other shapes" in one_line_error(init + ["--base-width", 16, "--out", tmp_path / "c"])
    archs = {f"arch{k}": {"acc": 0.0, "arch": c} for k, c in enumerate(random_codes(4, seed=8))}
    (tmp_path / "archs.json").write_text(json.dumps(archs))
    final = run_main(init + ["--epochs", 0, "--archs", tmp_path / "archs.json", "--out", tmp_path / "r"])[0]["final"]
    sub = json.load(open(tmp_path / "r" / "submission.json"))          # the competition's JSON, `acc` filled in
    assert final["archs"] == [v["arch"] for v in archs.values()] and list(sub) == list(archs)
    assert [sub[k]["acc"] for k in archs] == final["supernet_acc"] and all(sub[k]["arch"] == archs[k]["arch"] for k in sub)

def two_process_runs(out):
    """torchrun --nproc_per_node=2 (gloo) into `out`, then the same with --resume: (out, first, its final, second)."""
    with socket.socket() as sock:                                # a free port, not a fixed one another job may hold
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", RDNAS,
           "--space", "resnet48", "--preset", "tiny", "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    if first.returncode != 0 and "Signal" in first.stderr and not re.search(r"\[rank\d+\]: Traceback", first.stderr):
        # a gloo worker was seen to abort (SIGABRT) on a loaded machine: one fresh try (a Python error is not retried)
        shutil.rmtree(out, ignore_errors=True)
        first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    final = json.load(open(out / "results.json"))["final"] if (out / "results.json").exists() else None
    if final:                                        # as if killed after its last checkpoint
        os.remove(out / "results.json")
    return out, first, final, subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300, env=ENV)

@pytest.fixture(scope="session", autouse=True)
def torchrun(tmp_path_factory, request):
    """The torchrun runs start with the session, in a thread, if selected: their processes use the second core meanwhile."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        selected = any("torchrun" in item.name for item in request.session.items)
        yield pool.submit(two_process_runs, tmp_path_factory.mktemp("ddp") / "run") if selected else None

def test_torchrun_two_processes_train_and_only_rank_0_ranks_and_writes(torchrun):
    out, first, final, _ = torchrun.result()
    assert final is not None and len(final["supernet_acc"]) == 3, first.stderr[-3000:]
    assert first.stdout.count(": 3 subnets, bn=recal") == 1                   # only rank 0 ranks and logs
    assert first.returncode == 0, first.stderr[-3000:]

def test_torchrun_resumes_with_as_many_processes_only(torchrun):
    out, _, final, again = torchrun.result()
    assert again.returncode == 0 and "resumed" in again.stdout, again.stderr[-3000:]
    assert json.load(open(out / "results.json"))["final"] == final           # the same weights rank the same
    os.remove(out / "results.json")
    assert "trained by 2 processes" in one_line_error(["--space", "resnet48", "--preset", "tiny", "--out", out, "--resume"])

# =====================================================================================================
# Part III: plumbing, and the tools that reproduce the tables
# =====================================================================================================

# ---- Plumbing: run folder, checkpoint, resume, input files. A first reading can skip this section ----
@pytest.fixture(scope="module")
def shipped():                   # the shipped NB201 table, column by column
    return {col: rdnas.load_benchmark(SHIPPED, col) for col in list(rdnas.TABLE3_COLUMNS.values()) + ["cifar10-valid_test"]}

def test_shipped_nb201_table_holds_the_published_facts(shipped):
    valid = shipped["cifar10-valid_valid"]
    assert len(valid) == 15625 and max(valid.values()) == pytest.approx(91.6067, abs=1e-4)
    assert valid[BEST_C100] == pytest.approx(91.5533, abs=1e-4)
    dead = {arch_to_str(a) for a in rdnas.all_archs() if not is_connected(a)}    # no path from input to output
    assert len(dead) == 341 and {a for a, v in valid.items() if v < 11} == dead  # exactly those sit at chance (10 %)
    c100 = shipped["cifar100_test"]
    assert max(c100, key=c100.get) == BEST_C100 and c100[BEST_C100] == pytest.approx(73.5133, abs=1e-4)
    optimum = [max(shipped[col].values()) for col in rdnas.TABLE3_COLUMNS.values()]
    assert [round(v, 2) for v in optimum] == [91.61, 94.37, 73.49, 73.51, 46.73, 47.31]      # Table 3's optimum row

@needs_shared
def test_shipped_nb201_table_equals_the_source_tables(shipped):
    read = lambda name, key, col: {r[key]: float(r[col]) for r in csv.DictReader(open(os.path.join(SHARED, name)))}
    nb201 = lambda ds, col: read(f"nb201_{ds}_200ep_train_valid_test.csv", "arch str", f"{col} accuracy")
    nats = read("natsbench_tss_test_acc_200ep_3datasets.csv", "ArchitectureString", "CIFAR10TestAccuracy200Epochs")
    assert shipped["cifar10_test"] == nats
    for ds in ("cifar10-valid", "cifar100", "ImageNet16-120"):
        for col, source in (("valid", "validation"), ("test", "test")):
            assert shipped[f"{ds}_{col}"] == nb201(ds, source), (ds, col)

def test_a_folder_holds_one_run_and_every_write_is_its_own_file_renamed_into_place(reference, tmp_path, monkeypatch):
    args, ref, _ = reference
    cmd = [sys.executable, RDNAS] + [str(a) for a in args] + ["--out", str(tmp_path / "race")]
    procs = [subprocess.Popen(cmd + ["--seed", str(s)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for s in (0, 1)]   # two runs started together into one folder
    errors = sorted(p.communicate()[1] for p in procs)
    log = [json.loads(line) for line in open(tmp_path / "race" / "log.jsonl")]
    assert errors[0] == "" and "exists" in errors[1] and errors[1].count("\n") == 1   # the second: one line, no work
    assert [r["event"] for r in log].count("config") == 1 and (tmp_path / "race" / "results.json").exists()
    assert "not found" in one_line_error(args + ["--out", tmp_path / "free", "--benchmark", tmp_path / "no.csv"])
    assert not (tmp_path / "free" / "log.jsonl").exists()          # a mistake in the inputs leaves the folder free
    shutil.copytree(ref, tmp_path / "run")
    (tmp_path / "run" / "victim").write_text("precious")          # a planted link where the old code wrote its .tmp
    os.symlink(tmp_path / "run" / "victim", tmp_path / "run" / "ckpt.pt.tmp")
    os.remove(tmp_path / "run" / "ckpt.pt")                       # --resume never trains over a finished run
    assert "finished run" in one_line_error(args + ["--out", tmp_path / "run", "--resume"])
    os.remove(tmp_path / "run" / "results.json")
    monkeypatch.setattr(torch, "save", lambda *a: (_ for _ in ()).throw(RuntimeError("[enforce fail] file write failed")))
    assert "could not write" in one_line_error(args + ["--out", tmp_path / "run", "--resume"])   # a full disk
    assert (tmp_path / "run" / "victim").read_text() == "precious" and not glob.glob(str(tmp_path / "run" / "*.pt.*.tmp"))

@pytest.mark.parametrize("damage, says", [
    (lambda c: c["model"], "not an rdnas checkpoint"), (lambda c: [1, 2], "not an rdnas checkpoint"),
    (lambda c: torch.zeros(3), "not an rdnas checkpoint"), (lambda c: dict(c, world=None) and c.pop("world") and c,
                                                            "not an rdnas checkpoint"),
    (lambda c: dict(c, teacher=None), "not an rdnas checkpoint"),
    (lambda c: dict(c, teacher={"a": float("nan")}), "teacher scores"),
    (lambda c: dict(c, model={k: v.float() * float("nan") for k, v in c["model"].items()}), "not all finite"),
    (lambda c: dict(c, model={k: v[:1] if v.dim() else v for k, v in c["model"].items()}), "other shapes"),
    (lambda c: dict(c, config=dict(c["config"], space="resnet48")), "--space resnet48"),
    (lambda c: dict(c, model=Planted()), "refused")],                # weights_only: unpickled, it would end the tests
    ids=["state_dict", "list", "tensor", "no world", "teacher null", "teacher nan", "nan weights", "shapes", "space",
         "planted"])
def test_a_damaged_foreign_or_planted_checkpoint_is_refused_in_one_line_by_every_reader(damage, says, reference, tmp_path):
    args, ref, _ = reference
    shutil.copytree(ref, tmp_path / "run")
    os.remove(tmp_path / "run" / "results.json")
    torch.save(damage(torch.load(ref / "ckpt.pt", weights_only=False)), tmp_path / "run" / "ckpt.pt")
    r48 = ["--space", "resnet48", "--preset", "tiny", "--init", tmp_path / "run" / "ckpt.pt", "--out", tmp_path / "i"]
    for argv in [args + ["--resume"], args + ["--mode", "search"]] + [r48] * (says in ("refused", "not an rdnas checkpoint")):
        assert says in one_line_error(["--out", tmp_path / "run"] + argv)

# ---- Zero-cost proxies of Table 2 and Fig. 1 (any of them is also a teacher: --teacher) ----
@pytest.mark.parametrize("name", list(rdnas.PROXIES))
def test_proxy_leaves_the_network_and_input_untouched_and_is_deterministic(name, batch16):
    x, y = batch16
    torch.manual_seed(0)
    net = NB201Net(("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3", "none"), C=4, N=1).eval()
    state, x0 = copy.deepcopy(net.state_dict()), x.clone()
    s1, s2 = rdnas.PROXIES[name](net, x, y), rdnas.PROXIES[name](net, x, y)
    assert s1 == s2 and isinstance(s1, float) and math.isfinite(s1) and torch.equal(x, x0)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert not net.training and all(p.grad is None for p in net.parameters())

@pytest.mark.parametrize("name", list(rdnas.PROXIES))
def test_the_all_none_arch_ranks_last_and_is_never_nan(name, batch16):
    score = lambda arch: rdnas.score_arch(rdnas.PROXIES[name], arch, dict(C=4, N=1, num_classes=10, resolution=8), batch16)
    # the last arch: a net whose GraSP is negative at this seed and batch
    archs = random_archs(12, seed=2) + [str_to_arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|"
                                                    "avg_pool_3x3~1|avg_pool_3x3~2|")]
    dead, alive = score(("none",) * 6), [score(a) for a in archs]
    assert not math.isnan(dead) and all(dead <= s for s in alive), (dead, min(alive))

def test_snip_and_grasp_equal_plain_reference_computations(batch16):
    x, y = batch16
    torch.manual_seed(1)
    net = NB201Net(("nor_conv_1x1", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "avg_pool_3x3", "nor_conv_1x1"), C=4, N=1)
    ref = copy.deepcopy(net)
    ws = [m.weight for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    g_fixed = torch.autograd.grad(F.cross_entropy(ref(x), y), ws)                   # SNIP: sum |dL/dw * w|
    assert rdnas.snip(net, x, y) == pytest.approx(sum((g * w).abs().sum().item() for g, w in zip(g_fixed, ws)), rel=1e-5)
    g = torch.autograd.grad(F.cross_entropy(ref(x), y), ws, create_graph=True)     # GraSP: -w . Hg, Hg = d(g . g_fixed)/dw
    hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, g_fixed)), ws)
    assert rdnas.grasp(net, x, y) == pytest.approx(-sum((w * h).sum().item() for w, h in zip(ws, hg)), rel=1e-4)

def test_synflow_is_data_free_and_hand_worked_and_naswot_is_minus_inf_for_identical_inputs(batch16):
    x, y = batch16
    torch.manual_seed(0)
    net = NB201Net(("nor_conv_3x3",) * 6, C=4, N=1)
    assert rdnas.synflow(net, x, y) == rdnas.synflow(net, torch.rand_like(x) * 9, y.flip(0))
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        lin[1].weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [-4.0, 5.0, 6.0]]))
    assert rdnas.synflow(lin, torch.zeros(1, 3), None) == pytest.approx(21.0)   # R = sum |w|, dR/dw = 1: sum |w|
    assert math.isfinite(rdnas.naswot(net, x, y)) and rdnas.naswot(net, x[:1].repeat(16, 1, 1, 1), y) == -math.inf

def test_zen_scores_the_network_without_its_shortcuts_and_is_minus_inf_exactly_without_a_path(batch16):
    torch.manual_seed(0)
    nb201, r48 = NB201Net(("nor_conv_3x3",) * 6, C=4, N=1), rdnas.ResNet48Net(random_codes(1, 3)[0], 10, (8, 16, 32, 64))
    for net, x in ((nb201, batch16[0]), (r48, torch.randn(4, 3, 32, 32))):
        calls = []
        for m in net.modules():                          # hooks on every shortcut (they travel with a deepcopy)
            if isinstance(m, (rdnas.ResNetBasicBlock, rdnas.ResNet48Block)):
                for conv in (m.downsample if hasattr(m, "downsample") else m.shortcut or []):
                    conv.register_forward_hook(lambda *a: calls.append(1))
        net(x)
        assert calls
        calls.clear()
        assert rdnas.zen(net, x, None) == rdnas.zen(net, torch.rand_like(x), None) and calls == []   # data-free too
        assert all(m.residual for m in net.modules() if hasattr(m, "residual"))    # the caller's net keeps them
    batch = (torch.zeros(8, 3, 8, 8), torch.zeros(8, dtype=torch.long))
    for arch in random_archs(40, seed=4) + [("none",) * 6, ("skip_connect",) + ("none",) * 5]:
        score = rdnas.score_arch(rdnas.zen, arch, dict(C=4, N=1, num_classes=10, resolution=8), batch)
        assert (score == -math.inf) == (not is_connected(arch)), arch_to_str(arch)
    net, var, f = NB201Net(random_archs(1, 9)[0], C=4, N=1), {}, []   # ZenNAS's formula, from each BN's two inputs
    for k, m in enumerate(m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):   # hooks travel with the deepcopy
        m.register_forward_hook(lambda m, i, o, k=k: var.setdefault(k, []).append(i[0].var((0, 2, 3))))
    net.lastact.register_forward_hook(lambda m, i, o: f.append(o))
    score = rdnas.zen(net, batch16[0], None)        # running var after both passes at momentum 0.1, from 1: all BNs
    bn_term = sum(torch.log((0.81 + 0.09 * v1 + 0.1 * v2).mean().sqrt()) for v1, v2 in var.values())
    assert score == pytest.approx(float(torch.log((f[0] - f[1]).abs().sum((1, 2, 3)).mean()) + bn_term), rel=1e-6)

def test_proxies_mode_scores_against_the_ground_truth_and_never_overwrites(gt, tmp_path):
    argv = ["--mode", "proxies", "--preset", "tiny", "--benchmark", gt, "--eval-archs", 12, "--proxies", "flops,naswot",
            "--out", tmp_path / "p"]
    rows, text = run_main(argv)
    saved, table = json.load(open(tmp_path / "p" / "proxies.json")), rdnas.load_benchmark(gt)
    truth = [table[a] for a in saved["archs"]]
    assert len(truth) == 12 and rows["flops"]["scores"] == [rdnas.arch_cost(str_to_arch(a), 4, 1, 10, 8)[0] for a in
                                                            saved["archs"]]
    for name, row in rows.items():
        assert row["metrics"] == pytest.approx(rdnas.rank_metrics(row["scores"], truth, rows["flops"]["scores"])) \
            == saved["proxies"][name]["metrics"]
        assert f"{100 * row['metrics']['tau']:7.2f}" in text
    before = snapshot(tmp_path / "p")
    assert "proxies.json exists" in one_line_error(argv) and snapshot(tmp_path / "p") == before

# ---- Search with the trained supernet (Table 3) ----
def test_search_scores_exactly_the_budget_of_distinct_archs_and_is_seeded():
    calls = []
    def score(arch):
        calls.append(arch)
        return -rdnas.hamming_distance(arch, ("nor_conv_3x3",) * 6)
    run = lambda: rdnas.evolution_search(score, OPS, 37, 10, 3, 0.2, random.Random(0))
    best, trace = run()
    assert len(calls) == len(trace) == 37 == len(set(calls)) and (best, trace) == (max(trace, key=lambda t: t[1])[0], run()[1])
    best, trace = rdnas.evolution_search(lambda a: a.count("skip_connect"), ("none", "skip_connect"), 65, 8, 3)
    assert len(trace) == 64 and best == ("skip_connect",) * 6        # 2^6 archs: all of them, then it stops

def test_search_mode_looks_the_best_arch_up_and_never_overwrites(reference, shipped, tmp_path):
    shutil.copytree(reference[1], tmp_path / "run")
    tables = {c: shipped[col] for c, col in rdnas.TABLE3_COLUMNS.items()}
    for by in ("flops", "supernet"):
        argv = ["--mode", "search", "--preset", "tiny", "--search-by", by, "--out", tmp_path / "run"]
        row, text = run_main(argv)
        saved = json.load(open(tmp_path / "run" / f"search_evolution_{by}.json"))
        scores = dict(saved["trace"])
        assert len(scores) == 20 and saved["best_score"] == max(scores.values()) == scores[saved["best"]]
        assert row == saved["table3"] == {c: t[saved["best"]] for c, t in tables.items()} and "94.37" in text
        assert by != "flops" or saved["best_score"] == rdnas.arch_cost(str_to_arch(saved["best"]), 4, 1, 10, 8)[0]
        before = snapshot(tmp_path / "run")
        assert "exists" in one_line_error(argv) and snapshot(tmp_path / "run") == before

# ---- Summaries over runs (Tables 2, 3 and 4) and Fig. 1 ----
def test_summarize_averages_per_method_and_budget_and_plots_fig1(reference, gt, tmp_path):
    pytest.importorskip("matplotlib")
    args, ref, _ = reference
    shutil.copytree(ref, tmp_path / "runs" / "rd")
    run_main(args + ["--method", "spos", "--epochs", 2, "--eval-every", 1, "--out", tmp_path / "runs" / "spos"])
    run_main(["--mode", "proxies", "--preset", "tiny", "--proxies", "flops,params", "--benchmark", gt, "--eval-archs", 8,
              "--out", tmp_path / "runs" / "proxies"])
    argv = ["--mode", "summarize", "--runs", tmp_path / "runs" / "*", "--plot", "--out", tmp_path / "summary"]
    summary, text = run_main(argv)
    assert set(summary["ranking"]) == {"rd+group epochs=3", "spos epochs=2"} and set(summary["proxies"]) == {"flops", "params"}
    for name in ("rd", "spos"):                   # one run each: mean +- 0.00
        assert f"{100 * json.load(open(tmp_path / 'runs' / name / 'results.json'))['final']['metrics']['tau']:6.2f}+- 0.00" \
            in text
    assert (tmp_path / "summary" / "fig1_tau.png").read_bytes()[:4] == b"\x89PNG"
    assert "summary.json exists" in one_line_error(argv)

# ---- Command line ----
@pytest.mark.parametrize("argv", [["--C", "0"], ["--lr", "0"], ["--lr", "nan"], ["--batch-size", "-1"], ["--method", "foo"],
                                  ["--eval-archs", "1"], ["--mu", "-2"], ["--resolution", "9"], ["--resolution", "10"],
                                  ["--resolution", "17"], ["--seed", "-1"], ["--seed", str(2 ** 32)], ["--epochs", "-1"],
                                  ["--margin", "inf"], ["--sampler", "far"], ["--space", "darts"], ["--mu", "-0.5"],
                                  ["--device", "gpu9"], ["--device", "CPU"], ["--device", "meta"], ["--plot"],
                                  ["--init", "x.pt"], ["--dataset", "imagenet"], ["--budget", "9"],
                                  ["--mode", "search", "--space", "resnet48"], ["--method", "fairnas", "--space", "resnet48"],
                                  ["--sampler", "group", "--space", "resnet48"]],
                         ids=" ".join)
def test_wrong_flag_values_and_flags_of_other_modes_are_one_line_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        rdnas.main(["--preset", "tiny"] + argv)
    assert e.value.code == 2 and re.search(f": error: (argument )?{argv[0]}", capsys.readouterr().err.splitlines()[-1])

@pytest.mark.parametrize("argv", [["--resolution", 16], ["--resolution", 0], ["--seed", 0], ["--seed", 2 ** 32 - 1],
                                  ["--space", "resnet48", "--resolution", 0]], ids=lambda argv: " ".join(map(str, argv)))
def test_edge_values_of_resolution_and_seed_pass_and_train_or_stop_in_one_line(argv, tmp_path):
    assert getattr(rdnas.parse_args(["--preset", "tiny"] + [str(a) for a in argv]), argv[-2][2:]) == argv[-1]
    try:
        result = run_main(["--preset", "tiny", "--epochs", 1, "--eval-archs", 2, "--out", tmp_path / "r"] + argv)[0]
        assert len((result["final"] if isinstance(result, dict) else result[1])["supernet_acc"]) == 2
    except SystemExit as e:
        assert str(e.code).startswith("rdnas: error:") and "\n" not in str(e.code)

@pytest.mark.parametrize("argv, says", [
    (["--mode", "proxies", "--proxies", "flops,jacov"], "--proxies"), (["--mode", "summarize", "--runs", "{tmp}/no*"], "--runs"),
    (["--benchmark", "{tmp}/nan.csv"], "nan.csv:3: accuracy 'nan'"), (["--benchmark", "{tmp}/inf.csv"], "inf.csv:2: accuracy"),
    (["--benchmark", "{tmp}/twice.csv"], "twice.csv:4: {a} is listed twice (first on line 2)"),
    (["--benchmark", "{tmp}/arch.csv"], "arch.csv:2: malformed arch"), (["--benchmark", "{tmp}/latin1.csv"], "not a readable"),
    (["--benchmark", "{tmp}/empty.csv"], "holds 0 of the archs"), (["--benchmark", "{tmp}/missing.csv"], "not found"),
    (["--benchmark", "{tmp}/fake.csv.gz"], "not a readable"), (["--out", "{tmp}/nan.csv"], "nan.csv: File exists"),
    (["--out", "/proc/rdnas"], "/proc/rdnas"), (["--mode", "summarize", "--runs", "{tmp}/cut"], "not a result of rdnas"),
    (["--mode", "summarize", "--runs", "{tmp}/list"], "results.json: not a result of rdnas"),
    (["--space", "resnet48", "--archs", "{tmp}/twice.json"], "the key 'a' is given twice"),
    (["--space", "resnet48", "--batch-size", "1"], "BatchNorm"), (["--C", "100000"], "out of memory"),
    (["--lr", "1e30"], "diverged at train epoch 1"), (["--batch-size", "512"], "no training step"),
    (["--space", "resnet48", "--batch-size", "512"], "no training step")])
def test_user_mistakes_and_files_that_cannot_be_read_or_written_are_one_line_errors_naming_them(argv, says, tmp_path):
    a, b = arch_to_str(("nor_conv_3x3",) * 6), arch_to_str(("skip_connect",) * 6)
    for name, rows in (("nan", [a + ",91.5", b + ",nan"]), ("inf", [a + ",inf"]), ("twice", [a + ",9", b + ",8", a + ",7"]),
                       ("arch", ["|none~0|,5"]), ("empty", [])):
        (tmp_path / f"{name}.csv").write_text("arch,accuracy\n" + "\n".join(rows) + "\n")
    (tmp_path / "latin1.csv").write_bytes(b"arch,accuracy\n\xff\xfe,1\n")
    (tmp_path / "fake.csv.gz").write_text("arch,accuracy\n")
    for name, text in (("cut", '{"config": {"epo'), ("list", "[]")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
    (tmp_path / "twice.json").write_text('{"a": {"acc": 0, "arch": "%s"}, "a": {"acc": 0, "arch": "%s"}}' % (CODE, CODE))
    argv = [s.format(tmp=tmp_path) for s in argv]
    assert says.format(a=a) in one_line_error(["--preset", "tiny", "--out", tmp_path / "r"] + argv)

def test_help_lists_at_most_40_flags_each_with_its_help_line(capsys):
    with pytest.raises(SystemExit):
        rdnas.main(["--help"])
    out = capsys.readouterr().out
    listed = re.findall(r"^  (--[\w-]+)", out, re.M)                   # one entry per option, after -h, --help
    flags = {"--" + f.name.replace("_", "-"): f.metadata["help"] for f in dataclasses.fields(rdnas.Flags)}
    assert len(listed) <= 40 and sorted(listed) == sorted(name for name, text in flags.items() if text)
    squeeze = lambda s: "".join(s.split())                               # --help wraps lines where it likes
    assert all(squeeze(flags[name]) in squeeze(out) for name in listed)

def test_the_file_runs_pasted_into_a_notebook(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(HERE)                   # a notebook's working directory: next to benchmarks/
    namespace = {"__name__": "notebook"}      # and no __file__
    exec(open(RDNAS).read(), namespace)
    assert capsys.readouterr() == ("", "") and callable(namespace["train_nb201"])   # nothing runs at import
    assert namespace["BENCHMARKS"] == os.path.join(HERE, "benchmarks")
    _, final = namespace["main"](["--preset", "tiny", "--epochs", "1", "--eval-archs", "2", "--out", str(tmp_path / "r")])
    assert len(final["supernet_acc"]) == 2
