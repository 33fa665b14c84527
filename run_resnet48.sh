#!/usr/bin/env bash
# The paper's ResNet-like setup (Sec. 3.1, Table 1): the ResNet48 supernet on ImageNet, 8 GPUs under torchrun.
# Stage 1: 90 epochs of SPOS pre-training; stage 2: 70 epochs of RD-NAS (Hamming margin sampler, FLOPs teacher),
# lr 0.001, global batch 256, SGD momentum 0.9. Then the 45,000 competition archs are ranked into $OUT-track1/submission.json.
# Usage: DATA=/path/to/imagenet ARCHS=CVPR_2022_NAS_Track1_test.json bash run_resnet48.sh (started again, it resumes)
set -euo pipefail
DATA=${DATA:?set DATA to an ImageNet folder with train/ and val/ (ImageFolder layout)}
ARCHS=${ARCHS:?set ARCHS to the competition JSON (CVPR_2022_NAS_Track1_test.json)}
GPUS=${GPUS:-8}
OUT=${OUT:-runs/resnet48-rd-hamming}
[ -f "$OUT/results.json" ] || torchrun --nproc_per_node="$GPUS" rdnas.py --space resnet48 --preset paper --data "$DATA" \
  --out "$OUT" --resume
# the trained supernet (--init, no more training) ranks the competition's archs, one process: Track 1's submission.json
[ -f "$OUT-track1/results.json" ] || python rdnas.py --space resnet48 --preset paper --data "$DATA" --init "$OUT/ckpt.pt" \
  --epochs 0 --archs "$ARCHS" --out "$OUT-track1" --resume
