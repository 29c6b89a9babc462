"""Prints a pip requirement for the uv that uv.lock pins, with every hash the lock records.

`make setup` installs uv with it (`pip install --require-hashes`) into a new .venv; uv then
installs everything else from the lock (`uv sync --frozen`), uv itself included, so the lock
is the one source of every version and hash.
"""

import sys
import tomllib
from pathlib import Path

lock = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "uv.lock").read_text())
(uv,) = (package for package in lock["package"] if package["name"] == "uv")
files = [*uv.get("wheels", []), *([uv["sdist"]] if "sdist" in uv else [])]
hashes = " ".join(f"--hash={file['hash']}" for file in files)
print(f"uv=={uv['version']} {hashes}")
