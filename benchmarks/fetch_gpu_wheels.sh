#!/usr/bin/env bash
# Fetches, on a networked machine, the Python 3.12 x86-64 wheels that the GPU
# image lacks (../shared/GPU_NOTES.md) into .whl/ at the repo root (git-ignored),
# for benchmarks/gpu_check.sh to install there without a network.
#
#   bash benchmarks/fetch_gpu_wheels.sh        # from anywhere; about 10 MB, a minute
#
# The list is the closure of what rstar_jax imports that the image does not
# hold: the seven packages GPU_NOTES names plus their own requirements missing
# there (dm-tree, promise, simple-parsing, ...), at the versions setup.py pins
# (the set the tests run against). --no-deps everywhere: the image's numpy,
# protobuf and friends stay as they are. promise ships only as a source
# archive; it is pure Python, so it is built into a py3-none-any wheel here.
# Each run empties .whl/ first: two versions of one package stop pip's install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl

WHEELS=(
  omegaconf==2.4.0 math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
  grain==0.2.18 tensorflow-datasets==4.9.10 array-record==0.8.6
  dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 docstring-parser==0.18.0
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 termcolor==3.3.0 toml==0.10.2
  portpicker==1.6.0 tensorboardX==2.6.5
)
SDISTS=(promise==2.3)   # pure Python, no wheel published

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${WHEELS[@]}"
"$PY" -m pip wheel --quiet --no-deps --no-binary=:all: -w "$DEST" "${SDISTS[@]}"
for w in "$DEST"/promise-*.whl; do
  case "$w" in *-py3-none-any.whl|*-py2.py3-none-any.whl) ;; *) echo "fetch_gpu_wheels: $w is not pure Python" >&2; exit 1;; esac
done
rm -f "$DEST"/*.tar.gz
# One wheel per package, each one we asked for.
names=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z_.' 'a-z--' | sort)
dups=$(echo "$names" | uniq -d)
[ -z "$dups" ] || { echo "fetch_gpu_wheels: two wheels of: $dups" >&2; exit 1; }
want=$(( ${#WHEELS[@]} + ${#SDISTS[@]} ))
have=$(echo "$names" | wc -l)
[ "$have" -eq "$want" ] || { echo "fetch_gpu_wheels: $have wheels in $DEST, expected $want" >&2; exit 1; }
echo "fetch_gpu_wheels: $have wheels in $DEST ($(du -sh "$DEST" | cut -f1)); carry it to the device run (carry: [\".whl\"])"
