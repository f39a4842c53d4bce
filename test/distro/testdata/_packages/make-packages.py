#!/usr/bin/env python3
"""Regenerate the tiny 'greet' packages the distro cases install without an
index: a pure wheel (python-venv-wheel/wheels/) and an sdist
(_workflow/vendor/). Byte-for-byte reproducible: fixed mtimes, no gzip name.

    cd test/distro/testdata && python3 _packages/make-packages.py
"""
import base64, gzip, hashlib, io, tarfile, zipfile

INIT = 'def message(who):\n    return "hello, %s" % who\n\n\ndef main():\n    print(message("console script"))\n'
META = "Metadata-Version: 2.1\nName: greet\nVersion: 1.0\nSummary: A tiny test package for minibuild\n"


def wheel(path):
    files = {
        "greet/__init__.py": INIT,
        "greet-1.0.dist-info/METADATA": META,
        "greet-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "greet-1.0.dist-info/entry_points.txt": "[console_scripts]\ngreet = greet:main\n",
        "greet-1.0.dist-info/top_level.txt": "greet\n",
    }
    rec = []
    for n, c in files.items():
        d = base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b"=").decode()
        rec.append("%s,sha256=%s,%d" % (n, d, len(c)))
    rec.append("greet-1.0.dist-info/RECORD,,")
    files["greet-1.0.dist-info/RECORD"] = "\n".join(rec) + "\n"
    with zipfile.ZipFile(path, "w") as z:
        for n, c in files.items():
            zi = zipfile.ZipInfo(n, (2023, 11, 14, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            z.writestr(zi, c)


def sdist(path):
    files = {
        "greet-1.0/setup.py": 'from setuptools import setup\n\nsetup(name="greet", version="1.0", packages=["greet"],\n      entry_points={"console_scripts": ["greet = greet:main"]})\n',
        "greet-1.0/PKG-INFO": META,
        "greet-1.0/greet/__init__.py": INIT,
    }
    with gzip.GzipFile(path, "wb", mtime=1700000000) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as t:
            for n in ["greet-1.0", "greet-1.0/greet"]:
                ti = tarfile.TarInfo(n)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                t.addfile(ti)
            for n, c in files.items():
                ti = tarfile.TarInfo(n)
                ti.size, ti.mode, ti.mtime = len(c), 0o644, 1700000000
                t.addfile(ti, io.BytesIO(c.encode()))


wheel("python-venv-wheel/wheels/greet-1.0-py3-none-any.whl")
sdist("_workflow/vendor/greet-1.0.tar.gz")
