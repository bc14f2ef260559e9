import json
import os
import pathlib
import subprocess
import tarfile

import pytest

import gpu_bundle

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    manifest = gpu_bundle.pack(folder / "synth.tar", compression="")
    with tarfile.open(folder / "synth.tar") as archive:
        archive.extractall(folder, filter="tar")
    return folder / "synth", manifest


def test_the_archive_runs_every_engine_of_the_corpus_from_its_own_programs_and_libraries(unpacked, monkeypatch):
    dest, manifest = unpacked
    monkeypatch.setenv("PATH", os.environ["PATH"])  # check() puts the bundle first; keep the test's PATH
    ran = gpu_bundle.check(dest)
    assert [line.split(":")[0] for line in ran] == [
        "espeak-ng/en-us+m3", "flite/kal16", "festival/kal_diphone", "festival/ked_diphone", "festival/cmu_us_slt_arctic_hts",
    ]
    for program in gpu_bundle.PROGRAMS + ("text2wave",):
        libraries = gpu_bundle.linked_libraries_in_bundle(dest, program)
        assert libraries and all(path.parent == (dest / "lib").resolve() for path in libraries.values()), program
    assert not set(manifest["libraries"]) & gpu_bundle.BASE_LIBRARIES
    assert json.loads((dest / "MANIFEST.json").read_text())["debian_packages"]["festival"] == manifest["debian_packages"]["festival"]


def test_festival_finds_its_voices_through_its_data_directory_not_usr_share(unpacked):
    dest, _ = unpacked
    voices = (dest / "share" / "festival" / "voices.scm").read_text()
    assert '"/usr/share/festival/voices/"' not in voices and '(path-append datadir "voices/")' in voices
    assert "(set! datadir libdir)" in (dest / "libexec" / "text2wave").read_text()
    result = subprocess.run([str(dest / "bin" / "festival"), "-b", "(print voice-path)"], capture_output=True, text=True)
    assert str(dest / "bin" / ".." / "share" / "festival" / "voices") in result.stdout


def test_a_wrapper_called_through_a_symlink_finds_the_bundle(unpacked, tmp_path):
    dest, _ = unpacked
    (tmp_path / "flite").symlink_to(dest / "bin" / "flite")  # local/setup_gpu.sh links them into .venv/bin
    out = tmp_path / "a.wav"
    subprocess.run([str(tmp_path / "flite"), "-voice", "slt", "-t", "hello", "-o", str(out)], check=True)
    assert out.stat().st_size > 1000


def test_an_archive_is_never_overwritten(tmp_path):
    (tmp_path / "synth.tar.xz").write_text("earlier")
    with pytest.raises(FileExistsError, match="synth.tar.xz exists"):
        gpu_bundle.pack(tmp_path / "synth.tar.xz")
    assert (tmp_path / "synth.tar.xz").read_text() == "earlier"


def test_a_festival_that_changed_its_paths_is_a_clear_error(tmp_path):
    share = tmp_path / "festival"
    share.mkdir()
    for name in gpu_bundle.FESTIVAL_PATCHES:
        (share / name).write_text("(defvar system-voice-path '(\"/opt/festival/voices/\"))\n")
    (tmp_path / "text2wave").write_text(gpu_bundle.TEXT2WAVE_PATCH[0])
    with pytest.raises(RuntimeError, match=r"voices.scm: expected .* once \(another festival version\?\)"):
        gpu_bundle._patch_festival(share, tmp_path / "text2wave")


def test_check_refuses_a_folder_that_is_not_an_unpacked_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an unpacked archive"):
        gpu_bundle.check(tmp_path)


def test_an_unresolvable_library_names_the_binary(monkeypatch):
    def ldd(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout="\tlibflite.so.1 => not found\n", stderr="")

    monkeypatch.setattr(gpu_bundle.subprocess, "run", ldd)
    with pytest.raises(RuntimeError, match=r"/usr/bin/flite: ldd cannot resolve libflite.so.1 => not found"):
        gpu_bundle.linked_libraries(pathlib.Path("/usr/bin/flite"))


def test_setup_gpu_says_what_is_missing(tmp_path):
    """local/setup_gpu.sh stops before touching anything when .gpu/ lacks a part."""
    script = tmp_path / "local" / "setup_gpu.sh"
    script.parent.mkdir()
    script.write_bytes((REPO / "local" / "setup_gpu.sh").read_bytes())
    (tmp_path / ".gpu" / "wheels").mkdir(parents=True)
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 1
    assert ".gpu/nltk_stub is missing: see README, 'On a GPU machine'" in result.stderr
    assert not (tmp_path / ".venv").exists()
