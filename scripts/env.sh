# Source this file (". scripts/env.sh") before running refseg_ros code from this checkout.
# It activates the venv made by scripts/setup.sh and makes the colcon install tree usable:
#   - PYTHONPATH: the source checkout first (hand-written modules), then the install
#     tree's site-packages (generated refseg_ros.msg / refseg_ros.srv),
#   - LD_LIBRARY_PATH: the install tree's and the ROS wheels' shared libraries (the
#     generated type supports load them),
#   - AMENT_PREFIX_PATH / CMAKE_PREFIX_PATH: the install tree and the venv,
#   - DDS confined to this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and a
#     ROS_DOMAIN_ID of this checkout's own unless one is set already.
# Sourcing it twice does not grow the paths.

_refseg_src=${BASH_SOURCE[0]:-$0}
REFSEG_ROOT=$(cd "$(dirname "$_refseg_src")/.." && pwd)
export REFSEG_ROOT
REFSEG_VENV=${REFSEG_VENV:-$REFSEG_ROOT/.venv}
export REFSEG_VENV

if [ ! -x "$REFSEG_VENV/bin/python" ]; then
    echo "env.sh: no virtual environment at $REFSEG_VENV; run: bash scripts/setup.sh" >&2
    unset _refseg_src
    return 1 2>/dev/null || exit 1
fi

VIRTUAL_ENV_DISABLE_PROMPT=${VIRTUAL_ENV_DISABLE_PROMPT:-1}
# shellcheck disable=SC1091
. "$REFSEG_VENV/bin/activate"

# _refseg_prepend VAR DIR...: put DIRs at the front of VAR, dropping earlier copies.
_refseg_prepend() {
    local var=$1 cur dir out=""
    shift
    eval "cur=\${$var:-}"
    for dir in "$@"; do
        out=${out:+$out:}$dir
    done
    local IFS=:
    for dir in $cur; do
        case ":$out:" in
            *":$dir:"*) ;;
            *) [ -n "$dir" ] && out=$out:$dir ;;
        esac
    done
    export "$var=$out"
}

_refseg_pyver=$("$REFSEG_VENV/bin/python" -c 'import sys; print("python%d.%d" % sys.version_info[:2])' 2>/dev/null || echo python3.11)
_refseg_site=$REFSEG_VENV/lib/$_refseg_pyver/site-packages

_refseg_prepend PYTHONPATH "$REFSEG_ROOT" "$REFSEG_ROOT/install/lib/$_refseg_pyver/site-packages"

# The ROS wheels ship their libraries in <venv>/lib and site-packages/ros_*.libs; their
# bootstrapper would re-execute python once to add them. Setting them here (plus the
# install tree's libraries) and marking the bootstrap done gives every python, and every
# subprocess, the same library path in one start.
_refseg_libs=("$REFSEG_ROOT/install/lib" "$REFSEG_VENV/lib")
for _refseg_d in "$_refseg_site"/ros_*.libs; do
    [ -d "$_refseg_d" ] && _refseg_libs+=("$_refseg_d")
done
_refseg_prepend LD_LIBRARY_PATH "${_refseg_libs[@]}"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1

_refseg_prepend AMENT_PREFIX_PATH "$REFSEG_ROOT/install" "$REFSEG_VENV"
_refseg_prepend CMAKE_PREFIX_PATH "$REFSEG_ROOT/install" "$REFSEG_VENV"

export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
# Discovery and traffic stay on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# Shared memory big enough for camera frames, UDP on loopback only (see the file).
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$REFSEG_ROOT/config/fastdds_local.xml}
if [ -z "${ROS_DOMAIN_ID:-}" ]; then
    # One domain per checkout (1..100), so that two checkouts on one machine do not
    # hear each other; set ROS_DOMAIN_ID yourself to join other nodes.
    ROS_DOMAIN_ID=$(( $(printf '%s' "$REFSEG_ROOT" | cksum | cut -d' ' -f1) % 100 + 1 ))
    export ROS_DOMAIN_ID
fi

unset _refseg_src _refseg_pyver _refseg_site _refseg_libs _refseg_d
unset -f _refseg_prepend
