# The two commands a new user needs: `make dev` runs the whole service locally, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Every package, pinned (`make lock` renews the pins): a fresh clone installs what the last lock tested.
PIP_INSTALL := $(BIN)/pip install --quiet -c constraints.txt

.PHONY: dev test lint bench install npm-projects cloud-local lock

# The npm projects of the repo (the demo page, the typed client); each has `npm run build`.
NPM_PROJECTS := $(wildcard web/package.json clients/typescript/package.json)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) pip

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[test]'
	touch $@ $(VENV)/.installed-dev

# Renew constraints.txt: resolve pyproject.toml's dependencies afresh (every extra) in a scratch venv.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip && .venv-lock/bin/pip install --quiet -e '.[test,bench]'
	{ sed -n '1,2p' constraints.txt; echo "pip==$$(.venv-lock/bin/pip --version | cut -d' ' -f2)"; \
	  .venv-lock/bin/pip freeze --exclude-editable; } > constraints.new && mv constraints.new constraints.txt
	rm -rf .venv-lock

install: $(VENV)/.installed-dev

# Node.js comes from the machine (or Debian's packages, as root); the packages from the npm registry, as locked.
# Only what changed is redone: `npm ci` when a project's lock file changed, its build when its package.json,
# lock or any source file changed (stamps in its node_modules/, which `npm ci` recreates). Nothing changed:
# `make npm-projects` takes well under a second.
define NPM_TOOLCHAIN
	@command -v npm >/dev/null || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm)
	@node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
	  || { echo "make: the npm projects need Node.js 20.19 or newer (this is $$(node --version)); Debian 12's nodejs is 18" >&2; exit 1; }
endef

# A project's sources: every file in it but its installed packages and its build output.
npm_sources = $(shell find $(1) \( -name node_modules -o -name dist \) -prune -o -type f -print)

define NPM_PROJECT
$(1)/node_modules/.package-lock.json: $(1)/package-lock.json
	$$(NPM_TOOLCHAIN)
	@echo "npm: installing $(1) (npm ci)"
	@cd $(1) && npm ci --no-audit --no-fund --loglevel=error
	@touch $$@

$(1)/node_modules/.broker-built: $(1)/node_modules/.package-lock.json $(call npm_sources,$(1))
	$$(NPM_TOOLCHAIN)
	@echo "npm: building $(1)"
	@cd $(1) && npm run --silent build
	@touch $$@
endef

NPM_DIRS := $(patsubst %/package.json,%,$(NPM_PROJECTS))
$(foreach project,$(NPM_DIRS),$(eval $(call NPM_PROJECT,$(project))))

npm-projects: $(foreach project,$(NPM_DIRS),$(project)/node_modules/.broker-built)

# Redis: `broker dev` uses BROKER_REDIS_URL if it answers, else starts a private redis-server; on a bare
# Debian machine (as root) the server is installed first.
dev: $(VENV)/.installed-dev npm-projects
	@command -v redis-server >/dev/null || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)
	$(BIN)/broker dev $(if $(PORT),--port $(PORT))

test: $(VENV)/.installed-test npm-projects
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed-test
	$(PIP_INSTALL) -e '.[bench]'
	$(BIN)/python -m bench.images
	$(BIN)/python -m bench.hostile
	@command -v ffmpeg >/dev/null || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg)
	$(BIN)/python -m bench.videos

# The CloudFormation template deployed into a moto server of its own (no AWS account): prints every resource.
cloud-local: $(VENV)/.installed-dev
	$(PIP_INSTALL) -e '.[infra]'
	$(BIN)/python infra/cloudformation/local_cloud.py $(PARAMETERS)
