# normfuzz developer targets. Override variables on the command line, e.g.
#   make test PYTEST_ARGS="tests/fuzz -x"     make venv CONSTRAINTS=my-constraints.txt
PYTHON ?= python3
CONSTRAINTS ?= constraints.txt
PYTEST_ARGS ?=

VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo

venv: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when the project metadata or the backend pins change.
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(VPY)
	$(VPY) -m pip install -c $(CONSTRAINTS) -e '.[all,test]'
	touch $@

# The report tests (tests/reports/test_browser.py) render a campaign's HTML report in headless
# Chromium: Debian's `chromium` package is installed here when missing (CI runs as root; elsewhere run
# `sudo apt-get install chromium` once). NORMFUZZ_REQUIRE_BROWSER=1 makes a missing browser fail those
# tests instead of skipping them.
test: venv
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	NORMFUZZ_REQUIRE_BROWSER=1 $(VPY) -m pytest -q $(PYTEST_ARGS)

# The main job: a short campaign on the three backends, writing runs/demo/report.html and
# runs/demo/summary.json. Exit status 1 of `normfuzz campaign` means "new buckets found", which is
# the expected outcome of a demo, not a failure.
DEMO_BUDGET ?= 3m
DEMO_RUNNERS ?= torch.functional,torch.module,tf.nn,keras,ort
demo: venv
	rm -rf runs/demo
	$(VENV)/bin/normfuzz campaign --out runs/demo --budget $(DEMO_BUDGET) --runners $(DEMO_RUNNERS) \
		|| test $$? -eq 1
	@echo "report: runs/demo/report.html   summary: runs/demo/summary.json"
