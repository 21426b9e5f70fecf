# imgscope — the two set-up commands of README.md: `make demo` and `make test`.
# Both work on a fresh Debian machine (root or sudo): they install Debian's
# qemu-utils and graphviz when missing, create .venv and install imgscope into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# compat editable mode: a plain path entry instead of an import hook, so `imgscope info`
# starts without importing importlib machinery it does not need (docs/performance.md)
EDITABLE := --config-settings editable_mode=compat -e
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive

.PHONY: demo test sysdeps browser venv install install-dev sample bench fuzz fuzz-deps asan-test clean

sysdeps:
	@if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null || ! command -v dot >/dev/null \
	    || ! command -v cc >/dev/null; then \
	  echo "installing Debian packages: qemu-utils graphviz gcc"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq qemu-utils graphviz gcc python3-venv python3-dev >/dev/null; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

venv: $(PY)

# an editable install compiles no bytecode, and with PYTHONDONTWRITEBYTECODE set (as on this
# project's machines) none is ever written: every run would compile imgscope's modules (~50 ms)
install: sysdeps venv
	$(PIP) install -q $(EDITABLE) '.[notebook]'
	$(PY) -m compileall -q imgscope

install-dev: sysdeps venv
	$(PIP) install -q $(EDITABLE) '.[notebook,dev]'
	$(PY) -m compileall -q imgscope

demo: install
	$(VENV)/bin/imgscope demo

# headless Chromium for the visual tests (tests/visual): only `make test` needs it, not `make demo`
browser:
	@command -v chromium >/dev/null || { echo "installing Debian package: chromium"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: install-dev browser fuzz-deps
	IMGSCOPE_FORCE_NATIVE=1 $(PY) -m pytest -q -n 2 tests

sample: install
	sh scripts/make_sample.sh imgscope/data/sample.qcow2

bench: install-dev
	$(PY) benchmarks/run.py

# ---- hostile input (docs/security.md): fuzzers and a sanitizer build -------------------
FUZZ_SECONDS ?= 60

fuzz-deps: install-dev
	@if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer*-x86_64.a \
	    >/dev/null 2>&1; then \
	  echo "installing Debian packages: clang libclang-rt-dev"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq clang >/dev/null && \
	  v=$$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1) && \
	  $(SUDO) apt-get install -y -qq libclang-rt-$$v-dev >/dev/null; \
	fi
	@$(PY) -c "import atheris" 2>/dev/null || CC=clang CXX=clang++ $(PIP) install -q $(EDITABLE) '.[notebook,dev,fuzz]'

# every native and Python harness for FUZZ_SECONDS each; prints exec counts
fuzz: fuzz-deps
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS)

# the whole test suite against an extension built with AddressSanitizer + UBSan (CI's second step)
asan-test: install-dev browser fuzz-deps
	$(PY) fuzz/asan.py pytest -q -n 2 tests

clean:
	rm -rf build *.egg-info imgscope/_native*.so imgscope/_native.c
