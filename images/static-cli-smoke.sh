#!/usr/bin/env bash
# Smoke test of the esi-cli image's key property on this machine, without Docker: esi-cli built
# the way images/cli.Dockerfile builds it (glibc, -C target-feature=+crt-static, on Debian
# bookworm) runs in a root filesystem holding nothing but the binary, /etc/hosts,
# /etc/resolv.conf and a CA bundle — no libc, no NSS modules, no nsswitch.conf, like an app
# image based on scratch or Alpine — and still resolves names through /etc/hosts and DNS.
#
# Needs root (chroot) and port 53/udp on 127.0.0.1 free for a fake DNS server. Not part of
# ./scripts/test-all.sh (a separate ~3 min build); run it by hand:
#   ESI_PEERS_DIR=.peers images/static-cli-smoke.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="${ESI_PEERS_DIR:-$repo/.peers}"
mkdir -p "$peers"
peers="$(cd "$peers" && pwd)"
target="$(rustc -vV | sed -n 's/^host: //p')"

(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build -q -p esi-cli --locked --target "$target" --target-dir "$peers/static-target")
bin="$peers/static-target/$target/debug/esi-cli"
if readelf -d "$bin" | grep -q NEEDED || readelf -lW "$bin" | grep -q interpreter; then
  echo "static-cli-smoke: $bin is dynamically linked" >&2
  exit 1
fi

work="$(mktemp -d "$peers/static-cli.XXXXXX")"
root="$work/root"
mkdir -p "$root/bin" "$root/etc/ssl/certs"
cp "$bin" "$root/bin/esi-cli"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
echo "127.0.0.1 hosts.esi.test" > "$root/etc/hosts"
echo "nameserver 127.0.0.1" > "$root/etc/resolv.conf"
echo "not.a.token" > "$root/token"

# A fake federation (any request: 401) and a fake DNS server (dns.esi.test A 127.0.0.1).
python3 - "$work" <<'PY' &
import http.server, socket, struct, sys, threading, pathlib
work = pathlib.Path(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        with open(work / "hits", "a") as f:
            f.write(self.headers.get("Host", "") + "\n")
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error":{"code":"unauthenticated","message":"fake"}}')
    def log_message(self, *a):
        pass
httpd = http.server.HTTPServer(("127.0.0.1", 0), H)
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("127.0.0.1", 53))
(work / "port").write_text(str(httpd.server_address[1]))
threading.Thread(target=httpd.serve_forever, daemon=True).start()
while True:
    data, addr = dns.recvfrom(512)
    tid = data[:2]
    i, labels = 12, []
    while data[i]:
        labels.append(data[i + 1:i + 1 + data[i]].decode())
        i += 1 + data[i]
    qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
    q = data[12:i + 5]
    if ".".join(labels) == "dns.esi.test" and qtype == 1:
        ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
        dns.sendto(tid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + q + ans, addr)
    else:
        dns.sendto(tid + struct.pack(">HHHHH", 0x8180, 1, 0, 0, 0) + q, addr)
PY
servers=$!
trap 'kill "$servers" 2>/dev/null || true; rm -rf "$work"' EXIT

deadline=$((SECONDS + 10))
until [[ -s "$work/port" ]]; do
  if ((SECONDS > deadline)) || ! kill -0 "$servers" 2>/dev/null; then
    echo "static-cli-smoke: fake servers did not start (is 127.0.0.1:53/udp taken?)" >&2
    exit 1
  fi
  sleep 0.1
done
port="$(cat "$work/port")"

for host in hosts.esi.test dns.esi.test; do
  out="$(timeout 30 chroot "$root" /bin/esi-cli fetch --federation-url "http://$host:$port" \
    --allow-http --token-file /token --volume-dir /tmp default/Password/x 2>&1 || true)"
  if ! grep -qx "$host:$port" "$work/hits" 2>/dev/null; then
    echo "static-cli-smoke: the static esi-cli did not reach http://$host:$port in the bare root: $out" >&2
    exit 1
  fi
done
echo "static-cli-smoke: ok (static esi-cli resolves via /etc/hosts and DNS with no libc in its root)"
