# Sourced by the GPU scripts (tools/gpu_check.sh, tools/gpu_adapt.sh) on a lent GPU machine:
# $OUT made, unbuffered Python, the wheels the machine lacks (.whl/, carried) installed into
# /tmp/site, and this checkout first on PYTHONPATH.
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
