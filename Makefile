# make run   — set up and serve the dashboard with demo data (embedded: no outside services)
# make test  — set up and run the whole suite against PostgreSQL, Redis, Celery and a real libvirtd
SHELL := /bin/bash
PY := .venv/bin/python
GUEST := $(CURDIR)/.cache/guest
ARM_GUEST := $(CURDIR)/.cache/guest-arm64
CONTAINER := $(CURDIR)/.cache/container
INSTALLER := $(CURDIR)/.cache/installer
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/cloudpanel
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
PORT ?= 8000

.PHONY: run test setup lint bench clean-test-host

setup:
	scripts/setup.sh system
	scripts/setup.sh python
	scripts/setup.sh node

run: setup
	@mkdir -p var
	@if scripts/libvirtd.sh start >/dev/null 2>&1 && scripts/build-test-guest.sh "$(GUEST)" >/dev/null; then \
		echo "local QEMU available: registering qemu:///system and the tiny guest as a boot kernel"; \
		echo "--test-uri test+unix:///default --host-uri local-qemu=qemu:///system --guest-dir $(GUEST)" > var/.demo-args; \
		if virsh -q -c lxc:/// version >/dev/null 2>&1 && scripts/build-container-image.sh "$(CONTAINER)" >/dev/null; then \
			echo "local LXC available: registering lxc:/// and the busybox container image"; \
			echo "--host-uri local-lxc=lxc:/// --container-image $(CONTAINER)/rootfs.tar.gz" >> var/.demo-args; fi; \
	else echo "libvirtd could not be started: only the test-driver host is registered"; : > var/.demo-args; fi
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py demo $$(cat var/.demo-args)
	@if [ -n "$$REDIS_URL" ]; then scripts/run-services.sh $(PORT); else \
		$(PY) manage.py serve --port $(PORT); fi

test:
	scripts/setup.sh system test
	scripts/setup.sh python
	scripts/setup.sh node
	scripts/check-services.sh "$(TEST_DATABASE_URL)" "$(TEST_REDIS_URL)"
	scripts/libvirtd.sh start
	scripts/fleet.sh start 2
	scripts/build-test-guest.sh "$(GUEST)"
	GUEST_ARCH=arm64 scripts/build-test-guest.sh "$(ARM_GUEST)"
	scripts/build-container-image.sh "$(CONTAINER)"
	scripts/build-installer-iso.sh "$(INSTALLER)"
	$(PY) -m ruff check .
	.venv/bin/lint-imports --no-cache
	DATABASE_URL="$(TEST_DATABASE_URL)" $(PY) manage.py makemigrations --check --dry-run -v0
	CLOUDPANEL_PRODUCTION=1 CLOUDPANEL_SECRET_KEY="$$(openssl rand -hex 32 2>/dev/null || date +%s%N%s%N)" \
		CLOUDPANEL_ALLOWED_HOSTS=panel.example.com $(PY) manage.py check --deploy --fail-level WARNING
	DATABASE_URL="$(TEST_DATABASE_URL)" REDIS_URL="$(TEST_REDIS_URL)" CLOUDPANEL_GUEST_DIR="$(GUEST)" \
		$(PY) manage.py collectstatic --noinput -v0
	DATABASE_URL="$(TEST_DATABASE_URL)" REDIS_URL="$(TEST_REDIS_URL)" CLOUDPANEL_GUEST_DIR="$(GUEST)" \
		$(PY) -m pytest -n 3 --dist loadgroup --ignore=tests/test_faults.py $(PYTEST_ARGS)
	@# The fault suite times recoveries in seconds: it runs alone, on a machine the rest of the suite no longer loads.
	DATABASE_URL="$(TEST_DATABASE_URL)" REDIS_URL="$(TEST_REDIS_URL)" CLOUDPANEL_GUEST_DIR="$(GUEST)" \
		$(PY) -m pytest tests/test_faults.py $(PYTEST_ARGS) || [ $$? -eq 5 ]  # (5: PYTEST_ARGS left none of it)

lint:
	$(PY) -m ruff check .
	.venv/bin/lint-imports --no-cache

bench: setup
	scripts/libvirtd.sh start >/dev/null
	scripts/build-test-guest.sh "$(GUEST)" >/dev/null
	@mkdir -p var && rm -f var/bench-results.jsonl
	@# Each benchmark's detail tables go to stderr; stdout is the one table of every measure.
	@export BENCH_RESULTS="$(CURDIR)/var/bench-results.jsonl" DATABASE_URL="$(TEST_DATABASE_URL)" \
		REDIS_URL="$(TEST_REDIS_URL)" CLOUDPANEL_GUEST_DIR="$(GUEST)"; \
	$(PY) bench/report.py speed; \
	for bench in control_plane instance_list tenant_list image_upload image_overlay ipam reconcile real_guest vnc_proxy \
		snapshots backups fleet invoice_run load metrics; do \
		echo "bench/$$bench.py" >&2; $(PY) bench/$$bench.py || exit 1; done; \
	$(PY) bench/report.py