# Shared by the scripts: create .venv with the project and its dev extras when missing or when
# pyproject.toml changed since the last install. Needs only python3 (>= 3.11) and pip.
VENV="${KLEDGER_VENV:-$PWD/.venv}"
PY="${PYTHON:-python3}"

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -c 'import sys; assert sys.version_info >= (3, 11), "kledger needs Python >= 3.11"'
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.install-stamp"
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== installing kledger and its dev tools into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    echo "$want" > "$stamp"
  fi
}
