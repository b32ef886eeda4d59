#!/usr/bin/env bash
# Rebuild everything under assets/ from scratch, deterministically (same seed, same CPU build of
# torch → same files): synthetic data with 40 % per-image noise → DisNCL training → evaluation →
# ONNX bundle → FAISS gallery of the test split with the training-pair scores attached.
# Takes about 5 minutes on a 2-core CPU.  Usage: bash assets/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rm -rf assets/data assets/bundle assets/gallery assets/training
python -m disncl synth --out assets/data --n-train 600 --n-val 150 --n-test 250 --image-size 32 --seed 0 --no-progress
python -m disncl train --config assets/demo.yaml --out "$work/run" --no-progress
python -m disncl eval "$work/run" --no-progress
python -m disncl export --run "$work/run" --out assets/bundle --no-progress
python -m disncl index --bundle assets/bundle --captions assets/data/test.csv \
  --pair-scores "$work/run/pair_scores.csv" --out assets/gallery --no-progress
mkdir -p assets/training
cp "$work/run/config.yaml" "$work/run/log.jsonl" "$work/run/eval_test_best.json" assets/training/
# Validation served its purpose during training; the app shows train (explorer) and test (search).
rm -rf assets/data/images/val assets/data/val.csv assets/data/factors_val.npz
du -sh assets
