#!/usr/bin/env bash
# selftest.sh - check the SIPp scenarios against each other, without vpbx:
# each UAC scenario calls a matching UAS scenario directly on 127.0.0.1 (random
# high ports), one call per pair, every run bounded by -timeout. Exit 0 when
# every pair passes on both sides.
#
# Usage: sipp-scenarios/selftest.sh [pair-name...]
# UDP only: over TCP a SIPp UAC closes its connection when its last call ends,
# which aborts the UAS's call during its timewait (SIPp 3.6), so SIPp-to-SIPp
# over TCP reports false failures. Through vpbx, which keeps its connection to
# the UAS, the same scenarios work over TCP.
set -uo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
TRANSPORT=u1
command -v sipp >/dev/null || { echo "selftest: sipp not found (Debian package sip-tester)" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sipp-selftest.XXXXXX")

# name | expect (pass|fail) | UAC scenario | UAC extra args | UAS scenario | UAS extra args
# The "fail" pairs check that a scenario rejects what it must reject.
PAIRS=(
  "call|pass|uac_call.xml|-d 200|uas_answer.xml|-d 100"
  "call_hold0|pass|uac_call.xml||uas_answer.xml|"
  "callee_bye|pass|uac_callee_bye.xml||uas_answer_bye.xml|-d 200"
  "cancel|pass|uac_cancel.xml||uas_noanswer.xml|"
  "cancel_race|pass|uac_cancel_race.xml||uas_cancel_race.xml|"
  "busy|pass|uac_expect_486.xml||uas_busy.xml|"
  "reject_404|pass|uac_expect_404.xml||uas_reject_404.xml|"
  "reject_480|pass|uac_expect_480.xml||uas_reject_480.xml|"
  "reject_503|pass|uac_expect_503.xml||uas_reject_503.xml|"
  "overload_503|pass|uac_expect_503_retry_after.xml||uas_overload.xml|"
  "reinvite|pass|uac_reinvite.xml|-d 100|uas_reinvite.xml|"
  "options|pass|uac_options.xml||uas_options.xml|"
  "neg_wrong_status|fail|uac_expect_404.xml||uas_busy.xml|"
  "neg_no_retry_after|fail|uac_expect_503_retry_after.xml||uas_reject_503.xml|"
  "neg_cancel_answered|fail|uac_cancel.xml||uas_cancel_race.xml|"
)

free_port() { # a random high UDP+TCP port nobody listens on
  local p
  while :; do
    p=$(shuf -i 20000-59999 -n 1)
    ss -Hlnu "sport = :$p" | grep -q . && continue
    ss -Hlnt "sport = :$p" | grep -q . && continue
    echo "$p"; return
  done
}

fail=0
for pair in "${PAIRS[@]}"; do
  IFS='|' read -r name expect uac uac_args uas uas_args <<< "$pair"
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  uas_port=$(free_port); uac_port=$(free_port)
  run="$WORK/$name"; mkdir -p "$run"
  # shellcheck disable=SC2086 # the extra args are meant to split
  (cd "$run" && exec sipp -sf "$DIR/$uas" -t "$TRANSPORT" -i 127.0.0.1 -p "$uas_port" \
      -mp "$(free_port)" -m 1 -timeout 30s -timeout_error -nostdin \
      -trace_err -error_file "$run/uas_errors.log" $uas_args) > "$run/uas.out" 2>&1 &
  uas_pid=$!
  for _ in $(seq 50); do
    ss -Hlnut "sport = :$uas_port" | grep -q . && break; sleep 0.1
  done
  if ! kill -0 "$uas_pid" 2>/dev/null; then
    echo "FAIL $name (UAS did not start; see $run/uas.out)"; fail=1; continue
  fi
  # shellcheck disable=SC2086
  (cd "$run" && exec sipp "127.0.0.1:$uas_port" -sf "$DIR/$uac" -t "$TRANSPORT" -s 74951234567 \
      -i 127.0.0.1 -p "$uac_port" -mp "$(free_port)" -m 1 -timeout 30s -timeout_error \
      -nostdin -trace_err -error_file "$run/uac_errors.log" $uac_args) > "$run/uac.out" 2>&1
  uac_rc=$?
  wait "$uas_pid"; uas_rc=$?
  if [ "$uac_rc" = 0 ] && [ "$uas_rc" = 0 ]; then got=pass; else got=fail; fi
  if [ "$got" = "$expect" ]; then
    echo "PASS $name (calls ${got}ed as expected)"
  else
    echo "FAIL $name (expected the call to $expect; uac rc=$uac_rc, uas rc=$uas_rc; logs in $run)"; fail=1
  fi
done
[ "$fail" = 0 ] && rm -rf "$WORK"
exit "$fail"
