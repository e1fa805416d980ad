#!/usr/bin/env bash
# Prepare this Debian 12 machine (as root) to run systemd containers under
# podman as Ansible / molecule test hosts. No container registry is needed:
# images are bootstrapped from the Debian mirror the host's apt already uses.
#
#   testhost.sh setup                      install podman & co., write containers.conf drop-in
#   testhost.sh image <debian12|debian13>  build localhost/flaskops-<name>:latest (skipped if current)
#   testhost.sh check <name|image-ref>     boot a throwaway container and check systemd/cgroups
#   testhost.sh pin <container>            keep `podman exec` working in a running container (see cmd_pin)
#
# Environment:
#   TESTHOST_CACHE_DIR     cache for debs and rootfs tarballs (default /var/cache/flaskops-testhost)
#   TESTHOST_MIRROR        Debian mirror URL (default: read from the host's apt sources)
#   TESTHOST_BOOT_TIMEOUT  seconds `check` waits for systemd to come up (default 120)
set -euo pipefail

readonly CACHE_DIR="${TESTHOST_CACHE_DIR:-/var/cache/flaskops-testhost}"
readonly BOOT_TIMEOUT="${TESTHOST_BOOT_TIMEOUT:-120}"
readonly CONF_DROPIN=/etc/containers/containers.conf.d/50-flaskops-testhost.conf
readonly HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly LABEL_RECIPE=flaskops.testhost.recipe
readonly LABEL_SUITE=flaskops.testhost.suite

# Host packages. runc because crun refuses this host's hybrid cgroup layout;
# netavark + iptables for the default network and published ports; openssl
# for the verifiers' TLS checks (s_client); openssh-client because the molecule
# scenarios reach their instances over SSH, as Ansible reaches real hosts.
readonly HOST_PACKAGES=(
  podman runc conmon netavark aardvark-dns iptables uidmap fuse-overlayfs
  slirp4netns catatonit debootstrap debian-archive-keyring ca-certificates wrk
  openssl openssh-client
)

# trixie keys (automatic + stable release key) arrived in this bookworm update.
readonly KEYRING_MIN_VERSION=2023.3+deb12u2

# Packages bootstrapped into every image (besides the minbase set).
# openssh-server: the molecule scenarios connect with Ansible's ssh connection
# (pipelining on), each connection an `sshd -i` started by `podman exec` (see
# .config/molecule/config.yml): about three times faster a task than Ansible's
# podman connection, and the transport users have.
readonly IMAGE_PACKAGES=(
  systemd systemd-sysv dbus python3 python3-apt ca-certificates procps iproute2 curl
  openssh-server
)

# Units masked per suite, each because it was seen to fail in a container:
# trixie's systemd-modules-load fails ("Failed to initialize libkmod context:
# Operation not supported", no /lib/modules) and leaves the system degraded.
masked_units() {
  case "$1" in
    trixie) printf '%s\n' systemd-modules-load.service ;;
    *) ;;
  esac
}

log() { printf '%s\n' "testhost: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [[ ${EUID} -eq 0 ]] || die "must run as root"; }

# ---------------------------------------------------------------- setup --

pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

pkg_has_candidate() {
  local cand
  cand="$(apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')"
  [[ -n "${cand}" && "${cand}" != "(none)" ]]
}

# Prints "<kind>=<n>:<n>" with the largest value a container may get.
# nofile: the hard limit (`ulimit -Hn`), "unlimited" capped at fs.nr_open.
# nproc: the hard limit (`ulimit -Hu`), but never above kernel.pid_max:
# podman 4.3 (containers/common 0.50) lowers its own RLIMIT_NPROC to pid_max
# at start-up, and without CAP_SYS_RESOURCE runc cannot raise it back, so a
# larger value fails every container with "error setting rlimit type 6".
ulimit_value() {
  local kind=$1 hard cap
  case "${kind}" in
    nofile) hard="$(ulimit -Hn)" cap="$(cat /proc/sys/fs/nr_open)" ;;
    nproc) hard="$(ulimit -Hu)" cap="$(cat /proc/sys/kernel/pid_max)" ;;
    *) die "unknown ulimit ${kind}" ;;
  esac
  [[ "${hard}" != unlimited ]] || hard=${cap}
  [[ "${hard}" =~ ^[0-9]+$ && "${cap}" =~ ^[0-9]+$ ]] ||
    die "cannot read the ${kind} limits (got '${hard}', cap '${cap}')"
  ((hard <= cap)) || hard=${cap}
  printf '%s=%s:%s' "${kind}" "${hard}" "${hard}"
}

render_containers_conf() {
  local nofile nproc
  nofile="$(ulimit_value nofile)"
  nproc="$(ulimit_value nproc)"
  cat <<EOF
# Managed by tools/testhost/testhost.sh setup (rewritten when the limits change).
# crun refuses this host's hybrid cgroup (v1) layout; systemd is not PID 1 on
# the host, so cgroups are managed by podman itself. Root here lacks
# CAP_SYS_RESOURCE, so container ulimits must not exceed what podman itself
# runs with: nofile <= ulimit -Hn, nproc <= min(ulimit -Hu, kernel.pid_max).
[containers]
default_ulimits = ["${nofile}", "${nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
}

cmd_setup() {
  need_root
  local changed=0 missing=() p updated=0
  for p in "${HOST_PACKAGES[@]}"; do
    pkg_installed "${p}" || missing+=("${p}")
  done
  if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    for p in "${missing[@]}"; do
      if ! pkg_has_candidate "${p}"; then
        log "no install candidate for ${p}: running apt-get update"
        apt-get update -q
        updated=1
        break
      fi
    done
    log "installing: ${missing[*]}"
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
      ((updated == 0)) || die "apt-get install failed"
      log "install failed, retrying after apt-get update"
      apt-get update -q
      apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    changed=1
  else
    log "packages already installed: ${HOST_PACKAGES[*]}"
  fi

  local kver
  kver="$(dpkg-query -W -f='${Version}' debian-archive-keyring)"
  if dpkg --compare-versions "${kver}" lt "${KEYRING_MIN_VERSION}"; then
    log "debian-archive-keyring ${kver} lacks the trixie keys: upgrading"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --only-upgrade debian-archive-keyring
    kver="$(dpkg-query -W -f='${Version}' debian-archive-keyring)"
    dpkg --compare-versions "${kver}" ge "${KEYRING_MIN_VERSION}" ||
      die "debian-archive-keyring ${kver} < ${KEYRING_MIN_VERSION}: enable bookworm-updates or a current point release"
    changed=1
  fi

  # Drop-in rather than editing containers.conf: podman 4.3 (containers/common
  # 0.50) reads /etc/containers/containers.conf.d/*.conf after containers.conf.
  local want
  want="$(render_containers_conf)"
  if [[ -f "${CONF_DROPIN}" ]] && [[ "$(cat "${CONF_DROPIN}")" == "${want}" ]]; then
    log "${CONF_DROPIN} is up to date"
  else
    mkdir -p "$(dirname "${CONF_DROPIN}")"
    printf '%s\n' "${want}" >"${CONF_DROPIN}.tmp"
    mv "${CONF_DROPIN}.tmp" "${CONF_DROPIN}"
    log "wrote ${CONF_DROPIN}"
    changed=1
  fi

  local got
  got="$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}')"
  [[ "${got}" == "runc cgroupfs" ]] ||
    die "podman does not honour ${CONF_DROPIN}: runtime/cgroup manager is '${got}'"
  mkdir -p "${CACHE_DIR}"
  if ((changed)); then
    log "setup done (podman: ${got})"
  else
    log "setup: nothing to change (podman: ${got})"
  fi
}

# ---------------------------------------------------------------- image --

host_codename() {
  # shellcheck disable=SC1091
  (. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
}

# URIs of apt sources that serve the host's own suite with component main,
# in apt's reading order (one-line and deb822 formats).
apt_mirror_candidates() {
  local codename=$1 f
  local files=()
  [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "${f}" ]] && files+=("${f}")
  done
  for f in "${files[@]}"; do
    case "${f}" in
      *.sources)
        awk -v want="${codename}" '
          function flush() {
            if (("uris" in fl) && (" " fl["types"] " ") ~ / deb / &&
                (" " fl["suites"] " ") ~ (" " want " ") &&
                (" " fl["components"] " ") ~ / main / && tolower(fl["enabled"]) != "no") {
              split(fl["uris"], u, " "); print u[1]
            }
            split("", fl); last = ""
          }
          { sub(/\r$/, "") }
          /^#/ { next }
          /^[ \t]*$/ { flush(); next }
          /^[ \t]/ { if (last != "") { v = $0; gsub(/[ \t]+/, " ", v); fl[last] = fl[last] v }; next }
          {
            i = index($0, ":"); if (i == 0) next
            last = tolower(substr($0, 1, i - 1)); v = substr($0, i + 1)
            gsub(/[ \t]+/, " ", v); sub(/^ /, "", v); sub(/ $/, "", v); fl[last] = v
          }
          END { flush() }' "${f}"
        ;;
      *)
        awk -v want="${codename}" '
          { sub(/\r$/, "") }
          $1 == "deb" {
            i = 2
            if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) != want) next
            for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; next }
          }' "${f}"
        ;;
    esac
  done
}

debian_mirror() {
  if [[ -n "${TESTHOST_MIRROR:-}" ]]; then
    printf '%s' "${TESTHOST_MIRROR%/}"
    return
  fi
  local codename uri
  codename="$(host_codename)"
  [[ -n "${codename}" ]] || die "cannot read VERSION_CODENAME from /etc/os-release"
  uri="$(apt_mirror_candidates "${codename}" | grep -E '^(https?|ftp|file)://' | head -n 1 || true)"
  [[ -n "${uri}" ]] ||
    die "no apt source for suite ${codename} (component main) found; set TESTHOST_MIRROR"
  printf '%s' "${uri%/}"
}

image_suite() {
  case "$1" in
    debian12) printf bookworm ;;
    debian13) printf trixie ;;
    *) die "unknown image '$1' (expected debian12 or debian13)" ;;
  esac
}

image_ref() {
  case "$1" in
    */* | *:*) printf '%s' "$1" ;;
    *) printf 'localhost/flaskops-%s:latest' "$1" ;;
  esac
}

# Unmount anything debootstrap may have left mounted below $1, then remove it.
remove_tree() {
  local dir=$1 mnt
  [[ -e "${dir}" ]] || return 0
  dir="$(realpath "${dir}")"
  while read -r mnt; do
    umount -l "${mnt}" || true
  done < <(awk -v d="${dir}/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  rm -rf --one-file-system "${dir}"
}

# Add the host CA certificates the image does not already trust (e.g. a
# TLS-intercepting proxy's CA) as local CAs, so they survive ca-certificates
# upgrades inside the container, then rebuild the image's bundle.
add_host_cas() {
  local rootfs=$1 dir n
  dir="${rootfs}/usr/local/share/ca-certificates/flaskops-host"
  mkdir -p "${dir}"
  n="$(awk -v outdir="${dir}" '
    FILENAME != prev { fileidx++; prev = FILENAME }
    { sub(/\r$/, "") }
    /-----BEGIN CERTIFICATE-----/ { inblk = 1; blk = "" }
    inblk { blk = blk $0 "\n" }
    /-----END CERTIFICATE-----/ && inblk {
      inblk = 0
      if (fileidx == 1) { seen[blk] = 1 }
      else if (!(blk in seen)) {
        n++; f = sprintf("%s/host-ca-%03d.crt", outdir, n); printf "%s", blk > f; close(f)
      }
    }
    END { print n + 0 }' "${rootfs}/etc/ssl/certs/ca-certificates.crt" "${HOST_CA_BUNDLE}")"
  log "adding ${n} host CA certificate(s) the image does not ship"
  local out
  out="$(chroot "${rootfs}" update-ca-certificates 2>&1)" || {
    printf '%s\n' "${out}" >&2
    die "update-ca-certificates failed in the image"
  }
}

build_rootfs() {
  local suite=$1 mirror=$2 rootfs=$3
  local include
  include="$(IFS=,; printf '%s' "${IMAGE_PACKAGES[*]}")"
  mkdir -p "${CACHE_DIR}/debs"
  if ! debootstrap --variant=minbase --components=main --include="${include}" \
    --keyring="${KEYRING}" --cache-dir="${CACHE_DIR}/debs" \
    "${suite}" "${rootfs}" "${mirror}" >"${rootfs}.log" 2>&1; then
    tail -n 30 "${rootfs}.log" >&2
    [[ -f "${rootfs}/debootstrap/debootstrap.log" ]] &&
      tail -n 30 "${rootfs}/debootstrap/debootstrap.log" >&2
    die "debootstrap ${suite} failed (full log: ${rootfs}.log)"
  fi
  customize_rootfs "${rootfs}" "${suite}"
}

customize_rootfs() {
  local rootfs=$1 suite=$2 unit
  add_host_cas "${rootfs}"
  while IFS= read -r unit; do
    [[ -n "${unit}" ]] || continue
    ln -sfn /dev/null "${rootfs}/etc/systemd/system/${unit}"
  done < <(masked_units "${suite}")
  # Empty machine-id: systemd generates one per container at boot.
  : >"${rootfs}/etc/machine-id"
  rm -f "${rootfs}/var/lib/dbus/machine-id"
  # Keep the image small; roles refresh the apt cache themselves.
  chroot "${rootfs}" apt-get clean
  find "${rootfs}/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name lock ! -name partial -delete
  rm -f "${rootfs}"/var/log/*.log "${rootfs}"/var/log/apt/* "${rootfs}"/var/cache/debconf/*-old
}

import_changes() {
  local recipe=$1 suite=$2
  printf '%s\n' \
    'CMD ["/sbin/init"]' \
    'ENV container=podman' \
    'STOPSIGNAL SIGRTMIN+3' \
    "LABEL ${LABEL_RECIPE}=${recipe}" \
    "LABEL ${LABEL_SUITE}=${suite}"
}

# Hash of everything that determines the image content.
recipe_hash() {
  local suite=$1
  {
    declare -f build_rootfs customize_rootfs add_host_cas import_changes masked_units
    printf '%s\n' "suite=${suite}" "${IMAGE_PACKAGES[@]}"
    sha256sum <"${HOST_CA_BUNDLE}"
  } | sha256sum | cut -c1-64
}

cmd_image() {
  need_root
  local name=${1:-}
  [[ -n "${name}" ]] || die "usage: $0 image <debian12|debian13>"
  local suite ref recipe current
  suite="$(image_suite "${name}")"
  ref="$(image_ref "${name}")"
  if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
    die "podman/debootstrap missing: run '$0 setup' first"
  fi
  recipe="$(recipe_hash "${suite}")"

  mkdir -p "${CACHE_DIR}/rootfs" "${CACHE_DIR}/work"
  exec 9>"${CACHE_DIR}/.lock-${name}"
  flock 9

  if podman image exists "${ref}"; then
    current="$(podman image inspect --format "{{ index .Labels \"${LABEL_RECIPE}\" }}" "${ref}")"
    if [[ "${current}" == "${recipe}" ]]; then
      log "${ref} is up to date (recipe ${recipe:0:12})"
      return 0
    fi
    log "${ref} has recipe '${current:0:12}', want ${recipe:0:12}: rebuilding"
  fi

  local tarball="${CACHE_DIR}/rootfs/${name}-${recipe}.tar"
  local start=${SECONDS}
  if [[ -f "${tarball}" ]]; then
    log "using cached rootfs ${tarball}"
  else
    local mirror rootfs="${CACHE_DIR}/work/${name}"
    mirror="$(debian_mirror)"
    log "bootstrapping ${suite} from ${mirror} (packages: ${IMAGE_PACKAGES[*]})"
    remove_tree "${rootfs}"
    build_rootfs "${suite}" "${mirror}" "${rootfs}"
    tar -C "${rootfs}" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' \
      --exclude='./sys/*' --exclude='./debootstrap' -cf "${tarball}.tmp" .
    mv "${tarball}.tmp" "${tarball}"
    remove_tree "${rootfs}"
    rm -f "${rootfs}.log"
    find "${CACHE_DIR}/rootfs" -name "${name}-*.tar" ! -path "${tarball}" -delete
  fi

  local old_id="" changes=() c
  old_id="$(podman image inspect --format '{{.Id}}' "${ref}" 2>/dev/null || true)"
  while IFS= read -r c; do changes+=(--change "${c}"); done < <(import_changes "${recipe}" "${suite}")
  podman import --quiet "${changes[@]}" --message "flaskops testhost ${suite}" "${tarball}" "${ref}" >/dev/null
  if [[ -n "${old_id}" ]]; then
    podman rmi "${old_id}" >/dev/null 2>&1 || log "old image ${old_id:0:12} still in use, kept"
  fi
  log "built ${ref} (${suite}, recipe ${recipe:0:12}) in $((SECONDS - start))s"
}

# ---------------------------------------------------------------- check --

CHECK_CONTAINER=""
cleanup_check() {
  [[ -z "${CHECK_CONTAINER}" ]] || podman rm -f -t 0 "${CHECK_CONTAINER}" >/dev/null 2>&1 || true
}

# Runs inside the container: print the CPU/memory limits cgroups show.
SHOW_LIMITS="$(cat <<'EOF'
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  echo "cgroup v2: cpu.max=$(cat /sys/fs/cgroup/cpu.max) memory.max=$(cat /sys/fs/cgroup/memory.max)"
else
  echo "cgroup v1: cpu.cfs_quota_us=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)" \
    "cpu.cfs_period_us=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)" \
    "memory.limit_in_bytes=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
fi
echo "nproc=$(nproc) MemTotal=$(awk "/^MemTotal/ {print \$2, \$3}" /proc/meminfo)" \
  "ulimit -Hn=$(ulimit -Hn) ulimit -Hu=$(ulimit -Hu)"
EOF
)"
readonly SHOW_LIMITS

# Runs inside a hardened transient unit: the unit must see its own 50M limit,
# a private writable /tmp and a read-only /usr.
UNIT_PROBE="$(cat <<'EOF'
set -e
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  lim=$(cat "/sys/fs/cgroup$(awk -F: "\$1 == 0 {print \$3}" /proc/self/cgroup)/memory.max")
else
  lim=$(cat "/sys/fs/cgroup/memory$(awk -F: "\$2 ~ /(^|,)memory(,|\$)/ {print \$3}" /proc/self/cgroup)/memory.limit_in_bytes")
fi
echo "unit memory limit: $lim"
[ "$lim" = 52428800 ] || { echo "MemoryMax=50M not applied to the unit cgroup"; exit 1; }
touch /tmp/probe
if touch /usr/probe 2>/dev/null; then echo "ProtectSystem=strict not effective"; exit 1; fi
echo "PrivateTmp and ProtectSystem=strict effective"
EOF
)"
readonly UNIT_PROBE

cmd_check() {
  need_root
  local name=${1:-}
  [[ -n "${name}" ]] || die "usage: $0 check <debian12|debian13|image-ref>"
  local ref
  ref="$(image_ref "${name}")"
  podman image exists "${ref}" || die "image ${ref} not found: run '$0 image ${name}'"

  trap cleanup_check EXIT
  CHECK_CONTAINER="flaskops-check-${name//[^a-zA-Z0-9]/-}-$$"
  local t0 t1 state=""
  t0="$(date +%s%N)"
  podman run -d --name "${CHECK_CONTAINER}" --privileged --cgroupns=private \
    --systemd=always --cpus 1 --memory 768m "${ref}" >/dev/null
  local deadline=$((SECONDS + BOOT_TIMEOUT))
  while ((SECONDS < deadline)); do
    if [[ "$(podman inspect --format '{{.State.Running}}' "${CHECK_CONTAINER}")" != true ]]; then
      podman logs "${CHECK_CONTAINER}" 2>&1 | tail -n 30 >&2
      die "container exited during boot"
    fi
    state="$(podman exec "${CHECK_CONTAINER}" systemctl is-system-running 2>/dev/null || true)"
    case "${state}" in
      running | degraded) break ;;
      *) sleep 0.2 ;;
    esac
  done
  t1="$(date +%s%N)"
  local boot_ms=$(((t1 - t0) / 1000000))
  local rc=0
  case "${state}" in
    running | degraded)
      log "${ref}: systemd ${state} after $((boot_ms / 1000)).$(printf '%03d' $((boot_ms % 1000)))s"
      ;;
    *)
      log "${ref}: systemd not up after ${BOOT_TIMEOUT}s (state '${state}')"
      podman exec "${CHECK_CONTAINER}" journalctl -b --no-pager -n 40 >&2 || true
      rc=1
      ;;
  esac

  local failed
  failed="$(podman exec "${CHECK_CONTAINER}" systemctl list-units --failed --no-legend --plain 2>&1 || true)"
  if [[ -n "${failed}" ]]; then
    log "failed units:"
    printf '%s\n' "${failed}" >&2
  else
    log "failed units: none"
  fi
  ((rc == 0)) || return "${rc}"

  podman exec "${CHECK_CONTAINER}" bash -c "${SHOW_LIMITS}" | sed 's/^/testhost:   /' >&2

  local out
  if out="$(podman exec "${CHECK_CONTAINER}" systemd-run --quiet --wait --pipe --collect \
    -p MemoryMax=50M -p ProtectSystem=strict -p PrivateTmp=yes /bin/sh -c "${UNIT_PROBE}" 2>&1)"; then
    printf '%s\n' "${out}" | sed 's/^/testhost:   /' >&2
    log "hardened transient unit: ok"
  else
    printf '%s\n' "${out}" | sed 's/^/testhost:   /' >&2
    log "hardened transient unit: FAILED"
    rc=1
  fi

  # Allocating 200M in a MemoryMax=50M unit must be killed (MemoryMax enforced).
  if out="$(podman exec "${CHECK_CONTAINER}" systemd-run --wait --pipe --collect \
    -p MemoryMax=50M -p MemorySwapMax=0 -p ProtectSystem=strict -p PrivateTmp=yes \
    python3 -c 'b = b"x" * (200 * 1024 * 1024); print("allocated", len(b))' 2>&1)"; then
    printf '%s\n' "${out}" | sed 's/^/testhost:   /' >&2
    log "MemoryMax=50M enforcement: FAILED (200M allocation survived)"
    rc=1
  else
    printf '%s\n' "${out}" | grep -iE 'result|status|killed' | sed 's/^/testhost:   /' >&2 || true
    log "MemoryMax=50M enforcement: ok (200M allocation was killed)"
  fi

  if ((rc == 0)); then
    log "check ${ref}: ok"
  else
    log "check ${ref}: FAILED"
  fi
  return "${rc}"
}

# ------------------------------------------------------------------ pin --

# On a cgroup v1 host whose named "systemd" hierarchy no systemd owns (this
# test host: podman with cgroupfs), privileged containers see that hierarchy
# whole, and their systemd moves PID 1 to the hierarchy's root init.scope. The
# container's own libpod-<id> directory there is then empty, and gets pruned
# once other containers' systemd instances clean up; from then on
# `podman exec` fails ("error adding pid ... cgroup.procs: no such file",
# rc 127) and Ansible finds the host unreachable. A process exec'd into the
# container stays in that directory and keeps it from being pruned. `pin`
# recreates the directory if it is already gone and starts that process once.
cmd_pin() {
  local name=${1:-}
  [[ -n "${name}" ]] || die "usage: $0 pin <container>"
  local id dir
  id="$(podman inspect --format '{{.Id}}' "${name}")" || die "pin: no container ${name}"
  dir="/sys/fs/cgroup/systemd/libpod_parent/libpod-${id}"
  if [[ -d /sys/fs/cgroup/systemd/libpod_parent && ! -d "${dir}" ]]; then
    mkdir "${dir}"
    log "pin ${name}: recreated its name=systemd cgroup"
  fi
  if podman exec "${name}" pgrep -f '^sleep infinity flaskops-pin' >/dev/null 2>&1; then
    return 0
  fi
  # argv[0] of the pinned process carries a marker so a second pin finds it.
  podman exec -d "${name}" bash -c 'exec -a "sleep infinity flaskops-pin" sleep infinity' >/dev/null
  podman exec "${name}" true
  log "pin ${name}: pinned"
}

# ----------------------------------------------------------------- main --

usage() {
  sed -n '2,15s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

main() {
  local cmd=${1:-}
  shift || true
  case "${cmd}" in
    setup) cmd_setup "$@" ;;
    image) cmd_image "$@" ;;
    check) cmd_check "$@" ;;
    pin) cmd_pin "$@" ;;
    *) usage ;;
  esac
}

main "$@"
