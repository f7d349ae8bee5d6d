# Shared by the scripts: create .venv with the project and its dev extras when missing or when
# pyproject.toml, setup.py or a C source changed since the last install.
# Needs only python3 (>= 3.11), pip and a C compiler (the native build, setup.py).
VENV="${KLEDGER_VENV:-$PWD/.venv}"
PY="${PYTHON:-python3}"

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -c 'import sys; assert sys.version_info >= (3, 11), "kledger needs Python >= 3.11"'
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.install-stamp"
  local want
  # What the install depends on: the metadata, and the native build's sources (a changed C file
  # must be recompiled, or the tests would run the old extension).
  want=$(cat pyproject.toml setup.py node/*/*.c | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== installing kledger and its dev tools into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    echo "$want" > "$stamp"
  fi
}
