# Sourced by install.sh, test.sh and demo.sh: chooses the Python environment cctrnet lives in, puts it first
# on PATH (so python and the cctr_* commands are its own) and sets CCTR_PYTHON to its interpreter.
# An active virtual environment, or an active conda environment other than base, is used as it is;
# otherwise the project's own environment ./.venv (CCTR_VENV=PATH to keep it elsewhere), created on first use.
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
  CCTR_PYTHON="$VIRTUAL_ENV/bin/python"
  CCTR_ENVIRONMENT="the active virtual environment $VIRTUAL_ENV"
elif [ -n "${CONDA_PREFIX:-}" ] && [ "${CONDA_DEFAULT_ENV:-base}" != "base" ]; then
  CCTR_PYTHON="$CONDA_PREFIX/bin/python"
  CCTR_ENVIRONMENT="the active conda environment $CONDA_DEFAULT_ENV"
else
  cctr_venv="${CCTR_VENV:-$PWD/.venv}"
  if [ ! -x "$cctr_venv/bin/python" ]; then
    echo "creating the project environment $cctr_venv (python3 -m venv; activate another environment to use that instead)"
    python3 -m venv "$cctr_venv" || {
      echo "error: could not create $cctr_venv; install Python's venv module (Debian: apt-get install python3-venv) or activate an environment and run again" >&2
      exit 1
    }
  fi
  export VIRTUAL_ENV="$cctr_venv"
  export PATH="$cctr_venv/bin:$PATH"
  CCTR_PYTHON="$cctr_venv/bin/python"
  CCTR_ENVIRONMENT="the project environment $cctr_venv"
fi
export CCTR_PYTHON CCTR_ENVIRONMENT
