"""Build the krew archive (``dist/kubectl-requeue-krew.tar.gz``) byte for byte the same every time.

The archive holds the launcher and the licence; its sha256 is the one ``requeue.yaml`` names
(tests/unit/test_krew_manifest.py checks they agree). Usage: ``python plugins/krew/build_archive.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
#: What the archive holds: name in the archive -> file in the repository, and its mode.
MEMBERS = {"kubectl-requeue": (HERE / "kubectl-requeue", 0o755), "LICENSE": (REPO / "LICENSE", 0o644)}


def build() -> bytes:
    """The archive's bytes: fixed order, owner, mode and time, gzip without a name or time."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, (path, mode) in MEMBERS.items():
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def main() -> None:
    out = REPO / "dist" / "kubectl-requeue-krew.tar.gz"
    out.parent.mkdir(exist_ok=True)
    data = build()
    out.write_bytes(data)
    print(f"{out}\nsha256: {hashlib.sha256(data).hexdigest()}", file=sys.stdout)


if __name__ == "__main__":
    main()
