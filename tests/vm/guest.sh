#!/bin/bash
# Runs inside each VM guest (tests/vm/test_matrix.py boots them): install the
# package built from this tree as a user would, so that its postinst starts
# the service under systemd, then run the kernel tests against that service
# (tests/vm/guest_tests.txt, in order). Everything lands in $VMTEST_RESULTS.
set -u
cd "$VMTEST_REPO"
R=$VMTEST_RESULTS
now() { date +%s.%N; }
t0=$(now)
# the host's own leftovers (a purged package keeps its evidence) are not this guest's
rm -rf /var/lib/auditd-lite
# man-db's trigger rebuilds its whole index: minutes under TCG, nothing
# tested; Debian's man-db runs it only while this file exists
rm -f /var/lib/man-db/auto-update
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$VMTEST_DEB" \
        > "$R/apt.log" 2>&1; then
    echo "guest: apt-get install $VMTEST_DEB failed:"; tail -n 20 "$R/apt.log"
    exit 10
fi
t1=$(now)
# for Type=notify the postinst's start returned at READY=1, or failed
systemctl status auditd-lite --no-pager > "$R/status-after-install.txt" 2>&1
mapfile -t tests < <(grep -v -e '^#' -e '^$' tests/vm/guest_tests.txt)
# every kernel of the matrix attaches fentry/fexit: the service and the tests' daemons must get it
AUDITD_LITE_SERVICE_DB=/var/lib/auditd-lite AUDITD_LITE_REQUIRE_BPF=1 AUDITD_LITE_EXPECT_CAPTURE_MODE=fentry \
    .venv/bin/python -m pytest -p no:cacheprovider -q -ra --junitxml="$R/junit.xml" "${tests[@]}" \
    > "$R/pytest.log" 2>&1
rc=$?
t2=$(now)
journalctl -u auditd-lite -o cat --no-pager > "$R/journal.log" 2>&1
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "{\"install_s\": %.1f, \"tests_s\": %.1f}\n", b - a, c - b }' \
    > "$R/timings.json"
tail -n 30 "$R/pytest.log"
exit $rc
