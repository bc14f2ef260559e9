#!/usr/bin/env python3
"""Pack this machine's speech synthesisers for a machine that has none (the GPU image), and check them there.

Corpus v2 (local/make_synthetic_librispeech.py) needs espeak-ng, flite, festival with three voices,
and sox. The GPU image has none of them and no network. `pack` puts the installed programs, the
shared libraries they load (all but glibc's and the compiler runtime's, which the image has in
newer, compatible versions) and their data into one archive whose wrappers (bin/) find their
libraries and data next to themselves, wherever the archive is unpacked; festival's three
hard-coded voice and language paths are rewritten relative to its data directory. `check` synthesises a sentence with
every engine through the corpus generator's own commands and fails with the engine's error.

  python local/gpu_bundle.py pack --out .gpu/synth.tar.xz      (here, after local/setup.sh)
  tar -xJf .gpu/synth.tar.xz -C .gpu                            (there: local/setup_gpu.sh does it)
  python local/gpu_bundle.py check --dest .gpu/synth
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Dict, List

# Loaded from the target machine itself: glibc and the compiler runtime are backward compatible,
# and a second copy of them in one process would break it.
BASE_LIBRARIES = {
    "linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2",
    "librt.so.1", "libresolv.so.2", "libgcc_s.so.1", "libstdc++.so.6",
}
PROGRAMS = ("espeak-ng", "flite", "festival", "sox")
DEBIAN_PACKAGES = (  # what the archive holds, recorded with versions in its MANIFEST.json
    "espeak-ng", "espeak-ng-data", "libespeak-ng1", "flite", "libflite1", "festival", "libestools2.5",
    "festlex-cmu", "festlex-poslex", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts", "sox", "libsox3",
)
# Debian's festival looks for voices and languages under /usr/share/festival whatever its data
# directory; these point them at the data directory (FESTDATADIR, set by the wrapper) instead.
FESTIVAL_PATCHES = {
    "voices.scm": ("'(\"/usr/share/festival/voices/\")", "(list (path-append datadir \"voices/\"))"),
    "languages.scm": ("'(\"/usr/share/festival/languages/\" )", "(list (path-append datadir \"languages/\"))"),
}
# In --script mode festival reads FESTLIBDIR but not FESTDATADIR: text2wave takes its data directory
# from its libdir.
TEXT2WAVE_PATCH = (
    '(load (path-append datadir "init.scm"))',
    '(set! datadir libdir)  ; local/gpu_bundle.py: FESTDATADIR is ignored in --script mode\n'
    '(load (path-append datadir "init.scm"))',
)
WRAPPER = """#!/bin/sh
# {name} from the archive of local/gpu_bundle.py: its libraries and data are next to it.
here=$(dirname "$(readlink -f "$0")")/..
{env}exec "$here/libexec/{program}" "$@"
"""
ENVIRONMENT = {
    "espeak-ng": 'ESPEAK_DATA_PATH="$here/share" ',
    "festival": 'FESTLIBDIR="$here/share/festival" FESTDATADIR="$here/share/festival" ',
}


def linked_libraries(binary: pathlib.Path) -> Dict[str, pathlib.Path]:
    """ldd's resolution of every library the binary loads, by soname (base libraries left out)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+) => (\S+) \(0x", line)
        if match and match.group(1) not in BASE_LIBRARIES:
            found[match.group(1)] = pathlib.Path(match.group(2))
        elif "not found" in line:
            raise RuntimeError(f"{binary}: ldd cannot resolve {line.strip()}")
    return found


def _program_path(name: str) -> pathlib.Path:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH: run local/setup.sh first (it installs the Debian packages)")
    return pathlib.Path(path).resolve()


def _espeak_data() -> pathlib.Path:
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Data at: (\S+)", version)
    if match is None:
        raise RuntimeError(f"espeak-ng --version did not say where its data is: {version.strip()!r}")
    return pathlib.Path(match.group(1))


def _package_versions() -> Dict[str, str]:
    versions = {}
    for package in DEBIAN_PACKAGES:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"Debian package {package} is not installed: run local/setup.sh first")
        versions[package] = result.stdout
    return versions


def _patch_festival(share: pathlib.Path, text2wave: pathlib.Path) -> None:
    patches = [(share / name, old, new) for name, (old, new) in FESTIVAL_PATCHES.items()]
    for path, old, new in patches + [(text2wave, *TEXT2WAVE_PATCH)]:
        text = path.read_text()
        if text.count(old) != 1:
            raise RuntimeError(f"{path}: expected {old!r} once (another festival version?): update FESTIVAL_PATCHES")
        path.write_text(text.replace(old, new))


def pack(out: pathlib.Path, compression: str = "xz") -> dict:
    """Write the archive (top folder synth/; compression "xz" or "" for a plain tar) and return its manifest."""
    if out.exists():
        raise FileExistsError(f"{out} exists: remove it first (an archive is never overwritten)")
    versions = _package_versions()
    with tempfile.TemporaryDirectory() as folder:
        root = pathlib.Path(folder) / "synth"
        for sub in ("bin", "libexec", "lib", "share"):
            (root / sub).mkdir(parents=True)
        libraries: Dict[str, pathlib.Path] = {}
        for name in PROGRAMS:
            binary = _program_path(name)
            shutil.copy2(binary, root / "libexec" / name)
            libraries.update(linked_libraries(binary))
        for soname, path in sorted(libraries.items()):
            shutil.copy2(path, root / "lib" / soname)  # the real file under the name the loader asks for
        for name in PROGRAMS:
            env = ENVIRONMENT.get(name, "")
            (root / "bin" / name).write_text(
                WRAPPER.format(name=name, program=name, env=f'LD_LIBRARY_PATH="$here/lib" {env}')
            )
        # text2wave is a festival script (#!/usr/bin/festival --script): run it with the bundled festival.
        shutil.copy2(_program_path("text2wave"), root / "libexec" / "text2wave")
        (root / "bin" / "text2wave").write_text(
            "#!/bin/sh\n# text2wave from the archive of local/gpu_bundle.py, run by its festival.\n"
            'here=$(dirname "$(readlink -f "$0")")/..\n'
            'exec "$here/bin/festival" --script "$here/libexec/text2wave" "$@"\n'
        )
        for wrapper in (root / "bin").iterdir():
            wrapper.chmod(0o755)
        shutil.copytree(_espeak_data(), root / "share" / "espeak-ng-data", symlinks=False)
        shutil.copytree("/usr/share/festival", root / "share" / "festival", symlinks=False)
        _patch_festival(root / "share" / "festival", root / "libexec" / "text2wave")
        manifest = {
            "programs": list(PROGRAMS) + ["text2wave"],
            "debian_packages": versions,
            "libraries": sorted(libraries),
            "bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
        }
        (root / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, f"w:{compression}") as archive:
            archive.add(root, arcname="synth")
        partial.rename(out)
    return manifest


def check(dest: pathlib.Path) -> List[str]:
    """Synthesise one sentence per engine with the bundle first on PATH; return what ran."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import make_synthetic_librispeech as corpus  # the generator's own commands, not a copy of them

    bin_dir = (dest / "bin").resolve()
    if not (bin_dir / "festival").exists():
        raise FileNotFoundError(f"{dest}: no bin/festival: not an unpacked archive of local/gpu_bundle.py")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    for program in PROGRAMS + ("text2wave",):
        if pathlib.Path(shutil.which(program)).parent != bin_dir:
            raise RuntimeError(f"{program} on PATH is {shutil.which(program)}, not the bundle's")
        for soname, path in linked_libraries_in_bundle(dest, program).items():
            if path.parent.resolve() != (dest / "lib").resolve():
                raise RuntimeError(f"{program} loads {soname} from {path}, not from the bundle")
    corpus.check_synthesisers(["espeak-ng", "flite", "festival"])
    done = []
    condition = corpus.Condition(
        rate=1.0, pitch_cents=0, level_dbfs=-25.0, noise="none", snr_db=None, rt60_s=None, floor_dbfs=-55.0
    )
    voices = [("espeak-ng", "en-us+m3"), ("flite", "kal16")] + [("festival", v) for v in corpus.FESTIVAL_VOICES]
    for engine, voice in voices:
        speaker = corpus.Speaker(
            speaker_id=0, engine=engine, voice=voice, pitch_cents=0, rate=1.0, level_dbfs=-25.0, highpass_hz=100.0,
            lowpass_hz=7000.0, peak_hz=1000.0, peak_gain_db=0.0, rough=False, sex="m",
        )
        samples = corpus._to_16k(corpus._raw_speech(speaker, "the cat sees a dog", condition), speaker, condition)
        if samples.size < corpus.SAMPLE_RATE // 4:
            raise RuntimeError(f"{engine} {voice}: {samples.size} samples for a five-word sentence")
        done.append(f"{engine}/{voice}: {samples.size / corpus.SAMPLE_RATE:.2f} s")
    return done


def linked_libraries_in_bundle(dest: pathlib.Path, program: str) -> Dict[str, pathlib.Path]:
    """ldd of a bundled binary with the wrapper's library path (text2wave: festival's)."""
    binary = dest / "libexec" / ("festival" if program == "text2wave" else program)
    env = dict(os.environ, LD_LIBRARY_PATH=str((dest / "lib").resolve()))
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True, env=env).stdout
    return {m.group(1): pathlib.Path(m.group(2)) for m in re.finditer(r"\s*(\S+) => (\S+) \(0x", out)
            if m.group(1) not in BASE_LIBRARIES}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="archive the installed synthesisers")
    p.add_argument("--out", type=pathlib.Path, required=True, help="the .tar.xz to write (must not exist)")
    p.add_argument("--compression", default="xz", choices=["xz", "none"], help="none: a plain tar (faster, 2.5x larger)")
    c = sub.add_parser("check", help="synthesise with every engine of an unpacked archive")
    c.add_argument("--dest", type=pathlib.Path, required=True, help="the unpacked synth/ folder")
    args = parser.parse_args(argv)
    if args.command == "pack":
        manifest = pack(args.out, "" if args.compression == "none" else args.compression)
        print(f"{args.out}: {len(manifest['libraries'])} libraries, {manifest['bytes'] / 1e6:.1f} MB unpacked, "
              f"{args.out.stat().st_size / 1e6:.1f} MB packed")
    else:
        for line in check(args.dest):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
