#!/usr/bin/env bash
# Make the demo's dataset available and print its name on stdout (messages go to stderr).
# Order: Debian's package (installed when running as root), the user's cache or the
# official download (vaelab verifies its sha256), else the bundled mnist-5k subset.
set -u
PY=${PY:-.venv/bin/python}
deb=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$deb" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "get_data: installing Debian's dataset-fashion-mnist" >&2
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >&2 || true
fi
if [ -f "$deb" ]; then echo fashion-mnist; exit 0; fi
if "$PY" -c "from vaelab.data import load_dataset; load_dataset('fashion-mnist')" >&2; then
  echo fashion-mnist; exit 0
fi
echo "get_data: Fashion-MNIST is not available (no Debian package, no download); falling back to mnist-5k" >&2
echo mnist-5k
