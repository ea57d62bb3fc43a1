"""Build dist/gxo.pyz: gxo as one file to copy onto a server (stdlib zipapp).

    python3 scripts/build_pyz.py [-o dist/gxo.pyz]

The archive holds gxo.py, gxo_modules/, PyYAML's pure-Python package (the
``yaml`` package of the PyYAML this Python imports, without its C extension)
with its licence, and bytecode for this Python beside each source: zipimport
reads NAME.pyc next to NAME.py, never __pycache__.  The bytecode is
hash-based and unchecked, so the archive's timestamps cannot make it stale;
another Python version ignores it and compiles the sources instead.  Run it
with ``python3 gxo.pyz -playbook x.yml`` (or ``./gxo.pyz``): it brings its own
PyYAML, so it needs nothing but Python 3.9+.
"""

import argparse
import glob
import importlib.metadata
import os
import py_compile
import shutil
import sys
import tempfile
import zipapp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MAIN = """\
import sys

import gxo

sys.exit(gxo.main())
"""


def _yaml_licence():
    """The licence file of the PyYAML this Python imports."""
    try:
        dist = importlib.metadata.distribution("PyYAML")
        for f in dist.files or ():
            if os.path.basename(str(f)).upper().startswith(("LICENSE", "LICENCE", "COPYING")):
                return str(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    debian = "/usr/share/doc/python3-yaml/copyright"     # Debian's python3-yaml ships it here
    return debian if os.path.exists(debian) else None


def build(target):
    try:
        import yaml
    except ImportError:
        sys.exit("build_pyz: PyYAML is needed to build gxo.pyz (apt install python3-yaml, "
                 "dnf install python3-pyyaml, or python3 -m pip install pyyaml)")
    licence = _yaml_licence()
    if licence is None:
        sys.exit("build_pyz: cannot find PyYAML's licence file to ship with it")
    with tempfile.TemporaryDirectory(prefix="gxo-pyz-") as stage:
        os.mkdir(os.path.join(stage, "gxo_modules"))
        os.mkdir(os.path.join(stage, "yaml"))
        sources = ["gxo.py"] + [os.path.relpath(p, ROOT)
                                for p in sorted(glob.glob(os.path.join(ROOT, "gxo_modules", "*.py")))]
        for rel in sources:
            shutil.copyfile(os.path.join(ROOT, rel), os.path.join(stage, rel))
        yaml_dir = os.path.dirname(yaml.__file__)
        for path in sorted(glob.glob(os.path.join(yaml_dir, "*.py"))):     # not _yaml*.so
            rel = os.path.join("yaml", os.path.basename(path))
            shutil.copyfile(path, os.path.join(stage, rel))
            sources.append(rel)
        shutil.copyfile(os.path.join(ROOT, "LICENSE"), os.path.join(stage, "LICENSE"))
        shutil.copyfile(licence, os.path.join(stage, "yaml", "LICENSE"))
        with open(os.path.join(stage, "__main__.py"), "w", encoding="utf-8") as f:
            f.write(_MAIN)
        for rel in sources + ["__main__.py"]:
            src = os.path.join(stage, rel)
            py_compile.compile(src, cfile=src + "c", dfile=rel, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        # Stored, not deflated: every start would inflate the half megabyte it imports.
        zipapp.create_archive(stage, target, interpreter="/usr/bin/env python3")
    return yaml.__version__


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default=os.path.join(ROOT, "dist", "gxo.pyz"),
                   help="where to write it (default dist/gxo.pyz)")
    args = p.parse_args(argv)
    version = build(args.output)
    size = os.path.getsize(args.output)
    print(f"wrote {args.output} ({size // 1024} KiB): PyYAML {version}, bytecode for "
          f"{sys.implementation.name} {sys.version_info[0]}.{sys.version_info[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
