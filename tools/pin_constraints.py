"""Write constraints.txt: the exact versions installed now of everything vrft-lite needs.

    python tools/pin_constraints.py            # after `make test` passed: pin that set
    make constraints                           # the same

Walks vrft-lite's requirements in setup.cfg (its own and those of every extra that is
installed, e.g. dev, hub, tensorboard) through the installed packages' dependencies, with environment markers
evaluated here, and pins each distribution found at its installed version. Tools that share
the environment but that vrft-lite does not need are left out, and so is vrft-lite itself.
`make install` passes the file to pip with -c, so a fresh machine gets the set the tests
passed with; a constraint only pins a version, it never installs a package by itself, so the
CUDA wheels listed here cost nothing on a machine whose torch does not use them.
"""

from __future__ import annotations

import configparser
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "vrft-lite"
HEADER = """\
# The versions `make test` passed with; `make install` installs under these (pip -c).
# Regenerate after an upgrade that passed the tests: make constraints
# (tools/pin_constraints.py: vrft-lite's dependencies and their dependencies, at the
# versions installed in .venv, for every extra that is installed there).
"""


def installed() -> dict[str, metadata.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}


def requirements(dist: metadata.Distribution, extras: set[str]) -> list[Requirement]:
    found = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None:
            found.append(req)
        elif any(req.marker.evaluate({"extra": extra}) for extra in extras | {""}):
            found.append(req)
    return found


def project_requirements(setup_cfg: Path, dists: dict[str, metadata.Distribution]) -> list[Requirement]:
    """setup.cfg's install_requires, plus each extra whose requirements are all installed here
    (read from the checkout, not the installed metadata, which lags until the next install)."""
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    reqs = [Requirement(x) for x in cfg["options"]["install_requires"].split("\n") if x.strip()]
    extras = cfg["options.extras_require"] if cfg.has_section("options.extras_require") else {}
    for extra in extras:
        extra_reqs = [Requirement(x) for x in extras[extra].split("\n") if x.strip()]
        if all(canonicalize_name(r.name) in dists for r in extra_reqs):
            reqs += extra_reqs
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def closure(roots: list[Requirement], dists: dict[str, metadata.Distribution]) -> dict[str, str]:
    pinned: dict[str, str] = {}
    todo = [(r, set(r.extras)) for r in roots]
    while todo:
        req, req_extras = todo.pop()
        name = canonicalize_name(req.name)
        if name not in dists or name in pinned or name == canonicalize_name(PROJECT):
            continue
        dist = dists[name]
        pinned[name] = f"{dist.metadata['Name']}=={dist.version}"
        todo += [(r, set(r.extras)) for r in requirements(dist, req_extras)]
    return dict(sorted(pinned.items()))


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "constraints.txt"
    dists = installed()
    pins = closure(project_requirements(root / "setup.cfg", dists), dists)
    out.write_text(HEADER + "".join(line + "\n" for line in pins.values()))
    print(f"wrote {out}: {len(pins)} pins")


if __name__ == "__main__":
    main()
