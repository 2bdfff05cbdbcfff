#!/usr/bin/env bash
# `make demo`: run the text-to-video example DAG end to end on an embedded SQLite Airflow.
# Uses the local NanoGPT simulator (no key, no spend) unless NANOGPT_API_KEY is set.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

export AIRFLOW_HOME="$ROOT/.airflow/demo"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/example_dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=4
export AIRFLOW_VAR_NANOGPT_OUTPUT_DIR="$ROOT/output"
mkdir -p "$AIRFLOW_HOME" "$AIRFLOW_VAR_NANOGPT_OUTPUT_DIR"

SIM_PID=""
cleanup() { if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

if [ -n "${NANOGPT_API_KEY:-}" ]; then
  echo "NANOGPT_API_KEY is set: using the real NanoGPT API (this generation is charged)."
  export AIRFLOW_CONN_NANOGPT_DEFAULT="$(python -c 'import json,os; print(json.dumps({"conn_type":"nanogpt","password":os.environ["NANOGPT_API_KEY"],"host":os.environ.get("NANOGPT_BASE_URL","https://nano-gpt.com")}))')"
else
  PORT="$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  SIM_KEY="sk-nano-demo-$(python -c 'import uuid; print(uuid.uuid4())')"
  LOG="$AIRFLOW_HOME/simulator.log"
  NANOGPT_SIM_API_KEY="$SIM_KEY" python -m airflow_provider_nanogpt.simulator \
    --host 127.0.0.1 --port "$PORT" --time-scale 0.25 --status-shape flat >"$LOG" 2>&1 &
  SIM_PID=$!
  for _ in $(seq 1 100); do grep -q "listening" "$LOG" 2>/dev/null && break; sleep 0.1; done
  grep -q "listening" "$LOG" || { echo "The simulator did not start:"; cat "$LOG"; exit 1; }
  echo "NanoGPT simulator running on http://127.0.0.1:$PORT (no key, no spend)."
  export AIRFLOW_CONN_NANOGPT_DEFAULT="{\"conn_type\": \"nanogpt\", \"password\": \"$SIM_KEY\", \"host\": \"http://127.0.0.1:$PORT\"}"
fi

echo "Initialising the SQLite metadata DB in $AIRFLOW_HOME ..."
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log"; exit 1; }

echo "Running example_nanogpt_text_to_video with 'airflow dags test' ..."
airflow dags test example_nanogpt_text_to_video 2>&1 | tee "$AIRFLOW_HOME/dags-test.log" | grep -E "NanoGPT|Submitted|ready|Saved|ERROR|Error|state=" || true
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ] || ! grep -q "Saved the video to" "$AIRFLOW_HOME/dags-test.log"; then
  echo "The demo DAG did not succeed; full log: $AIRFLOW_HOME/dags-test.log"
  exit 1
fi
VIDEO="$(grep -o 'Saved the video to [^ ]*' "$AIRFLOW_HOME/dags-test.log" | tail -1 | sed 's/Saved the video to //')"
echo
echo "Done. The video was written to: $VIDEO"
