"""Prints the fingerprint of everything an app's virtualenv is built from, for bin/compile.

Usage: fingerprint.py BUILD_DIR VENV PYTHON_VERSION INSTALL_PROJECT(true|false)

The fingerprint covers the Python version and the virtualenv's path, the requirement and
constraint files (and those they include with -r/-c), pyproject.toml, setup.py, setup.cfg, the
vendor/, wheels/ and requirements/ folders, every local path a requirement names
(./packages/mypkg, -e ../lib, file:…), the PIP_* variables and the staging network, and the whole
app when the app itself is installed as a project. When it is unchanged, the cached virtualenv is
what pip would build again, so bin/compile skips pip.
"""

import hashlib
import os
import re
import sys

SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", ".tox",
                "node_modules"}
TOP_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
TOP_DIRS = ("requirements", "vendor", "wheels")
MAX_INCLUDES = 50


def add_file(digest, path, base):
    rel = os.path.relpath(path, base)
    if os.path.islink(path):
        digest.update(f"link {rel} -> {os.readlink(path)}\n".encode())
        return
    if not os.path.isfile(path):
        return
    executable = bool(os.stat(path).st_mode & 0o111)
    digest.update(f"file {rel} {int(executable)} {os.path.getsize(path)}\n".encode())
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


def add_tree(digest, root, base):
    if not os.path.isdir(root) or os.path.islink(root):
        add_file(digest, root, base)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
        digest.update(f"dir {os.path.relpath(dirpath, base)}\n".encode())
        for name in sorted(filenames):
            add_file(digest, os.path.join(dirpath, name), base)


def logical_lines(text):
    """Requirement-file lines with comments dropped and backslash continuations joined."""
    pending = ""
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            yield line


def local_path(token, build_dir):
    """The local file or folder a requirement token names, or None for a package name or URL."""
    token = token.strip()
    if " @ " in token:
        token = token.split(" @ ", 1)[1].strip()
    if token.startswith("file:"):
        token = re.sub(r"^file:(//)?", "", token)
    token = re.sub(r"\[[^\]]*\]$", "", token.split(";", 1)[0].strip())
    if not token.startswith((".", "/", "~")) and os.sep not in token:
        return None
    path = os.path.join(build_dir, os.path.expanduser(token))
    return path if os.path.exists(path) else None


def add_requirements(digest, path, build_dir, seen):
    real = os.path.realpath(path)
    if real in seen or len(seen) >= MAX_INCLUDES or not os.path.isfile(path):
        return
    seen.add(real)
    add_file(digest, path, build_dir)
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    for line in logical_lines(text):
        option = re.match(r"^(-r|--requirement|-c|--constraint)[\s=]+(\S+)", line)
        if option:
            add_requirements(digest, os.path.join(os.path.dirname(path), option.group(2)), build_dir, seen)
            continue
        links = re.match(r"^(-f|--find-links)[\s=]+(\S+)", line)
        editable = re.match(r"^(-e|--editable)[\s=]+(.+)$", line)
        token = links.group(2) if links else editable.group(2) if editable else line
        if token.startswith("-"):
            continue
        found = local_path(token, build_dir)
        if found is not None:
            add_tree(digest, found, build_dir)


def main(argv):
    build_dir, venv, py_version, install_project = argv[1:5]
    digest = hashlib.sha256()
    digest.update(f"fingerprint 2; python {py_version} at {venv}\n".encode())
    for name in sorted(k for k in os.environ if k.startswith("PIP_") or k == "FENCE_STAGING_NETWORK"):
        digest.update(f"env {name}={os.environ[name]}\n".encode())
    seen = set()
    for name in sorted(os.listdir(build_dir)):
        if re.fullmatch(r"(requirements|constraints).*\.txt", name):
            add_requirements(digest, os.path.join(build_dir, name), build_dir, seen)
    for name in TOP_FILES:
        add_file(digest, os.path.join(build_dir, name), build_dir)
    for name in TOP_DIRS:
        if os.path.isdir(os.path.join(build_dir, name)):
            add_tree(digest, os.path.join(build_dir, name), build_dir)
    if install_project == "true":
        add_tree(digest, build_dir, build_dir)
    print(digest.hexdigest())


if __name__ == "__main__":
    main(sys.argv)
