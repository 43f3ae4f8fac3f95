#!/usr/bin/env bash
# Makes the Python the interop tests talk to: a virtualenv with Twisted and its TLS extras,
# and `websockets` (the WebSocket peer of torsion-tokio's example), from PyPI, at
# $TORSION_INTEROP_VENV (default ~/.cache/torsion-interop-venv), kept between runs. Prints
# the line that points the tests at it:
#
#     eval "$(tests/interop/setup.sh)"      # then: cargo test --workspace
#
# .ci/run does the same. Needs python3 with venv (Debian: apt-get install python3-venv).
set -euo pipefail
venv="${TORSION_INTEROP_VENV:-$HOME/.cache/torsion-interop-venv}"
if ! "$venv/bin/python" -c "import twisted, OpenSSL, service_identity, websockets" >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'twisted[tls]' websockets </dev/null >&2
fi
echo "export TORSION_INTEROP_PYTHON=$venv/bin/python"
