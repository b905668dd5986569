#!/usr/bin/env bash
# The package on a real box: builds the .deb, boots a throw-away Debian
# container with systemd as PID 1 (debootstrap + systemd-nspawn), and runs
# through what an operator does with it:
#
#   install -> configure demo mode (edit /etc/default/planbox) -> start
#   -> GET /search -> reinstall while running (restart; store and edited
#   conffile kept) -> backup service -> stop -> the store file alone is
#   whole -> remove -> purge
#
# Every check prints "ok" or "FAIL"; every step its duration. Exit status 0
# when all checks pass. The pre-release check (docs/DEPLOYMENT.md).
#
# Needs: root, Debian packages debootstrap, systemd-container, zstd; cargo
# and cargo-deb (`cargo install cargo-deb --locked`) unless --deb is given
# (the package is built by packaging/build-deb.sh).
# Network: the Debian mirror, only the first time (the bootstrapped rootfs
# is cached under /var/cache/planbox-test-on-box). The container has a
# private network namespace: its HTTP traffic stays on its own loopback.
#
# Usage: packaging/test-on-box.sh [--deb FILE] [--keep] [--mirror URL]
#   --deb FILE    test this package instead of building one (build-deb.sh)
#   --keep        leave the container's directory behind (for debugging)
#   --mirror URL  Debian mirror for debootstrap (default deb.debian.org)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# curl and sqlite3 are for the checks; the rest is a bootable systemd box.
INCLUDE=systemd,systemd-sysv,dbus,init-system-helpers,curl,sqlite3
CACHE=/var/cache/planbox-test-on-box
DEB=
KEEP=false
while [ $# -gt 0 ]; do
    case $1 in
        --deb) DEB=$(realpath "$2"); shift 2 ;;
        --keep) KEEP=true; shift ;;
        --mirror) MIRROR=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "test-on-box: run as root (debootstrap, systemd-nspawn)" >&2; exit 2; }
for tool in debootstrap systemd-nspawn nsenter zstd tar; do
    command -v "$tool" >/dev/null || {
        echo "test-on-box: $tool not found (apt-get install debootstrap systemd-container zstd)" >&2
        exit 2
    }
done

# --- steps, checks and the final report -------------------------------------

START=$(date +%s%N)
STEP=
STEP_T0=0
TIMES=()
CHECKS=0
FAILED=0

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
secs() { printf '%d.%01d s' $(($1 / 1000)) $(($1 % 1000 / 100)); }

end_step() {
    if [ -n "$STEP" ]; then
        local ms
        ms=$(ms_since "$STEP_T0")
        TIMES+=("$(printf '%-54s %8s' "$STEP" "$(secs "$ms")")")
        printf '    (%s)\n' "$(secs "$ms")"
    fi
    STEP=
}

step() {
    end_step
    STEP=$1
    STEP_T0=$(date +%s%N)
    printf '\n==> %s\n' "$1"
}

# check DESCRIPTION COMMAND...: runs COMMAND, records ok / FAIL.
check() {
    local what=$1
    shift
    CHECKS=$((CHECKS + 1))
    if "$@"; then
        printf '    ok    %s\n' "$what"
    else
        FAILED=$((FAILED + 1))
        printf '    FAIL  %s\n' "$what"
    fi
}

# eq DESCRIPTION EXPECTED ACTUAL
eq() {
    CHECKS=$((CHECKS + 1))
    if [ "$2" = "$3" ]; then
        printf '    ok    %s (%s)\n' "$1" "$3"
    else
        FAILED=$((FAILED + 1))
        printf '    FAIL  %s: expected %s, got %s\n' "$1" "$2" "$3"
    fi
}

report() {
    end_step
    printf '\n==> summary\n'
    printf '    %s\n' "${TIMES[@]}"
    printf '    %-54s %8s\n' "total" "$(secs "$(ms_since "$START")")"
    printf '    checks: %d, failed: %d\n' "$CHECKS" "$FAILED"
}

# --- the container ----------------------------------------------------------

BOX=
NSPAWN=
LEADER=

# box CMD...: runs CMD inside the container (as root, its PATH, from the
# directory of its PID 1, which is /).
box() {
    nsenter --target "$LEADER" --mount --uts --ipc --net --pid --root --wd -- \
        /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}

teardown() {
    local rc=$?
    if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
        # SIGTERM: nspawn asks the container's systemd to power off.
        kill -TERM "$NSPAWN" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NSPAWN" 2>/dev/null || true
        wait "$NSPAWN" 2>/dev/null || true
    fi
    if [ -n "$BOX" ]; then
        if $KEEP; then
            echo "    container kept in $BOX"
        else
            rm -rf --one-file-system "$BOX"
        fi
    fi
    if [ $rc -ne 0 ] && [ $FAILED -eq 0 ]; then
        printf '\n    aborted in step "%s" (exit %d)\n' "$STEP" "$rc"
        FAILED=1
    fi
    report
    [ $FAILED -eq 0 ] && exit 0 || exit 1
}
trap teardown EXIT

# --- 1. the package ----------------------------------------------------------

step "build the .deb (packaging/build-deb.sh)"
if [ -z "$DEB" ]; then
    command -v cargo-deb >/dev/null || {
        echo "    cargo-deb not found: cargo install cargo-deb --locked (or pass --deb FILE)" >&2
        exit 2
    }
    out=$(packaging/build-deb.sh 2>&1) || { echo "$out" >&2; exit 1; }
    DEB=$(echo "$out" | grep -E '\.deb$' | tail -n 1)
fi
[ -f "$DEB" ] || { echo "    no package at '$DEB'" >&2; exit 1; }
echo "    $DEB ($(du -k "$DEB" | cut -f1) KiB)"
SUMMARY=$(cargo metadata --no-deps --format-version 1 2>/dev/null |
    sed -n 's/.*"description":"\([^"]*\)".*/\1/p' | head -n 1)
eq "debug files inside the .deb" 0 "$(dpkg-deb -c "$DEB" | grep -c /usr/lib/debug || true)"
contents=$(dpkg-deb -c "$DEB")
for f in /usr/share/man/man1/planbox.1.gz /usr/share/man/man1/planbox-serve.1.gz \
    /usr/share/bash-completion/completions/planbox /usr/share/zsh/vendor-completions/_planbox \
    /usr/share/fish/vendor_completions.d/planbox.fish \
    /usr/share/planbox/monitoring/planbox-dashboard.json \
    /usr/share/planbox/monitoring/planbox-alerts.yml; do
    check "in the package: $f" grep -q " \.$f\$" <<<"$contents"
done
ddeb=$(ls "$(dirname "$DEB")"/planbox-dbgsym_*.ddeb 2>/dev/null | head -n 1 || true)
[ -n "$ddeb" ] && echo "    debug symbols apart: $ddeb ($(du -k "$ddeb" | cut -f1) KiB)"

# --- 2. a Debian box with systemd --------------------------------------------

step "root file system ($SUITE, cached)"
arch=$(dpkg --print-architecture)
key=$(echo "$SUITE $INCLUDE" | sha256sum | cut -c1-12)
TARBALL=$CACHE/debian-$SUITE-$arch-$key.tar.zst
if [ ! -f "$TARBALL" ]; then
    echo "    not cached: debootstrap from $MIRROR (a few minutes)"
    mkdir -p "$CACHE"
    staging=$(mktemp -d /var/tmp/planbox-rootfs.XXXXXX)
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$staging/rootfs" "$MIRROR" \
        > "$staging/debootstrap.log" 2>&1 || {
        tail -n 20 "$staging/debootstrap.log" >&2
        rm -rf --one-file-system "$staging"
        exit 1
    }
    tar -C "$staging/rootfs" --zstd -cf "$TARBALL.partial" .
    mv "$TARBALL.partial" "$TARBALL"
    rm -rf --one-file-system "$staging"
fi
echo "    $TARBALL"
BOX=$(mktemp -d /var/tmp/planbox-box.XXXXXX)
mkdir "$BOX/rootfs"
tar -C "$BOX/rootfs" --zstd -xf "$TARBALL"
cp "$DEB" "$BOX/rootfs/root/planbox.deb"
echo planbox-test > "$BOX/rootfs/etc/hostname"

step "boot the container (systemd-nspawn -b)"
systemd-nspawn --quiet --boot --directory="$BOX/rootfs" --machine="planbox-test-$$" \
    --register=no --keep-unit --private-network --console=passive \
    > "$BOX/nspawn.log" 2>&1 &
NSPAWN=$!
for _ in $(seq 300); do
    for p in $(pgrep -P "$NSPAWN" || true); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] && LEADER=$p
    done
    [ -n "$LEADER" ] && break
    kill -0 "$NSPAWN" 2>/dev/null || { cat "$BOX/nspawn.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$LEADER" ] || { echo "    the container's systemd did not appear" >&2; exit 1; }
# Until its systemd answers at all, `is-system-running --wait` prints nothing.
for _ in $(seq 300); do
    state=$(box timeout 60 systemctl is-system-running --wait 2>/dev/null || true)
    case $state in running|degraded|maintenance|stopping) break ;; esac
    sleep 0.1
done
echo "    systemd in the container: $state"
check "the container's systemd is up" test "$state" = running -o "$state" = degraded

# --- 3. install ----------------------------------------------------------------

step "install (dpkg -i)"
box dpkg -i /root/planbox.deb > "$BOX/dpkg-install.log" 2>&1 || { cat "$BOX/dpkg-install.log"; exit 1; }
eq "package installed" "install ok installed" "$(box dpkg-query -W -f '${Status}' planbox)"
eq "summary line whole" "$SUMMARY" "$(box dpkg-query -W -f '${Description}' planbox | head -n 1)"
echo "    installed size: $(box dpkg-query -W -f '${Installed-Size}' planbox) KiB"
eq "nothing enabled by the install" disabled "$(box systemctl is-enabled planbox || true)"
eq "nothing started by the install" inactive "$(box systemctl is-active planbox || true)"

step "configure demo mode and start"
box sed -i 's/^#PLANBOX_DEMO=false$/PLANBOX_DEMO=true/' /etc/default/planbox
check "PLANBOX_DEMO=true in /etc/default/planbox" box grep -qx 'PLANBOX_DEMO=true' /etc/default/planbox
box systemctl start planbox # Type=notify: returns once READY=1 arrived
eq "planbox active" active "$(box systemctl is-active planbox || true)"
pid1=$(box systemctl show -p MainPID --value planbox)
search=$(box curl -fsS 'http://127.0.0.1:8080/search' || true)
served=$(printf '%s' "$search" | grep -o '"id":' | wc -l)
check "GET /search answers plans ($served)" test "$served" -gt 0
check "ready (planbox healthcheck)" box sh -c 'planbox healthcheck > /dev/null'
check "planbox(1) installed, a page of troff" box sh -c 'zcat /usr/share/man/man1/planbox.1.gz | grep -q "^.TH planbox 1"'
check "bash completion of the commands" box bash -c \
    '. /usr/share/bash-completion/completions/planbox && COMP_WORDS=(planbox hea) COMP_CWORD=1 && _planbox planbox hea planbox && [ "${COMPREPLY[*]}" = healthcheck ]'
d=/var/lib/private/planbox
check "demo plans in planbox-demo.db" box test -s $d/planbox-demo.db
check "no planbox.db created by the demo" box test ! -e $d/planbox.db
echo "    systemd-analyze security: $(box systemd-analyze security planbox 2>/dev/null | tail -n 1 | sed 's/^→ //')"

# backup_dropin [EXTRA]: points planbox-backup at the demo store (a demo box
# has no planbox.db), with EXTRA service lines.
backup_dropin() {
    box mkdir -p /etc/systemd/system/planbox-backup.service.d
    printf '[Service]\nEnvironment=PLANBOX_DB=planbox-demo.db\n%s\n' "${1:-}" |
        box tee /etc/systemd/system/planbox-backup.service.d/demo.conf > /dev/null
    box systemctl daemon-reload
}

step "reinstall while planbox and a backup run"
# A backup that takes a while: it must outlive the upgrade untouched.
backup_dropin 'ExecStartPre=/bin/sleep 60'
box systemctl start --no-block planbox-backup.service
inv1=$(box systemctl show -p InvocationID --value planbox-backup.service)
box dpkg -i /root/planbox.deb > "$BOX/dpkg-reinstall.log" 2>&1 || { cat "$BOX/dpkg-reinstall.log"; exit 1; }
eq "planbox active after the reinstall" active "$(box systemctl is-active planbox || true)"
pid2=$(box systemctl show -p MainPID --value planbox)
check "restarted by the reinstall (pid $pid1 -> $pid2)" test "$pid1" != "$pid2"
check "edited conffile kept" box grep -qx 'PLANBOX_DEMO=true' /etc/default/planbox
again=$(box curl -fsS 'http://127.0.0.1:8080/search' | grep -o '"id":' | wc -l)
eq "same plans after the restart" "$served" "$again"
inv2=$(box systemctl show -p InvocationID --value planbox-backup.service)
check "running backup neither stopped nor restarted" test -n "$inv1" -a "$inv1" = "$inv2"
box systemctl stop planbox-backup.service
box systemctl reset-failed planbox-backup.service 2>/dev/null || true

step "backup service"
backup_dropin
check "planbox-backup.service succeeds" box systemctl start planbox-backup.service
copy=$(box sh -c 'ls /var/lib/private/planbox-backup/planbox-*.db 2>/dev/null | head -n 1')
check "a backup file is there" test -n "$copy"
[ -n "$copy" ] && eq "plans in the backup" "$served" \
    "$(box sqlite3 -readonly "$copy" 'SELECT COUNT(*) FROM plans WHERE ever_online = 1')"

step "stop (systemctl stop) and check the store file alone"
box systemctl stop planbox
eq "stop result" success "$(box systemctl show -p Result --value planbox)"
eq "exit status" 0 "$(box systemctl show -p ExecMainStatus --value planbox)"
wal=$(box sh -c "stat -c %s $d/planbox-demo.db-wal 2>/dev/null || echo gone")
check "-wal empty or gone ($wal)" test "$wal" = gone -o "$wal" = 0
box cp $d/planbox-demo.db /root/copy.db
eq "integrity of the copied .db alone" ok "$(box sqlite3 -readonly /root/copy.db 'PRAGMA integrity_check')"
eq "plans in the copied .db alone" "$served" \
    "$(box sqlite3 -readonly /root/copy.db 'SELECT COUNT(*) FROM plans WHERE ever_online = 1')"
journal=$(box journalctl -u planbox -o cat)
eq "clean stops logged (reinstall, stop)" 2 "$(grep -c 'stopped$' <<<"$journal" || true)"
check "no checkpoint warning at stop" sh -c '! grep -Eq "cannot checkpoint|still busy"' <<<"$journal"

step "remove (dpkg -r)"
box dpkg -r planbox > "$BOX/dpkg-remove.log" 2>&1 || { cat "$BOX/dpkg-remove.log"; exit 1; }
check "binary gone" box test ! -e /usr/bin/planbox
check "unit gone" box test ! -e /usr/lib/systemd/system/planbox.service
check "man page gone" box test ! -e /usr/share/man/man1/planbox.1.gz
check "/etc/default/planbox kept" box test -e /etc/default/planbox
check "store kept" box test -s $d/planbox-demo.db
check "backups kept" box sh -c 'ls /var/lib/private/planbox-backup/planbox-*.db >/dev/null'

step "purge (dpkg -P)"
box dpkg -P planbox > "$BOX/dpkg-purge.log" 2>&1 || { cat "$BOX/dpkg-purge.log"; exit 1; }
check "/etc/default/planbox gone" box test ! -e /etc/default/planbox
check "store still kept (wipe it on purpose)" box test -s $d/planbox-demo.db
box rm -rf /var/lib/private/planbox /var/lib/planbox \
    /var/lib/private/planbox-backup /var/lib/planbox-backup
check "wiped with rm -rf" box test ! -e /var/lib/private/planbox

step "power off"
