# Entry points for building and measuring; the set-up itself is scripts/dev.sh.
#   make deb     dist/auditd-lite{,-lake}_<version>+deb<N>_<arch>.deb for this machine's Debian release,
#                or RELEASE=trixie (packaging/releases.toml; as root: installs build dependencies)
#   make man     build/auditd-lite.1 from the argparse help (view: man -l build/auditd-lite.1)
#   make bench   the side-by-side table: nothing / auditd-lite / auditd / bpftrace / perfbuf at
#                20,000 execs, nothing / auditd-lite at 100,000, writer and query figures; to
#                bench/results/<date>.md and README.md (root; about 22 minutes). A quick look,
#                README left alone: make bench BENCH_README= BENCH_FLAGS="--execs 2000 --reps 1
#                --big-execs 5000 --big-reps 1 --writer-records 0 --query-records 0"
#   make test    the whole test suite, through the set-up script (root)
#   make vmtest  the VM tier: Debian's kernels booted under qemu (tests/vm, docs/vm.md; root)
#   make clean   build/ and dist/

PYTHON ?= .venv/bin/python
RELEASE ?=
BENCH_FLAGS ?=
BENCH_README ?= README.md

.PHONY: deb man bench test vmtest clean

deb:
	bash packaging/build-deb.sh $(RELEASE)

# always regenerated: the help text may come from any module the CLI imports
man:
	@mkdir -p build
	$(PYTHON) -m auditd_lite.manpage > build/auditd-lite.1.tmp
	mv build/auditd-lite.1.tmp build/auditd-lite.1

bench:
	bash scripts/dev.sh bench-setup
	$(PYTHON) bench/compare.py $(if $(BENCH_README),--readme $(BENCH_README)) $(BENCH_FLAGS)

test:
	bash scripts/dev.sh test

vmtest:
	bash scripts/dev.sh vm-setup
	$(PYTHON) -m pytest -m vm tests/vm

clean:
	rm -rf build dist
