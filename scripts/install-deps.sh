#!/usr/bin/env bash
# Install what rohrpost's tests need: Debian packages (only the missing ones) and the Python
# dependencies in a virtualenv. Idempotent; when everything is present it changes nothing and
# finishes in about a second.
#
#   scripts/install-deps.sh            install what is missing
#   scripts/install-deps.sh --check    only report; exit 1 if something is missing
#   scripts/install-deps.sh --no-apt   skip Debian packages   (--no-venv: skip the virtualenv)
#   scripts/install-deps.sh --minimal  only what `make run` needs (libmilter-dev, a C compiler)
#   scripts/install-deps.sh --bench    also the reference filters `make bench` compares against
#                                      (opendkim, opendmarc, SPF policy daemon, clamav-milter,
#                                      spamass-milter, rspamd, dkimpy-milter); see docs/performance.md
#
# Environment: ROHRPOST_VENV (default: <repo>/.venv), PYTHON (default: python3; >= 3.11).
#
# System services are never left running: the tests start their own Postfix, Dovecot, Redis,
# clamd and spamd in temporary directories. Postfix is preseeded with "No configuration", a
# policy-rc.d that denies starts is in place while apt runs, and afterwards any of the
# packages' services found running is stopped.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${ROHRPOST_VENV:-$REPO/.venv}
PYTHON=${PYTHON:-python3}
CHECK=0 APT=1 VENV_STEP=1 MINIMAL=0 BENCH=0
for arg in "$@"; do
    case $arg in
        --check) CHECK=1 ;;
        --no-apt) APT=0 ;;
        --no-venv) VENV_STEP=0 ;;
        --minimal) MINIMAL=1 ;;
        --bench) BENCH=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "install-deps: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

# Debian 12 (bookworm) names. spamd is its own package since 4.0.1-1~deb12u1; clamdscan is
# separate from clamav-daemon; sigtool comes with clamav; opendkim-testmsg with opendkim-tools.
PACKAGES=(
    postfix libmilter-dev gcc libc6-dev
    dovecot-imapd dovecot-pop3d dovecot-lmtpd
    redis-server procmail fetchmail getmail6 swaks
    spamassassin spamd spamc
    clamav clamav-daemon clamdscan clamav-testfiles
    opendkim-tools openssl ssl-cert ca-certificates publicsuffix
)
if [ "$MINIMAL" = 1 ]; then PACKAGES=(libmilter-dev gcc libc6-dev); fi
# The reference tools of `make bench` (all in Debian 12; OpenARC is not packaged there).
# policyd-spf is postfix-policyd-spf-python; its milter twin is pyspf-milter.
BENCH_PACKAGES=(
    opendkim opendkim-tools opendmarc postfix-policyd-spf-python pyspf-milter
    clamav-milter spamass-milter rspamd dkimpy-milter
)
if [ "$BENCH" = 1 ]; then PACKAGES+=("${BENCH_PACKAGES[@]}"); fi
# system services these packages may start, with the pid file of the system instance
# (pid files, not init-script "status": Debian's postfix script says 0 with no main.cf at all)
SERVICES=(
    postfix:/var/spool/postfix/pid/master.pid
    dovecot:/run/dovecot/master.pid
    redis-server:/run/redis/redis-server.pid
    clamav-daemon:/run/clamav/clamd.pid
    clamav-freshclam:/run/clamav/freshclam.pid
    spamd:/run/spamd.pid
    opendkim:/run/opendkim/opendkim.pid
    opendmarc:/run/opendmarc/opendmarc.pid
    clamav-milter:/run/clamav/clamav-milter.pid
    spamass-milter:/run/spamass/spamass.pid
    rspamd:/run/rspamd/rspamd.pid
    dkimpy-milter:/run/dkimpy-milter/dkimpy-milter.pid
    pyspf-milter:/run/pyspf-milter/pyspf-milter.pid
)

step() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' \
            || printf '%s\n' "$pkg"
    done
}

# True if the pid file names a live process (the system instance, not a test's own).
pidfile_alive() {
    local pid
    [ -r "$1" ] || return 1
    pid=$(head -n1 "$1" | tr -dc '0-9')
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

stop_services() {
    local entry svc pidfile
    for entry in "${SERVICES[@]}"; do
        svc=${entry%%:*} pidfile=${entry#*:}
        pidfile_alive "$pidfile" || continue
        step "stopping system service $svc (tests run their own instances)"
        if [ -d /run/systemd/system ]; then
            systemctl stop "$svc" || true
        elif [ -x "/etc/init.d/$svc" ]; then
            "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        fi
        ! pidfile_alive "$pidfile" || die "system service $svc still running (pid file $pidfile)"
    done
}

apt_install() {
    local -a missing=("$@")
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages (${missing[*]}); run as root"
    command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian/Ubuntu"
    export DEBIAN_FRONTEND=noninteractive
    step "preseeding postfix: main_mailer_type = No configuration"
    echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        step "installing a temporary /usr/sbin/policy-rc.d that denies service starts"
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    step "apt-get update"
    apt-get update -qq || die "apt-get update failed"
    step "apt-get install ${missing[*]}"
    local rc=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    [ "$rc" -eq 0 ] || die "apt-get install failed (exit $rc) for: ${missing[*]}"
    local still
    still=$(missing_packages)
    [ -z "$still" ] || die "still missing after install: $still"
}

# ---- Debian packages
if [ "$APT" -eq 1 ]; then
    command -v dpkg-query >/dev/null || die "dpkg-query not found: this script supports Debian"
    mapfile -t MISSING < <(missing_packages)
    if [ "${#MISSING[@]}" -eq 0 ]; then
        step "Debian packages: all ${#PACKAGES[@]} present"
    elif [ "$CHECK" -eq 1 ]; then
        step "Debian packages missing: ${MISSING[*]}"
        CHECK_FAILED=1
    else
        apt_install "${MISSING[@]}"
        step "Debian packages: installed ${MISSING[*]}"
    fi
    if [ "$CHECK" -eq 1 ]; then
        RUNNING=""
        for entry in "${SERVICES[@]}"; do
            if pidfile_alive "${entry#*:}"; then RUNNING+=" ${entry%%:*}"; fi
        done
        if [ -n "$RUNNING" ]; then
            step "system services running (tests need them stopped):$RUNNING"
            CHECK_FAILED=1
        fi
    else
        stop_services
    fi
    [ -n "${RUNNING:-}" ] || step "system services: none running (${SERVICES[*]%%:*})"
fi

# ---- Python virtualenv
if [ "$VENV_STEP" -eq 1 ]; then
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=/path/to/python3.11)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); rohrpost needs Python >= 3.11"
    # pymilter compiles against libmilter and Python.h
    "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || die "Python.h not found for $PYTHON (system python: install python3-dev)"
    if [ ! -x "$VENV/bin/python" ]; then
        [ "$CHECK" -eq 0 ] || { step "virtualenv $VENV missing"; exit 1; }
        step "creating virtualenv $VENV with $("$PYTHON" -V 2>&1)"
        "$PYTHON" -m venv "$VENV" || die "python -m venv $VENV failed"
    fi
    # Every requirement of the project and its [test] extra, and rohrpost itself, installed?
    # (names only: pip resolves versions when it installs)
    read -r -d '' PY_CHECK <<'EOF' || true
import re, sys, tomllib
from importlib import metadata
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
reqs = project.get("dependencies", []) + project.get("optional-dependencies", {}).get("test", [])
missing = []
for req in reqs:
    name = re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0]
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        missing.append(req)
print("\n".join(missing))
EOF
    PY_MISSING=$("$VENV/bin/python" -c "$PY_CHECK" "$REPO/pyproject.toml") \
        || die "could not read $REPO/pyproject.toml"
    if [ -z "$PY_MISSING" ]; then
        step "Python deps: all present in $VENV"
    elif [ "$CHECK" -eq 1 ]; then
        step "Python deps missing in $VENV: $PY_MISSING"
        CHECK_FAILED=1
    else
        # the dependencies only: rohrpost itself runs from the checkout (bin/rohrpost puts it on
        # sys.path; pytest's pythonpath too), which spares every start the editable-install hook
        mapfile -t PY_REQS <<<"$PY_MISSING"
        step "pip install into $VENV: ${PY_REQS[*]}"
        "$VENV/bin/python" -m pip install -q --upgrade pip \
            || die "pip upgrade failed"
        "$VENV/bin/python" -m pip install -q "${PY_REQS[@]}" \
            || die "pip install failed (pymilter needs libmilter-dev and gcc)"
        "$VENV/bin/python" -c 'import milter' || die "pymilter installed but 'import milter' fails"
        step "Python deps: installed"
    fi
fi

if [ "${CHECK_FAILED:-0}" -eq 1 ]; then
    step "check: something is missing (run without --check to install)"
    exit 1
fi
step "done"
