"""A tiny PEP 517 build backend (standard library only) that packs greeting/ into a wheel."""

import base64
import hashlib
import os
import zipfile

NAME, VERSION = "greeting", "0.1.0"
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
HERE = os.path.dirname(os.path.abspath(__file__))


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """Builds ``greeting-0.1.0-py3-none-any.whl`` in ``wheel_directory`` and returns its name."""
    files = {}
    for name in sorted(os.listdir(os.path.join(HERE, NAME))):
        if name.endswith(".py"):
            with open(os.path.join(HERE, NAME, name), "rb") as src:
                files[f"{NAME}/{name}"] = src.read()
    files[f"{DIST_INFO}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n").encode()
    files[f"{DIST_INFO}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: build_backend\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n").encode()
    record = [_record_line(path, data) for path, data in files.items()]
    files[f"{DIST_INFO}/RECORD"] = ("\n".join(record + [f"{DIST_INFO}/RECORD,,"]) + "\n").encode()
    wheel_name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel_name), "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
    return wheel_name
