# ClawFS developer entry points.  `make demo` and `make test` do all setup on a fresh Debian machine.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
DEBS  := fuse3 libfuse3-dev pkg-config gcc g++ python3-dev gocryptfs rsync tar util-linux attr psmisc swtpm swtpm-tools tpm2-tools libtss2-dev libseccomp2 curl
.PHONY: setup debs venv bytecode mount-helper systemd-unit demo test test-fast lint bench clean

setup: debs venv bytecode mount-helper systemd-unit

# Installs only what is missing, so a second run costs one dpkg query.
debs:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (log: $(VENV)/pip.log)" >&2
	@$(PY) -m pip install --upgrade pip > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@# torch first and pinned: sentence-transformers would otherwise pull a CUDA build of several GB
	@$(PY) -m pip install torch==2.13.0 >> $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install -e '.[dev,bench]' >> $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(PY) -c 'import pyfuse3, apsw, trio, cryptography'
	@touch $@

# The project's bytecode, compiled here once: the jailed agent runtime's root is read-only, so it could never cache
# its own and would compile agent/, sandbox/ and kernel/ at every start and restart; a shell with
# PYTHONDONTWRITEBYTECODE=1 (as on the dev VM) would do the same for every clawfs process.  Up to date: 0.1 s.
# A source edited later is still read correctly (its .pyc no longer matches and is ignored) until the next make.
bytecode: $(VENV)/.installed
	@$(PY) -m compileall -q clawfs kernel mountd migrations agent sandbox > /dev/null

# The int8 ONNX model (embedder all-MiniLM-L6-v2-int8), exported from the installed weights into
# ~/.cache/clawfs/models (CLAWFS_MODEL_CACHE); a no-op once it is there (clawfs/index/onnx_engine.py).
# Not fatal: the default embedder does not need it, and a store that does exports it at first use.
onnx-model: $(VENV)/.installed
	@$(PY) -m clawfs.index.onnx_engine > /dev/null || echo "warning: the int8 ONNX model was not exported" >&2

# mount(8) runs /sbin/mount.TYPE for `mount -t clawfs` and fstab lines of type clawfs.  Rewritten on every
# setup: it names this checkout's venv, and another checkout (a CI clone) may have installed its own.
mount-helper: $(VENV)/.installed packaging/mount.clawfs.in
	@sed "s|@VENV@|$(abspath $(VENV))|" packaging/mount.clawfs.in > /usr/sbin/mount.clawfs.new
	@chmod 755 /usr/sbin/mount.clawfs.new && mv /usr/sbin/mount.clawfs.new /usr/sbin/mount.clawfs
	@ln -sf $(abspath $(VENV))/bin/clawfs /usr/local/bin/clawfs

# clawfs@.service (packaging/; README "Running as a systemd service"); systemd is told only when it runs here.
systemd-unit: mount-helper packaging/clawfs@.service
	@install -D -m 644 packaging/clawfs@.service /etc/systemd/system/clawfs@.service
	@if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

demo: setup
	@$(PY) -m mountd.demo

test: setup
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m 'not fuse and not slow'

lint: setup
	$(VENV)/bin/ruff check clawfs kernel mountd migrations agent sandbox tests bench
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m bench.fs_throughput --out bench/results

clean:
	rm -rf $(VENV) build *.egg-info
