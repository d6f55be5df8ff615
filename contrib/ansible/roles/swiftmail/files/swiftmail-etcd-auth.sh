#!/bin/bash
# Managed by Ansible (role swiftmail). Make etcd require authentication (its
# v3 users and roles), idempotently, on the cluster ENDPOINT talks to (users
# and roles are replicated: one member is enough):
#   root   may do everything; its password is the first line of stdin
#   USER   Patroni's: its role of the same name may read and write the keys
#          under PREFIX only; its password is the second line of stdin
# then `auth enable`. Prints one "changed: ..." line per change, nothing when
# etcd already was as asked. The passwords reach etcdctl in its environment
# and on its standard input, never on a command line.
#
#   swiftmail-etcd-auth http://127.0.0.1:2379 patroni /service/swiftmail/ < passwords
#
# A root password etcd refuses stops it (exit 1): change root's password
# with etcdctl first (contrib/ansible/README.md, "Rotating the passwords").
set -euo pipefail

[ $# = 3 ] || { echo "usage: $0 ENDPOINT USER PREFIX < passwords (root's, then USER's)" >&2; exit 2; }
ENDPOINT=$1 USER_NAME=$2 PREFIX=$3
IFS= read -r ROOT_PASSWORD || true
IFS= read -r USER_PASSWORD || true
[ -n "$ROOT_PASSWORD" ] && [ -n "$USER_PASSWORD" ] \
    || { echo "$0: two passwords expected on stdin (root's, then $USER_NAME's)" >&2; exit 2; }

export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=$ENDPOINT ETCDCTL_DIAL_TIMEOUT=5s ETCDCTL_COMMAND_TIMEOUT=15s
unset ETCDCTL_USER ETCDCTL_PASSWORD
ERRORS=$(mktemp)
trap 'rm -f "$ERRORS"' EXIT

changed() { echo "changed: $*"; }
fail() { echo "$0: $*" >&2; [ -s "$ERRORS" ] && grep -v '"level":"warn"' "$ERRORS" >&2; exit 1; }
# admin ARGS...: etcdctl as root (accepted, with a warning, while authentication is off).
admin() { ETCDCTL_USER="root:$ROOT_PASSWORD" etcdctl "$@" 2> "$ERRORS"; }
# set_password NAME PASSWORD: etcdctl reads it from stdin (one word: no spaces).
set_password() { admin user passwd "$1" --interactive=false <<< "$2" > /dev/null; }

# etcdctl's user and role commands wait forever for a member that is not
# there (etcd 3.4): ask for its status first, which gives up in time.
etcdctl endpoint status > /dev/null 2> "$ERRORS" || fail "etcd at $ENDPOINT does not answer"
# Is authentication on? Anonymous requests are then refused for want of a user name.
if etcdctl user list > /dev/null 2> "$ERRORS"; then
    enabled=false
elif grep -q "user name is empty" "$ERRORS"; then
    enabled=true
else
    fail "etcd at $ENDPOINT does not answer"
fi

users=$(admin user list) || fail "etcd refused root's password (swiftmail_etcd_root_password)"
has_user() { grep -qx "$1" <<< "$users"; }

if ! has_user root; then
    admin user add root --interactive=false <<< "$ROOT_PASSWORD" > /dev/null || fail "user add root"
    changed "user root created"
elif [ "$enabled" = false ]; then
    # Authentication off: nothing can tell whether root's password is this one.
    set_password root "$ROOT_PASSWORD" || fail "user passwd root"
    changed "root's password set"
fi

if ! admin role get "$USER_NAME" > /dev/null; then
    admin role add "$USER_NAME" > /dev/null || fail "role add $USER_NAME"
    changed "role $USER_NAME created"
fi
# `role get` lists a prefix once under "KV Read:" and once under "KV Write:".
if [ "$(admin role get "$USER_NAME" | grep -cF "(prefix $PREFIX)")" != 2 ]; then
    admin role grant-permission "$USER_NAME" --prefix=true readwrite "$PREFIX" > /dev/null \
        || fail "role grant-permission $USER_NAME"
    changed "role $USER_NAME may read and write $PREFIX"
fi

if ! has_user "$USER_NAME"; then
    admin user add "$USER_NAME" --interactive=false <<< "$USER_PASSWORD" > /dev/null \
        || fail "user add $USER_NAME"
    changed "user $USER_NAME created"
elif [ "$enabled" = false ] \
    || ! ETCDCTL_USER="$USER_NAME:$USER_PASSWORD" etcdctl get --keys-only --limit=1 "$PREFIX" \
        > /dev/null 2>&1; then
    # A new password (rotation): etcd invalidates the user's tokens; Patroni,
    # reloaded with this password before, logs in again with it.
    set_password "$USER_NAME" "$USER_PASSWORD" || fail "user passwd $USER_NAME"
    changed "$USER_NAME's password set"
fi
if ! admin user get "$USER_NAME" | grep -qE "^Roles:.* $USER_NAME( |$)"; then
    admin user grant-role "$USER_NAME" "$USER_NAME" > /dev/null || fail "user grant-role $USER_NAME"
    changed "user $USER_NAME has role $USER_NAME"
fi

if [ "$enabled" = false ]; then
    admin auth enable > /dev/null || fail "auth enable"
    changed "authentication enabled"
fi
