#!/usr/bin/env bash
# Set up refseg_ros from nothing, idempotently:
#   1. a Python 3.11 virtual environment (<repo>/.venv, or $REFSEG_VENV),
#   2. the pinned dependencies from requirements/ (torch, sam2, the ROS 2 Kilted wheels,
#      colcon/ament/rosidl build tools, model and test libraries; then Ray, the optional
#      `cluster` extra, unless REFSEG_SETUP_CLUSTER=0),
#   3. the include paths that the ROS wheels' exported CMake targets name,
#   4. this package installed editable into the venv (console scripts),
#   5. a colcon build of the messages and services into <repo>/build and <repo>/install.
# A step whose inputs did not change since its last success is skipped, so a second run
# takes a few seconds. Every failure ends with one line "setup.sh: FAILED [step]: reason".
# Step output goes to <repo>/log/setup/<step>.log.
#
# Environment: REFSEG_VENV (venv directory), REFSEG_PYTHON (interpreter to create it
# with, default python3.11), REFSEG_SETUP_QUIET=1 (print only failures),
# REFSEG_SETUP_CLUSTER=0 (no Ray).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${REFSEG_VENV:-$REPO/.venv}
PYTHON=${REFSEG_PYTHON:-python3.11}
REQ=$REPO/requirements
LOGDIR=$REPO/log/setup
STAMPS=$VENV/.refseg-setup
BUILD_STAMP=$REPO/install/.refseg-colcon.sha256
START=$SECONDS
STEP=preflight

say() { [ "${REFSEG_SETUP_QUIET:-0}" = 1 ] || echo "setup.sh: $*"; }

REPORTED=0
fail() {
    echo "setup.sh: FAILED [$STEP]: $*" >&2
    REPORTED=1
    exit 1
}

# Unexpected errors (set -e) still end with the one line naming the step.
trap 'rc=$?; [ $rc -eq 0 ] || [ $REPORTED = 1 ] || echo "setup.sh: FAILED [$STEP]: command exited with status $rc (log: $LOGDIR)" >&2' EXIT

# run_logged STEP_LOG CMD...: run a command with its output in the step's log; on failure
# show the end of the log and return non-zero.
run_logged() {
    local log=$1
    shift
    local rc=0
    "$@" >>"$log" 2>&1 || rc=$?
    [ $rc -eq 0 ] && return 0
    echo "---- last lines of $log ----" >&2
    tail -n 25 "$log" | sed 's/^/  | /' >&2
    return $rc
}

# Reason for a failed pip run, read from its log.
pip_reason() {
    local log=$1 what
    what=$(grep -oE "No matching distribution found for [^ ]+" "$log" | tail -n 1 || true)
    if [ -n "$what" ]; then
        echo "wheel not found: ${what#No matching distribution found for } (see $log)"
        return
    fi
    if grep -qiE "No space left on device" "$log"; then
        echo "no space left on device (see $log)"
        return
    fi
    what=$(grep -oE "Failed to build [^ ]+" "$log" | tail -n 1 || true)
    if [ -n "$what" ]; then
        echo "${what} (see $log)"
        return
    fi
    echo "pip failed (see $log)"
}

hash_of() {
    # hash_of FILE...: one hash over the names and contents of the files (missing ones count too)
    local f
    for f in "$@"; do
        echo "== $f"
        if [ -f "$f" ]; then cat "$f"; else echo "(missing)"; fi
    done | sha256sum | cut -d' ' -f1
}

free_gib() {
    local dir=$1
    while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
    df -Pk "$dir" | awk 'NR==2 { printf "%d", $4 / 1048576 }'
}

# --------------------------------------------------------------------------- preflight
mkdir -p "$LOGDIR"
exec 9>"$LOGDIR/.lock"
if ! flock -w 1800 9; then
    fail "another setup.sh is still running on this checkout (lock $LOGDIR/.lock)"
fi

command -v "$PYTHON" >/dev/null 2>&1 || fail "$PYTHON not found (install CPython 3.11 or set REFSEG_PYTHON)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
    || fail "$PYTHON is not CPython 3.11 (the ROS 2 wheels are cp311)"
for tool in cmake make cc c++; do
    command -v "$tool" >/dev/null 2>&1 || fail "missing build tool '$tool' (Debian: apt-get install build-essential cmake)"
done
cmake_version=$(cmake --version | awk 'NR==1 { print $3 }')
[ "$(printf '%s\n' 3.16 "$cmake_version" | sort -V | head -n 1)" = 3.16 ] \
    || fail "cmake $cmake_version is older than 3.16"

REQ_FILES=("$REQ/torch.txt" "$REQ/ros.txt" "$REQ/main.txt" "$REQ/constraints.txt")
for f in "${REQ_FILES[@]}"; do
    [ -f "$f" ] || fail "missing requirements file $f"
done
PY_ID=$("$PYTHON" -c 'import sys; print(sys.version)')
DEPS_HASH=$(echo "$PY_ID SAM2_BUILD_CUDA=0 $(hash_of "${REQ_FILES[@]}")" | sha256sum | cut -d' ' -f1)
deps_needed=1
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMPS/deps.sha256" 2>/dev/null)" = "$DEPS_HASH" ]; then
    deps_needed=0
fi
need_gib=1
[ $deps_needed = 1 ] && need_gib=10
have_gib=$(free_gib "$VENV")
[ "$have_gib" -ge "$need_gib" ] || fail "only ${have_gib} GiB free for $VENV, need ${need_gib} GiB"

# --------------------------------------------------------------------------- venv
STEP=venv
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; then
    fail "$VENV exists but its python is not a working 3.11; remove it and run again"
fi
if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    run_logged "$LOGDIR/venv.log" "$PYTHON" -m venv "$VENV" || fail "could not create venv at $VENV (see $LOGDIR/venv.log)"
fi
mkdir -p "$STAMPS"
# colcon must never crawl into the venv (it holds package.xml files of the ROS wheels).
touch "$VENV/COLCON_IGNORE"
VPY=$VENV/bin/python

# --------------------------------------------------------------------------- deps
STEP=deps
if [ $deps_needed = 1 ]; then
    rm -f "$STAMPS/deps.sha256"
    log=$LOGDIR/deps.log
    : >"$log"
    say "installing pinned dependencies into $VENV (a fresh set-up takes a few minutes; log: $log)"
    # torch first: sam2 is an sdist whose build imports torch (no build isolation).
    run_logged "$log" "$VPY" -m pip install -c "$REQ/constraints.txt" -r "$REQ/torch.txt" \
        || fail "$(pip_reason "$log")"
    run_logged "$log" env SAM2_BUILD_CUDA=0 "$VPY" -m pip install --no-build-isolation \
        -c "$REQ/constraints.txt" -r "$REQ/ros.txt" -r "$REQ/main.txt" \
        || fail "$(pip_reason "$log")"
    run_logged "$log" "$VPY" -c 'import torch, torchvision, sam2, numpy, cv2, yaml, rosbags, rclpy, colcon_core, catkin_pkg, rosidl_generator_py' \
        || fail "installed packages do not import (see $log)"
    echo "$DEPS_HASH" >"$STAMPS/deps.sha256"
else
    say "dependencies up to date"
fi

# --------------------------------------------------------------------------- cluster extra
# Ray, for refseg-eval's fan-out over worker processes (the `cluster` extra). A stamp of
# its own: adding or bumping it reinstalls nothing else and rebuilds nothing.
# REFSEG_SETUP_CLUSTER=0 leaves it out (refseg-eval then runs an index in one process).
STEP=cluster
CLUSTER_REQ=$REQ/cluster.txt
if [ "${REFSEG_SETUP_CLUSTER:-1}" = 0 ]; then
    say "Ray (cluster extra) left out: REFSEG_SETUP_CLUSTER=0"
else
    [ -f "$CLUSTER_REQ" ] || fail "missing requirements file $CLUSTER_REQ"
    CLUSTER_HASH=$(echo "$DEPS_HASH $(hash_of "$CLUSTER_REQ")" | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$STAMPS/cluster.sha256" 2>/dev/null)" != "$CLUSTER_HASH" ]; then
        rm -f "$STAMPS/cluster.sha256"
        log=$LOGDIR/cluster.log
        : >"$log"
        say "installing Ray, the cluster extra (log: $log)"
        run_logged "$log" "$VPY" -m pip install -c "$REQ/constraints.txt" -r "$CLUSTER_REQ" \
            || fail "$(pip_reason "$log")"
        run_logged "$log" "$VPY" -c 'import ray' || fail "ray does not import (see $log)"
        echo "$CLUSTER_HASH" >"$STAMPS/cluster.sha256"
    else
        say "Ray (cluster extra) up to date"
    fi
fi

# --------------------------------------------------------------------------- include paths
# The exported CMake targets of the ROS message wheels (e.g. sensor_msgs) name include
# directories of the machine the wheels were built on; CMake refuses targets whose
# include directories do not exist. Point those paths at this interpreter's headers and
# at the venv's numpy headers.
STEP=include-paths
py_include=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$VPY" -c 'import numpy; print(numpy.get_include())')
[ -f "$py_include/Python.h" ] || fail "Python headers missing in $py_include (Debian: python3.11-dev)"
[ -d "$np_include" ] || fail "numpy headers missing in $np_include"
link_if_missing() {
    local path=$1 target=$2
    # An existing directory (or a link to one) is kept; a missing or dangling one is (re)made.
    if [ -d "$path" ]; then
        return 0
    fi
    if [ -L "$path" ]; then
        rm -f "$path" 2>/dev/null || fail "cannot replace dangling link $path (needs write access to /opt/python)"
    fi
    mkdir -p "$(dirname "$path")" 2>/dev/null && ln -s "$target" "$path" 2>/dev/null \
        || fail "cannot create $path -> $target (needs write access to /opt/python, e.g. run as root)"
    say "linked $path -> $target"
}
PY_INCLUDE_LINK=/opt/python/cp311-cp311/include/python3.11
NP_INCLUDE_LINK=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
link_if_missing "$PY_INCLUDE_LINK" "$py_include"
link_if_missing "$NP_INCLUDE_LINK" "$np_include"

# --------------------------------------------------------------------------- editable install
STEP=package
PKG_HASH=$(echo "$VENV $(hash_of "$REPO/pyproject.toml" "$REPO/setup.py")" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMPS/package.sha256" 2>/dev/null)" != "$PKG_HASH" ] || [ ! -x "$VENV/bin/refseg-demo" ]; then
    rm -f "$STAMPS/package.sha256"
    log=$LOGDIR/package.log
    : >"$log"
    say "installing refseg_ros (editable) into the venv"
    run_logged "$log" "$VPY" -m pip install --no-deps --no-build-isolation -e "$REPO" \
        || fail "pip install -e . failed: $(pip_reason "$log")"
    echo "$PKG_HASH" >"$STAMPS/package.sha256"
else
    say "refseg_ros package install up to date"
fi

# --------------------------------------------------------------------------- colcon build
STEP=colcon
shopt -s nullglob
# Everything the build installs from its own inputs: the interfaces, the executables made
# from pyproject's console scripts, and the launch and parameter files.
IFACE_FILES=("$REPO"/msg/*.msg "$REPO"/srv/*.srv "$REPO/CMakeLists.txt" "$REPO/package.xml"
             "$REPO/pyproject.toml" "$REPO"/launch/* "$REPO"/config/*)
shopt -u nullglob
BUILD_HASH=$(echo "$VENV $DEPS_HASH $(hash_of "${IFACE_FILES[@]}")" | sha256sum | cut -d' ' -f1)
built_lib=$REPO/install/lib/librefseg_ros__rosidl_typesupport_c.so
if [ "$(cat "$BUILD_STAMP" 2>/dev/null)" != "$BUILD_HASH" ] || [ ! -f "$built_lib" ]; then
    rm -f "$BUILD_STAMP"
    log=$LOGDIR/colcon.log
    : >"$log"
    say "building messages and services with colcon (log: $log)"
    # The generated Python type support exports numpy's include directory; CMake rejects
    # an exported include directory inside the source tree, which <repo>/.venv is. The
    # numpy link above names the same headers from outside it.
    colcon_build() {
        (
            export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH
            export CMAKE_PREFIX_PATH=$VENV AMENT_PREFIX_PATH=$VENV
            unset PYTHONPATH
            "$VENV/bin/colcon" --log-base "$REPO/log" build \
                --paths "$REPO" \
                --build-base "$REPO/build" --install-base "$REPO/install" \
                --merge-install --event-handlers console_direct+ \
                --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python3" -DBUILD_TESTING=OFF \
                "-DPython3_NumPy_INCLUDE_DIR=$NP_INCLUDE_LINK"
        )
    }
    if ! run_logged "$log" colcon_build; then
        # A build tree configured for another venv or an older interface set can
        # poison the cache; try once more from an empty build directory.
        echo "---- retrying from a clean build directory ----" >>"$log"
        rm -rf "$REPO/build/refseg_ros"
        if ! run_logged "$log" colcon_build; then
            missing=$(tr '\n' ' ' <"$log" | grep -oE 'provided by +"[A-Za-z0-9_]+"' | tail -n 1 | grep -oE '"[^"]+"' | tr -d '"' || true)
            if [ -n "$missing" ]; then
                fail "CMake package '$missing' not found: add the wheel ros-$(echo "$missing" | tr _ -) to requirements/ros.txt (see $log)"
            fi
            bad_iface=$(grep -oE "Error processing '.*' of '[A-Za-z0-9_/]+'" "$log" | tail -n 1 || true)
            if [ -n "$bad_iface" ]; then
                fail "invalid interface definition: ${bad_iface#Error processing } (see $log)"
            fi
            cc_error=$(grep -E "(error|Error): " "$log" | grep -E "\.(c|cpp|h|hpp):[0-9]+" | head -n 1 || true)
            if [ -n "$cc_error" ]; then
                fail "compile error: ${cc_error} (see $log)"
            fi
            if grep -qE "non-existent path" "$log"; then
                fail "an imported CMake target names a missing include path (see $log)"
            fi
            fail "colcon build failed (see $log)"
        fi
    fi
    [ -f "$built_lib" ] || fail "colcon build did not produce $built_lib (see $log)"
    echo "$BUILD_HASH" >"$BUILD_STAMP"
else
    say "messages and services up to date (install/)"
fi

STEP=done
say "ready in $((SECONDS - START)) s: source scripts/env.sh to use it"
