# Debian 12 targets for the role's split test: one systemd-nspawn machine per
# network namespace, joined by a bridge, reached over SSH. Sourced by run.sh.
#
# Cache (kept between runs, under $CACHE): base-KEY/ (the debootstrapped tree with
# sshd, python3 and nftables), debs-KEY/ (a flat apt repository with every Debian
# package the role installs, so the targets need no network beyond the bridge)
# and wheels-*/ (SwiftMail's dependencies as wheels, for `pip --no-index`).
# Per run (under $RUN): each target's copy of base/, its console log, the SSH
# key and the inventory.

NET=${SWA_NET:-10.78.13}          # the bridge's /24 (the cluster test uses 10.77.0)
# The bridge (in the root namespace: the controller is $NET.1) and the prefix of
# the network namespaces and host-side veth ends follow the net's third number
# unless given, so a run on another net (SWA_NET) at the same time neither
# collides with this one nor removes its namespaces as leftovers.
if [ "$NET" = 10.78.13 ]; then
    BRIDGE=${SWA_BRIDGE:-swabr0} PREFIX=${SWA_PREFIX:-swae-}
else
    BRIDGE=${SWA_BRIDGE:-swabr${NET##*.}} PREFIX=${SWA_PREFIX:-swa${NET##*.}-}
fi
BASE_PACKAGES=systemd,netbase,systemd-sysv,dbus,openssh-server,sudo,python3,python3-venv,python3-packaging,python3-apt,ca-certificates,iproute2,nftables,netcat-openbsd,curl
# What the role installs from Debian on some host (downloaded once into debs/).
REPO_PACKAGES="postgresql postgresql-client redis-server haproxy openssl pgbackrest python3-psycopg2 acl prometheus prometheus-node-exporter"
# A scenario that installs more (the HA one: patroni, etcd-server, redis-sentinel) adds them here.
REPO_PACKAGES="$REPO_PACKAGES${SWA_EXTRA_PACKAGES:+ $SWA_EXTRA_PACKAGES}"
MIRROR=${SWA_MIRROR:-http://deb.debian.org/debian}

declare -A TARGET_PID=()
# The cache follows the package lists: a changed list builds a new tree or repository.
CACHE_KEY=$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-10)
BASE=$CACHE/base-$CACHE_KEY
DEBS=$CACHE/debs-$(echo "$BASE_PACKAGES $REPO_PACKAGES" | sha256sum | cut -c1-10)

# lock_cache -x|-s: take the cache's lock on fd 9, exclusive to build or change
# what is cached, shared to read it; unlock_cache releases it. Two runs at once
# (another SWA_NET) then build the cache once and never copy a half-built tree.
lock_cache() {
    mkdir -p "$CACHE"
    exec 9> "$CACHE/.lock"
    flock -w 1200 "$1" 9 || { echo "the cache $CACHE stayed locked for 20 minutes" >&2; return 1; }
}
unlock_cache() { flock -u 9; exec 9>&-; }

# The cached Debian tree and flat repository; built once (minutes), reused after.
# Call with the cache locked (-x).
prepare_base() {
    if [ ! -f "$BASE/.complete" ]; then
        rm -rf "$BASE"
        if [ ! -f "$BASE.tmp/.debootstrapped" ]; then
            rm -rf "$BASE.tmp"
            debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$BASE.tmp" \
                "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log"; return 1; }
            touch "$BASE.tmp/.debootstrapped"
        fi
        # The targets' sshd: root by key only; no host keys in the shared tree.
        rm -f "$BASE".tmp/etc/ssh/ssh_host_*
        printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' \
            > "$BASE.tmp/etc/ssh/sshd_config.d/e2e.conf"
        # Each target gets host keys of its own (start_target).
        ln -sf /dev/null "$BASE.tmp/etc/systemd/system/getty@.service"
        ln -sf /dev/null "$BASE.tmp/etc/systemd/system/systemd-timesyncd.service"
        touch "$BASE.tmp/.complete"
        mv "$BASE.tmp" "$BASE"
    fi
    if [ ! -f "$DEBS/.complete" ]; then
        rm -rf "$DEBS"
        local chroot_cache=$BASE/var/cache/apt/archives
        chroot "$BASE" apt-get -qq update
        # shellcheck disable=SC2086
        chroot "$BASE" apt-get -qq install --download-only -y --no-install-recommends $REPO_PACKAGES
        mkdir -p "$DEBS"
        mv "$chroot_cache"/*.deb "$DEBS/"
        chroot "$BASE" apt-get -qq clean
        rm -rf "$BASE"/var/lib/apt/lists/*
        (cd "$DEBS" && apt-ftparchive packages . > Packages)
        touch "$DEBS/.complete"
    fi
}

# Remove what an earlier, killed run left: machines, namespaces, the bridge.
remove_leftovers() {
    local ns
    for ns in $(ip netns list | awk -v p="$PREFIX" 'index($1, p) == 1 {print $1}'); do
        # shellcheck disable=SC2046
        kill -9 $(ip netns pids "$ns") 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    # A deleted namespace's veth end can outlive it for a while: remove it now.
    local link
    for link in $(ip -o link show | awk -F': ' -v p="$PREFIX" 'index($2, p) == 1 {sub(/@.*/, "", $2); print $2}'); do
        ip link del "$link" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}

start_bridge() {
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

# add_namespace NAME ADDRESS: a network namespace on the bridge with ADDRESS.
add_namespace() {
    local ns=$PREFIX$1
    ip netns add "$ns"
    ip link add "$ns" type veth peer name eth0 netns "$ns"
    ip link set "$ns" master "$BRIDGE" up
    ip -n "$ns" addr add "$2/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    # No default route: the targets reach the bridge only (a lookup of a name
    # outside fails at once instead of waiting for an answer that never comes).
}

# start_target NAME ADDRESS: copy the tree, boot it with systemd in its own
# namespace and wait until its sshd answers.
start_target() {
    local name=$1 address=$2 root=$RUN/$1
    add_namespace "$name" "$address"
    flock -w 1200 -s "$CACHE/.lock" cp -a --reflink=auto "$BASE" "$root"
    echo "$name" > "$root/etc/hostname"
    {
        echo "127.0.0.1 localhost"
        echo "$address $name"
    } > "$root/etc/hosts"
    ssh-keygen -q -A -f "$root"
    install -d -m 700 "$root/root/.ssh"
    install -m 600 "$RUN/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
    : > "$root/etc/resolv.conf"
    echo "deb [trusted=yes] file:/srv/debs ./" > "$root/etc/apt/sources.list"
    rm -f "$root"/etc/apt/sources.list.d/*
    # Trust what the host trusts (package proxies with their own CA).
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    setsid systemd-nspawn --quiet -D "$root" --boot -M "$name" --register=no --keep-unit \
        --network-namespace-path="/run/netns/$PREFIX$name" --console=pipe \
        --capability=CAP_NET_ADMIN \
        --bind-ro="$DEBS:/srv/debs" --bind-ro="$WHEELS:/srv/wheels" \
        > "$RUN/$name.console.log" 2>&1 < /dev/null &
    TARGET_PID[$name]=$!
    local _
    for _ in $(seq 1 90); do
        if ssh_to "$address" true 2>/dev/null; then
            # Package lists, as a freshly installed host has them (from the local repository).
            ssh_to "$address" apt-get -qq update
            return 0
        fi
        kill -0 "${TARGET_PID[$name]}" 2>/dev/null || break
        sleep 1
    done
    echo "target $name did not boot or its sshd does not answer:" >&2
    tail -30 "$RUN/$name.console.log" >&2
    return 1
}

ssh_to() {
    local address=$1
    shift
    ssh -i "$RUN/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5 \
        "root@$address" "$@"
}

# stop_target NAME: power one target off (a host lost for good); its namespace
# stays until stop_targets.
stop_target() {
    local pid=${TARGET_PID[$1]} _
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
    unset "TARGET_PID[$1]"
}

# Power every target off (SIGTERM: nspawn shuts the container down), then
# kill what still runs and remove the namespaces and the bridge.
stop_targets() {
    local name pid _
    for name in "${!TARGET_PID[@]}"; do
        kill -TERM "${TARGET_PID[$name]}" 2>/dev/null || true
    done
    for _ in $(seq 1 20); do
        local alive=0
        for pid in "${TARGET_PID[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.5
    done
    for pid in "${TARGET_PID[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    TARGET_PID=()
    remove_leftovers
}
