"""Builders for the emulated devices of ``device_tests`` (importable on its own).

Three kinds of environment, each cached under :func:`cache_dir` in a folder named after the hash of
its *recipe* (everything that decides its contents), so a changed recipe builds a new one and an
unchanged one is reused. A folder only counts as built once its ``.complete`` marker exists, so an
interrupted build is redone, never half-used.

- :func:`runtime_venv`: a fresh venv holding only ``pip install <copy of the repo>`` (no extras),
  an interpreter package and Pillow -- no TensorFlow (the "device-like" environment on x86).
- :func:`arm64_rootfs`: Debian bookworm arm64 (debootstrap, minbase + python3 + python3-numpy).
- :func:`arm64_site`: a folder to put on PYTHONPATH inside that rootfs: the aarch64 tflite-runtime
  wheel unzipped plus ``metalite/runtime`` and ``metalite/common`` copied from the repo (so the *current*
  runtime code runs).
- :func:`arm64_litert_venv`: a venv inside that rootfs (made by its own ``python3 -m venv``) holding
  the aarch64 ai-edge-litert and numpy 2 wheels (``pip install --target`` on the host) and the runtime.
- :func:`arm64_runner`: how to run a python command in the rootfs (chroot through binfmt_misc, or
  ``qemu-aarch64-static -L`` when binfmt is not available), as a Cortex-A72 (a Raspberry Pi 4's core).

Whatever is missing is installed (apt-get, pip). What cannot be done raises :class:`EnvError` with a
message that says what to install.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APT_PACKAGES = ["qemu-user-static", "debootstrap", "binfmt-support"]
DEBIAN_MIRROR = os.environ.get("METALITE_DEBIAN_MIRROR", "http://deb.debian.org/debian")


class EnvError(RuntimeError):
    """A prerequisite of the device tests is missing and could not be installed."""


def default_log_write(msg: str) -> None:
    sys.__stderr__.write(msg)
    sys.__stderr__.flush()


LOG_WRITE = default_log_write  # conftest.py replaces it with one that bypasses pytest's capture


def log(msg: str) -> None:
    """Progress of long builds, live on stderr (also under pytest, see conftest.pytest_configure)."""
    LOG_WRITE(f"\n[device_tests {time.strftime('%H:%M:%S')}] {msg}\n")


def cache_dir() -> Path:
    from metalite.common.files import cache_root

    d = Path(os.environ.get("METALITE_DEVICE_CACHE") or cache_root("device"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def recipe_key(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _locked(path: Path):
    """Hold ``<path>.lock``: one build of an environment at a time, across test processes."""
    from metalite.common.locks import file_lock

    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(Path(str(path) + ".lock"))


def run(
    cmd, *, what: str, timeout: float = 1800, quiet: bool = False, **kw
) -> subprocess.CompletedProcess:
    """Run a build step; on failure raise EnvError with the step, the command and its output's tail."""
    t0 = time.time()
    try:
        p = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kw
        )
    except FileNotFoundError as e:
        raise EnvError(f"{what}: {e.filename} not found") from None
    except subprocess.TimeoutExpired:
        raise EnvError(
            f"{what}: timed out after {timeout:.0f} s: {' '.join(map(str, cmd))}"
        ) from None
    if p.returncode != 0:
        tail = "\n".join(p.stdout.splitlines()[-25:])
        raise EnvError(f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    if not quiet:
        log(f"{what}: done in {time.time() - t0:.0f} s")
    return p


# ----------------------------------------------------------------------------------------- host tools
def ensure_apt_tools() -> None:
    """qemu-user-static, debootstrap and binfmt-support, installed with apt-get when missing."""
    need = {
        "qemu-aarch64-static": "qemu-user-static",
        "debootstrap": "debootstrap",
        "update-binfmts": "binfmt-support",
    }
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [pkg for exe, pkg in need.items() if not shutil.which(exe, path=path)]
    if not missing:
        return
    hint = f"install them with: apt-get install {' '.join(APT_PACKAGES)}"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise EnvError(
            f"missing {', '.join(missing)} and not root with apt-get to install them; {hint}"
        )
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run(
            ["apt-get", "install", "-y", "-q", *missing],
            what="apt-get install",
            env=env,
            timeout=900,
        )
    except EnvError:
        run(["apt-get", "update", "-q"], what="apt-get update", env=env, timeout=600)
        run(
            ["apt-get", "install", "-y", "-q", *missing],
            what="apt-get install",
            env=env,
            timeout=900,
        )
    still = [pkg for exe, pkg in need.items() if not shutil.which(exe, path=path)]
    if still:
        raise EnvError(f"apt-get install did not provide {', '.join(still)}; {hint}")


def _exe(name: str) -> str:
    p = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not p:
        raise EnvError(
            f"{name} not found; install it with: apt-get install {' '.join(APT_PACKAGES)}"
        )
    return p


# ----------------------------------------------------------------------------------------- venvs
VENV_RECIPES = {
    # Raspberry Pi OS bookworm's stack: numpy 1.x + tflite-runtime 2.14 (which fails with numpy 2).
    "tflite": ["numpy<2", "tflite-runtime==2.14.0", "Pillow"],
    # The successor: numpy 2 + ai-edge-litert.
    "litert": ["numpy>=2", "ai-edge-litert", "Pillow"],
}


def package_folders() -> list:
    """The repository folders that install as ``metalite.<name>`` (read from setup.py's ``package_dir``)."""
    return sorted(
        set(re.findall(r'"metalite\.[a-z_.]+":\s*"([a-z_]+)"', (REPO / "setup.py").read_text()))
    )


def _repo_copy(dst: Path) -> Path:
    """The files `pip install` needs (setup.py and the package folders), without .git or models."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in ("setup.py", "pyproject.toml", "README.md", "setup.cfg", "MANIFEST.in"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in package_folders():
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dst / name, ignore=ignore)
    return dst


def _tree_digest(*dirs: Path) -> str:
    h = hashlib.sha256()
    for d in dirs:
        for p in sorted(d.rglob("*.py")) if d.is_dir() else [d]:
            if "__pycache__" in p.parts:
                continue
            h.update(str(p.relative_to(REPO)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def runtime_venv(kind: str) -> Path:
    """A venv with only the project (non-editable, no extras) + VENV_RECIPES[kind]; returns its python.

    The third-party packages are cached by recipe; the project itself is reinstalled (no deps, a
    few seconds) whenever its sources changed, so the venv always runs the current code.
    """
    reqs = VENV_RECIPES[kind]
    recipe = {"kind": "venv", "python": sys.version.split()[0], "exe": sys.executable, "reqs": reqs}
    root = cache_dir() / f"venv-{kind}-{recipe_key(recipe)}"
    py = root / "bin" / "python"
    with _locked(root):
        if not (root / ".complete").exists():
            from metalite.bench.runtime_env import VenvError, build_venv

            try:
                build_venv(root, reqs, say=log, marker=json.dumps(recipe))
            except VenvError as e:
                raise EnvError(f"pip install into {root.name} failed: {e}") from None
        src = _tree_digest(REPO / "setup.py", *(REPO / name for name in package_folders()))
        stamp = root / ".project"
        if not stamp.exists() or stamp.read_text() != src:
            with_tmp = cache_dir() / f"src-{kind}"
            copy = _repo_copy(with_tmp)
            # Not editable, from a copy: exactly what a device gets from a wheel of the repo. No extras,
            # so numpy and click are its only dependencies (already there or tiny).
            first = not stamp.exists()
            run(
                [
                    str(py),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    *([] if first else ["--force-reinstall", "--no-deps"]),
                    str(copy),
                ],
                what=f"pip install metalite into {root.name}",
                timeout=600,
            )
            shutil.rmtree(copy, ignore_errors=True)
            stamp.write_text(src)
    return py


# ----------------------------------------------------------------------------------------- arm64
ROOTFS_RECIPE = {
    "kind": "rootfs",
    "suite": "bookworm",
    "arch": "arm64",
    "variant": "minbase",
    "include": ["python3", "python3-numpy"],
    "mirror": DEBIAN_MIRROR,
}
WHEEL_RECIPE = {
    "kind": "wheel",
    "req": "tflite-runtime==2.14.0",
    "platform": "manylinux_2_34_aarch64",
    "python": "3.11",
    "impl": "cp",
}


def arm64_rootfs() -> Path:
    """Debian bookworm arm64 rootfs (debootstrap, ~3 min cold), cached by recipe, rebuilt if missing."""
    ensure_apt_tools()
    root = cache_dir() / f"rootfs-{recipe_key(ROOTFS_RECIPE)}"
    with _locked(root):
        if (root / ".complete").exists() and (root / "usr" / "bin" / "python3").exists():
            return root
        if root.exists():
            _umount_all(root)
            shutil.rmtree(root)
        r = ROOTFS_RECIPE
        cmd = [
            _exe("debootstrap"),
            f"--arch={r['arch']}",
            f"--variant={r['variant']}",
            f"--include={','.join(r['include'])}",
        ]
        if binfmt_aarch64_ok():
            # debootstrap's second stage runs arm64 maintainer scripts in a chroot: needs binfmt_misc.
            log(f"debootstrap arm64 bookworm into {root} (about 3-5 minutes)")
            run(cmd + [r["suite"], str(root), r["mirror"]], what="debootstrap arm64", timeout=2400)
        else:
            # No binfmt_misc (e.g. an unprivileged container): first stage only, then unpack every
            # downloaded .deb by hand. No maintainer scripts run, which python3 + numpy don't need.
            log(
                f"binfmt_misc for aarch64 not available: debootstrap --foreign + dpkg-deb -x into {root}"
            )
            run(
                cmd + ["--foreign", r["suite"], str(root), r["mirror"]],
                what="debootstrap --foreign arm64",
                timeout=2400,
            )
            for deb in sorted((root / "var" / "cache" / "apt" / "archives").glob("*.deb")):
                run(
                    [_exe("dpkg-deb"), "-x", str(deb), str(root)],
                    what=f"unpack {deb.name}",
                    timeout=300,
                    quiet=True,
                )
        _umount_all(root)
        if not (root / "usr" / "bin" / "python3").exists():
            raise EnvError(f"debootstrap finished but {root}/usr/bin/python3 is missing")
        (root / ".complete").write_text(json.dumps(ROOTFS_RECIPE))
    return root


def _umount_all(root: Path) -> None:
    # debootstrap may leave /proc, /sys mounted inside the target when it fails.
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    targets = [m.split()[1] for m in mounts if m.split()[1].startswith(str(root) + "/")]
    for t in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", t], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def arm64_wheel() -> Path:
    """The aarch64 tflite-runtime 2.14 wheel for CPython 3.11, cached."""
    d = cache_dir() / f"wheels-{recipe_key(WHEEL_RECIPE)}"
    with _locked(d):
        found = sorted(d.glob("tflite_runtime-*.whl")) if d.exists() else []
        if found:
            return found[0]
        d.mkdir(parents=True, exist_ok=True)
        w = WHEEL_RECIPE
        log("pip download the aarch64 tflite-runtime wheel")
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                w["platform"],
                "--python-version",
                w["python"],
                "--implementation",
                w["impl"],
                "-d",
                str(d),
                w["req"],
            ],
            what="pip download tflite-runtime aarch64",
            timeout=900,
        )
        found = sorted(d.glob("tflite_runtime-*.whl"))
        if not found:
            raise EnvError(f"pip download left no tflite_runtime wheel in {d}")
        return found[0]


def _copy_runtime(site: Path) -> None:
    """The runtime as it is installed: ``metalite/runtime`` and the ``metalite/common`` helpers it imports, inside
    the ``metalite`` namespace package."""
    pkg = site / "metalite"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    for name in ("runtime", "common"):
        shutil.copytree(
            REPO / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )


def arm64_site(rootfs: Path) -> str:
    """A PYTHONPATH folder inside the rootfs with tflite_runtime and the *current* metalite.runtime.

    Returns the folder's path as seen from inside the rootfs (e.g. ``/opt/metalite-site``).
    """
    inside = "/opt/metalite-site"
    site = rootfs / inside.lstrip("/")
    wheel = arm64_wheel()
    marker = site / ".wheel"
    with _locked(site):
        if not marker.exists() or marker.read_text() != wheel.name:
            if site.exists():
                shutil.rmtree(site)
            site.mkdir(parents=True)
            with zipfile.ZipFile(wheel) as z:
                z.extractall(site)
            for so in site.rglob("*.so"):
                so.chmod(0o755)
            marker.write_text(wheel.name)
        _copy_runtime(site)
    return inside


ARM64_LITERT_RECIPE = {
    "kind": "arm64-litert-venv",
    "reqs": ["numpy>=2", "ai-edge-litert"],
    "python": "3.11",
    "impl": "cp",
    "platforms": [
        "manylinux_2_36_aarch64",
        "manylinux_2_34_aarch64",
        "manylinux_2_28_aarch64",
        "manylinux_2_27_aarch64",
        "manylinux_2_17_aarch64",
        "manylinux2014_aarch64",
    ],
}


def arm64_litert_venv(rootfs: Path, runner) -> dict:
    """A venv in the rootfs with numpy 2 + ai-edge-litert (aarch64 wheels) and the current runtime.

    The venv is made by the rootfs's own ``python3 -m venv --without-pip`` (bookworm's python3 has no
    ensurepip); the wheels are installed into its site-packages from the host with ``pip install
    --target --platform`` (pip would crawl under emulation). Returns ``{"python", "site"}`` as paths
    inside the rootfs.
    """
    r = ARM64_LITERT_RECIPE
    inside = f"/opt/metalite-litert-{recipe_key(r)}"
    root = rootfs / inside.lstrip("/")
    site = root / "lib" / "python3.11" / "site-packages"
    with _locked(root):
        if not (root / ".complete").exists():
            if root.exists():
                shutil.rmtree(root)
            log(f"arm64 venv {inside}: {' '.join(r['reqs'])} (aarch64 wheels, about 30 MB)")
            run(
                runner(["python3", "-m", "venv", "--without-pip", inside]),
                what="python3 -m venv (arm64)",
                timeout=300,
            )
            plat = [a for p in r["platforms"] for a in ("--platform", p)]
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--only-binary=:all:",
                    *plat,
                    "--python-version",
                    r["python"],
                    "--implementation",
                    r["impl"],
                    "--target",
                    str(site),
                    *r["reqs"],
                ],
                what="pip install --target (aarch64 ai-edge-litert)",
                timeout=1200,
            )
            (root / ".complete").write_text(json.dumps(r))
        _copy_runtime(site)
    return {"python": f"{inside}/bin/python", "site": f"{inside}/lib/python3.11/site-packages"}


def binfmt_aarch64_ok() -> bool:
    """True if the kernel runs aarch64 ELF files through qemu (binfmt_misc), enabling it if possible."""
    bm = Path("/proc/sys/fs/binfmt_misc")
    if not (bm / "register").exists():
        subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(bm)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    if not (bm / "register").exists():
        return False
    entry = bm / "qemu-aarch64"
    if not entry.exists() or "enabled" not in entry.read_text():
        ub = shutil.which("update-binfmts", path=os.environ.get("PATH", "") + ":/usr/sbin")
        if ub:
            subprocess.run(
                [ub, "--enable", "qemu-aarch64"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    return entry.exists() and "enabled" in entry.read_text()


EMULATED_CPU = {"qemu": "cortex-a72", "part": "0xd08", "features": "fp asimd evtstrm crc32 cpuid"}


def _host_cpus() -> int:
    """Number of CPUs in the host's /sys/devices/system/cpu/possible (the /sys the device sees)."""
    try:
        n = 0
        for part in Path("/sys/devices/system/cpu/possible").read_text().strip().split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
        return max(1, n)
    except (OSError, ValueError):
        return os.cpu_count() or 1


def emulated_cpuinfo(rootfs: Path) -> None:
    """Write ``ROOTFS/proc/cpuinfo`` describing the emulated cores as a Raspberry Pi 4's Cortex-A72.

    qemu-user passes the host's x86 /proc/cpuinfo through, which the cpuinfo library inside XNNPACK
    cannot parse (it crashes); without any cpuinfo XNNPACK does not start. The rootfs's /proc is not
    mounted, so this plain file is what the device reads (chroot, and ``qemu -L``, which looks in the
    rootfs first)."""
    entry = (
        "processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {p}\nCPU revision\t: 3\n"
    )
    text = "\n".join(
        entry.format(i=i, f=EMULATED_CPU["features"], p=EMULATED_CPU["part"])
        for i in range(_host_cpus())
    )
    target = rootfs / "proc" / "cpuinfo"
    if not target.parent.is_mount() and (not target.exists() or target.read_text() != text):
        target.parent.mkdir(exist_ok=True)
        target.write_text(text)


def arm64_runner(rootfs: Path):
    """A function ``(argv, extra_env=None) -> host argv`` that runs arm64 python3 in the rootfs, and its mode name.

    Prefers ``chroot`` through binfmt_misc (the device's own view of /) with the host's /sys bound
    read-only in a private mount namespace (``unshare``: the mount ends with the process), checked by
    actually running ``python3 -c`` there; falls back to ``qemu-aarch64-static -L ROOTFS``. The CPU is
    qemu's Cortex-A72 model (``QEMU_CPU``) with a matching /proc/cpuinfo (:func:`emulated_cpuinfo`).
    Paths given to the command must be paths *inside* the rootfs (see :func:`stage_in_rootfs`).
    """
    emulated_cpuinfo(rootfs)
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "QEMU_CPU": EMULATED_CPU["qemu"],
    }
    probe = ["python3", "-c", "import platform,numpy;print(platform.machine(),numpy.__version__)"]
    tried = []
    if os.geteuid() == 0 and binfmt_aarch64_ok():
        # qemu-aarch64-static is statically linked and registered with the F (fix binary) flag by
        # Debian's binfmt-support, so nothing needs copying into the chroot. QEMU_CPU is read by each
        # emulated exec, so it goes both outside (env's own start) and inside (env -i's children).
        def chroot_cmd(argv, extra_env=None, sys_mount=True):
            inner = [
                _exe("chroot"),
                str(rootfs),
                "/usr/bin/env",
                "-i",
                *[f"{k}={v}" for k, v in {**env, **(extra_env or {})}.items()],
                *argv,
            ]
            if not sys_mount:
                return ["/usr/bin/env", f"QEMU_CPU={env['QEMU_CPU']}", *inner]
            script = f'mount -o bind,ro /sys "{rootfs}/sys" && exec "$@"'
            return [
                "/usr/bin/env",
                f"QEMU_CPU={env['QEMU_CPU']}",
                _exe("unshare"),
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                *inner,
            ]

        for sys_mount in (True, False):
            cmd = functools.partial(chroot_cmd, sys_mount=sys_mount)
            p = subprocess.run(cmd(probe), capture_output=True, text=True, timeout=300)
            if p.returncode == 0 and p.stdout.startswith("aarch64"):
                return cmd, "chroot+binfmt" + (
                    " (+ /sys)" if sys_mount else " (no /sys: XNNPACK cannot start)"
                )
            tried.append(f"chroot{' + /sys' if sys_mount else ''}: {p.stderr.strip()[-300:]}")

    qemu = _exe("qemu-aarch64-static")

    def qemu_cmd(argv, extra_env=None):
        # -L makes the dynamic loader and libraries come from the rootfs; the python path is absolute.
        exe = argv[0] if argv[0].startswith("/") else f"/usr/bin/{argv[0]}"
        real = Path(str(rootfs) + exe)
        for _ in range(10):  # resolve symlinks *inside* the rootfs (python3 -> python3.11)
            if not real.is_symlink():
                break
            t = os.readlink(real)
            real = Path(str(rootfs) + t) if t.startswith("/") else real.parent / t
        return [
            "/usr/bin/env",
            "-i",
            *[f"{k}={v}" for k, v in {**env, **(extra_env or {})}.items()],
            qemu,
            "-cpu",
            env["QEMU_CPU"],
            "-L",
            str(rootfs),
            real,
            *argv[1:],
        ]

    p = subprocess.run(qemu_cmd(probe), capture_output=True, text=True, timeout=300)
    if p.returncode == 0 and p.stdout.startswith("aarch64"):
        return qemu_cmd, "qemu-aarch64-static -L"
    tried.append(f"qemu -L: {p.stderr.strip()[-300:]}")
    raise EnvError(
        "cannot run arm64 python in the rootfs; need root + binfmt_misc, or "
        f"qemu-user-static (apt-get install {' '.join(APT_PACKAGES)}): " + " | ".join(tried)
    )


def stage_in_rootfs(rootfs: Path, name: str, files: dict) -> tuple:
    """Copy ``{relative name: host file or dir}`` into ``ROOTFS/opt/metalite-work/NAME`` (replaced).

    Returns ``(host_dir, inside_dir)``.
    """
    inside = f"/opt/metalite-work/{name}"
    host = rootfs / inside.lstrip("/")
    if host.exists():
        shutil.rmtree(host)
    host.mkdir(parents=True)
    for rel, src in files.items():
        src = Path(src)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, host / rel)
    return host, inside


if __name__ == "__main__":  # build everything ahead of the tests: python device_tests/envs.py
    t = time.time()
    rf = arm64_rootfs()
    arm64_site(rf)
    runner, mode = arm64_runner(rf)
    print(mode, arm64_litert_venv(rf, runner)["python"])
    for k in VENV_RECIPES:
        print(runtime_venv(k))
    print(f"all built in {time.time() - t:.0f} s")
