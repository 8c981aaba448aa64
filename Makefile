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

test: venv
	$(VPY) -m pytest -q $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/normfuzz bugzoo
	$(VENV)/bin/normfuzz --version
