#!/usr/bin/env bash
# The paper's NAS-Bench-201 setup (Sec. 3.2, Tables 2-4) on one GPU: CIFAR-10 with NB201's cifar10-valid split, C=16,
# N=5, NB201's weight-sharing recipe for 250 epochs (the authors' scripts; the paper gives no number), 200 ranked
# subnets against the shipped ground truth, 3 seeds per row. Usage: DATA=./data bash run_nb201.sh
# Started again, every run continues where it stopped (--resume); a finished run, search or table is kept, not redone.
set -euo pipefail
DATA=${DATA:-data}
SEEDS=${SEEDS:-"0 1 2"}
once() { [ -f "$1" ] || "${@:2}"; }    # run the command unless its result file exists
train() { once "$1/results.json" python rdnas.py --space nb201 --preset paper --data "$DATA" --eval-every 10 --resume \
            --out "$1" --seed "$seed" "${@:2}"; }

for seed in $SEEDS; do
  # Table 4: SPOS ("Random"), RD, RD + Hamming, RD + Group (RD-NAS); Table 2: FairNAS and the untrained supernet
  train "runs/nb201-spos-s$seed" --method spos
  train "runs/nb201-rd-s$seed" --method rd --sampler none
  train "runs/nb201-rd-hamming-s$seed" --method rd --sampler hamming
  train "runs/nb201-rd-group-s$seed" --method rd --sampler group
  train "runs/nb201-fairnas-s$seed" --method fairnas
  train "runs/nb201-random-s$seed" --method spos --epochs 0
  # Table 3: evolution (1000 archs) with each trained supernet, and the zero-shot NASWOT search
  for run in spos rd-group; do
    once "runs/nb201-$run-s$seed/search_evolution_supernet.json" \
      python rdnas.py --mode search --seed "$seed" --data "$DATA" --out "runs/nb201-$run-s$seed"
  done
  once "runs/nb201-naswot-s$seed/search_evolution_naswot.json" \
    python rdnas.py --mode search --search-by naswot --seed "$seed" --data "$DATA" --out "runs/nb201-naswot-s$seed"
done
# Table 2 (top rows): the zero-cost proxies on the same 200 archs; then every table and Fig. 1
once runs/nb201-proxies/proxies.json python rdnas.py --mode proxies --data "$DATA" --out runs/nb201-proxies
python rdnas.py --mode summarize --runs "runs/nb201-*" --plot --out "runs/summary-$(date +%Y%m%d-%H%M%S)"
