#!/bin/bash
# Runs inside each VM guest (tests/vm/test_matrix.py boots them): install the
# packages built from this tree for the guest's release as a user would
# ($VMTEST_DEBS), so that the postinst starts the service under systemd, then
# run the kernel tests against that service (the lists $VMTEST_TEST_LISTS names in
# tests/vm/, in order) with the release's own python3 and the installed package's code:
# the checkout gives the tests, never the program. Everything lands in
# $VMTEST_RESULTS.
set -u
cd "$VMTEST_REPO"
R=$VMTEST_RESULTS
now() { date +%s.%N; }
t0=$(now)
# what the host asserts of the boot itself (tests/vm/facts.py), before anything is installed
bash tests/vm/guest/boot_facts.sh > /dev/null 2>&1
# the host's own leftovers (a purged package keeps its evidence) are not this guest's
rm -rf /var/lib/auditd-lite
# man-db's trigger rebuilds its whole index: minutes under TCG, nothing
# tested; Debian's man-db runs it only while this file exists
rm -f /var/lib/man-db/auto-update
read -r -a debs <<< "$VMTEST_DEBS"
# the guest has no network: everything the packages need is in its root already
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Acquire::Retries=0 "${debs[@]}" \
        > "$R/apt.log" 2>&1; then
    echo "guest: apt-get install ${debs[*]} failed:"; tail -n 20 "$R/apt.log"
    exit 10
fi
t1=$(now)
# for Type=notify the postinst's start returned at READY=1, or failed
systemctl status auditd-lite --no-pager > "$R/status-after-install.txt" 2>&1
lib=$(dpkg-query -L auditd-lite | sed -n 's|/auditd_lite/__init__\.py$||p')
{ . /etc/os-release; echo "guest: $PRETTY_NAME, $(/usr/bin/python3 --version), auditd-lite from $lib"; } \
    | tee "$R/guest.txt"
tests=()
for list in $VMTEST_TEST_LISTS; do
    mapfile -t -O "${#tests[@]}" tests < <(grep -v -e '^#' -e '^$' "tests/vm/$list")
done
# PYTHONSAFEPATH: neither pytest nor a test's `python3 -m auditd_lite.cli` puts the
# checkout (the working directory) ahead of the installed package
# every kernel of the matrix attaches fentry/fexit: the service and the tests' daemons must get it
PYTHONPATH=$lib PYTHONSAFEPATH=1 AUDITD_LITE_SERVICE_DB=/var/lib/auditd-lite AUDITD_LITE_REQUIRE_BPF=1 \
    AUDITD_LITE_EXPECT_CAPTURE_MODE=fentry \
    /usr/bin/python3 -m pytest -p no:cacheprovider -v -ra --durations=25 --junitxml="$R/junit.xml" "${tests[@]}" \
    > "$R/pytest.log" 2>&1
rc=$?
t2=$(now)
journalctl -u auditd-lite -o cat --no-pager > "$R/journal.log" 2>&1
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "{\"install_s\": %.1f, \"tests_s\": %.1f}\n", b - a, c - b }' \
    > "$R/timings.json"
tail -n 30 "$R/pytest.log"
exit $rc
