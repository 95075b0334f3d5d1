#!/usr/bin/env bash
# Prove the device install on linux/aarch64 without an ARM board.
#
# Debian bookworm arm64 (Python 3.11) in a chroot, run under QEMU user emulation, both from Debian's
# own packages. There, Debian's pip installs `scopelite[edge]` from a wheel of this repository (its
# dependencies from the package index, as on a Pi) and runs `celledge info` and `celledge classify`
# on the packaged model. The same wheel and the same dependency versions go into an x86_64 venv
# (Debian's python3.11 on this host) as the reference; the scores are compared image by image and
# everything is written to benchmarks/results/arm64-install.json.
#
# Usage (as root, on a Debian/Ubuntu x86_64 host):
#   tools/arm64_install_check.sh [--ref REF | --worktree] [--images DIR] [--root DIR] [--out FILE] [--fresh]
#
#   --ref REF     build the wheel from this commit (default HEAD: a clean tree, whatever is being edited)
#   --worktree    build it from the files as they are now instead (tracked and untracked, not ignored)
#   --images DIR  also classify these images (default: the first image of each class folder in
#                 ../shared/data/pbc96 when that exists); 8 generated crops are always classified
#                 (`celltrain synth --per-class 1 --fields 0 --no-video`, made on the host)
#   --root DIR    the arm64 root file system (default /srv/scopelite-arm64, kept between runs);
#                 the x86_64 reference and the run's files go to DIR-host
#   --out FILE    the record (default benchmarks/results/arm64-install.json)
#   --fresh       delete the root file system and the x86_64 reference first
#   --cpu "LIST"  the CPUs QEMU emulates for `celledge info` and `classify`, one run each (default
#                 "cortex-a76 cortex-a72": Raspberry Pi 5 and Pi 4; the install runs on the first)
#   --no-controls skip the two control runs of classify (see below) that show why the CPU files and a
#                 named CPU are needed
#   --ca-bundle F the CA bundle both pips trust (default: $PIP_CERT when set, e.g. behind a TLS-inspecting
#                 proxy; otherwise each side's own /etc/ssl/certs/ca-certificates.crt)
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian); PIP_INDEX_URL is passed to both
# pips when set (otherwise they use pypi.org); the host's pip configuration is otherwise ignored.
#
# Needs: root (apt-get, chroot), the Debian mirror and the package index, about 1 GB of disk, and a few
# minutes (QEMU emulates every aarch64 instruction; 6.8 min of steps on a 2-core x86_64 from scratch,
# benchmarks/results/arm64-install.json). binfmt_misc is NOT needed: each aarch64 program is
# started through qemu-aarch64-static explicitly. That has two consequences, both handled here:
#   * debootstrap's second stage runs dpkg inside the root, which needs binfmt_misc; instead the .debs it
#     downloaded are unpacked (no maintainer scripts run; Python and its libraries need none);
#   * an aarch64 program cannot start another by exec, so venvs are made with --without-pip (ensurepip
#     runs pip as a child process), pip comes from Debian's pip wheel (python3-pip-whl), and
#     `celledge` is run as `venv/bin/python venv/bin/celledge ...` (the console script pip wrote,
#     started through its interpreter instead of its #! line).
# The root has no /proc or /sys (nothing is mounted). LiteRT's CPU detection (cpuinfo) reads the CPU lists
# in /sys and the CPU's identity in /proc/cpuinfo; without them it fails and LiteRT silently runs without
# XNNPACK, unlike a Pi. So the script writes, as plain files, what a Pi's kernel shows there for the
# emulated CPU (Cortex-A76 or -A72), and runs QEMU with that CPU model (-cpu), never `max`. Two control
# runs of classify are recorded too: without those files (no XNNPACK: the builtin kernels round differently
# from x86_64's XNNPACK), and with QEMU 7.2's `max` CPU (XNNPACK's int8 results were wrong there).
# Re-running is safe: the root file system is reused once complete (.scopelite-rootfs-ok); both venvs
# are made afresh each time, so the install itself is always proven from scratch.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CMDLINE="tools/arm64_install_check.sh${*:+ $*}"
REF=HEAD WORKTREE=0 IMAGES="" ROOT=/srv/scopelite-arm64 OUT="$REPO/benchmarks/results/arm64-install.json" FRESH=0
SUITE=bookworm
CA_BUNDLE=${PIP_CERT:-}
CPUS="cortex-a76 cortex-a72"
CONTROLS=1
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
A64=/opt/scopelite  # inside the root file system
X86_PYTHON=/usr/bin/python3.11  # Debian's, as in the root; not whatever python3.11 comes first on PATH

die() { echo "Error: $*" >&2; exit 1; }
say() { echo "arm64-check: $*" >&2; }

while [ $# -gt 0 ]; do
  case $1 in
    --ref) REF=${2:?--ref needs a commit}; shift 2 ;;
    --worktree) WORKTREE=1; shift ;;
    --images) IMAGES=${2:?--images needs a folder}; shift 2 ;;
    --root) ROOT=${2:?--root needs a folder}; shift 2 ;;
    --out) OUT=${2:?--out needs a file}; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --cpu) CPUS=${2:?--cpu needs a list, e.g. "cortex-a76 cortex-a72"}; shift 2 ;;
    --no-controls) CONTROLS=0; shift ;;
    --ca-bundle) CA_BUNDLE=${2:?--ca-bundle needs a file}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root: it installs Debian packages and uses chroot (sudo $CMDLINE)"
[ "$(uname -m)" != aarch64 ] || die "this machine is aarch64 already: install natively (docs/deploy.md)"
command -v apt-get >/dev/null || die "needs a Debian or Ubuntu host (apt-get for debootstrap and qemu-user-static)"
git -C "$REPO" rev-parse --verify -q "$REF^{commit}" >/dev/null || die "--ref $REF is not a commit in $REPO"
if [ -z "$IMAGES" ] && [ -d "$REPO/../shared/data/pbc96" ]; then IMAGES="$REPO/../shared/data/pbc96"; fi
[ -z "$IMAGES" ] || [ -d "$IMAGES" ] || die "--images $IMAGES is not a folder"
for c in $CPUS; do case $c in cortex-a76|cortex-a72) ;; *) die "--cpu $c: use cortex-a76 (Pi 5) or cortex-a72 (Pi 4)" ;; esac; done
QCPU=${CPUS%% *}
[ -z "$CA_BUNDLE" ] || [ -f "$CA_BUNDLE" ] || die "CA bundle $CA_BUNDLE (--ca-bundle or \$PIP_CERT) is not a file"
ROOT=$(realpath -m "$ROOT")
HOSTDIR=$ROOT-host WORK=$ROOT-host/work X86VENV=$ROOT-host/venv

if [ "$FRESH" = 1 ]; then say "--fresh: removing $ROOT and $HOSTDIR"; rm -rf "$ROOT" "$HOSTDIR"; fi
rm -rf "$WORK"; mkdir -p "$WORK"
: >"$WORK/timings.tsv"; : >"$WORK/commands.tsv"
STEP=""

q() {  # a command line as one could paste it (arguments quoted where the shell would need it)
  local a out=()
  for a; do
    if [[ $a =~ ^[A-Za-z0-9_./:=+@%,-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}
timed() {  # timed NAME CMD...: run CMD (its output to $WORK/NAME.log); its wall time and command to timings.tsv
  local name=$1 t0 t1; shift
  STEP=$name
  say "$name ..."
  t0=$(date +%s.%N)
  if ! "$@" >"$WORK/$name.log" 2>&1; then
    tail -n 25 "$WORK/$name.log" >&2
    die "step '$name' failed (whole log: $WORK/$name.log)"
  fi
  t1=$(date +%s.%N)
  local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
  printf '%s\t%s\n' "$name" "$secs" >>"$WORK/timings.tsv"
  declare -F "$1" >/dev/null || printf '%s\t%s\n' "$name" "$(q "$@")" >>"$WORK/commands.tsv"
  say "$name: ${secs} s"
}

# Both sides get a clean environment: no host pip configuration, no cache, the same pip.
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
           PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
           ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL})
ARM_CA=/etc/ssl/certs/scopelite-pip-ca.crt  # the --ca-bundle, copied into the root
in_arm() {  # run an aarch64 program in the root; the command goes to the record
  printf '%s\t%s\n' "$STEP" "chroot $ROOT qemu-aarch64-static -cpu $QCPU $(q "$@")" >>"$WORK/commands.tsv"
  "${CLEAN_ENV[@]}" ${CA_BUNDLE:+PIP_CERT=$ARM_CA} chroot "$ROOT" /usr/bin/qemu-aarch64-static -cpu "$QCPU" "$@"
}
in_x86() {
  printf '%s\t%s\n' "$STEP" "$(q "$@")" >>"$WORK/commands.tsv"
  "${CLEAN_ENV[@]}" ${CA_BUNDLE:+PIP_CERT=$CA_BUNDLE} HOME="$HOSTDIR" "$@"
}
pi_cpu_files() {  # what a Pi's kernel shows in /proc/cpuinfo and /sys for CPU $1, as plain files in the root
  local midr feat i n
  case $1 in  # implementer variant part revision, and the kernel's Features line (Pi 5: BCM2712, Pi 4: BCM2711)
    cortex-a76) midr="0x41 0x4 0xd0b 1"
      feat="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    cortex-a72) midr="0x41 0x0 0xd08 3"; feat="fp asimd evtstrm crc32 cpuid" ;;
  esac
  set -- $midr
  n=$(nproc)
  [ -d "$ROOT/proc" ] && [ ! -L "$ROOT/proc" ] || { rm -f "$ROOT/proc"; mkdir "$ROOT/proc"; }
  mkdir -p "$ROOT/sys/devices/system/cpu"
  echo "0-$((n - 1))" >"$ROOT/sys/devices/system/cpu/possible"
  echo "0-$((n - 1))" >"$ROOT/sys/devices/system/cpu/present"
  for ((i = 0; i < n; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: %s\nCPU architecture: 8\n' "$i" "$feat" "$1"
    printf 'CPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$2" "$3" "$4"
  done >"$ROOT/proc/cpuinfo"
}
no_cpu_files() { rm -f "$ROOT/proc/cpuinfo" "$ROOT/sys/devices/system/cpu/possible" "$ROOT/sys/devices/system/cpu/present"; }

# 1. Debian's packages on the host: QEMU user emulation, debootstrap, and python3.11 for the reference.
apt_install() {
  local need=()
  command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
  [ -x "$X86_PYTHON" ] || need+=(python3.11)
  if [ ${#need[@]} -gt 0 ]; then
    printf 'apt\t%s\n' "apt-get install -y --no-install-recommends ${need[*]}" >>"$WORK/commands.tsv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    printf 'apt\t%s\n' "(nothing to install: qemu-user-static, debootstrap, debian-archive-keyring, python3.11 present)" \
      >>"$WORK/commands.tsv"
  fi
  [ -x "$X86_PYTHON" ] || { echo "no $X86_PYTHON on this host (Debian's python3.11, for the x86_64 reference)"; return 1; }
}
timed apt apt_install

# 2. Debian bookworm arm64 with Python 3.11, unpacked into $ROOT.
unpack_base() {
  # debootstrap --foreign unpacked the Required packages; the rest (the --include list and its
  # dependencies) is installed by its second stage, which runs dpkg inside the root. Unpack those .debs.
  local pkg deb
  for pkg in $(cat "$ROOT/debootstrap/base"); do
    deb=$(awk -v p="$pkg" '$1 == p {print $2}' "$ROOT/debootstrap/debpaths")
    [ -n "$deb" ] || { echo "debootstrap downloaded no .deb for $pkg"; return 1; }
    echo "unpacking $deb"
    # --keep-directory-symlink: /lib is a link to usr/lib (merged /usr); plain dpkg-deb -x would replace it.
    dpkg-deb --fsys-tarfile "$ROOT$deb" | tar -x -C "$ROOT" --keep-directory-symlink
  done
  # ca-certificates' maintainer script (update-ca-certificates) would write the bundle that Debian's pip
  # reads instead of certifi: every Mozilla certificate the package ships, concatenated.
  mkdir -p "$ROOT/etc/ssl/certs"
  cat "$ROOT"/usr/share/ca-certificates/mozilla/*.crt >"$ROOT/etc/ssl/certs/ca-certificates.crt"
}
if [ ! -f "$ROOT/.scopelite-rootfs-ok" ]; then
  rm -rf "$ROOT"
  timed debootstrap debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3.11,python3-pip-whl,ca-certificates "$SUITE" "$ROOT" "$MIRROR"
  timed unpack unpack_base
  touch "$ROOT/.scopelite-rootfs-ok"
else
  say "reusing the arm64 root file system in $ROOT (--fresh to rebuild it)"
fi
cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
pi_cpu_files "$QCPU"
rm -f "$ROOT$ARM_CA"; [ -z "$CA_BUNDLE" ] || cp -L "$CA_BUNDLE" "$ROOT$ARM_CA"
PIPWHL=$(cd "$ROOT" && ls usr/share/python-wheels/pip-*.whl | head -n 1)
[ -n "$PIPWHL" ] || die "python3-pip-whl is missing from $ROOT (try --fresh)"
[ -s "$ROOT/etc/ssl/certs/ca-certificates.crt" ] || die "$ROOT has no CA bundle for pip (try --fresh)"
PIPWHL=/$PIPWHL
check_root() {
  [ "$(in_arm /usr/bin/python3.11 -c 'import platform; print(platform.machine())')" = aarch64 ] ||
    { echo "python3.11 in $ROOT does not run as aarch64 under qemu-aarch64-static (try --fresh)"; return 1; }
}
timed check-root check_root

# 3. The wheel, built on the host from REF (or the working tree) with pip's own build isolation.
make_x86_venv() {
  rm -rf "$X86VENV"
  "$X86_PYTHON" -m venv --without-pip "$X86VENV"
  in_x86 "$X86VENV/bin/python" "$ROOT$PIPWHL/pip" install --no-index "$ROOT$PIPWHL"
}
build_wheel() {
  rm -rf "$WORK/src" "$WORK/wheel"; mkdir -p "$WORK/src" "$WORK/wheel"
  if [ "$WORKTREE" = 1 ]; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
       tar --null -T - --ignore-failed-read -c) | tar -x -C "$WORK/src"
  else
    git -C "$REPO" archive "$REF" | tar -x -C "$WORK/src"
  fi
  in_x86 "$X86VENV/bin/python" -m pip wheel --no-deps -w "$WORK/wheel" "$WORK/src"
}
timed venv-x86_64 make_x86_venv
timed wheel build_wheel
WHEEL=$(ls "$WORK"/wheel/scopelite-*.whl)
"$X86VENV/bin/python" -c 'import sys, zipfile; n = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(0 if "scopelite/edge/models/bloodcell_int8.tflite" in n else 1)' "$WHEEL" ||
  die "$WHEEL does not carry scopelite/edge/models/bloodcell_int8.tflite (package data)"

# 4. The install on aarch64: a venv, Debian's pip, then `pip install scopelite-*.whl[edge]`.
rm -rf "$ROOT$A64"; mkdir -p "$ROOT$A64/in"
cp "$WHEEL" "$REPO/tools/arm64_record.py" "$ROOT$A64/in/"
ARM_WHEEL=$A64/in/$(basename "$WHEEL")
make_arm_venv() {
  in_arm /usr/bin/python3.11 -m venv --without-pip "$A64/venv"
  in_arm "$A64/venv/bin/python" "$PIPWHL/pip" install --no-index "$PIPWHL"
}
timed venv-aarch64 make_arm_venv
timed pip-install-aarch64 in_arm "$A64/venv/bin/python" -m pip install "$ARM_WHEEL[edge]"
probe_arm() { in_arm "$A64/venv/bin/python" "$A64/in/arm64_record.py" probe >"$WORK/probe-aarch64.json"; }
timed probe-aarch64 probe_arm

# 5. The x86_64 reference: the same wheel, pinned to the versions pip chose on aarch64.
"$X86VENV/bin/python" -c 'import json, sys; v = json.load(open(sys.argv[1]))["versions"]
print("\n".join(f"{d}=={v[d]}" for d in ("numpy", "opencv-python-headless", "ai-edge-litert", "click")))' \
  "$WORK/probe-aarch64.json" >"$WORK/constraints.txt"
timed pip-install-x86_64 in_x86 "$X86VENV/bin/python" -m pip install -c "$WORK/constraints.txt" "$WHEEL[edge]"
probe_x86() { in_x86 "$X86VENV/bin/python" "$REPO/tools/arm64_record.py" probe >"$WORK/probe-x86_64.json"; }
timed probe-x86_64 probe_x86

# 6. The images: generated crops (and real ones when given), the same bytes on both machines.
make_images() {
  mkdir -p "$WORK/images"
  in_x86 "$X86VENV/bin/celltrain" synth "$WORK/images/synthetic" --per-class 1 --fields 0 --no-video
  rm -rf "$WORK/images/synthetic/fields"
  if [ -n "$IMAGES" ]; then
    local d f
    for d in "$IMAGES"/*/; do
      f=$(find "$d" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort | head -n 1)
      [ -z "$f" ] || install -D -m 0644 "$f" "$WORK/images/given/$(basename "$d")/$(basename "$f")"
    done
  fi
  cp -r "$WORK/images" "$ROOT$A64/in/images"
}
timed images make_images

# 7. celledge info and celledge classify on the packaged model, on both machines.
ARM_MODEL=$("$X86VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["packaged_model"]["path"])' \
  "$WORK/probe-aarch64.json")
X86_MODEL=$("$X86VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["packaged_model"]["path"])' \
  "$WORK/probe-x86_64.json")
info_arm() { in_arm "$A64/venv/bin/python" "$A64/venv/bin/celledge" info "$ARM_MODEL" >"$WORK/info-$RUN.txt"; }
classify_arm() { in_arm "$A64/venv/bin/python" "$A64/venv/bin/celledge" --verbose classify "$A64/in/images" --json -k 8 \
  >"$WORK/classify-$RUN.jsonl"; }
info_x86() { in_x86 "$X86VENV/bin/celledge" info "$X86_MODEL" >"$WORK/info-x86_64.txt"; }
classify_x86() { in_x86 "$X86VENV/bin/celledge" --verbose classify "$WORK/images" --json -k 8 >"$WORK/classify-x86_64.jsonl"; }
for QCPU in $CPUS; do
  RUN=aarch64-$QCPU
  pi_cpu_files "$QCPU"
  timed "celledge-info-$RUN" info_arm
  timed "celledge-classify-$RUN" classify_arm
done
if [ "$CONTROLS" = 1 ]; then
  QCPU=cortex-a76 RUN=aarch64-control-no-cpu-files
  no_cpu_files
  timed "celledge-classify-$RUN" classify_arm
  QCPU=max RUN=aarch64-control-max
  pi_cpu_files cortex-a76
  timed "celledge-classify-$RUN" classify_arm
fi
QCPU=${CPUS%% *}
pi_cpu_files "$QCPU"  # leave the root as the first Pi
timed celledge-info-x86_64 info_x86
timed celledge-classify-x86_64 classify_x86

# 8. The record.
if [ "$WORKTREE" = 1 ]; then SRC_DESC="working tree at $(git -C "$REPO" rev-parse HEAD) (uncommitted edits included)"
else SRC_DESC="git archive $REF = $(git -C "$REPO" rev-parse "$REF^{commit}")"; fi
PY_DEB=$(awk '$1 == "python3.11" {print $2}' "$ROOT/debootstrap/debpaths")
env CMDLINE="$CMDLINE" SRC_DESC="$SRC_DESC" WHEEL="$WHEEL" PY_DEB="$PY_DEB" PIPWHL="$PIPWHL" SUITE="$SUITE" \
    MIRROR="$MIRROR" QEMU="$(qemu-aarch64-static --version | head -n 1)" QEMU_DEB="$(dpkg-query -W -f '${Version}' qemu-user-static)" \
    DEBOOTSTRAP_DEB="$(dpkg-query -W -f '${Version}' debootstrap)" HOST_OS="$(. /etc/os-release; echo "$PRETTY_NAME")" \
    CA_BUNDLE="$CA_BUNDLE" CPUS="$CPUS" ARM_IMAGES="$A64/in/images" X86_IMAGES="$WORK/images" IMAGES_GIVEN="$IMAGES" \
  "$X86VENV/bin/python" - "$WORK/meta.json" "$WORK/probe-x86_64.json" <<'EOF'
import datetime, hashlib, json, os, sys
e = os.environ
host = json.load(open(sys.argv[2]))["sysinfo_machine"]  # the host machine as every benchmark records it
meta = {
    "what": "pip install scopelite[edge] on linux/aarch64 (Debian bookworm arm64, Python 3.11) under QEMU user "
            "emulation, then celledge info and celledge classify on the packaged model; the same wheel and "
            "versions on x86_64 as the reference",
    "command": e["CMDLINE"],
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": {"os": e["HOST_OS"], **host},
    "source": e["SRC_DESC"],
    "wheel": {"name": os.path.basename(e["WHEEL"]), "sha256": hashlib.sha256(open(e["WHEEL"], "rb").read()).hexdigest()},
    "emulation": {"qemu": e["QEMU"], "qemu_user_static_deb": e["QEMU_DEB"], "debootstrap_deb": e["DEBOOTSTRAP_DEB"],
                  "suite": e["SUITE"], "mirror": e["MIRROR"], "python_deb": os.path.basename(e["PY_DEB"]),
                  "pip_wheel": os.path.basename(e["PIPWHL"]), "binfmt_misc": "not used", "cpus": e["CPUS"].split(),
                  "pip_ca_bundle": e["CA_BUNDLE"] or "each side's /etc/ssl/certs/ca-certificates.crt",
                  "how": "chroot + qemu-aarch64-static -cpu CPU named explicitly; debootstrap --foreign, its .debs "
                         "unpacked instead of the second stage; console scripts started through the venv's python; "
                         "/proc/cpuinfo and /sys/devices/system/cpu/{possible,present} written as a Pi's kernel "
                         "shows them for CPU, so that LiteRT's cpuinfo starts and XNNPACK is applied as on a Pi"},
    "images_dir": {"aarch64": e["ARM_IMAGES"], "x86_64": e["X86_IMAGES"]},
    "images": "synthetic/: celltrain synth --per-class 1 --fields 0 --no-video (seed 0)"
              + ("; given/: the first image of each class folder of " + os.path.basename(e["IMAGES_GIVEN"].rstrip("/"))
                 if e["IMAGES_GIVEN"] else ""),
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
EOF
mkdir -p "$(dirname "$OUT")"
"$X86VENV/bin/python" "$REPO/tools/arm64_record.py" report --work "$WORK" --out "$OUT"
say "done: the install, info and classify ran on aarch64; logs in $WORK"
