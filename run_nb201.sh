#!/usr/bin/env bash
# The paper's NAS-Bench-201 setup (Sec. 3.2, Tables 2-4) on one GPU: CIFAR-10 (cifar10-valid protocol),
# C=16, N=5, NB201's weight-sharing recipe for 250 epochs (the authors' scripts; the paper gives no number),
# 200 ranked subnets, 3 seeds per row.
# Usage: DATA=./data bash run_nb201.sh   (DATA holds cifar-10-batches-py/; BENCH defaults to the shipped table)
# Each run resumes where it stopped if the script is started again.
set -euo pipefail
DATA=${DATA:-data}
BENCH=${BENCH:-benchmarks/nb201.csv.gz}
SEEDS=${SEEDS:-"0 1 2"}
common="--space nb201 --preset paper --dataset cifar10 --data $DATA --benchmark $BENCH --eval-every 10"
# --resume where a run folder already holds a checkpoint (rdnas refuses --resume on a folder without one)
resume() { [ -f "$1/ckpt.pt" ] && echo --resume || true; }

for seed in $SEEDS; do
  # Table 4 rows: SPOS ("Random"), RD, RD + Hamming, RD + Group (full RD-NAS); Table 2: FairNAS
  python rdnas.py $common --seed "$seed" --method spos                      --out "runs/nb201-spos-s$seed" $(resume "runs/nb201-spos-s$seed")
  python rdnas.py $common --seed "$seed" --method rd --sampler uniform      --out "runs/nb201-rd-s$seed" $(resume "runs/nb201-rd-s$seed")
  python rdnas.py $common --seed "$seed" --method rd --sampler hamming      --out "runs/nb201-rd-hamming-s$seed" $(resume "runs/nb201-rd-hamming-s$seed")
  python rdnas.py $common --seed "$seed" --method rd --sampler group --plot --out "runs/nb201-rd-group-s$seed" $(resume "runs/nb201-rd-group-s$seed")
  python rdnas.py $common --seed "$seed" --method fairnas                   --out "runs/nb201-fairnas-s$seed" $(resume "runs/nb201-fairnas-s$seed")
  # Table 2's "Random" row: the same supernet ranked untrained
  python rdnas.py $common --seed "$seed" --method spos --epochs 0           --out "runs/nb201-random-s$seed" $(resume "runs/nb201-random-s$seed")
  # Table 3: search each trained supernet (evolution, 1000 archs), and the zero-shot NASWOT-style baseline
  for run in spos rd-group; do
    python rdnas.py --mode search --seed "$seed" --data "$DATA" --benchmark "$BENCH" --budget 1000 \
      --population 50 --topk 10 --out "runs/nb201-$run-s$seed"
  done
  python rdnas.py --mode search --search-by naswot --seed "$seed" --dataset cifar10 --data "$DATA" \
    --benchmark "$BENCH" --budget 1000 --population 50 --topk 10 --out "runs/nb201-naswot-s$seed"
done
# Table 2 (top rows): the zero-cost proxies on the same 200 archs
python rdnas.py --mode proxies --dataset cifar10 --data "$DATA" --benchmark "$BENCH" --out runs/nb201-proxies
python rdnas.py --mode summarize --runs "runs/nb201-*" --benchmark "$BENCH" --out runs/nb201-summary
