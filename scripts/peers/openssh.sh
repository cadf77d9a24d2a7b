#!/usr/bin/env bash
# OpenSSH, the real reader of the SSHKey and SSHCertificate generators' keys and certificates:
#   - ssh-keygen (`-y` derives the public key from a returned private key, `-Y sign` and
#     `-Y verify` sign with it and check against the public key line or a CA, `-L` lists a
#     certificate, `-p -m PEM` rewrites RSA keys as PKCS#1 for a full consistency check);
#   - ssh and sshd: a certificate logs in to a real sshd trusting its CA, started by the test
#     itself on 127.0.0.1.
#   up:   installs openssh-client from apt if ssh-keygen or ssh is missing; when sshd is
#         missing, unpacks the openssh-server package (and libwrap0, which it links) from apt
#         into the peers' directory without installing it (no maintainer scripts: no host keys
#         made in /etc, no service started on port 22), behind a wrapper that runs it by its
#         absolute path (sshd re-executes itself). Prints ESI_TEST_SSH_KEYGEN, ESI_TEST_SSH and
#         ESI_TEST_SSHD.
#   down: nothing to stop (the test stops its sshd).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

DIR="$(peers_dir)"

up() {
    if ! command -v ssh-keygen >/dev/null 2>&1 || ! command -v ssh >/dev/null 2>&1; then
        apt_twice install -y -q openssh-client
    fi
    local sshd
    if [ -x /usr/sbin/sshd ]; then
        sshd=/usr/sbin/sshd
    else
        local root="$DIR/openssh-server"
        sshd="$root/sshd"
        if [ ! -x "$sshd" ]; then
            rm -rf "$root" && mkdir -p "$root/pkg"
            # `apt-get download` writes into the working directory.
            (cd "$root/pkg" && apt_twice download -q openssh-server libwrap0)
            for deb in "$root"/pkg/*.deb; do dpkg -x "$deb" "$root/tree"; done
            local lib
            lib="$(dirname "$(find "$root/tree" -name 'libwrap.so.0' | head -n 1)")"
            cat >"$sshd" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$root/tree/usr/sbin/sshd" "\$@"
EOF
            chmod 0755 "$sshd"
            # Readable by the unprivileged user the tests run sshd as.
            chmod -R a+rX "$root"
        fi
    fi
    echo "export ESI_TEST_SSH_KEYGEN=$(command -v ssh-keygen)"
    echo "export ESI_TEST_SSH=$(command -v ssh)"
    echo "export ESI_TEST_SSHD=$sshd"
}

case "${1:-}" in
up) up ;;
down) ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
